"""Feature extraction: frames -> L2-normalised dense features on the encoder's grid."""

from __future__ import annotations

import copy
import logging
import math
import numbers
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from stcorr.device import resolve_device
from stcorr.errors import InputError
from stcorr.io.frames import FrameSource, open_frames
from stcorr.working_size import working_max_side

__all__ = ["extract_features", "iter_features", "encode_batch", "feature_stride", "batch_frames", "check_batch_size",
           "check_fusion_weights", "default_batch_size", "device_type_of", "working_frames", "fold_batchnorm"]

logger = logging.getLogger(__name__)


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


# -- CPU inference twin ---------------------------------------------------------------------------------
# On CPU an eval-mode float32 encoder runs through an inference copy of itself: the model's own
# ``cpu_inference_twin()`` where it has one (the EfficientNet-Lite models: BatchNorm folded, convolutions
# fused with their activation / residual sum by oneDNN, weights reordered once; stcorr.onednn), else a copy
# with every BatchNorm folded into the convolution before it and channels-last weights. Each candidate is
# checked once against the plain forward (features within _TWIN_TOLERANCE), the first that passes runs;
# none passing (or a model without either) keeps the plain forward. The copy is rebuilt whenever a parameter
# or buffer of the model changes (in-place updates bump a tensor's version). Speed: benchmarks/cpu_features.py.

_TWIN_TOLERANCE = 1e-4  # max |difference| of the normalised features of the twin's self-check
_twins: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple[Any, ...], torch.nn.Module]]
_twins = weakref.WeakKeyDictionary()  # model -> (signature of its tensors, its twin)


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` (eval mode; changed in place and returned) with each BatchNorm2d folded into the Conv2d registered
    just before it in the same parent module, the BatchNorm replaced by Identity. Right for stcorr's encoders,
    where every BatchNorm follows the convolution registered before it; check other modules' outputs."""
    for parent in list(model.modules()):
        previous: tuple[str, torch.nn.Conv2d] | None = None
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.BatchNorm2d) and previous is not None and child.track_running_stats:
                conv_name, conv = previous
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, child))
                setattr(parent, name, torch.nn.Identity())
            previous = (name, child) if isinstance(child, torch.nn.Conv2d) else None
    return model


def _signature(model: torch.nn.Module) -> tuple[Any, ...]:
    tensors = [*model.parameters(), *model.buffers()]
    return tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)


def _twin_candidates(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model's own fused CPU twin (``model.cpu_inference_twin()``, if it offers one), then the folded copy."""
    make = getattr(model, "cpu_inference_twin", None)
    if callable(make):
        try:
            twin = make()
        except (RuntimeError, NotImplementedError) as exc:  # oneDNN refused this model: the folded copy runs
            logger.info("no fused CPU twin for %s: %s", type(model).__name__, exc)
            twin = None
        if twin is not None:
            yield twin.eval()
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        yield fold_batchnorm(copy.deepcopy(model)).to(memory_format=torch.channels_last).eval()


def _build_twin(model: torch.nn.Module, rgb: torch.Tensor) -> torch.nn.Module:
    candidates = list(_twin_candidates(model))
    if not candidates:
        return model  # nothing to fold or fuse: no probe forward either
    probe = rgb[:1, :, :64, :64].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = F.normalize(model(probe).float(), dim=1)
        for twin in candidates:
            try:
                difference = float((F.normalize(twin(probe).float(), dim=1) - expected).abs().max())
            except (RuntimeError, NotImplementedError) as exc:
                logger.info("CPU twin %s failed (%s); trying the next", type(twin).__name__, exc)
                continue
            if difference <= _TWIN_TOLERANCE:
                return twin
            logger.info("CPU twin %s differs by %.1e; trying the next", type(twin).__name__, difference)
    return model


def _cpu_runner(model: torch.nn.Module, rgb: torch.Tensor) -> torch.nn.Module:
    """The module that encodes ``rgb`` for ``model`` on CPU: its inference twin, or the model itself."""
    signature = _signature(model)
    cached = _twins.get(model)
    if cached is None or cached[0] != signature:
        cached = (signature, _build_twin(model, rgb))
        _twins[model] = cached
    return cached[1]


def _encode_one(model: torch.nn.Module, rgb: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    device = next(model.parameters()).device
    plain_cpu = device.type == "cpu" and not model.training and dtype in (None, torch.float32)
    with torch.inference_mode(), _autocast(device, dtype):
        rgb = rgb.to(device, non_blocking=True)
        features = _cpu_runner(model, rgb)(rgb.contiguous(memory_format=torch.channels_last)) if plain_cpu \
            else model(rgb)
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


# -- working size ---------------------------------------------------------------------------------------


def device_type_of(model: Encoder) -> str:
    """``"cpu"``, ``"cuda"``, ... : where the (first) model's parameters are (``"cpu"`` if it has none)."""
    parameter = next(_models(model)[0].parameters(), None)
    return parameter.device.type if parameter is not None else "cpu"


def working_frames(frames: Any, model: Encoder, *, max_side: int | None = None, size: tuple[int, int] | None = None,
                   resample: str | None = None) -> FrameSource:
    """``frames`` as a :class:`FrameSource` yielding the working size the ``model`` encodes.

    ``max_side`` is the longest side in pixels, ``0`` the full size; ``None`` (default) is the device's default
    (:func:`stcorr.working_size.default_max_side`: 640 px on CPU, full size on accelerators, as the command
    line), except that an explicit ``size`` (H, W), or a :class:`FrameSource` already opened at a reduced size,
    is kept. Frames are only ever made smaller; ``resample`` is how (:data:`stcorr.io.frames.RESAMPLING`).
    """
    source = frames if isinstance(frames, FrameSource) else open_frames(frames)
    reduced = tuple(source.size) != tuple(source.original_size)
    if max_side is None and (size is not None or reduced):
        side = None
    else:
        side = working_max_side(max_side, device_type_of(model))
    if side is not None and max(source.original_size) <= side:
        side = None  # already small enough: the frames as they are
    if side is None and size is None and resample is None:
        return source if max_side is None or not reduced else source.resized()
    return source.resized(max_side=side, size=size, resample=resample)


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
    max_side: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield each frame's features (C, h, w) in order, encoding ``batch_size`` frames at a time.

    Same inputs and options as :func:`extract_features`; only one batch of frames is in memory at once.
    """
    _prepare(model, device, batch_size)
    check_fusion_weights(model, fusion_weights)
    source = working_frames(frames, model, max_side=max_side)
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
    max_side: int | None = None,
) -> torch.Tensor:
    """L2-normalised features of every frame: float32 (T, C, ceil(H/s), ceil(W/s)) of the working size (H, W).

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
        max_side: encode frames downscaled to this longest side in pixels, ``0`` = full size; default: 640 px
            on CPU and full size on accelerators, as everywhere in stcorr (see :func:`working_frames`; a
            :class:`~stcorr.io.frames.FrameSource` opened at a reduced size keeps it).

    Returns features on the model's device.
    """
    frames_features = iter_features(
        model, frames, batch_size=batch_size, device=device, dtype=dtype, fusion_weights=fusion_weights,
        max_side=max_side,
    )
    return torch.stack(list(frames_features))
