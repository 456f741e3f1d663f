"""DAVIS-2017 semi-supervised J&F, computed like the official ``davis2017-evaluation`` tool.

Definitions:

* **J** (region similarity) is the IoU of the predicted and ground-truth masks of one object in one
  frame; 1 when both are empty.
* **F** (boundary F-measure) compares 1-px boundary maps (:func:`boundary_map`). A boundary pixel
  matches when it lies within a disk of radius ``ceil(bound_th * sqrt(H^2 + W^2))`` pixels
  (8 px at 480x854) of the other map's boundary. Empty boundaries follow the reference table:
  empty prediction vs non-empty GT gives P=1, R=0; non-empty vs empty gives P=0, R=1; both empty
  gives P=R=1. F = 2PR / (P + R), or 0 when P + R = 0.
* **Semi-supervised protocol**: objects are ``1 .. max id`` of the first GT frame after replacing
  void (255) by background; only frames ``1 .. T-2`` are scored (first and last excluded); a
  predicted id above the object count is an error, exactly as the official tool refuses it.
* **Statistics per object** (:func:`statistics`): mean, recall (fraction of frames > 0.5) and
  decay (mean of the first quarter minus mean of the last quarter of the frames, quarters sharing
  their edge frames). Dataset means pool every object of every sequence.

Deviation: the official tool casts the decay bin edges to ``uint8``, which wraps for more than 256
evaluated frames; here the edges are plain integers. Results are identical for N <= 256 frames.

Values are fractions in [0, 1], as in the official CSV files.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import NamedTuple

import numpy as np

from stcorr.errors import InputError

__all__ = [
    "BOUND_TH",
    "VOID_ID",
    "Statistics",
    "ObjectScores",
    "DavisSummary",
    "region_similarity",
    "boundary_map",
    "boundary_radius",
    "dilate_disk",
    "boundary_precision_recall",
    "boundary_f_measure",
    "statistics",
    "count_objects",
    "evaluated_frame_indices",
    "score_sequence",
    "summarize",
]

BOUND_TH = 0.008
"""Default boundary tolerance, as a fraction of the image diagonal."""
VOID_ID = 255
"""Void label of DAVIS annotations; background in the semi-supervised protocol."""


class Statistics(NamedTuple):
    """Per-object summary of per-frame values."""

    mean: float
    recall: float
    decay: float


# ------------------------------------------------------------------------------------------------
# Per-frame measures


def _as_mask(mask: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise InputError(f"{name} must be a 2-D (H, W) mask, got shape {array.shape}")
    return array.astype(bool, copy=False)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    if pred.shape != gt.shape:
        raise InputError(f"pred and gt masks differ in size: {pred.shape} vs {gt.shape}")
    return pred, gt


def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """J: intersection over union of two boolean masks; 1.0 when both are empty."""
    pred, gt = _check_pair(pred, gt)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """1-px boundary of a binary mask, shifted half a pixel towards the origin.

    A pixel is on the boundary when its value differs from its right, lower or lower-right
    neighbour. The last row compares only with the right neighbour, the last column only with the
    lower one, and the bottom-right pixel is never a boundary pixel. A full mask has no boundary.
    """
    seg = _as_mask(mask, "mask")
    bmap = np.zeros_like(seg)
    core = seg[:-1, :-1]
    bmap[:-1, :-1] = (core != seg[:-1, 1:]) | (core != seg[1:, :-1]) | (core != seg[1:, 1:])
    bmap[-1, :-1] = seg[-1, :-1] != seg[-1, 1:]
    bmap[:-1, -1] = seg[:-1, -1] != seg[1:, -1]
    return bmap


def boundary_radius(shape: tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """Match tolerance in pixels: ``ceil(bound_th * diagonal)`` if ``bound_th < 1``, else ``bound_th``.

    A ``bound_th >= 1`` is a radius in pixels and must be a whole number.
    """
    if bound_th <= 0:
        raise InputError(f"bound_th must be positive, got {bound_th}")
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise InputError(f"a bound_th >= 1 is a radius in pixels and must be whole, got {bound_th}")
        return int(bound_th)
    height, width = shape
    return math.ceil(bound_th * math.sqrt(height * height + width * width))


def _disk_half_widths(radius: int) -> list[int]:
    """Half-width of each row ``dy = -radius .. radius`` of the digital disk ``dx^2 + dy^2 <= r^2``."""
    return [math.isqrt(radius * radius - dy * dy) for dy in range(-radius, radius + 1)]


def dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by the digital disk ``{(dx, dy): dx^2 + dy^2 <= radius^2}``.

    Pixels outside the image count as background. The disk is processed row by row: each row of
    the disk is a horizontal segment, applied with a running sum and then shifted vertically.
    """
    seg = _as_mask(mask, "mask")
    if radius < 0:
        raise InputError(f"radius must be >= 0, got {radius}")
    height, width = seg.shape
    prefix = np.zeros((height, width + 1), dtype=np.int32)
    np.cumsum(seg, axis=1, dtype=np.int32, out=prefix[:, 1:])
    columns = np.arange(width)
    by_half_width: dict[int, np.ndarray] = {}
    out = np.zeros_like(seg)
    for dy, half in zip(range(-radius, radius + 1), _disk_half_widths(radius)):
        if abs(dy) >= height:
            continue
        if half not in by_half_width:
            lo = np.clip(columns - half, 0, width)
            hi = np.clip(columns + half + 1, 0, width)
            by_half_width[half] = (prefix[:, hi] - prefix[:, lo]) > 0
        rows = by_half_width[half]
        if dy >= 0:
            out[: height - dy] |= rows[dy:]
        else:
            out[-dy:] |= rows[: height + dy]
    return out


def _crop_to_content(*maps: np.ndarray) -> tuple[np.ndarray, ...]:
    """Crop boundary maps to the bounding box of their union (matches are only counted there)."""
    union = np.logical_or.reduce(maps)
    rows = np.flatnonzero(union.any(axis=1))
    cols = np.flatnonzero(union.any(axis=0))
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return tuple(m[window] for m in maps)


def boundary_precision_recall(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> tuple[float, float]:
    """Boundary precision and recall of ``pred`` against ``gt`` (see the module doc for empty maps)."""
    pred, gt = _check_pair(pred, gt)
    pred_boundary, gt_boundary = boundary_map(pred), boundary_map(gt)
    n_pred, n_gt = np.count_nonzero(pred_boundary), np.count_nonzero(gt_boundary)
    if n_pred == 0 or n_gt == 0:
        return (1.0 if n_pred == 0 else 0.0), (1.0 if n_gt == 0 else 0.0)
    radius = boundary_radius(pred.shape, bound_th)
    pred_boundary, gt_boundary = _crop_to_content(pred_boundary, gt_boundary)
    pred_matched = np.count_nonzero(pred_boundary & dilate_disk(gt_boundary, radius))
    gt_matched = np.count_nonzero(gt_boundary & dilate_disk(pred_boundary, radius))
    return pred_matched / float(n_pred), gt_matched / float(n_gt)


def boundary_f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """F: harmonic mean of boundary precision and recall; 0 when both are 0."""
    precision, recall = boundary_precision_recall(pred, gt, bound_th)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


# ------------------------------------------------------------------------------------------------
# Per-object statistics


def _decay_bin_edges(n: int) -> np.ndarray:
    """Indices of the 5 edges of the 4 decay bins over ``n`` frames (no uint8 wrap)."""
    return (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)


def statistics(values: Sequence[float] | np.ndarray) -> Statistics:
    """Mean, recall (fraction > 0.5) and decay of one object's per-frame values.

    Decay = mean(bin 0) - mean(bin 3), the bins spanning edges ``round(linspace(1, N, 5)) - 1``
    inclusively (neighbouring bins share their edge frame). No values gives NaN everywhere.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise InputError(f"values must be 1-D, got shape {array.shape}")
    if array.size == 0:
        return Statistics(math.nan, math.nan, math.nan)
    edges = _decay_bin_edges(array.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(array))
        recall = float(np.mean(array > 0.5))
        decay = float(np.nanmean(array[edges[0] : edges[1] + 1]) - np.nanmean(array[edges[3] : edges[4] + 1]))
    return Statistics(mean, recall, decay)


# ------------------------------------------------------------------------------------------------
# Sequences and datasets


@dataclass(frozen=True)
class ObjectScores:
    """Per-frame J and F of one object of one sequence (evaluated frames only)."""

    sequence: str
    object_id: int
    j: np.ndarray = field(repr=False)
    f: np.ndarray = field(repr=False)

    @property
    def key(self) -> str:
        """``<sequence>_<object id>``, the official per-object key."""
        return f"{self.sequence}_{self.object_id}"

    @property
    def j_stats(self) -> Statistics:
        return statistics(self.j)

    @property
    def f_stats(self) -> Statistics:
        return statistics(self.f)


def count_objects(first_gt: np.ndarray) -> int:
    """Number of objects of a sequence: the max id of its first GT frame, void counted as background."""
    labels = np.asarray(first_gt)
    if labels.ndim != 2:
        raise InputError(f"first GT frame must be a 2-D label map, got shape {labels.shape}")
    labels = np.where(labels == VOID_ID, 0, labels)
    return int(labels.max(initial=0))


def evaluated_frame_indices(num_frames: int) -> range:
    """Frames scored by the semi-supervised protocol: all but the first and the last."""
    return range(1, max(num_frames - 1, 1))


def score_sequence(
    gt_frames: Iterable[np.ndarray],
    pred_frames: Iterable[np.ndarray],
    num_objects: int,
    *,
    sequence: str = "",
    bound_th: float = BOUND_TH,
) -> list[ObjectScores]:
    """J and F of objects ``1 .. num_objects`` on every given (GT, prediction) label-map pair.

    Pass only the evaluated frames (:func:`evaluated_frame_indices`); both iterables are consumed
    lazily, one frame at a time. GT ids other than
    ``1 .. num_objects`` (void 255, objects absent from the first frame) count as background. A
    predicted id above ``num_objects`` raises :class:`InputError`, like the official tool.
    """
    j_values: list[list[float]] = [[] for _ in range(num_objects)]
    f_values: list[list[float]] = [[] for _ in range(num_objects)]
    for index, (gt, pred) in enumerate(zip_longest(gt_frames, pred_frames)):
        if gt is None or pred is None:
            raise InputError(f"sequence {sequence!r}: GT and predictions differ in frame count (from frame {index})")
        gt, pred = np.asarray(gt), np.asarray(pred)
        if gt.shape != pred.shape or gt.ndim != 2:
            raise InputError(
                f"sequence {sequence!r}, evaluated frame {index}: prediction shape {pred.shape} "
                f"differs from GT shape {gt.shape}; predictions must be single-channel index maps at GT size"
            )
        top = int(pred.max(initial=0))
        if top > num_objects:
            raise InputError(
                f"sequence {sequence!r}, evaluated frame {index}: predicted id {top} but the first GT frame "
                f"has only {num_objects} object(s)"
            )
        for k in range(num_objects):
            pred_k, gt_k = pred == k + 1, gt == k + 1
            j_values[k].append(region_similarity(pred_k, gt_k))
            f_values[k].append(boundary_f_measure(pred_k, gt_k, bound_th))
    return [
        ObjectScores(sequence, k + 1, np.asarray(j_values[k], dtype=np.float64), np.asarray(f_values[k], dtype=np.float64))
        for k in range(num_objects)
    ]


@dataclass(frozen=True)
class DavisSummary:
    """Dataset-level J&F: means over all objects of all sequences, pooled."""

    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float
    num_objects: int

    @property
    def jf_mean(self) -> float:
        """(J-Mean + F-Mean) / 2."""
        return (self.j_mean + self.f_mean) / 2

    def as_dict(self) -> dict[str, float]:
        """The official global measures, keyed like ``global_results-<set>.csv``."""
        return {
            "J&F-Mean": self.jf_mean,
            "J-Mean": self.j_mean,
            "J-Recall": self.j_recall,
            "J-Decay": self.j_decay,
            "F-Mean": self.f_mean,
            "F-Recall": self.f_recall,
            "F-Decay": self.f_decay,
        }


def summarize(objects: Sequence[ObjectScores]) -> DavisSummary:
    """Pool per-object statistics: each measure is the plain mean over objects (NaN if none)."""
    j_stats = np.array([o.j_stats for o in objects], dtype=np.float64).reshape(-1, 3)
    f_stats = np.array([o.f_stats for o in objects], dtype=np.float64).reshape(-1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        j_means, f_means = j_stats.mean(axis=0), f_stats.mean(axis=0)
    return DavisSummary(*map(float, j_means), *map(float, f_means), num_objects=len(objects))
