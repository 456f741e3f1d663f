"""The user-facing model: the encoder plus its configuration, preprocessing and persistence.

A :class:`CorrespondenceModel` is an ``nn.Module`` whose state dict keeps torchvision's ResNet key names.
It carries its configuration (architecture, stride, input space, feature dimension, kept layers), which
:meth:`save_pretrained` writes as ``config.json`` beside ``model.safetensors``; ``push_to_hub`` publishes
the same two files (huggingface_hub's ``PyTorchModelHubMixin``), and ``load_model("hf-hub:org/repo")``
or :meth:`from_pretrained` loads them back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin

from stcorr._atomic import atomic_path, replace_folder
from stcorr._version import __version__
from stcorr.checkpoint import write_safetensors
from stcorr.color import normalize_imagenet, normalize_lab
from stcorr.encoder import ResNetEncoder, feature_dim
from stcorr.errors import InputError, OutputWriteError

__all__ = ["CorrespondenceModel", "INPUT_SPACES", "CONFIG_NAME", "WEIGHTS_NAME", "MODEL_FILES", "write_model_files"]

INPUT_SPACES = ("lab", "rgb")
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_CARD_NAME = "README.md"
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME)


def write_model_files(model: CorrespondenceModel, folder: str | os.PathLike[str]) -> None:
    """Write ``model.safetensors`` then ``config.json`` into ``folder``, each atomically; other files stay.

    Used for run folders; :meth:`CorrespondenceModel.save_pretrained` replaces a whole folder instead.
    """
    folder = Path(folder)
    write_safetensors(model.state_dict(), folder / WEIGHTS_NAME)
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

    def propagate(self, frames: Any, first_labels: Any, **kwargs: Any) -> Any:
        """Propagate ``first_labels`` through ``frames``: ``propagate_labels(self, frames, first_labels, **kwargs)``."""
        from stcorr.propagation.api import propagate_labels

        return propagate_labels(self, frames, first_labels, **kwargs)

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
        from stcorr.loading import load_model

        name = model_id if Path(model_id).is_dir() else f"hf-hub:{model_id}"
        return load_model(
            name, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, device=map_location
        )
