"""This training process's place in a torchrun job: the shard plus its device and process group (and whether
its batch norm can be synchronised across processes)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

from stcorr.distributed import Shard, shard_device, shard_from_env
from stcorr.train.presets import TrainConfig

__all__ = ["Distributed", "setup_distributed", "use_sync_bn"]

logger = logging.getLogger(__name__)


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


def use_sync_bn(config: TrainConfig, env: Distributed) -> bool:
    """Whether the encoder gets SyncBatchNorm: asked for (``--sync-bn``, on in the release presets), several
    processes, and CUDA. PyTorch's SyncBatchNorm does not run on CPU, so there it is turned off with one log
    line (per-process batch norm instead)."""
    if not config.sync_bn or env.world_size == 1:
        return False
    if env.device.type != "cuda":
        if env.is_main:
            logger.warning("sync-BN is off: PyTorch's SyncBatchNorm needs CUDA, so each of the %d CPU processes "
                           "keeps its own batch norm (--no-sync-bn silences this)", env.world_size)
        return False
    return True
