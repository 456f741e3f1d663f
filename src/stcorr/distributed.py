"""Processes launched by ``torchrun``: this process's shard, its device, the process group and collectives.

The one rank abstraction of the package (training and evaluation both use it). Without ``WORLD_SIZE``
in the environment everything runs in one process, no process group is created and the collectives
below return their input.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from stcorr.device import resolve_device
from stcorr.errors import InputError

__all__ = [
    "Shard",
    "shard_from_env",
    "shard_device",
    "process_group",
    "all_succeeded",
    "all_gather_cat",
    "mean_over_ranks",
    "gather_objects",
    "barrier",
    "BARRIER_TIMEOUT",
]

T = TypeVar("T")

BARRIER_TIMEOUT = timedelta(hours=24)
"""How long evaluation ranks wait for each other at the end (a whole benchmark on a slow device)."""


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


def shard_device(shard: Shard, device: str | torch.device | None) -> torch.device:
    """The device of this process: ``device`` if it names one; else CUDA when available (one GPU per local
    rank when distributed), else CPU (:func:`stcorr.device.resolve_device`)."""
    return resolve_device(device, local_rank=shard.local_rank if shard.distributed else None)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextmanager
def process_group(shard: Shard, backend: str = "gloo", timeout: timedelta | None = None) -> Iterator[bool]:
    """Join the process group of a distributed shard (from torchrun's ``MASTER_ADDR``/``MASTER_PORT``) and
    leave it on exit if it was created here; yields whether it was. Nothing happens for one process."""
    if not shard.distributed or dist.is_initialized():
        yield False
        return
    extra = {"timeout": timeout} if timeout is not None else {}
    dist.init_process_group(backend, rank=shard.rank, world_size=shard.world_size, **extra)
    try:
        yield True
    finally:
        dist.destroy_process_group()


def all_succeeded(shard: Shard, succeeded: bool) -> bool:
    """Wait for every rank and tell whether all of them succeeded (just ``succeeded`` in one process)."""
    if not shard.distributed:
        return succeeded
    flag = torch.tensor([1 if succeeded else 0], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every process) from all processes in rank order; ``x`` alone otherwise."""
    if not _active():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over all processes (in place when distributed)."""
    if _active():
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def gather_objects(value: Any) -> list[Any]:
    """``value`` of every process, in rank order."""
    if not _active():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    """Wait for every process."""
    if _active():
        dist.barrier()
