"""``python -m stcorr.train {spatial,temporal,joint,presets}``: train stcorr encoders.

Every option of :class:`stcorr.train.presets.TrainConfig` is a flag (``--image-size``, ``--lr``, ``--radii``,
...) overriding the ``--preset`` (default ``r18-s8``; ``python -m stcorr.train presets [--for-stage spatial]``
prints them).
``--batch-size`` is per process. Launch with ``torchrun --nproc_per_node N -m stcorr.train ...`` for
several processes (NCCL on GPUs, gloo on CPU); without torchrun it is one plain process. A typed error
(missing data, no usable frames, bad preset, unreadable weights) prints ``error: ...`` and exits with 2.

Stage 1, spatial (MoCo v2 on images and/or video frames; ``--detco`` adds the 2x2-patch local terms)::

    python -m stcorr.train spatial --data IMAGES --out runs/s1 --preset cpu
    python -m stcorr.train spatial --data IMAGES --out runs/s1-r18 --preset r18-s8 --detco
    torchrun --nproc_per_node 8 -m stcorr.train spatial --data /data/imagenet/train --out runs/s1-r50 --preset r50-s8

Stage 2, temporal (frame pairs from a YouTube-VOS ``JPEGImages`` tree, frame folders, video files or one
video; ``--init`` and ``--teacher`` take a run folder, a model folder, ``.safetensors``/``.pth`` weights or a
model name; ``--teacher`` also ``efficientnet-lite0`` or ``none``; ``--init none`` = random)::

    python -m stcorr.train temporal --data vtest.avi --init runs/s1 --teacher runs/s1 --out runs/s2 --preset cpu
    python -m stcorr.train temporal --data VIDEOS --init none --teacher efficientnet-lite0 --out runs/s2e \\
        --preset cpu
    torchrun --nproc_per_node 4 -m stcorr.train temporal --data /data/ytv/train --init runs/s1-r50 \\
        --teacher runs/s1-r50 --out runs/r50-s8 --preset r50-s8
    torchrun --nproc_per_node 4 -m stcorr.train temporal --data /data/ytv/train --init runs/s1-r18 \\
        --teacher runs/s1-r50 --out runs/r18-s8 --preset r18-s8
    torchrun --nproc_per_node 4 -m stcorr.train temporal --data /data/ytv/train --init runs/s1-r50 \\
        --teacher runs/s1-r50 --out runs/r50-s4 --preset r50-s4        # (r18-s4 likewise)
    # the embedded model's recipe (CPU, ImageNet EfficientNet teacher distilled at the exported layer)
    python -m stcorr.train temporal --data data/train_videos --out runs/embedded-r18-s8 --preset cpu \\
        --init none --teacher efficientnet-lite0 --global-layer layer3 --global-loss cosine-kl \\
        --global-distillation-weight 4 --image-size 160 --crop-jitter 1.4 0.15 --iters 2400 --warmup-iters 100
    # temporal only (the README's "ResNet-18 (Temporal)", dev recipe): no init, no teacher
    python -m stcorr.train temporal --data VIDEOS --init none --teacher none --lr 1e-3 --out runs/t --preset r18-s8

Joint (``L_nce + joint_weight * L_temporal`` on images and videos in every step) and temporal-then-spatial::

    python -m stcorr.train joint --data VIDEOS --images IMAGES --out runs/joint --preset cpu [--teacher ...]
    python -m stcorr.train temporal --data VIDEOS --init none --teacher none --out runs/t --preset cpu
    python -m stcorr.train spatial --data IMAGES --init runs/t --out runs/t-then-s --preset cpu

Resume any of them by repeating the command with ``--resume`` (newest checkpoint of ``--out``) or
``--resume PATH``; ``--stop-at K`` stops after step K with a checkpoint (for time-boxed jobs). The run folder
then holds ``config.json`` + ``model.safetensors`` (``stcorr.load_model(RUN)``; inference weights through
layer3), ``backbone.safetensors`` (with layer4; what ``--init``/``--teacher RUN`` read), ``log.jsonl``,
``losses.png``, ``train_config.json`` and ``checkpoints/``.

Deviations from the official code (``qianduoduolr/Spa-then-Temp``; see also :mod:`stcorr.train.losses`):

* Stage 1 has no official code: MoCo v2 re-implemented on an ImageNet-topology ResNet with Lab input;
  shuffle-BN is emulated by per-process batch-norm groups; ``--detco`` is a simplified DetCo (quadrant
  patches, one level; the authors' R50 used the released DetCo-200ep-AA checkpoint instead).
* The uncertainty mask ranks positions globally per sample and keeps exactly ``int(N * T)`` (dev-repo
  behaviour, not the released per-row bug); the ``T = -1`` soft weighting is not ported (keep ratio 1).
* Data: iteration-based stream of per-epoch permutations over videos (official: epoch-based padded
  DistributedSampler); every sample's randomness comes from its own seed; frames are read downscaled to
  short side 256 with antialiasing and the crop resize is antialiased (cv2 has none); Lab conversion runs in
  torch on the device; frame gap configurable (official: consecutive stored frames); video files are
  decoded into memory.
* The channel to drop is drawn once per micro-batch and process (official: per iteration and process).
* One DDP wrapper around the task without buffer broadcast (official: MMDDP per submodule); SyncBN only on
  CUDA (PyTorch has no CPU SyncBatchNorm).
* Opt-in options not in the official code: ``--global-layer layer3`` (distil at the exported stride-8
  features instead of layer4), ``--global-loss cosine-kl`` (KL between cosine affinities at the teacher
  temperature instead of MSE of softmax rows), ``--crop-jitter SCALE SHIFT`` (the target frame's crop is a
  rescaled, shifted copy of the reference's instead of the same crop).
* Any teacher: features resized (bilinear, antialiased) to the grid of the distilled student layer; stcorr weights as
  teacher read Lab, other ``.pth`` files ImageNet RGB (official: DetCo R50 on ImageNet RGB).
* ``--init`` loads strictly except a missing layer4 (inference weights stop at layer3), which stays random.
* Checkpoints every ``--save-every`` steps (official: only the last); the export is safetensors through
  layer3 plus ``backbone.safetensors``, not an MMCV ``.pth``.
* ``joint`` and temporal-then-spatial are the paper's ablations re-created here; gamma is UNVERIFIED.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from stcorr.errors import StcorrError
from stcorr.train.loop import RunOptions, run
from stcorr.train.presets import DEFAULT_PRESET, PRESETS, STAGES, TrainConfig, resolve_config
from stcorr.train.spatial import build_spatial
from stcorr.train.temporal import TEACHER_INPUTS, build_joint, build_temporal

__all__ = ["build_parser", "main"]


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field, default None (= the preset's value)."""
    group = parser.add_argument_group("training configuration (overrides the preset)")
    for spec in dataclasses.fields(TrainConfig):
        flag, meta, default = "--" + spec.name.replace("_", "-"), dict(spec.metadata), spec.default
        kwargs: dict[str, Any] = {"default": None, "help": meta.pop("help", None)}
        if isinstance(default, bool) or meta.pop("flag", False):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, tuple):
            kwargs.update(type=type(default[0]), nargs=len(meta["metavar"]) if "metavar" in meta else "+")
        else:
            kwargs["type"] = type(default)
        group.add_argument(flag, **kwargs, **meta)


def _add_run_options(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--data", required=True, help="images/videos (spatial) or videos (temporal, joint)")
    parser.add_argument("--out", required=True, type=Path, help="run folder")
    presets = ", ".join(PRESETS)
    parser.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of {presets} (default {DEFAULT_PRESET})")
    parser.add_argument("--init", default="none", help="initial weights: run/model folder, weights file, name, or none")
    if stage != "spatial":
        parser.add_argument(
            "--teacher", default="auto",
            help="global-distillation teacher: run/model folder, weights, a model name (efficientnet-lite0/1/2, ...), "
            "none, or auto (default: a frozen copy of --init; none when --init is none)",
        )
        parser.add_argument("--teacher-input", default="auto", choices=TEACHER_INPUTS, help="teacher input space")
    if stage == "joint":
        parser.add_argument("--images", default=None, help="images/videos for the contrastive term (default: --data)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None,
                        help="continue from the newest checkpoint of --out (or the given one)")
    parser.add_argument("--stop-at", type=int, default=None, help="stop after this step with a checkpoint")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers per process (default: 2 with CUDA, 0 on CPU)")
    parser.add_argument("--log-every", type=int, default=10, help="log period in steps (default 10)")
    parser.add_argument("--save-every", type=int, default=1000, help="checkpoint period (0: last step only)")
    parser.add_argument("--keep-last", type=int, default=3, help="checkpoints kept (0: all; default 3)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    _add_config_options(parser)


def plain_text(text: str) -> str:
    """reST of a docstring as a terminal shows it: ``code`` and :role:`target` lose their markup, ``::`` -> ``:``."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "").replace("::", ":")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stcorr.train", description=plain_text(__doc__.split("\n\n")[0]))
    stages = parser.add_subparsers(dest="stage", required=True)
    for stage, help_text in zip(STAGES, ("stage 1: MoCo v2 on images", "stage 2: frame pairs", "L_nce + gamma L_t")):
        _add_run_options(stages.add_parser(stage, help=help_text), stage)
    listing = stages.add_parser("presets", help="print the presets' values")
    listing.add_argument("--for-stage", dest="preset_stage", choices=STAGES, default="temporal")
    return parser


def _builder(args: argparse.Namespace) -> Any:
    if args.stage == "spatial":
        return functools.partial(build_spatial, data=args.data, init=args.init)
    common = dict(data=args.data, init=args.init, teacher=args.teacher, teacher_input=args.teacher_input)
    if args.stage == "joint":
        return functools.partial(build_joint, images=args.images, **common)
    return functools.partial(build_temporal, **common)


def _train(args: argparse.Namespace) -> int:
    overrides = {spec.name: getattr(args, spec.name) for spec in dataclasses.fields(TrainConfig)}
    config = resolve_config(args.stage, args.preset, **overrides)
    options = RunOptions(
        out=args.out, resume=args.resume, stop_at=args.stop_at, log_every=args.log_every,
        workers=args.workers if args.workers is not None else (2 if torch.cuda.is_available() else 0),
        save_every=args.save_every, keep_last=args.keep_last, device=args.device, progress=not args.no_progress,
    )
    run(args.stage, _builder(args), config, options)
    return 0


def _print_presets(stage: str) -> int:
    for name, preset in PRESETS.items():
        print(f"{name} ({stage}; {preset.description}): {json.dumps(resolve_config(stage, name).to_dict())}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for a typed stcorr error)."""
    args = build_parser().parse_args(argv)
    if args.stage == "presets":
        return _print_presets(args.preset_stage)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _train(args)
    except StcorrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

