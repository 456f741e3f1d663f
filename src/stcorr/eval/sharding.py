"""Splitting an evaluation over processes launched by ``torchrun``.

Each rank propagates its slice of the videos (``videos[rank::world_size]``) and writes its result
files into the shared output folder; then all ranks meet once (a gloo all-reduce of a success flag,
CPU only, whatever device the models run on) and rank 0 scores the complete folder. The output folder
must be visible to every rank (one machine, or a shared file system). Without ``WORLD_SIZE`` in the
environment everything runs in one process and no process group is created.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch

from stcorr.errors import InputError

__all__ = ["Shard", "shard_from_env", "default_device", "all_succeeded", "process_group"]

T = TypeVar("T")

BARRIER_TIMEOUT = timedelta(hours=24)
"""How long ranks wait for each other at the end (a whole benchmark on a slow device)."""


@dataclass(frozen=True)
class Shard:
    """This process's share of the work: ``rank`` of ``world_size`` processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise InputError(f"invalid shard: rank {self.rank} of world size {self.world_size}")

    @property
    def is_main(self) -> bool:
        """True on rank 0, which scores the results."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def select(self, items: Sequence[T]) -> list[T]:
        """Items ``rank, rank + world_size, ...``: every item goes to exactly one rank."""
        return list(items[self.rank :: self.world_size])


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not an integer") from None


def shard_from_env() -> Shard:
    """The shard described by torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (default: one process)."""
    return Shard(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))


def default_device(shard: Shard, device: str | None) -> str | None:
    """``device`` if given; else one CUDA device per local rank when CUDA is available and the run is
    distributed; else None (the library default: CUDA when available, else CPU)."""
    if device is not None or not shard.distributed or not torch.cuda.is_available():
        return device
    return f"cuda:{shard.local_rank % torch.cuda.device_count()}"


def all_succeeded(shard: Shard, succeeded: bool) -> bool:
    """Wait for every rank and tell whether all of them succeeded (just ``succeeded`` in one process)."""
    if not shard.distributed:
        return succeeded
    import torch.distributed as dist

    flag = torch.tensor([1 if succeeded else 0], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


@contextmanager
def process_group(shard: Shard) -> Iterator[None]:
    """A gloo process group (from torchrun's ``MASTER_ADDR``/``MASTER_PORT``) for a distributed shard."""
    if not shard.distributed:
        yield
        return
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo", rank=shard.rank, world_size=shard.world_size, timeout=BARRIER_TIMEOUT)
    try:
        yield
    finally:
        if owned:
            dist.destroy_process_group()
