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
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from PIL import Image, ImageDraw, ImageFont
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm import tqdm

from stcorr._atomic import atomic_path
from stcorr.checkpoint import detect_arch, load_state_dict_strict, read_pth, read_safetensors, torchvision_keys
from stcorr.errors import CheckpointError, InputError, StcorrError, WeightsUnavailableError
from stcorr.loading import PICKLE_SUFFIXES, load_model
from stcorr.model import CONFIG_NAME, LITE_ARCHS, WEIGHTS_NAME, CorrespondenceModel, model_from_config
from stcorr.train.data import InfiniteSampler, derive_seed, make_loader
from stcorr.train.presets import TrainConfig, config_from_dict

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

BACKBONE_NAME = "backbone.safetensors"
LOG_NAME = "log.jsonl"
PLOT_NAME = "losses.png"
TRAIN_CONFIG_NAME = "train_config.json"
CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.pt$")
_CHECKPOINT_FORMAT = 1


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


# ---------------------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _pick_device(device: str | None, local_rank: int) -> torch.device:
    if device is None:
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda" and chosen.index is None:
        chosen = torch.device(f"cuda:{local_rank}")
    return chosen


def setup_distributed(device: str | None = None) -> Distributed:
    """Join the torchrun process group if there is one (NCCL on CUDA, gloo on CPU) and pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    chosen = _pick_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
        owns = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Distributed(rank=rank, world_size=dist.get_world_size() if dist.is_initialized() else 1, device=chosen,
                       owns_group=owns)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every process) from all processes in rank order; ``x`` alone otherwise."""
    if not _distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def _gather_objects(value: Any) -> list[Any]:
    if not _distributed():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def sum_parts(parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The total loss: the sum of the (already weighted) parts, in float32 at least."""
    widened = [part if part.dtype in (torch.float32, torch.float64) else part.float() for part in parts.values()]
    return torch.stack(widened).sum()


# ------------------------------------------------------------------------------------- optimisation


@dataclass
class WarmupCosine:
    """Learning-rate factor at step ``it``: cosine from 1 to ``min_ratio`` times a linear warm-up."""

    total: int
    warmup: int
    warmup_ratio: float
    min_ratio: float

    def __call__(self, it: int) -> float:
        progress = min(it, self.total) / max(self.total, 1)
        factor = self.min_ratio + 0.5 * (1.0 - self.min_ratio) * (1.0 + math.cos(math.pi * progress))
        if it < self.warmup:
            factor *= 1.0 - (1.0 - it / self.warmup) * (1.0 - self.warmup_ratio)
        return factor


def build_optimizer(parameters: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """Adam (betas 0.9/0.999) or SGD with momentum, as ``config.optimizer``."""
    params = [p for p in parameters if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.sgd_momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay)


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    factor = WarmupCosine(config.iters, config.warmup_iters, config.warmup_ratio, config.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ------------------------------------------------------------------------------------------ weights


@dataclass(frozen=True)
class BackboneWeights:
    """A torchvision-keyed ResNet state dict with what is known about it."""

    state_dict: dict[str, torch.Tensor]
    arch: str
    input_space: str
    stride: int
    source: str

    @property
    def has_layer4(self) -> bool:
        return any(key.startswith("layer4.") for key in self.state_dict)


def _folder_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def _weights(state: dict[str, torch.Tensor], config: dict[str, Any], source: Path, space: str = "lab"
             ) -> BackboneWeights:
    space, stride = config.get("input_space", space), int(config.get("stride", 8))
    arch = config["arch"] if config.get("arch") in LITE_ARCHS else detect_arch(state)
    return BackboneWeights(state, arch, space, stride, str(source))


def read_backbone_weights(spec: str | os.PathLike[str]) -> BackboneWeights:
    """Weights for ``--init`` / ``--teacher``: a run or model folder (``backbone.safetensors`` preferred, else
    ``model.safetensors``), a ``.safetensors`` file, a ``.pth`` (torchvision or official keys), or any
    other name :func:`stcorr.load_model` accepts (manifest names, ``hf-hub:``)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = [path / BACKBONE_NAME, path / WEIGHTS_NAME]
        found = next((file for file in files if file.is_file()), None)
        if found is None:
            raise WeightsUnavailableError(
                f"{path} holds neither {BACKBONE_NAME} nor {WEIGHTS_NAME}; expected a run or model folder"
            )
        return _weights(read_safetensors(found), _folder_config(path), found)
    if path.is_file() and path.suffix == ".safetensors":
        return _weights(read_safetensors(path), _folder_config(path.parent), path)
    if path.is_file() and path.suffix in PICKLE_SUFFIXES:
        raw = read_pth(path)
        official = any(key.startswith("backbone.") for key in raw)
        return _weights(torchvision_keys(raw), {}, path, space="lab" if official else "rgb")
    if path.is_file():
        expected = ", ".join((".safetensors", *PICKLE_SUFFIXES))
        raise InputError(f"cannot read weights from {path}: expected a folder or one of {expected}")
    model = load_model(os.fspath(spec), device="cpu")
    return BackboneWeights(model.state_dict(), model.arch, model.input_space, model.stride, os.fspath(spec))


def load_init_weights(encoder: CorrespondenceModel, spec: str | os.PathLike[str] | None) -> BackboneWeights | None:
    """Initialise ``encoder`` from ``spec`` (None or ``"none"``: keep the random initialisation).

    Every built stage must be in the weights, except layer4: inference weights stop at layer3, so a
    missing layer4 keeps its random initialisation (the only non-strict part). Extra stages are ignored.
    """
    if spec is None or os.fspath(spec) == "none":
        return None
    weights = read_backbone_weights(spec)
    if weights.arch != encoder.arch:
        raise CheckpointError(
            f"{weights.source} holds {weights.arch} weights but the model is {encoder.arch}; pass --arch {weights.arch}"
        )
    state = dict(weights.state_dict)
    own = encoder.state_dict()
    missing_layer4 = [key for key in own if key.startswith("layer4.") and key not in state]
    if missing_layer4:
        logger.info("%s has no layer4: it keeps its random initialisation", weights.source)
        state.update({key: own[key] for key in missing_layer4})
    load_state_dict_strict(encoder, state)
    return weights


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().contiguous().cpu() for key, value in module.state_dict().items()}


def export_run(out: Path, encoder: nn.Module, config: TrainConfig) -> CorrespondenceModel:
    """Write the inference model (``config.json`` + ``model.safetensors``) and ``backbone.safetensors``."""
    state = _cpu_state(encoder)
    if config.arch in LITE_ARCHS:
        model = model_from_config(encoder.config)  # the student is already the inference architecture
    else:
        model = CorrespondenceModel(config.arch, stride=config.stride, input_space="lab")
    load_state_dict_strict(model, state)
    model.save_pretrained(out)
    with atomic_path(out / BACKBONE_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "library": "stcorr", "arch": config.arch})
    return model


# -------------------------------------------------------------------------------------- checkpoints


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the run's checkpoints, oldest first."""
    folder = Path(out) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_PATTERN.match(p.name))]
    return sorted(found)


def _rng_state() -> dict[str, torch.Tensor | None]:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def _set_rng_state(state: Mapping[str, torch.Tensor | None]) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


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
        rng = _gather_objects(_rng_state())
        if not self.env.is_main:
            return
        payload = {
            "format": _CHECKPOINT_FORMAT,
            "stage": self.stage,
            "step": step,
            "world_size": self.env.world_size,
            "config": self.config.to_dict(),
            "task": _cpu_state(self.task),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
        }
        with atomic_path(self.options.out / CHECKPOINT_DIR / f"step_{step:08d}.pt") as tmp:
            torch.save(payload, tmp)
        if self.options.keep_last > 0:
            for _, old in list_checkpoints(self.options.out)[: -self.options.keep_last]:
                old.unlink(missing_ok=True)

    def restore(self, checkpoint: Mapping[str, Any]) -> int:
        """Load a checkpoint's state; returns its step."""
        self.task.load_state_dict(checkpoint["task"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        states = checkpoint["rng"]
        if len(states) == self.env.world_size:
            _set_rng_state(states[self.env.rank])
        else:
            logger.warning("checkpoint written by %d processes, resumed by %d: the run is not an exact continuation",
                           len(states), self.env.world_size)
        return int(checkpoint["step"])


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(f"cannot read training checkpoint {path}: {exc}") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != _CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an stcorr training checkpoint")
    return checkpoint


def _checkpoint_to_resume(options: RunOptions) -> Path | None:
    existing = list_checkpoints(options.out)
    if options.resume is None:
        if existing or (options.out / LOG_NAME).exists() or (options.out / WEIGHTS_NAME).exists():
            raise InputError(f"{options.out} already holds a run; pass --resume to continue it or choose another --out")
        return None
    if options.resume == "latest":
        return existing[-1][1] if existing else None
    path = Path(options.resume)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def _check_resumable(checkpoint: Mapping[str, Any], stage: str, config: TrainConfig) -> None:
    if checkpoint["stage"] != stage:
        raise InputError(f"the checkpoint is from the {checkpoint['stage']} stage, not {stage}")
    changed = config_from_dict(checkpoint["config"]).differences(config)
    if changed:
        raise InputError("resuming needs the checkpoint's configuration; these differ: " + "; ".join(changed))


# --------------------------------------------------------------------------------------------- logs


def read_log(out: Path) -> list[dict[str, float]]:
    """The records of ``RUN/log.jsonl``."""
    path = Path(out) / LOG_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _keep_log_until(out: Path, step: int) -> None:
    kept = [record for record in read_log(out) if record["step"] <= step]
    with atomic_path(out / LOG_NAME) as tmp:
        tmp.write_text("".join(json.dumps(record) + "\n" for record in kept), encoding="utf-8")


def _append_log(out: Path, record: Mapping[str, float]) -> None:
    with open(out / LOG_NAME, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


_PLOT_SKIP = ("step", "it_per_s", "samples_per_s", "time")
_PANEL_SIZE = (760, 120)
_MARGIN = 8


def plot_losses(records: list[Mapping[str, float]], path: Path) -> None:
    """One panel per logged series (total loss, each part, then lr) against the step, drawn with PIL; atomic."""
    names = [name for name in records[0] if name not in _PLOT_SKIP] if records else []
    series = [name for name in names if name != "lr"] + [name for name in names if name == "lr"]
    width, height = _PANEL_SIZE
    image = Image.new("RGB", (width, max(1, len(series)) * height), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    steps = [record["step"] for record in records]
    for row, name in enumerate(series):
        top = row * height
        values = [float(record.get(name, math.nan)) for record in records]
        finite = [v for v in values if math.isfinite(v)]
        draw.rectangle((0, top, width - 1, top + height - 1), outline="#bbbbbb")
        if not finite:
            continue
        low, high = min(finite), max(finite)
        span_v, span_s = (high - low) or 1.0, (steps[-1] - steps[0]) or 1
        points = [
            (_MARGIN + (width - 2 * _MARGIN) * (s - steps[0]) / span_s,
             top + height - _MARGIN - (height - 3 * _MARGIN) * (v - low) / span_v)
            for s, v in zip(steps, values)
            if math.isfinite(v)
        ]
        draw.line(points, fill="#1f77b4", width=2) if len(points) > 1 else draw.point(points, fill="#1f77b4")
        label = f"{name}: last {finite[-1]:.4g}  min {low:.4g}  max {high:.4g}  (steps {steps[0]}-{steps[-1]})"
        draw.text((_MARGIN, top + 2), label, fill="black", font=font)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


# --------------------------------------------------------------------------------------------- loop


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(item, device) for item in batch)
    return batch.to(device, non_blocking=True)


def _prepare(task: nn.Module, config: TrainConfig, env: Distributed) -> nn.Module:
    task.to(env.device)
    if config.sync_bn and env.world_size > 1:
        if env.device.type != "cuda":
            raise InputError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm does not run on CPU); drop it on CPU")
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
    resume_path = _checkpoint_to_resume(options)
    checkpoint = _read_checkpoint(resume_path) if resume_path else None
    if checkpoint is not None:
        _check_resumable(checkpoint, stage, config)
    torch.manual_seed(config.seed)
    task, dataset = build(config, env)
    task = _prepare(task, config, env)
    optimizer = build_optimizer(task.parameters(), config)
    trainer = _Trainer(stage, task, optimizer, _scheduler(optimizer, config), config, options, env)
    start = trainer.restore(checkpoint) if checkpoint is not None else 0
    if checkpoint is None:
        torch.manual_seed(derive_seed(config.seed, "rank", env.rank))
    _barrier()  # every process has read the run folder before rank 0 changes it
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _keep_log_until(out, start)
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
    _barrier()
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
                    _append_log(options.out, record)
                    bar.set_postfix(_format({k: v for k, v in record.items() if k not in _PLOT_SKIP}), refresh=False)
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
    values = _mean_over_ranks(torch.stack(list(sums.values())) / config.accumulate).tolist()
    if not all(math.isfinite(v) for v in values):
        raise StcorrError(f"the loss became non-finite at step {step} ({dict(zip(sums, values))}); lower --lr")
    samples = it_per_s * config.batch_size * config.accumulate * env.world_size
    return {"step": step, "lr": lr, **dict(zip(sums, values)), "it_per_s": it_per_s, "samples_per_s": samples,
            "time": elapsed}
