"""One propagation pass, shared by the streaming API and the session: prompts, geometry, decoding.

Labels are given and results returned at the frames' original size; the encoder works at the working size
(:class:`Geometry`). Accepted labels (resolved against the original size (H, W)):

- an integer mask (H, W): ids 0..254, 255 = void (unknown pixels, which carry no label); outputs use the
  same ids;
- soft labels (K, H, W), e.g. one-hot or probabilities: outputs are channel indices 0..K-1;
- keypoints (N, 2) as (x, y) pixels: propagated as Gaussian heatmaps (``sigma`` px, the JHMDB protocol)
  and decoded per frame by the top-5 weighted mean; outputs are (N, 2) points and (N,) scores (the
  decoded heatmap's peak value; 0 and (-1, -1) when the heatmap vanished).

On frames 2 pixels wide an (H, 2) array fits both a mask and H keypoints: uint8 or bool is read as a mask,
floats as keypoints, any other integer dtype raises :class:`InputError` asking which it is.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from stcorr.checks import to_numpy
from stcorr.errors import InputError
from stcorr.features import Encoder, batch_frames, encode_batch, feature_stride, working_frames
from stcorr.io.frames import FrameSource
from stcorr.propagation.heatmaps import decode_heatmaps_topk, draw_gaussian_heatmaps
from stcorr.propagation.kernel import LabelPropagator
from stcorr.propagation.labels import (
    VOID,
    LabelSet,
    confidence_map,
    decode_ids,
    mask_to_onehot,
    mask_to_working,
    resize_soft,
    to_grid,
    upsample,
)
from stcorr.propagation.options import PropagationOptions
from stcorr.propagation.reliability import ReliabilityTracker

__all__ = [
    "FramePrediction",
    "rate",
    "new_tracker",
    "FrameResult",
    "PropagationResult",
    "Geometry",
    "make_prompt",
    "prompt_kind",
    "decode",
    "advance",
    "frame_order",
    "check_anchors",
    "check_points",
    "frames_in_order",
    "features_in_order",
    "working_source",
    "warn_thin_objects",
    "collect",
]

LabelsInput = np.ndarray | torch.Tensor | Sequence[Sequence[float]]
DIRECTIONS = ("forward", "backward")
KEYPOINT_TOPK = 5  # pixels averaged when decoding a keypoint heatmap (the JHMDB protocol)
# An object leading (being the largest label in) fewer feature cells than THIN_CELLS at the working size is
# warned about: on vtest.avi at max_side=240 the two walkers leading 0 cells vanish from frame 1, one leading
# 1 cell at 320 keeps a quarter of its area; the advice is the max_side where it leads SAFE_CELLS (kept there).
THIN_CELLS = 2
SAFE_CELLS = 4

logger = logging.getLogger(__name__)


@dataclass
class FramePrediction:
    """The prediction for frame ``t``. Unpacks as ``(t, labels, confidence)`` for masks and soft labels,
    ``(t, points, point_scores)`` for keypoints."""

    t: int
    ids: tuple[int, ...] = ()  # the id of each label channel (point index for keypoints)
    labels: np.ndarray | None = None  # (H, W) uint8 ids
    confidence: np.ndarray | None = None  # (H, W) float32 in [0, 1]
    probabilities: np.ndarray | None = None  # (K, H, W) float32, on request
    points: np.ndarray | None = None  # (N, 2) float32 (x, y) pixels
    point_scores: np.ndarray | None = None  # (N,) float32
    visible: np.ndarray | None = None  # (N,) bool, keypoints tracked with visibility (track_points)
    # object id -> [0, 1], higher = more likely right (masks and soft labels; :mod:`.reliability`)
    reliability: dict[int, float] | None = None

    def __iter__(self) -> Iterator[Any]:
        if self.points is not None:
            return iter((self.t, self.points, self.point_scores))
        return iter((self.t, self.labels, self.confidence))


FrameResult = FramePrediction
"""What a :class:`~stcorr.propagation.session.PropagationSession` yields per frame (the same type)."""


@dataclass
class PropagationResult:
    """Labels of every frame at input resolution (see :func:`propagate_labels`)."""

    labels: np.ndarray | None  # (T, H, W) uint8 ids; None for keypoints
    confidence: np.ndarray | None  # (T, H, W) float32; None for keypoints
    ids: tuple[int, ...]  # the id of each label channel
    probabilities: np.ndarray | None = None  # (T, K, H, W) float32 when requested
    points: np.ndarray | None = None  # (T, N, 2) for keypoints
    point_scores: np.ndarray | None = None  # (T, N) for keypoints
    visible: np.ndarray | None = None  # (T, N) bool for keypoints given at one frame (see track_points)
    reliability: list[dict[int, float]] | None = None  # per frame: object id -> [0, 1]; None for keypoints


@dataclass(frozen=True)
class _Prompt:
    """First (or anchor) labels, prepared for the feature grid."""

    kind: str  # "mask", "soft" or "points"
    grid: torch.Tensor  # (K, h, w)
    labels: LabelSet
    image: FramePrediction  # what the annotated frame itself outputs


@dataclass(frozen=True)
class Geometry:
    """Where a propagation works and answers: frames are encoded at ``working`` size, results come at ``original``."""

    working: tuple[int, int]  # (H, W) the encoder sees
    original: tuple[int, int]  # (H, W) of the frames as given; labels in and out are at this size
    stride: int

    @classmethod
    def of(cls, source: FrameSource, model: Encoder) -> Geometry:
        return cls(tuple(source.size), tuple(source.original_size), feature_stride(model))

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the feature grid: ceil(working size / stride)."""
        return math.ceil(self.working[0] / self.stride), math.ceil(self.working[1] / self.stride)


def _as_array(labels: LabelsInput) -> np.ndarray:
    return to_numpy(labels)


def _prompt_kind(array: np.ndarray, size: tuple[int, int], what: str = "first labels") -> str:
    if array.shape == size and size[1] == 2:  # (H, 2): a mask of a 2-pixel-wide video, or H keypoints
        return _mask_or_points(array, what)
    if array.shape == size:
        return "mask"
    if array.ndim == 3 and array.shape[1:] == size:
        return "soft"
    if array.ndim == 2 and array.shape[1] == 2:
        return "points"
    raise InputError(
        f"{what} of shape {array.shape} do not fit frames of size {size}: expected an integer mask "
        f"{size}, soft labels (K, {size[0]}, {size[1]}), or keypoints (N, 2); resize the mask to the frames "
        "(nearest neighbour) or open the frames at the mask's size"
    )


def _mask_or_points(array: np.ndarray, what: str) -> str:
    """The rule for an (H, 2) array on frames H pixels high and 2 wide: uint8 or bool is a mask (as read from a
    mask PNG), floats are keypoints; any other integer dtype is ambiguous (:class:`InputError`)."""
    if array.dtype == np.uint8 or array.dtype == np.bool_:
        return "mask"
    if array.dtype.kind == "f":
        return "points"
    raise InputError(
        f"{what} of shape {array.shape} and dtype {array.dtype} could be a mask of these {array.shape[0]}x2-pixel "
        "frames or as many (x, y) keypoints; say which: a mask as uint8 (np.asarray(mask, np.uint8)), keypoints "
        "as floats (np.asarray(points, np.float32))"
    )


def _soft_labels(array: np.ndarray) -> torch.Tensor:
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)) or array.min() < 0:
        raise InputError("soft labels must be finite, non-negative numbers (one channel per label)")
    if array.shape[0] < 1 or array.shape[0] > 255:
        raise InputError(f"soft labels need 1 to 255 channels, got {array.shape[0]}")
    if not array.any():
        raise InputError("soft labels are all zero: at least one pixel must carry a label")
    return torch.from_numpy(array.astype(np.float32))


def check_points(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, 2) (x, y) pixels inside an image of ``size`` (H, W), as float32 (:class:`InputError` otherwise)."""
    height, width = size
    if points.dtype.kind not in "iuf":
        example = points[0].tolist() if len(points) else []
        raise InputError(f"keypoints must be numbers, (N, 2) (x, y) pixels; got dtype {points.dtype} (e.g. {example})")
    points = points.astype(np.float32)
    if len(points) == 0:
        raise InputError("no keypoints given: expected (N, 2) (x, y) pixels with N >= 1")
    inside = (points[:, 0] >= 0) & (points[:, 0] <= width - 1) & (points[:, 1] >= 0) & (points[:, 1] <= height - 1)
    if not np.all(np.isfinite(points)) or not inside.all():
        bad = np.flatnonzero(~inside | ~np.isfinite(points).all(1)).tolist()
        raise InputError(
            f"keypoints {bad} lie outside the {width}x{height} image; (x, y) must be within "
            f"[0, {width - 1}] x [0, {height - 1}] pixels"
        )
    return points


def prompt_kind(labels: LabelsInput, size: tuple[int, int], what: str = "first labels") -> str:
    """``"mask"``, ``"soft"`` or ``"points"``: what ``labels`` are for frames of (original) ``size``
    (:class:`InputError` naming them ``what`` if they fit none)."""
    return _prompt_kind(_as_array(labels), size, what)


def make_prompt(
    labels: LabelsInput, t: int, geometry: Geometry, grid: tuple[int, int], options: PropagationOptions,
    return_probabilities: bool = False, ids: Sequence[int] | None = None, what: str = "first labels",
) -> _Prompt:
    """Labels given at the original size, as the (K, h, w) grid labels of the working size and the frame's output.

    A mask becomes one channel per id of ``ids`` (default: the ids it holds), brought to the working size by
    :func:`~stcorr.propagation.labels.mask_to_working` (area averaging of the one-hot map; PIL nearest for
    ``label_downsampling="nearest"``); soft labels and keypoint heatmaps are resized bilinearly.
    """
    array = _as_array(labels)
    kind = _prompt_kind(array, geometry.original, what)
    original, working = geometry.original, geometry.working
    if kind == "points":
        points = check_points(array, original)
        heatmaps = resize_soft(draw_gaussian_heatmaps(points, original, options.sigma), working)
        label_set = LabelSet(tuple(range(len(points))))
        if ids is not None and tuple(ids) != label_set.ids:
            raise InputError(f"anchor keypoints are {len(points)} points, the other anchors {len(ids)}")
        image = FramePrediction(t, label_set.ids, points=points, point_scores=np.ones(len(points), np.float32))
        return _Prompt("points", to_grid(heatmaps, grid, geometry.stride, "bilinear"), label_set, image)
    if kind == "soft":
        probs = _soft_labels(array)
        if ids is not None and len(ids) != len(probs):
            raise InputError(f"anchor soft labels have {len(probs)} channels, the other anchors {len(ids)}")
        label_set = LabelSet(tuple(range(len(probs))))
        frame_ids = decode_ids(probs, label_set)
        small = resize_soft(probs, working)
    else:
        probs, label_set = mask_to_onehot(array, ids)
        frame_ids = array.astype(np.uint8)
        small = mask_to_working(array, probs, label_set, working, options.label_downsampling)
    image = FramePrediction(t, label_set.ids, labels=frame_ids, confidence=np.ones(original, np.float32),
                            probabilities=probs.numpy() if return_probabilities else None)
    return _Prompt(kind, to_grid(small, grid, geometry.stride, options.label_downsampling), label_set, image)


def decode(
    t: int, grid_probs: torch.Tensor, kind: str, labels: LabelSet, geometry: Geometry, options: PropagationOptions,
    return_probabilities: bool = False,
) -> FramePrediction:
    """Grid soft labels (K, h, w) -> the frame's prediction at the original size: probabilities are upsampled
    to the working size (the encoder's padded geometry), then bilinearly to the original size, before the
    arg-max (or, for keypoints, the top-5 decoding)."""
    full = resize_soft(upsample(grid_probs, geometry.working, geometry.stride), geometry.original)
    if kind == "points":
        coords, scores = decode_heatmaps_topk(full, k=KEYPOINT_TOPK)
        return FramePrediction(t, labels.ids, points=coords.cpu().numpy().astype(np.float32),
                               point_scores=scores.cpu().numpy().astype(np.float32))
    return FramePrediction(
        t,
        labels.ids,
        labels=decode_ids(full, labels, minmax=options.minmax_normalize),
        confidence=confidence_map(full),
        probabilities=full.cpu().numpy() if return_probabilities else None,
    )


def rate(prediction: FramePrediction, tracker: ReliabilityTracker | None, *, anchor: bool = False) -> FramePrediction:
    """``prediction`` with its per-object ``reliability`` from ``tracker`` (the tracker of its pass, which it
    updates): 1 for an anchor (which becomes the reference of the frames after it). Keypoints: unchanged."""
    if tracker is None or prediction.labels is None:
        return prediction
    if anchor:
        values = tracker.anchor(prediction.labels, prediction.ids)
    else:
        values = tracker.observe(prediction.labels, prediction.confidence, prediction.ids)
    return replace(prediction, reliability=values)


def new_tracker(kind: str, geometry: Geometry) -> ReliabilityTracker | None:
    """The reliability tracker of a pass over labels of ``kind`` (None for keypoints), measuring on one sample
    per feature cell of the original frames."""
    if kind == "points":
        return None
    scale = max(o / w for o, w in zip(geometry.original, geometry.working))
    return ReliabilityTracker(max(1, round(geometry.stride * scale)))


def advance(propagator: LabelPropagator, features: torch.Tensor, anchor: _Prompt | None) -> torch.Tensor:
    """One frame of a pass: an anchor joins the fixed context (its grid labels are returned); any other
    frame is predicted and joins the window of previous frames. Returns (K, h, w) grid labels."""
    if anchor is not None:
        grid = anchor.grid.to(features.device)
        propagator.add_anchor(features, grid)
        return grid
    return propagator.step(features)[0]


def frame_order(count: int, start: int, direction: str) -> range:
    """The frames of one pass from ``start`` (an integer in [0, count)) in ``direction``."""
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if isinstance(start, bool) or not isinstance(start, numbers.Integral):
        raise InputError(f"start must be a frame index (an integer), got {start!r} ({type(start).__name__})")
    if not 0 <= start < count:
        raise InputError(f"start frame {start} is outside the video's {count} frames")
    return range(start, count) if direction == "forward" else range(start, -1, -1)


def check_anchors(anchors: Any, count: int, start: int, direction: str | None = None) -> dict[int, LabelsInput]:
    """``anchors`` as ``{frame: labels}``: a mapping whose keys are integers in [0, count) other than ``start``
    and, for one pass in ``direction``, on the frames that pass reaches (:class:`InputError` otherwise, before
    any feature work: an anchor a pass never meets would otherwise be dropped unnoticed)."""
    if anchors is None:
        return {}
    if not isinstance(anchors, Mapping):
        raise InputError(
            f"anchors must be a dict {{frame index: labels}}, e.g. anchors={{10: mask_of_frame_10}}; "
            f"got a {type(anchors).__name__}"
        )
    checked: dict[int, LabelsInput] = {}
    for t, labels in anchors.items():
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise InputError(f"anchor frame indices must be integers, got {t!r} ({type(t).__name__})")
        if not 0 <= t < count:
            raise InputError(f"the anchor at frame {t} is outside the video's {count} frames (0..{count - 1})")
        if t == start:
            raise InputError(f"the anchor at frame {t} is the start frame; give those labels as first_labels")
        if direction is not None and (t < start if direction == "forward" else t > start):
            side = "before" if direction == "forward" else "after"
            raise InputError(
                f"the anchor at frame {t} lies {side} start={start}, so a {direction} pass never reaches it; "
                "give anchors on the pass's side of start, or use propagate_labels / PropagationSession, "
                "which run both directions"
            )
        checked[int(t)] = labels
    return checked


def frames_in_order(source: FrameSource, order: range) -> Iterator[torch.Tensor]:
    """Frames in ``order``: forward passes stream; backward passes use :meth:`FrameSource.iter_backward`."""
    if order.step < 0:
        yield from source.iter_backward(order.start)
        return
    for index, frame in enumerate(source):
        if index >= order.start:
            yield frame


def features_in_order(model: Encoder, source: FrameSource, order: range, batch_size: int,
                      dtype: torch.dtype | None, fusion_weights: Sequence[float] | None) -> Iterator[torch.Tensor]:
    """Features of the frames of ``order`` (a forward or backward range), encoded ``batch_size`` at a time."""
    for batch in batch_frames(frames_in_order(source, order), batch_size):
        yield from encode_batch(model, batch, dtype=dtype, fusion_weights=fusion_weights)


def working_source(frames: Any, model: Encoder, *, max_side: int | None = None, size: tuple[int, int] | None = None,
                   resample: str | None = None) -> FrameSource:
    """``frames`` as a :class:`FrameSource` yielding the working size of ``model``'s device:
    :func:`stcorr.features.working_frames` (``max_side`` None: 640 px on CPU, full size on accelerators;
    0: full size; an explicit ``size``, or a source already opened at a reduced size, is kept)."""
    return working_frames(frames, model, max_side=max_side, size=size, resample=resample)


# -- objects the working size makes too small ---------------------------------------------------------------


def _leading_cells(mask: np.ndarray, ids: Sequence[int], working: tuple[int, int], stride: int,
                   method: str) -> dict[int, int]:
    """Per id: the feature cells where it is the largest label once ``mask`` is brought to the grid of the
    working size (as :func:`make_prompt` does), i.e. where propagation can pick it up again."""
    order = sorted({0, *ids})
    kept = np.where(np.isin(mask, order), mask, 0)  # other ids count as background here
    onehot, labels = mask_to_onehot(kept, order)
    small = mask_to_working(kept, onehot, labels, working, method)
    grid = (math.ceil(working[0] / stride), math.ceil(working[1] / stride))
    winner = to_grid(small, grid, stride, method).argmax(dim=0)
    return {i: int((winner == order.index(i)).sum()) for i in ids}


def _size_for(original: tuple[int, int], max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(original))
    return max(1, round(original[0] * scale)), max(1, round(original[1] * scale))


def _keeping_max_side(mask: np.ndarray, ids: Sequence[int], geometry: Geometry, method: str) -> int | None:
    """The smallest ``max_side`` (a multiple of 32 above the working size's) at which every one of ``ids`` leads
    :data:`SAFE_CELLS` cells; None when even the full size does not."""
    full = max(geometry.original)
    for side in [*range((max(geometry.working) // 32 + 1) * 32, full, 32), full]:
        cells = _leading_cells(mask, ids, _size_for(geometry.original, side), geometry.stride, method)
        if min(cells.values()) >= SAFE_CELLS:
            return side
    return None


def warn_thin_objects(labels: LabelsInput, geometry: Geometry, options: PropagationOptions, *,
                      what: str = "the first labels") -> list[int]:
    """Log a warning naming each object (mask id other than 0) that leads fewer than :data:`THIN_CELLS` feature
    cells at the working size (such an object is likely lost after a frame or two), with the ``max_side`` that
    keeps it. Returns those ids. Soft labels and keypoints are not checked."""
    array = _as_array(labels)
    if array.shape != tuple(geometry.original) or array.dtype.kind not in "iu":
        return []
    ids = [int(i) for i in np.unique(array) if i not in (0, VOID)]
    cells = _leading_cells(array, ids, geometry.working, geometry.stride, options.label_downsampling)
    thin = [i for i in ids if cells[i] < THIN_CELLS]
    if not thin:
        return []
    keeping = _keeping_max_side(array, thin, geometry, options.label_downsampling)
    height, width = geometry.working
    advice = (f"max_side={keeping} or more keeps {'it' if len(thin) == 1 else 'them'}" if keeping is not None
              else f"even the full size (max_side=0) gives fewer than {SAFE_CELLS} cells")
    shown = ", ".join(f"{i} ({cells[i]} cell{'s' if cells[i] != 1 else ''})" for i in thin)
    logger.warning(
        "%s: object%s %s lead%s fewer than %d feature cells at the working size %dx%d (max_side=%d) and may vanish "
        "from the next frames; %s",
        what, "s" if len(thin) > 1 else "", shown, "" if len(thin) > 1 else "s", THIN_CELLS, width, height,
        max(geometry.working), advice,
    )
    return thin


def _stack(values: list[np.ndarray | None]) -> np.ndarray | None:
    return None if values[0] is None else np.stack(values)  # type: ignore[arg-type]


def collect(predictions: list[FramePrediction | None]) -> PropagationResult:
    frames = [p for p in predictions if p is not None]
    return PropagationResult(
        labels=_stack([p.labels for p in frames]),
        confidence=_stack([p.confidence for p in frames]),
        ids=frames[0].ids,
        probabilities=_stack([p.probabilities for p in frames]),
        points=_stack([p.points for p in frames]),
        point_scores=_stack([p.point_scores for p in frames]),
        visible=_stack([p.visible for p in frames]),
        reliability=None if frames[0].reliability is None else [dict(p.reliability or {}) for p in frames],
    )
