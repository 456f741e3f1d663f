"""The propagation knobs, as one frozen, validated value shared by the kernel, the API, the presets and the CLI."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch

from stcorr.errors import InputError
from stcorr.propagation._backend import BACKENDS

__all__ = ["PropagationOptions", "resolve_options", "DOWNSAMPLING", "SESSION_DIRECTIONS"]

DOWNSAMPLING = ("bilinear", "nearest")
SESSION_DIRECTIONS = ("both", "forward")
_COMPUTE_DTYPES = (None, torch.float32, torch.bfloat16, torch.float16)


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise InputError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class PropagationOptions:
    """How labels are propagated (validated once, when made).

    Attributes:
        context: preceding frames kept in the context, besides the first frame and the anchors.
        radius: half-width of the square search window, in feature cells.
        topk: candidates kept per position, jointly over the context.
        temperature: softmax temperature over the top-k cosine similarities.
        label_downsampling: ``"bilinear"`` (antialiased, default) or ``"nearest"`` (the official protocol)
            for labels going from image to feature grid.
        minmax_normalize: per-channel min-max normalisation before the arg-max (the official DAVIS/VIP step).
        compute_dtype: dtype of the affinity matmuls; None picks bfloat16 on CPUs with native bfloat16
            matmuls, float32 elsewhere. Only the speed depends on it (the kernel ranks exactly).
        sigma: Gaussian sigma in pixels of keypoint heatmaps.
        backend: which kernel propagates: ``"auto"`` (the fused Triton kernel on CUDA when Triton is installed,
            else the torch kernel), ``"triton"`` or ``"torch"`` (:mod:`stcorr.propagation._backend`). Like
            ``compute_dtype`` it changes the speed, not the result.
        directions: how a :class:`~stcorr.propagation.session.PropagationSession` (and
            :func:`stcorr.propagate_labels` with ``anchors``) predicts a frame between two anchors:
            ``"both"`` (default) forward from the earlier anchors and backward from the later one, fused;
            ``"forward"`` from the earlier anchors only (the paper's one-way protocol, which
            ``python -m stcorr.eval`` uses). Frames before the first anchor are predicted backward from it and
            frames after the last one forward in both settings; single-pass functions (``iter_propagate``)
            ignore it.
    """

    context: int = 20
    radius: int = 12
    topk: int = 10
    temperature: float = 0.07
    label_downsampling: str = "bilinear"
    minmax_normalize: bool = False
    compute_dtype: torch.dtype | None = None
    sigma: float = 4.0
    backend: str = "auto"
    directions: str = "both"

    def __post_init__(self) -> None:
        _check_int("context", self.context, 0)
        _check_int("radius", self.radius, 0)
        _check_int("topk", self.topk, 1)
        _check_positive("temperature", self.temperature)
        _check_positive("sigma", self.sigma)
        if self.label_downsampling not in DOWNSAMPLING:
            raise InputError(f"label_downsampling must be one of {DOWNSAMPLING}, got {self.label_downsampling!r}")
        if not isinstance(self.minmax_normalize, bool):
            raise InputError(f"minmax_normalize must be True or False, got {self.minmax_normalize!r}")
        if self.backend not in BACKENDS:
            raise InputError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.directions not in SESSION_DIRECTIONS:
            raise InputError(f"directions must be one of {SESSION_DIRECTIONS}, got {self.directions!r}")
        if self.compute_dtype not in _COMPUTE_DTYPES:
            raise InputError(
                f"compute_dtype must be None, torch.float32, torch.bfloat16 or torch.float16, got {self.compute_dtype}"
            )

    def replace(self, **changes: Any) -> PropagationOptions:
        """A copy with ``changes`` applied (validated); ``None`` keeps a value, except for ``compute_dtype``."""
        known = {field.name for field in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InputError(f"unknown propagation options {unknown}; known: {sorted(known)}")
        given = {k: v for k, v in changes.items() if v is not None or k == "compute_dtype"}
        return dataclasses.replace(self, **given) if given else self

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the compute dtype by name), for JSON."""
        values = dataclasses.asdict(self)
        values["compute_dtype"] = None if self.compute_dtype is None else str(self.compute_dtype).removeprefix("torch.")
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PropagationOptions:
        """Inverse of :meth:`to_dict`."""
        values = dict(values)
        dtype = values.get("compute_dtype")
        if isinstance(dtype, str):
            if dtype not in ("float32", "bfloat16", "float16"):
                raise InputError(f"compute_dtype must be float32, bfloat16 or float16, got {dtype!r}")
            values["compute_dtype"] = getattr(torch, dtype)
        return cls().replace(**values)


def resolve_options(options: PropagationOptions | None, **keywords: Any) -> PropagationOptions:
    """``options`` (default: :class:`PropagationOptions`) with the keyword shorthand applied.

    A keyword given as ``None`` keeps the value of ``options``; ``compute_dtype`` is only taken from the
    keywords when ``options`` is not given (None is a meaningful compute dtype: automatic).
    """
    if options is not None and not isinstance(options, PropagationOptions):
        raise InputError(f"options must be a PropagationOptions, got {type(options).__name__}")
    base = options or PropagationOptions()
    if options is not None and keywords.get("compute_dtype") is None:
        keywords.pop("compute_dtype", None)
    given = {k: v for k, v in keywords.items() if v is not None or k == "compute_dtype"}
    return base.replace(**given) if given else base
