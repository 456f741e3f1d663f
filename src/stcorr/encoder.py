"""The ResNet encoder in the paper's inference and training variants.

Built from torchvision's ResNet definitions so weights keep torchvision key names
(``conv1.weight``, ``bn1.*``, ``layer3.1.conv2.weight``, ...). The variants differ in the stem pool and
the stage strides, never in the parameter set:

========  ==========================  ======================  =============
stride    stem pool                   layer2 / layer3 stride  layer3 output
========  ==========================  ======================  =============
8         none (max-pool removed)     2 / 2                   1/8
4         3x3/s2 average pool         1 / 1                   1/4
========  ==========================  ======================  =============

For training the encoder can also return layer2 and layer4 (layer4 stride configurable; the official
recipe uses 4, putting layer4 at 1/32 with the stride-8 variant).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision
from torch import nn

from stcorr.errors import InputError

__all__ = ["ARCHS", "STRIDES", "LAYERS", "feature_dim", "ResNetEncoder"]

ARCHS = ("resnet18", "resnet50")
STRIDES = (8, 4)
LAYERS = ("layer1", "layer2", "layer3", "layer4")
_STAGE_CHANNELS = {"resnet18": (64, 128, 256, 512), "resnet50": (256, 512, 1024, 2048)}


def feature_dim(arch: str, layer: str = "layer3") -> int:
    """Number of channels of ``layer``'s output for ``arch``."""
    _check_arch(arch)
    return _STAGE_CHANNELS[arch][LAYERS.index(layer)]


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise InputError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")


def _set_stage_stride(stage: nn.Sequential, stride: int) -> None:
    """Put ``stride`` on the first block of a torchvision stage (its 3x3 conv and its downsample)."""
    block = stage[0]
    strided_conv = block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1
    strided_conv.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)
    block.stride = stride


class ResNetEncoder(nn.Module):
    """A torchvision ResNet patched to the paper's stride-8 or stride-4 variant.

    Args:
        arch: ``"resnet18"`` or ``"resnet50"``.
        stride: output stride of layer3, 8 or 4.
        layers: which stage outputs :meth:`forward` returns; modules deeper than the last one are not
            built, so inference weights stop at layer3.
        layer4_stride: stride of layer4's first block, when layer4 is built (torchvision: 2; the
            official training student: 4).
    """

    def __init__(
        self,
        arch: str = "resnet18",
        stride: int = 8,
        layers: Sequence[str] = ("layer3",),
        layer4_stride: int = 2,
    ) -> None:
        super().__init__()
        _check_arch(arch)
        if stride not in STRIDES:
            raise InputError(f"stride must be 8 or 4, got {stride!r}")
        unknown = [name for name in layers if name not in LAYERS]
        if not layers or unknown:
            raise InputError(f"layers must be a non-empty subset of {LAYERS}, got {list(layers)}")
        self.arch = arch
        self.stride = stride
        self.layers = tuple(sorted(set(layers), key=LAYERS.index))
        self.layer4_stride = layer4_stride

        net = getattr(torchvision.models, arch)(weights=None)
        self.conv1, self.bn1, self.relu = net.conv1, net.bn1, net.relu
        self.pool = nn.Identity() if stride == 8 else nn.AvgPool2d(kernel_size=3, stride=2, padding=1)
        if stride == 4:
            _set_stage_stride(net.layer2, 1)
            _set_stage_stride(net.layer3, 1)
        if layer4_stride != 2:
            _set_stage_stride(net.layer4, layer4_stride)
        self.depth = LAYERS.index(self.layers[-1]) + 1
        for name in LAYERS[: self.depth]:
            self.add_module(name, getattr(net, name))

    @property
    def channels(self) -> dict[str, int]:
        """Channels of each returned layer."""
        return {name: feature_dim(self.arch, name) for name in self.layers}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the stem and stages on a normalised input (B, 3, H, W); return the requested outputs."""
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        outputs = {}
        for name in LAYERS[: self.depth]:
            x = getattr(self, name)(x)
            if name in self.layers:
                outputs[name] = x
        return outputs
