"""The user-facing model: the encoder plus its configuration, preprocessing and persistence.

A :class:`CorrespondenceModel` is an ``nn.Module`` whose state dict keeps torchvision's ResNet key names.
It carries its configuration (architecture, stride, input space, feature dimension, kept layers), which
:meth:`save_pretrained` writes as ``config.json`` beside ``model.safetensors``; ``push_to_hub`` publishes
the same two files (huggingface_hub's ``PyTorchModelHubMixin``), and ``load_model("hf-hub:org/repo")``
or :meth:`from_pretrained` loads them back. The model owns this format (:meth:`from_folder`,
:meth:`from_hub`, :meth:`from_state`); :mod:`stcorr.loading` resolves every other way of naming weights
onto these.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from safetensors.torch import save_file

from stcorr._atomic import atomic_path
from stcorr._version import __version__
from stcorr.checkpoint import detect_arch, load_state_dict_strict, read_safetensors
from stcorr.color import normalize_imagenet, normalize_lab
from stcorr.device import resolve_device
from stcorr.encoder import ResNetEncoder, feature_dim
from stcorr.errors import CheckpointError, InputError, WeightsUnavailableError
from stcorr.hub import fetch_hub_file
from stcorr.propagation.api import PropagationResult, propagate_labels
from stcorr.propagation.options import PropagationOptions
from stcorr.propagation.session import PropagationSession

__all__ = ["CorrespondenceModel", "INPUT_SPACES", "CONFIG_NAME", "WEIGHTS_NAME"]

INPUT_SPACES = ("lab", "rgb")
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
HF_PREFIX = "hf-hub:"

logger = logging.getLogger(__name__)


class CorrespondenceModel(
    ResNetEncoder,
    PyTorchModelHubMixin,
    library_name="stcorr",
    tags=["video-correspondence", "label-propagation"],
    repo_url="https://github.com/qianduoduolr/Spa-then-Temp",
    paper_url="https://openaccess.thecvf.com/content/CVPR2023/html/Li_Spatial-Then-Temporal_Self-Supervised_Learning_for_Video_Correspondence_CVPR_2023_paper.html",
):
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
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.parameters()).device

    @property
    def config(self) -> dict[str, Any]:
        """The configuration written to ``config.json``."""
        return {
            "arch": self.arch,
            "stride": self.stride,
            "input_space": self.input_space,
            "layers": list(self.layers),
            "layer4_stride": self.layer4_stride,
            "feature_dim": self.feature_dim,
            "library": "stcorr",
            "stcorr_version": __version__,
        }

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

    def propagate(self, frames: Any, first_labels: Any, **kwargs: Any) -> PropagationResult:
        """Propagate ``first_labels`` through ``frames``: ``propagate_labels(self, frames, first_labels, **kwargs)``."""
        return propagate_labels(self, frames, first_labels, **kwargs)

    def session(
        self, frames: Any, options: PropagationOptions | None = None, *, max_side: int | None = None, **kwargs: Any
    ) -> PropagationSession:
        """An interactive :class:`~stcorr.propagation.session.PropagationSession` of this model on ``frames``."""
        return PropagationSession(self, frames, options=options, max_side=max_side, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write ``model.safetensors`` and ``config.json`` atomically (used by ``save_pretrained``)."""
        tensors = {key: value.detach().contiguous().cpu() for key, value in self.state_dict().items()}
        with atomic_path(Path(save_directory) / WEIGHTS_NAME) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt", "library": "stcorr"})
        with atomic_path(Path(save_directory) / CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state_dict: dict[str, torch.Tensor], source: str
    ) -> CorrespondenceModel:
        """Build a model from a config dictionary and load ``state_dict`` strictly (CPU, train mode)."""
        try:
            model = cls.from_config(config)
        except (InputError, TypeError) as exc:
            raise CheckpointError(f"invalid model config for {source}: {exc}") from exc
        load_state_dict_strict(model, state_dict)
        logger.info("loaded %s (%s, stride %d)", source, model.arch, model.stride)
        return model

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], *, stride: int | None = None) -> CorrespondenceModel:
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
    ) -> CorrespondenceModel:
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
    ) -> CorrespondenceModel:
        """A Hub repo holding ``config.json`` + ``model.safetensors`` (``org/repo[@revision]``)."""
        repo_id, _, pinned = repo.partition("@")
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
    ) -> CorrespondenceModel:
        """Used by ``from_pretrained``: a local folder or a Hub repo id, loaded strictly."""
        if Path(model_id).is_dir():
            model = cls.from_folder(model_id)
        else:
            model = cls.from_hub(model_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
        return model.to(resolve_device(map_location)).eval()


def with_stride(config: dict[str, Any], stride: int | None) -> dict[str, Any]:
    """``config`` with its stride replaced by ``stride`` when given."""
    return {**config, "stride": stride} if stride is not None else dict(config)


def read_config(path: Path) -> dict[str, Any]:
    """A ``config.json`` as a dictionary (:class:`CheckpointError` if unreadable)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read model config {path}: {exc}") from exc


def config_from_keys(state_dict: dict[str, torch.Tensor], stride: int | None, source: Path) -> dict[str, Any]:
    """The config of a checkpoint that carries none: architecture from its keys, ``stride`` as given."""
    if stride is None:
        raise InputError(
            f"{source} carries no config, so its stride is unknown: pass stride=8 or stride=4 "
            "(for the authors' releases, the stride is in the file's name in the model zoo: *_d8 / *_d4), "
            "or use a manifest name, whose entry states the stride"
        )
    return {"arch": detect_arch(state_dict), "stride": stride, "input_space": "lab", "layers": ["layer3"]}
