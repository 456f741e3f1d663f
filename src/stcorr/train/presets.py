"""Named training configurations: :class:`TrainConfig` and the presets of the paper's models.

A :class:`TrainConfig` holds every constant that changes *what* is trained (model, data sampling,
optimisation, loss weights, seed); operational knobs (paths, workers, logging, checkpoints) live in
:class:`stcorr.train.loop.RunOptions`. :func:`resolve_config` starts from the dataclass defaults, applies a
preset's values for the stage, then explicit overrides (the command line's options).

Presets (``--preset``), per stage. "release" = the official ``configs/train/train.py`` (spec section 3),
"dev" = the author's development configs (**[dev repo]**), "MoCo v2" = the public MoCo v2 recipe (stage 1 has
no official code), "inferred" = not found anywhere, chosen here. ``batch_size`` is **per process**.

============  ===========================================================================================
``r50-s8``    temporal: **release** config: R50, stride 8, layer2 (R 12) + layer3 (R 6) + layer4 at 1/32,
              256 px, 16/process (x4 GPUs = 64), Adam 5e-5, 44,000 it, warm-up 1,100 it (ratio 1e-3),
              cosine to 1e-3x, weights 1 / 1 / 1000 / 50, T = 0.7, teacher temperature 0.07, frame gap 1.
              SyncBN on (release ``syncbn=True``; CUDA only). Frames cached at short side 256 (dev:
              ``JPEGImages_s256``).
              spatial: MoCo v2 R50 (224 px, 32/process x 8 = 256, SGD 0.03, wd 1e-4, K 65,536, m 0.999,
              tau 0.2, 200 ImageNet epochs = 1,000,800 it, cosine to 0). The authors used DetCo-200ep-AA (dev).
``r18-s8``    temporal: dev "spa-temp" R18: 32/process (x4 = 128), Adam 1e-4, 3,200 epochs of 28 it =
              89,600 it (inferred from 3,471 videos), no uncertainty mask (dev ``T = -1``; here keep_ratio 1),
              warm-up 560 it (inferred: 20 epochs), everything else as r50-s8 (inferred). The dev teacher
              was the R50 DetCo checkpoint. spatial: MoCo v2 recipe with R18 and Lab input (dev file name
              ``moco_v2_res18_ep200_lab``; recipe UNVERIFIED).
``r50-s4``    temporal: dev stride-4 R50: stride-4 student (avg-pool stem, layer2/3 stride 1), one local
              level (layer3 at 1/4, R 12), layer4 at 1/16, no local distillation, global weight 200,
              teacher grid 1/16, 8/process, Adam 5e-5, 400 epochs = 43,600 it (inferred: 4 GPUs),
              warm-up 2,180 it (inferred: 20 epochs). spatial: as r50-s8, exported at stride 4.
``r18-s4``    inferred: r50-s4 with R18 (no R18 stride-4 training config exists). spatial: as r18-s8,
              exported at stride 4.
``cpu``       inferred, finishes in minutes on 2 CPU cores: temporal R18 stride 8 (both local levels),
              128 px, batch 8, 400 it, Adam 3e-4, warm-up 30 it (ratio 0.1), frame gap 1-8, no SyncBN
              (its speed: benchmarks/tuning.md). spatial R18, 96 px,
              batch 16, 300 it, SGD 0.03, K 4,096, m 0.99.
============  ===========================================================================================

``joint`` uses the temporal values of a preset plus its spatial MoCo constants (queue, momentum,
temperature, view scale); ``joint_weight`` (gamma) is 1 everywhere (UNVERIFIED).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from stcorr.encoder import ARCHS
from stcorr.errors import InputError
from stcorr.train.losses import GLOBAL_LOSSES

__all__ = ["STAGES", "TrainConfig", "Preset", "PRESETS", "DEFAULT_PRESET", "resolve_config", "config_from_dict"]

STAGES = ("spatial", "temporal", "joint")
LOCAL_LAYERS = ("layer1", "layer2", "layer3")
GLOBAL_LAYERS = ("layer4", "layer3")


def _option(default: Any, help: str, **cli: Any) -> Any:
    """A config field with its command-line help (and optional ``choices``/``metavar``) as metadata."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that changes what is trained. Defaults are the release stage-2 constants (R18 student)."""

    # ---- model
    arch: str = _option("resnet18", "student architecture", choices=ARCHS)
    stride: int = _option(8, "student variant and exported model stride (8 or 4)", choices=(8, 4))
    layer4_stride: int = _option(4, "stride of the student's layer4 (official 4: layer4 at 1/32 with stride 8)")
    local_layers: tuple[str, ...] = _option(("layer2", "layer3"), "student layers reconstructing, fine to coarse")
    radii: tuple[int, ...] = _option((12, 6), "local window radius per local layer, in feature cells")
    # ---- data
    image_size: int = _option(256, "training crop size in pixels (multiple of 32)")
    batch_size: int = _option(16, "samples per process and micro-batch")
    frame_gap: tuple[int, int] = _option((1, 1), "min and max frame distance of a pair", metavar=("MIN", "MAX"))
    crop_area: tuple[float, float] = _option((0.6, 1.0), "pair crop area fraction range", metavar=("LO", "HI"))
    crop_aspect: tuple[float, float] = _option((1.5, 2.0), "pair crop w/h range, log-uniform", metavar=("LO", "HI"))
    crop_jitter: tuple[float, float] = _option(
        (1.0, 0.0), "target crop = reference crop rescaled by up to SCALE (log-uniform) and moved by up to SHIFT of "
        "its size (1 0: one shared crop, official)", metavar=("SCALE", "SHIFT"),
    )
    view_scale: tuple[float, float] = _option((0.2, 1.0), "MoCo RandomResizedCrop scale range", metavar=("LO", "HI"))
    cache_short_side: int = _option(256, "frames larger than this short side are downscaled when read (0: never)")
    frames_per_video: int = _option(64, "spatial stage: evenly spaced frames kept per video file")
    # ---- optimisation
    optimizer: str = _option("adam", "optimiser", choices=("adam", "sgd"))
    lr: float = _option(5e-5, "peak learning rate")
    weight_decay: float = _option(0.0, "weight decay")
    sgd_momentum: float = _option(0.9, "SGD momentum")
    iters: int = _option(44_000, "optimiser steps")
    warmup_iters: int = _option(1_100, "linear warm-up steps")
    warmup_ratio: float = _option(1e-3, "learning-rate factor at step 0 of the warm-up")
    min_lr_ratio: float = _option(1e-3, "final learning rate of the cosine schedule, as a fraction of --lr")
    accumulate: int = _option(1, "micro-batches accumulated per optimiser step")
    sync_bn: bool = _option(False, "SyncBatchNorm in the trained encoder when distributed (CUDA only)")
    seed: int = _option(0, "seed of initialisation, data sampling and augmentation")
    # ---- stage-2 loss
    reconstruction_weight: float = _option(1.0, "weight of each level's reconstruction term")
    local_distillation_weight: float = _option(1000.0, "weight of the fine-to-coarse local correlation distillation")
    global_distillation_weight: float = _option(50.0, "weight of the teacher's global correlation distillation")
    keep_ratio: float = _option(0.7, "fraction of coarse positions in the local distillation (T)")
    uncertainty: str = _option("official", "score ranking those positions", choices=("official", "shannon"))
    teacher_temperature: float = _option(0.07, "teacher affinity temperature")
    global_layer: str = _option(
        "layer4", "student layer distilled globally (official layer4; layer3 = the exported features)",
        choices=GLOBAL_LAYERS,
    )
    global_loss: str = _option("mse", "global distillation loss (official mse)", choices=GLOBAL_LOSSES)
    teacher_stride: int = _option(32, "output stride of a ResNet teacher with layer4 (max-pool stem)", choices=(32, 16))
    # ---- stage-1 contrast (MoCo v2)
    moco_dim: int = _option(128, "MoCo embedding size")
    moco_queue: int = _option(65_536, "MoCo queue length (negatives)")
    moco_momentum: float = _option(0.999, "key encoder momentum")
    moco_temperature: float = _option(0.2, "InfoNCE temperature")
    moco_bn_splits: int = _option(2, "key-encoder batch-norm groups (shuffle-BN emulation)")
    detco: bool = _option(False, "also contrast 2x2 local patches (DetCo-style global/local terms)")
    joint_weight: float = _option(1.0, "joint stage: gamma in L_nce + gamma * L_temporal")

    def __post_init__(self) -> None:
        checks = [
            (self.arch in ARCHS, f"arch must be one of {ARCHS}"),
            (self.stride in (4, 8), "stride must be 8 or 4"),
            (self.layer4_stride in (1, 2, 4), "layer4_stride must be 1, 2 or 4"),
            (1 <= len(self.local_layers) <= 2 and set(self.local_layers) <= set(LOCAL_LAYERS),
             f"local_layers must be one or two of {LOCAL_LAYERS}"),
            (len(self.radii) == len(self.local_layers) and all(r >= 0 for r in self.radii),
             "radii needs one non-negative radius per local layer"),
            (self.image_size >= 32 and self.image_size % 32 == 0, "image_size must be a positive multiple of 32"),
            (self.batch_size >= 1 and self.accumulate >= 1 and self.iters >= 1, "batch_size, accumulate, iters >= 1"),
            (1 <= self.frame_gap[0] <= self.frame_gap[1], "frame_gap must be MIN MAX with 1 <= MIN <= MAX"),
            (0 < self.crop_area[0] <= self.crop_area[1] <= 1, "crop_area must satisfy 0 < LO <= HI <= 1"),
            (0 < self.crop_aspect[0] <= self.crop_aspect[1], "crop_aspect must satisfy 0 < LO <= HI"),
            (self.crop_jitter[0] >= 1 and 0 <= self.crop_jitter[1] <= 1, "crop_jitter needs SCALE >= 1, 0 <= SHIFT <= 1"),
            (0 < self.view_scale[0] <= self.view_scale[1] <= 1, "view_scale must satisfy 0 < LO <= HI <= 1"),
            (self.cache_short_side >= 0 and self.frames_per_video >= 1, "cache_short_side >= 0, frames_per_video >= 1"),
            (self.optimizer in ("adam", "sgd"), "optimizer must be adam or sgd"),
            (self.lr > 0 and self.warmup_iters >= 0 and 0 < self.warmup_ratio <= 1, "lr > 0, warmup_iters >= 0, "
             "0 < warmup_ratio <= 1"),
            (0 <= self.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]"),
            (0 < self.keep_ratio <= 1, "keep_ratio must be in (0, 1]"),
            (self.uncertainty in ("official", "shannon"), "uncertainty must be official or shannon"),
            (self.global_layer in GLOBAL_LAYERS and self.global_loss in GLOBAL_LOSSES,
             f"global_layer must be one of {GLOBAL_LAYERS}, global_loss one of {GLOBAL_LOSSES}"),
            (self.teacher_stride in (16, 32) and self.teacher_temperature > 0, "teacher_stride 16|32, temperature > 0"),
            (self.moco_queue >= 1 and self.moco_dim >= 1 and 0 <= self.moco_momentum < 1, "bad MoCo constants"),
            (1 <= self.moco_bn_splits <= self.batch_size, "moco_bn_splits must be in 1..batch_size"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise InputError("invalid training configuration: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (tuples become lists)."""
        values = dataclasses.asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}

    def differences(self, other: TrainConfig) -> list[str]:
        """``field: self -> other`` for every field that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{key}: {mine[key]!r} -> {theirs[key]!r}" for key in mine if mine[key] != theirs[key]]


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Inverse of :meth:`TrainConfig.to_dict` (unknown keys are an error)."""
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputError(f"unknown training configuration keys: {', '.join(unknown)}")
    return TrainConfig(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})


@dataclass(frozen=True)
class Preset:
    """A named configuration: field values per stage (``joint`` = spatial values, then temporal ones)."""

    name: str
    description: str
    spatial: dict[str, Any]
    temporal: dict[str, Any]

    def values(self, stage: str) -> dict[str, Any]:
        """The field values this preset sets for ``stage``."""
        if stage == "joint":
            return {**self.spatial, **self.temporal}
        return dict(self.spatial if stage == "spatial" else self.temporal)


_MOCO_V2 = dict(  # the public MoCo v2 recipe (not from the paper's repositories)
    optimizer="sgd", lr=0.03, weight_decay=1e-4, sgd_momentum=0.9, image_size=224, batch_size=32,
    iters=200 * 5_004, warmup_iters=0, min_lr_ratio=0.0, moco_dim=128, moco_queue=65_536, moco_momentum=0.999,
    moco_temperature=0.2, view_scale=(0.2, 1.0),
)
_RELEASE = dict(  # configs/train/train.py
    stride=8, layer4_stride=4, local_layers=("layer2", "layer3"), radii=(12, 6), image_size=256, batch_size=16,
    frame_gap=(1, 1), optimizer="adam", lr=5e-5, weight_decay=0.0, iters=44_000, warmup_iters=1_100,
    warmup_ratio=1e-3, min_lr_ratio=1e-3, reconstruction_weight=1.0, local_distillation_weight=1000.0,
    global_distillation_weight=50.0, keep_ratio=0.7, uncertainty="official", teacher_temperature=0.07,
    teacher_stride=32, cache_short_side=256, sync_bn=True,
)
_STRIDE4 = dict(  # [dev repo] stride-4 R50 recipe
    _RELEASE, stride=4, layer4_stride=4, local_layers=("layer3",), radii=(12,), local_distillation_weight=0.0,
    global_distillation_weight=200.0, teacher_stride=16, batch_size=8, iters=43_600, warmup_iters=2_180,
)
_R18_S8 = dict(_RELEASE, arch="resnet18", batch_size=32, lr=1e-4, iters=89_600, warmup_iters=560, keep_ratio=1.0)

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("r50-s8", "release R50 stride-8 recipe", dict(_MOCO_V2, arch="resnet50"),
               dict(_RELEASE, arch="resnet50")),
        Preset("r18-s8", "dev-repo R18 stride-8 recipe", dict(_MOCO_V2, arch="resnet18"), _R18_S8),
        Preset("r50-s4", "dev-repo R50 stride-4 recipe", dict(_MOCO_V2, arch="resnet50", stride=4),
               dict(_STRIDE4, arch="resnet50")),
        Preset("r18-s4", "inferred R18 stride-4 recipe", dict(_MOCO_V2, arch="resnet18", stride=4),
               dict(_STRIDE4, arch="resnet18")),
        Preset(
            "cpu",
            "minutes on 2 CPU cores",
            dict(_MOCO_V2, arch="resnet18", image_size=96, batch_size=16, iters=300, moco_queue=4_096,
                 moco_momentum=0.99, cache_short_side=256),
            dict(_RELEASE, arch="resnet18", image_size=128, batch_size=8, iters=400, lr=3e-4, warmup_iters=30,
                 warmup_ratio=0.1, frame_gap=(1, 8), sync_bn=False),
        ),
    )
}
DEFAULT_PRESET = "r18-s8"


def resolve_config(stage: str, preset: str = DEFAULT_PRESET, **overrides: Any) -> TrainConfig:
    """The configuration of ``stage`` under ``preset``, with ``overrides`` (None values are ignored)."""
    if stage not in STAGES:
        raise InputError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(f"unknown configuration fields: {', '.join(unknown)}")
    given = {key: tuple(v) if isinstance(v, list) else v for key, v in overrides.items() if v is not None}
    return TrainConfig(**{**PRESETS[preset].values(stage), **given})
