"""This training process's place in a torchrun job: the shard plus its device and process group."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from stcorr.distributed import Shard, shard_device, shard_from_env

__all__ = ["Distributed", "setup_distributed"]


@dataclass(frozen=True)
class Distributed(Shard):
    """A :class:`~stcorr.distributed.Shard` with the device this process trains on."""

    device: torch.device = torch.device("cpu")
    owns_group: bool = False


def setup_distributed(device: str | None = None) -> Distributed:
    """Join the torchrun process group if there is one (NCCL on CUDA, gloo on CPU) and pick the device."""
    shard = shard_from_env()
    chosen = shard_device(shard, device)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    owns = False
    if shard.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
        owns = True
    return Distributed(shard.rank, shard.world_size, shard.local_rank, device=chosen, owns_group=owns)
