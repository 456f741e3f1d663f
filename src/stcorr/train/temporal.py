"""Stage 2 (temporal) and the joint stage: the training step around :func:`stcorr.train.losses.temporal_loss`.

One step on a batch of frame pairs (B, 2, 3, S, S) (reference, target), RGB in [0, 1]:

1. Student input: normalised Lab of both frames with one chroma channel (a or b, one draw per micro-batch
   and process) zeroed and everything x1.5; both frames run through the student as one batch.
2. Pyramid reconstruction of the dropped channel at each local level (official: layer2 at 1/4 with radius
   12, layer3 at 1/8 with radius 6), local correlation distillation layer2 -> layer3 with the uncertainty
   mask, and, with a teacher, global correlation distillation at the student's layer4 (1/32; official) or,
   with ``global_layer="layer3"``, at the exported stride-8 features, optionally with the cosine-KL loss
   (``global_loss="cosine-kl"``, :func:`stcorr.train.losses.cosine_kl_distillation_loss`).
3. The frozen teacher sees its own input space (its ``forward`` takes RGB in [0, 1]: ImageNet-normalised RGB
   for ImageNet teachers, Lab for stcorr models); its features are resized (bilinear, antialiased) to the
   grid of the distilled student layer when the grids differ. Only affinities are compared, so any architecture works.

Teachers (``--teacher``): ``none``; ``efficientnet-lite0`` (ImageNet, from :mod:`stcorr.baselines`, at the
student's layer4 stride); or stcorr/torchvision weights. Weights *with* layer4 (a run folder's
``backbone.safetensors``, a torchvision or official ``.pth``) give the official teacher: layer4 of a
max-pool-stem ResNet at ``teacher_stride``. Inference weights (through layer3 only) give that model's
layer3 features at its stride. Input space: a folder's ``config.json``, ``lab`` for stcorr files and
official releases, ``rgb`` for other ``.pth`` files (torchvision, DetCo); ``teacher_input`` overrides it.

The joint stage (:class:`JointTask`) trains one encoder (the stage-2 student) with
``L_nce + joint_weight * L_temporal``: MoCo views of images through the student's pooled layer4, and frame
pairs as above, in the same step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stcorr.checkpoint import load_state_dict_strict
from stcorr.color import normalize_lab
from stcorr.errors import InputError
from stcorr.manifest import load_manifest
from stcorr.model import LITE_ARCHS, CorrespondenceModel, LiteCorrespondenceModel, model_from_config
from stcorr.train.data import FramePairs, ImageViews, JointSamples, image_items, seeded_generator, video_clips
from stcorr.train.loop import Distributed, Stage, load_init_weights, read_backbone_weights, sum_parts
from stcorr.train.losses import DROPOUT_SCALE, TemporalLossConfig, drop_chroma_channel, temporal_loss
from stcorr.train.presets import TrainConfig
from stcorr.train.spatial import MomentumContrast, check_queue, imagenet_resnet

__all__ = ["Teacher", "load_teacher", "student_encoder", "temporal_parts", "TemporalTask", "JointTask",
           "build_temporal", "build_joint"]

TEACHER_INPUTS = ("auto", "lab", "rgb")
Student = CorrespondenceModel | LiteCorrespondenceModel


class Teacher:
    """A frozen feature extractor kept outside the trained module: not saved, not wrapped by DDP."""

    def __init__(self, network: nn.Module) -> None:
        self.network = network.eval().requires_grad_(False)

    def to(self, device: torch.device) -> Teacher:
        self.network.to(device)
        return self

    @torch.no_grad()
    def __call__(self, rgb: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Features of RGB (N, 3, H, W) in [0, 1] on the ``grid`` (h, w)."""
        features = self.network(rgb)
        if tuple(features.shape[-2:]) != tuple(grid):
            features = F.interpolate(features, size=grid, mode="bilinear", align_corners=False, antialias=True)
        return features


def global_stride(config: TrainConfig) -> int:
    """Output stride of the globally distilled student layer (official layer4: 32 for a stride-8 student)."""
    return config.stride * (config.layer4_stride if config.global_layer == "layer4" else 1)


def _is_packaged_lite(spec: str) -> bool:
    entry = load_manifest().get(spec)
    return entry is not None and entry.kind == "package"


def load_teacher(spec: str | None, config: TrainConfig, input_space: str = "auto") -> Teacher | None:
    """The frozen teacher named by ``spec`` (see the module docstring), on CPU; None for ``none``."""
    if spec is None or spec == "none":
        return None
    if input_space not in TEACHER_INPUTS:
        raise InputError(f"teacher input space must be one of {TEACHER_INPUTS}, got {input_space!r}")
    if spec == "efficientnet-lite0" and config.arch not in LITE_ARCHS:
        from stcorr.baselines import EfficientNetLite0Encoder

        return Teacher(EfficientNetLite0Encoder(stride=global_stride(config)))
    if _is_packaged_lite(spec):
        from stcorr.loading import load_model

        return Teacher(load_model(spec, device="cpu"))
    weights = read_backbone_weights(spec)
    space = weights.input_space if input_space == "auto" else input_space
    if weights.arch in LITE_ARCHS:
        network: nn.Module = model_from_config({"arch": weights.arch, **_lite_options(spec)})
    elif weights.has_layer4:
        network = imagenet_resnet(weights.arch, input_space=space, output_stride=config.teacher_stride)
    else:
        network = CorrespondenceModel(weights.arch, stride=weights.stride, input_space=space)
    load_state_dict_strict(network, weights.state_dict)
    return Teacher(network)


def _lite_options(spec: str) -> dict:
    """Architecture options (stages, projection, blocks) of an EfficientNet-Lite run or model folder."""
    from stcorr.loading import load_model

    return dict(load_model(spec, device="cpu").config)


def resolve_teacher(teacher: str | None, init: str | None) -> str | None:
    """``--teacher auto`` (the default): a frozen copy of ``--init`` (the paper's stage-2 teacher is the
    stage-1 model it starts from), or no teacher when training from random initialisation."""
    if teacher != "auto":
        return teacher
    return None if init in (None, "none") else init


def student_encoder(config: TrainConfig, *, extra_layers: tuple[str, ...] = ()) -> Student:
    """The stage-2 student: a Lab-input ResNet with the local layers plus ``extra_layers`` (layer4 at
    ``layer4_stride``), or an EfficientNet-Lite (ImageNet RGB input; levels layer2 / layer3)."""
    if config.arch in LITE_ARCHS:
        return LiteCorrespondenceModel(config.arch)
    layers = tuple(sorted({*config.local_layers, *extra_layers}))
    return CorrespondenceModel(
        config.arch, stride=config.stride, input_space="lab", layers=layers, layer4_stride=config.layer4_stride
    )


def _loss_config(config: TrainConfig, strides: tuple[int, ...]) -> TemporalLossConfig:
    return TemporalLossConfig(
        radii=tuple(config.radii),
        strides=strides,
        reconstruction_weight=config.reconstruction_weight,
        local_distillation_weight=config.local_distillation_weight,
        global_distillation_weight=config.global_distillation_weight,
        keep_ratio=config.keep_ratio,
        uncertainty=config.uncertainty,  # type: ignore[arg-type]
        teacher_temperature=config.teacher_temperature,
        global_loss=config.global_loss,  # type: ignore[arg-type]
        local_temperature=config.local_temperature,
    )


def temporal_parts(
    student: CorrespondenceModel,
    teacher: Teacher | None,
    frames: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Weighted stage-2 loss parts for frame pairs (B, 2, 3, S, S) (reference, target)."""
    batch = frames.shape[0]
    lab = normalize_lab(frames.flatten(0, 1)).unflatten(0, (batch, 2))
    dropped, channel = drop_chroma_channel(lab, generator)
    network_input = _student_input(student, dropped.flatten(0, 1))
    features = {name: value.unflatten(0, (batch, 2)) for name, value in student.forward_features(network_input).items()}
    local = [features[name] for name in config.local_layers]
    strides = tuple(frames.shape[-1] // level.shape[-1] for level in local)
    values = lab[:, :, channel : channel + 1]
    global_pairs = {}
    if teacher is not None:
        top = features[config.global_layer]
        guide = teacher(frames.flatten(0, 1), tuple(top.shape[-2:])).unflatten(0, (batch, 2))
        global_pairs = dict(student_global=(top[:, 1], top[:, 0]), teacher_global=(guide[:, 1], guide[:, 0]))
    _, parts = temporal_loss(
        [level[:, 1] for level in local],
        [level[:, 0] for level in local],
        target_channel=values[:, 1],
        reference_channel=values[:, 0],
        config=_loss_config(config, strides),
        **global_pairs,
    )
    return parts


def _student_input(student: Student, dropped: torch.Tensor) -> torch.Tensor:
    """Lab students read the official dropped Lab (x1.5); RGB students the same frame converted back to RGB."""
    if isinstance(student, LiteCorrespondenceModel):
        return student.input_from_lab(dropped / DROPOUT_SCALE)
    return dropped


def _freeze_batch_norm(encoder: nn.Module) -> None:
    for module in encoder.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _dropout_generator(config: TrainConfig, rank: int, draw: int) -> torch.Generator:
    return seeded_generator(config.seed, "dropout", rank, draw)


class TemporalTask(nn.Module):
    """Stage 2: ``forward(pairs, draw) -> (total, parts)``; ``encoder`` is the student."""

    def __init__(self, encoder: CorrespondenceModel, teacher: Teacher | None, config: TrainConfig, *, rank: int = 0):
        super().__init__()
        self.encoder, self.teacher, self.config, self.rank = encoder, teacher, config, rank

    def train(self, mode: bool = True) -> TemporalTask:
        """``nn.Module.train``; with ``freeze_bn`` the encoder's BatchNorm layers stay in eval mode."""
        super().train(mode)
        if mode and self.config.freeze_bn:
            _freeze_batch_norm(self.encoder)
        return self

    def forward(self, pairs: torch.Tensor, draw: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        generator = _dropout_generator(self.config, self.rank, draw)
        parts = temporal_parts(self.encoder, self.teacher, pairs, self.config, generator)
        return sum_parts(parts), parts


class JointTask(MomentumContrast):
    """Joint stage: ``forward((pairs, views), draw)``; MoCo on the student's pooled layer4 plus stage 2."""

    def __init__(self, encoder: CorrespondenceModel, teacher: Teacher | None, config: TrainConfig, *, rank: int = 0):
        super().__init__(encoder, config, rank=rank, layer="layer4")
        self.teacher = teacher

    def forward(  # type: ignore[override]
        self, batch: tuple[torch.Tensor, torch.Tensor], draw: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pairs, views = batch
        parts = self.contrastive_parts(views, draw)
        generator = _dropout_generator(self.config, self.rank, draw)
        temporal = temporal_parts(self.encoder, self.teacher, pairs, self.config, generator)
        parts.update({name: self.config.joint_weight * value for name, value in temporal.items()})
        return sum_parts(parts), parts


def _teacher_on(env: Distributed, spec: str | None, config: TrainConfig, teacher_input: str) -> Teacher | None:
    if config.global_distillation_weight == 0:
        return None  # no global term: neither a teacher nor the student's layer4 is needed
    teacher = load_teacher(spec, config, teacher_input)
    return teacher.to(env.device) if teacher is not None else None


def _pairs(config: TrainConfig, data: str) -> FramePairs:
    return FramePairs(video_clips(data, config.cache_short_side, min_frames=config.frame_gap[0] + 1), config)


def build_temporal(
    config: TrainConfig,
    env: Distributed,
    *,
    data: str,
    init: str | None = None,
    teacher: str | None = None,
    teacher_input: str = "auto",
) -> Stage:
    """Stage 2 on the videos under ``data``; ``init``/``teacher`` = weights, ``none`` or None."""
    guide = _teacher_on(env, resolve_teacher(teacher, init), config, teacher_input)
    encoder = student_encoder(config, extra_layers=(config.global_layer,) if guide is not None else ())
    load_init_weights(encoder, init)
    return Stage(TemporalTask(encoder, guide, config, rank=env.rank), _pairs(config, data))


def build_joint(
    config: TrainConfig,
    env: Distributed,
    *,
    data: str,
    images: str | None = None,
    init: str | None = None,
    teacher: str | None = None,
    teacher_input: str = "auto",
) -> Stage:
    """Joint stage: frame pairs from ``data``, MoCo views from ``images`` (default: frames of ``data``)."""
    check_queue(config, env)
    guide = _teacher_on(env, resolve_teacher(teacher, init), config, teacher_input)
    encoder = student_encoder(config, extra_layers=("layer4", config.global_layer))
    load_init_weights(encoder, init)
    clips, items = image_items(images or data, config.cache_short_side, config.frames_per_video)
    dataset = JointSamples(_pairs(config, data), ImageViews(clips, items, config))
    return Stage(JointTask(encoder, guide, config, rank=env.rank), dataset)
