"""Feature extraction: frames -> L2-normalised dense features on the encoder's grid."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from stcorr.device import resolve_device
from stcorr.errors import InputError
from stcorr.io.frames import FrameSource, open_frames

__all__ = ["extract_features", "iter_features", "encode_batch", "feature_stride", "batch_frames", "check_batch_size",
           "check_fusion_weights", "default_batch_size"]


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    if dtype not in (torch.float16, torch.bfloat16):
        raise InputError(f"dtype must be None, torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
    return torch.autocast(device_type=device.type, dtype=dtype)


Encoder = torch.nn.Module | Sequence[torch.nn.Module]


def _models(model: Encoder) -> list[torch.nn.Module]:
    models = list(model) if isinstance(model, Sequence) and not isinstance(model, str) else [model]
    if not models:
        raise InputError("expected a model or a non-empty sequence of models for late fusion, got an empty sequence")
    for m in models:
        if not isinstance(m, torch.nn.Module):
            raise InputError(
                "model must be an encoder nn.Module (a torch.nn.Module such as stcorr.load_model()) or a sequence "
                f"of them for late fusion, got {type(m).__name__}; load one with model = stcorr.load_model()"
            )
    return models


def feature_stride(model: Encoder) -> int:
    """Pixels per feature cell; for late fusion all models must share it."""
    strides = {int(getattr(m, "stride", 0)) for m in _models(model)}
    if len(strides) != 1 or 0 in strides:
        raise InputError(
            f"late fusion needs models with one common `stride` attribute, got strides {sorted(strides)}; "
            "fuse models of the same stride (e.g. a stride-8 R18 with a stride-8 R50)"
        )
    return strides.pop()


def _fusion_weights(count: int, weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * count
    values = list(weights)
    numeric = all(isinstance(w, numbers.Real) and not isinstance(w, bool) for w in values)
    if len(values) != count or not numeric or not all(math.isfinite(w) and w >= 0 for w in values) or not any(
        w > 0 for w in values
    ):
        raise InputError(
            f"fusion_weights must be one finite, non-negative number per model ({count}), not all 0; got {values}"
        )
    return [float(w) for w in values]


def check_fusion_weights(model: Encoder, weights: Sequence[float] | None) -> None:
    """:class:`InputError` unless ``weights`` is None or one finite, non-negative weight per model of ``model``
    (a single model counts as one), not all 0; called before any frame is encoded."""
    _fusion_weights(len(_models(model)), weights)


def _encode_one(model: torch.nn.Module, rgb: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.inference_mode(), _autocast(device, dtype):
        features = model(rgb.to(device, non_blocking=True))
    return F.normalize(features.float(), dim=1)


def encode_batch(
    model: Encoder,
    rgb: torch.Tensor,
    *,
    dtype: torch.dtype | None = None,
    fusion_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Encode a batch of RGB frames in [0, 1], (B, 3, H, W).

    Returns L2-normalised (along channels) float32 features (B, C, ceil(H/s), ceil(W/s)) on the
    (first) model's device. Several models are fused late: each one's normalised features are
    multiplied by its weight, concatenated and normalised again, so the cosine similarity of the
    fusion is the weight**2-weighted mean of the models' cosine similarities.
    """
    models = _models(model)
    weights = _fusion_weights(len(models), fusion_weights)
    if len(models) == 1:
        return _encode_one(models[0], rgb, dtype)
    feature_stride(models)
    parts = [_encode_one(m, rgb, dtype) for m in models]
    device = parts[0].device
    fused = torch.cat([w * part.to(device) for w, part in zip(weights, parts)], dim=1)
    return F.normalize(fused, dim=1)


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` if it is an integer >= 1, else :class:`InputError` (memory grows with it)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        shown = type(batch_size).__name__ if not isinstance(batch_size, numbers.Integral) else repr(batch_size)
        raise InputError(f"batch_size must be a positive int, got {shown} (it is the frames per encoder pass)")
    return int(batch_size)


def default_batch_size(device_type: str) -> int:
    """Frames per encoder pass for streamed work when none is given: 1 on CPU (features come frame by frame,
    so progress never waits for a batch, and batching makes a CPU no faster per frame), 8 on accelerators."""
    return 1 if device_type == "cpu" else 8


def batch_frames(frames: Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """Stack consecutive (3, H, W) frames into batches of ``batch_size`` (the last one may be smaller)."""
    return _batches(frames, check_batch_size(batch_size))


def _batches(frames: Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    batch: list[torch.Tensor] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def _prepare(model: Encoder, device: str | torch.device | None, batch_size: int) -> None:
    check_batch_size(batch_size)
    for m in _models(model):
        if device is not None:
            m.to(resolve_device(device))
        m.eval()


def iter_features(
    model: Encoder,
    frames: Any,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    fusion_weights: Sequence[float] | None = None,
) -> Iterator[torch.Tensor]:
    """Yield each frame's features (C, h, w) in order, encoding ``batch_size`` frames at a time.

    Same inputs and options as :func:`extract_features`; only one batch of frames is in memory at once.
    """
    _prepare(model, device, batch_size)
    check_fusion_weights(model, fusion_weights)
    source = frames if isinstance(frames, FrameSource) else open_frames(frames)
    for batch in batch_frames(source, batch_size):
        yield from encode_batch(model, batch, dtype=dtype, fusion_weights=fusion_weights)


def extract_features(
    model: Encoder,
    frames: Any,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    fusion_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """L2-normalised features of every frame: float32 (T, C, ceil(H/s), ceil(W/s)).

    Args:
        model: a :class:`~stcorr.model.CorrespondenceModel` (any module mapping RGB in [0, 1] to a feature map),
            or a sequence of models to fuse late (see :func:`encode_batch`).
        frames: uint8 array/tensor (T, H, W, 3) or (T, 3, H, W); float in [0, 1]; a list of PIL images;
            a folder of images; or a video path (needs ``stcorr[video]``).
        batch_size: frames encoded per forward pass.
        device: move the model there first; default: leave it where it is (``load_model`` already picks
            CUDA when available).
        dtype: ``torch.bfloat16``/``torch.float16`` to run the encoder under autocast; outputs stay float32.
        fusion_weights: one weight per model for late fusion (default: equal).

    Returns features on the model's device.
    """
    frames_features = iter_features(
        model, frames, batch_size=batch_size, device=device, dtype=dtype, fusion_weights=fusion_weights
    )
    return torch.stack(list(frames_features))
