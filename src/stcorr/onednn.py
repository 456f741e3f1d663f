"""Convolutions fused by oneDNN for CPU inference: the activation or residual sum applied inside the convolution,
the weights reordered to oneDNN's layout once per input shape instead of at every call.

PyTorch's eager ``F.conv2d`` on CPU reorders the weights at each call and runs the activation and the residual sum
as separate passes over memory; ``torch.jit.freeze`` and ``torch.compile`` (with freezing) remove both with the
same oneDNN operator this module calls directly (``torch.ops.mkldnn._convolution_pointwise``), without their
deprecation (TorchScript) or their minutes of compilation (inductor). Inference only, float32, CPU; the
operator is a PyTorch internal, so :func:`fusion_available` says whether this PyTorch has it, and callers
check the fused outputs against the plain ones before relying on them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stcorr.errors import InputError

__all__ = ["ACTIVATIONS", "fusion_available", "FusedConv2d"]

ACTIVATIONS = {"none": ("none", []), "relu": ("relu", []), "relu6": ("hardtanh", [0.0, 6.0])}
_PACKED_SHAPES = 4  # input shapes whose reordered weights are kept per convolution


def fusion_available() -> bool:
    """True where this PyTorch has oneDNN and its fused convolution operator."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class FusedConv2d(nn.Module):
    """``activation(conv(x) [+ residual])`` as one oneDNN call, for float32 CPU inference.

    Args:
        conv: the convolution (BatchNorm already folded into it; any bias, groups, stride; dilation 1).
        activation: ``"none"``, ``"relu"`` or ``"relu6"``; applied after the residual sum.

    ``forward(x, padding=None, residual=None)``: ``padding`` is (top, bottom, left, right) for this input
    (default: the convolution's own symmetric padding). A padding one larger after than before (TensorFlow's
    "same" padding of a strided convolution) is computed without a padded copy of ``x``: the kernel gets a
    leading row/column of zeros and the padding becomes symmetric, which reads exactly the same pixels.
    """

    def __init__(self, conv: nn.Conv2d, activation: str = "none") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise InputError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if tuple(conv.dilation) != (1, 1) or not isinstance(conv.padding, tuple):
            raise InputError(f"FusedConv2d takes convolutions with dilation 1 and numeric padding, got dilation "
                             f"{tuple(conv.dilation)} and padding {conv.padding!r}")
        weight = conv.weight.detach().float()
        self.register_buffer("weight", weight.clone())
        bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(weight.shape[0])
        self.register_buffer("bias", bias.clone())
        self.stride = [int(s) for s in conv.stride]
        self.groups = int(conv.groups)
        self.own_padding = (conv.padding[0], conv.padding[0], conv.padding[1], conv.padding[1])
        self.activation = activation
        self._packed: dict[tuple[tuple[int, ...], tuple[int, int, int, int]], tuple[torch.Tensor, list[int]]] = {}

    def _packed_weight(self, x: torch.Tensor, padding: tuple[int, int, int, int]) -> tuple[torch.Tensor, list[int]]:
        """The oneDNN-reordered weight for ``x``'s shape and ``padding``, and the symmetric padding it runs with."""
        key = (tuple(x.shape), padding)
        found = self._packed.get(key)
        if found is None:
            top, bottom, left, right = padding
            weight = F.pad(self.weight, (int(right > left), 0, int(bottom > top), 0))  # leading zeros if needed
            symmetric = [max(top, bottom), max(left, right)]
            packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                weight.contiguous().to_mkldnn(), symmetric, self.stride, [1, 1], self.groups, list(x.shape))
            if len(self._packed) >= _PACKED_SHAPES:
                self._packed.pop(next(iter(self._packed)))
            found = self._packed[key] = (packed, symmetric)
        return found

    def forward(self, x: torch.Tensor, padding: tuple[int, int, int, int] | None = None,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        given = padding if padding is not None else self.own_padding
        top, bottom, left, right = (int(p) for p in given)
        padding = (top, bottom, left, right)
        if bottom - top not in (0, 1) or right - left not in (0, 1):  # no shifted-kernel equivalent: pad a copy
            x = F.pad(x, (left, right, top, bottom)).contiguous(memory_format=torch.channels_last)
            padding = (0, 0, 0, 0)
        x = x.contiguous(memory_format=torch.channels_last)
        weight, symmetric = self._packed_weight(x, padding)
        operator = torch.ops.mkldnn._convolution_pointwise
        attr, scalars = ACTIVATIONS[self.activation]
        if residual is None:
            return operator(x, weight, self.bias, symmetric, self.stride, [1, 1], self.groups, attr, scalars, "")
        unary = None if attr == "none" else attr
        return operator.binary(x, residual.contiguous(memory_format=torch.channels_last), weight, self.bias,
                               symmetric, self.stride, [1, 1], self.groups, "add", None, unary, scalars, None)
