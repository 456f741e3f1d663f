"""The training loop shared by every stage: processes, optimiser, schedule, checkpoints, logs and exports.

A stage is built by a function ``build(config, env) -> Stage`` (:mod:`stcorr.train.spatial`,
:mod:`stcorr.train.temporal`): ``Stage.task`` is an ``nn.Module`` whose ``forward(batch, draw)`` returns
``(total, parts)`` and whose ``encoder`` attribute is the network to export; ``Stage.dataset`` is indexed
by the ``(item, seed)`` keys of :class:`~stcorr.train.data.InfiniteSampler`. :func:`run` does the rest.

* **Processes.** Launched by ``torchrun`` (``WORLD_SIZE`` > 1) it joins a process group (NCCL on CUDA,
  gloo on CPU) and wraps the task in ``DistributedDataParallel`` (no buffer broadcast: each process keeps
  its batch-norm statistics, rank 0's are exported). Otherwise it runs as one plain process.
* **Optimisation.** Adam or SGD over the task's trainable parameters; per step a linear warm-up (factor
  from ``warmup_ratio`` to 1 over ``warmup_iters``) times a cosine from 1 to ``min_lr_ratio`` over ``iters``
  (MMCV ``CosineAnnealing`` + linear warm-up, spec section 3.4); ``accumulate`` micro-batches per step.
* **Run folder** (``--out RUN``): ``checkpoints/step_XXXXXXXX.pt`` (atomic, every ``save_every`` steps and
  at the end, the last ``keep_last`` kept), ``log.jsonl`` (one JSON line per logged step: step, lr,
  total loss, every part, it/s), ``losses.png``, ``train_config.json`` and, when finished, the inference
  export ``config.json`` + ``model.safetensors`` (through layer3; ``stcorr.load_model(RUN)``) and
  ``backbone.safetensors`` (every trained stage, layer4 included; used by ``--init``/``--teacher``).
* **Resume** restores the task (encoder, heads, momentum encoder, queues, batch-norm statistics), the
  optimiser, the scheduler, the step and every process's torch RNG states; the data stream restarts at
  the right sample (:mod:`stcorr.train.data`). The configuration must be the one of the checkpoint.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm import tqdm

from stcorr._atomic import atomic_path
from stcorr.distributed import all_gather_cat, barrier, gather_objects, mean_over_ranks
from stcorr.errors import InputError, StcorrError
from stcorr.loading import BACKBONE_NAME, BackboneWeights, read_backbone_weights
from stcorr.train.checkpoints import (
    CHECKPOINT_DIR,
    CHECKPOINT_FORMAT,
    check_resumable,
    check_run_folder,
    checkpoint_to_resume,
    cpu_state,
    export_run,
    list_checkpoints,
    load_init_weights,
    make_run_folder,
    read_resume_checkpoint,
    rng_state,
    set_rng_state,
    write_checkpoint,
)
from stcorr.train.data import InfiniteSampler, derive_seed, make_loader
from stcorr.train.distributed import Distributed, setup_distributed, use_sync_bn
from stcorr.train.logs import LOG_NAME, PLOT_NAME, PLOT_SKIP, append_log, keep_log_until, plot_losses, read_log
from stcorr.train.presets import TrainConfig
from stcorr.train.schedule import WarmupCosine, build_optimizer, build_scheduler

__all__ = [
    "RunOptions",
    "Distributed",
    "Stage",
    "run",
    "setup_distributed",
    "all_gather_cat",
    "sum_parts",
    "WarmupCosine",
    "build_optimizer",
    "BackboneWeights",
    "read_backbone_weights",
    "load_init_weights",
    "export_run",
    "read_log",
    "plot_losses",
    "list_checkpoints",
    "BACKBONE_NAME",
    "LOG_NAME",
    "PLOT_NAME",
    "TRAIN_CONFIG_NAME",
    "CHECKPOINT_DIR",
]

logger = logging.getLogger(__name__)

TRAIN_CONFIG_NAME = "train_config.json"


@dataclass(frozen=True)
class RunOptions:
    """How a run is carried out (nothing here changes what is learnt).

    Attributes:
        out: the run folder.
        resume: None (a fresh run; the folder must not hold one), ``"latest"`` (continue from the newest
            checkpoint in ``out``, or start fresh if there is none) or a checkpoint path.
        stop_at: stop after this step with a checkpoint and no export (preemption, time-boxed jobs).
        workers: DataLoader worker processes per training process.
        log_every, save_every, keep_last: logging period, checkpoint period (0: only the last step) and
            number of checkpoints kept (0: all).
        device: ``None`` = CUDA when available (one GPU per process), else CPU.
        progress: a tqdm bar on rank 0.
    """

    out: Path
    resume: str | None = None
    stop_at: int | None = None
    workers: int = 0
    log_every: int = 10
    save_every: int = 1000
    keep_last: int = 3
    device: str | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if self.workers < 0 or self.log_every < 1 or self.save_every < 0 or self.keep_last < 0:
            raise InputError("workers, save_every and keep_last must be >= 0 and log_every >= 1")
        if self.stop_at is not None and self.stop_at < 1:
            raise InputError(f"stop_at must be a positive step, got {self.stop_at}")


class Stage(NamedTuple):
    """What a stage builder returns: the task (``forward(batch, draw)``, ``.encoder``) and its dataset."""

    task: nn.Module
    dataset: Dataset



def sum_parts(parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The total loss: the sum of the (already weighted) parts, in float32 at least."""
    widened = [part if part.dtype in (torch.float32, torch.float64) else part.float() for part in parts.values()]
    return torch.stack(widened).sum()


@dataclass
class _Trainer:
    """The live objects of a run."""

    stage: str
    task: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    config: TrainConfig
    options: RunOptions
    env: Distributed

    def save(self, step: int) -> None:
        """Checkpoint after ``step`` steps (every process takes part; rank 0 writes), then prune."""
        rng = gather_objects(rng_state())
        if not self.env.is_main:
            return
        payload = {
            "format": CHECKPOINT_FORMAT,
            "stage": self.stage,
            "step": step,
            "world_size": self.env.world_size,
            "config": self.config.to_dict(),
            "task": cpu_state(self.task),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
        }
        write_checkpoint(self.options.out, step, payload, self.options.keep_last)

    def restore(self, checkpoint: Mapping[str, Any]) -> int:
        """Load a checkpoint's state; returns its step."""
        self.task.load_state_dict(checkpoint["task"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        states = checkpoint["rng"]
        if len(states) == self.env.world_size:
            set_rng_state(states[self.env.rank])
        else:
            logger.warning("checkpoint written by %d processes, resumed by %d: the run is not an exact continuation",
                           len(states), self.env.world_size)
        return int(checkpoint["step"])


# --------------------------------------------------------------------------------------------- loop


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(item, device) for item in batch)
    return batch.to(device, non_blocking=True)


def _prepare(task: nn.Module, config: TrainConfig, env: Distributed) -> nn.Module:
    task.to(env.device)
    if use_sync_bn(config, env):
        task.encoder = nn.SyncBatchNorm.convert_sync_batchnorm(task.encoder)
    return task


def _wrap(task: nn.Module, env: Distributed) -> nn.Module:
    if env.world_size == 1:
        return task
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    # No buffer broadcast in forward (newer PyTorch renamed the flag; syncing once at start is harmless).
    new_flag = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    no_broadcast = {"forward_sync_buffers": False} if new_flag else {"broadcast_buffers": False}
    return DistributedDataParallel(task, device_ids=device_ids, **no_broadcast)


def _format(values: Mapping[str, float]) -> dict[str, str]:
    return {name: f"{value:.4g}" for name, value in values.items()}


Builder = Callable[[TrainConfig, Distributed], Stage]


def run(stage: str, build: Builder, config: TrainConfig, options: RunOptions) -> Path:
    """Train ``stage`` with the task and data ``build`` makes; returns the run folder.

    Raises:
        InputError, CheckpointError, VideoReadError, ...: bad options, data or weights.
        StcorrError: the loss became non-finite.
    """
    env = setup_distributed(options.device)
    try:
        return _run(stage, build, config, options, env)
    finally:
        if env.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _run(stage: str, build: Builder, config: TrainConfig, options: RunOptions, env: Distributed) -> Path:
    out = Path(options.out)
    options = dataclasses.replace(options, out=out)
    check_run_folder(out)
    resume_path = checkpoint_to_resume(out, options.resume)
    checkpoint = read_resume_checkpoint(resume_path, out, options.resume)[1] if resume_path else None
    if checkpoint is not None:
        check_resumable(checkpoint, stage, config)
    torch.manual_seed(config.seed)
    task, dataset = build(config, env)
    task = _prepare(task, config, env)
    optimizer = build_optimizer(task.parameters(), config)
    trainer = _Trainer(stage, task, optimizer, build_scheduler(optimizer, config), config, options, env)
    start = trainer.restore(checkpoint) if checkpoint is not None else 0
    if checkpoint is None:
        torch.manual_seed(derive_seed(config.seed, "rank", env.rank))
    barrier()  # every process has read the run folder before rank 0 changes it
    if env.is_main:
        make_run_folder(out)
        keep_log_until(out, start)
        with atomic_path(out / TRAIN_CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps({"stage": stage, **config.to_dict()}, indent=2) + "\n", encoding="utf-8")
    per_step = config.batch_size * config.accumulate
    sampler = InfiniteSampler(len(dataset), config.seed, env.rank, env.world_size, start=start * per_step)
    batches = iter(make_loader(dataset, sampler, config.batch_size, options.workers))
    stopped = _train_steps(trainer, _wrap(task, env), batches, start)
    if env.is_main:
        plot_losses(read_log(out), out / PLOT_NAME)
        if not stopped:
            export_run(out, task.encoder, config)
    barrier()
    return out


def _train_steps(trainer: _Trainer, model: nn.Module, batches: Any, start: int) -> bool:
    """Run steps ``start`` .. ``iters - 1``; True if stopped early by ``stop_at``."""
    config, options, env = trainer.config, trainer.options, trainer.env
    bar = tqdm(total=config.iters, initial=start, desc=trainer.stage, disable=not (options.progress and env.is_main),
               dynamic_ncols=True)
    clock, last_step, began = time.perf_counter(), start, time.perf_counter()
    model.train()
    try:
        for step in range(start, config.iters):
            lr = trainer.scheduler.get_last_lr()[0]
            sums = _one_step(trainer, model, batches, step)
            done = step + 1
            bar.update(1)
            stop = done == options.stop_at
            if done % options.log_every == 0 or done == config.iters or stop:
                now = time.perf_counter()
                speed = (done - last_step) / max(now - clock, 1e-9)
                record = _log_record(sums, config, env, done, lr, speed, now - began)
                clock, last_step = now, done
                if env.is_main:
                    append_log(options.out, record)
                    bar.set_postfix(_format({k: v for k, v in record.items() if k not in PLOT_SKIP}), refresh=False)
            if done == config.iters or stop or (options.save_every > 0 and done % options.save_every == 0):
                trainer.save(done)
                if env.is_main:
                    plot_losses(read_log(options.out), options.out / PLOT_NAME)
            if stop:
                return True
    finally:
        bar.close()
    return False


def _one_step(trainer: _Trainer, model: nn.Module, batches: Any, step: int) -> dict[str, torch.Tensor]:
    """One optimiser step over ``accumulate`` micro-batches; returns the summed detached loss parts."""
    config, env = trainer.config, trainer.env
    sums: dict[str, torch.Tensor] = {}
    for micro in range(config.accumulate):
        batch = _to_device(next(batches), env.device)
        last = micro == config.accumulate - 1
        with nullcontext() if last or not isinstance(model, DistributedDataParallel) else model.no_sync():
            total, parts = model(batch, step * config.accumulate + micro)
            (total / config.accumulate).backward()
        for name, value in {"loss": total, **parts}.items():
            sums[name] = sums.get(name, 0.0) + value.detach().float()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scheduler.step()
    return sums


def _log_record(sums: Mapping[str, torch.Tensor], config: TrainConfig, env: Distributed, step: int, lr: float,
                it_per_s: float, elapsed: float) -> dict[str, float]:
    values = mean_over_ranks(torch.stack(list(sums.values())) / config.accumulate).tolist()
    if not all(math.isfinite(v) for v in values):
        raise StcorrError(f"the loss became non-finite at step {step} ({dict(zip(sums, values))}); lower --lr")
    samples = it_per_s * config.batch_size * config.accumulate * env.world_size
    return {"step": step, "lr": lr, **dict(zip(sums, values)), "it_per_s": it_per_s, "samples_per_s": samples,
            "time": elapsed}
