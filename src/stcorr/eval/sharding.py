"""Splitting an evaluation over processes launched by ``torchrun``.

Each rank propagates its slice of the videos (``videos[rank::world_size]``) and writes its result
files into the shared output folder; then all ranks meet once (a gloo all-reduce of a success flag,
CPU only, whatever device the models run on) and rank 0 scores the complete folder. The output folder
must be visible to every rank (one machine, or a shared file system). The shard, its device and the
process group are those of :mod:`stcorr.distributed`, which training uses too.
"""

from stcorr.distributed import BARRIER_TIMEOUT, Shard, all_succeeded, process_group, shard_device, shard_from_env

__all__ = ["Shard", "shard_from_env", "shard_device", "all_succeeded", "process_group", "BARRIER_TIMEOUT"]
