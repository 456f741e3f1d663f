"""TAP-Vid point-tracking metrics: occlusion accuracy, <delta^x and Jaccard, as the TAP-Vid reference computes them.

Same signature, keys and semantics as tapnet's ``compute_tapvid_metrics`` (Doersch et al., TAP-Vid, 2022):

- coordinates are raster coordinates of the (usually 256x256) frames: pixel (i, j) (row, column) covers
  [j, j + 1) x [i, i + 1), its centre at (j + 0.5, i + 0.5); query points are ``(t, y, x)``, tracks ``(x, y)``;
- a prediction is within threshold delta when its squared distance to the ground truth is strictly below
  delta^2 (a point exactly delta away is a miss), for delta in 1, 2, 4, 8, 16;
- ``query_mode="first"`` evaluates the frames after each query frame (the tracks' earlier frames count as
  known occluded and are left out), ``"strided"`` every frame except the query frame; query frames are
  rounded to the nearest integer (numpy's round, halves to even, as the reference);
- ``pts_within_x``: among ground-truth visible evaluated points, the fraction within x (occlusion predictions
  ignored); ``jaccard_x``: true positives (visible, predicted visible, within x) over ground-truth visible
  points plus false positives (predicted visible but occluded or not within x); ``occlusion_accuracy``: the
  fraction of evaluated points whose predicted occlusion equals the ground truth;
- counts are summed per video (the leading axis) and divided once, so every key holds one value per video
  (or per track with ``get_trackwise_metrics``); the benchmark's figure is the plain mean over videos.
  A video with no evaluated (or no visible) point gives NaN, as 0/0 does in the reference.
"""

from __future__ import annotations

import numpy as np

from stcorr.errors import InputError

__all__ = ["THRESHOLDS", "QUERY_MODES", "compute_tapvid_metrics", "evaluation_mask", "mean_metrics"]

THRESHOLDS = (1, 2, 4, 8, 16)
"""Pixel thresholds delta of <delta^x and Jaccard, at 256x256."""
QUERY_MODES = ("first", "strided")


def evaluation_mask(query_frames: np.ndarray, num_frames: int, query_mode: str) -> np.ndarray:
    """(..., T) bool: the frames scored for tracks queried at ``query_frames`` (any shape, rounded)."""
    if query_mode not in QUERY_MODES:
        raise InputError(f"query_mode must be one of {QUERY_MODES}, got {query_mode!r}")
    query = np.round(np.asarray(query_frames, np.float64)).astype(np.int64)
    frames = np.arange(num_frames)
    if query_mode == "first":
        return frames > query[..., None]
    return frames != query[..., None]


def _check(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise InputError(f"{name} must have shape {shape} (videos, tracks, frames[, 2]), got {array.shape}")


def compute_tapvid_metrics(
    query_points: np.ndarray,
    gt_occluded: np.ndarray,
    gt_tracks: np.ndarray,
    pred_occluded: np.ndarray,
    pred_tracks: np.ndarray,
    query_mode: str,
    get_trackwise_metrics: bool = False,
) -> dict[str, np.ndarray]:
    """TAP-Vid metrics of a batch of videos, one value per video (see the module docstring).

    Args:
        query_points: (B, N, 3) ``(t, y, x)`` query of each track, raster coordinates.
        gt_occluded: (B, N, T) bool, True where the point is occluded.
        gt_tracks: (B, N, T, 2) ground-truth ``(x, y)``, raster coordinates (256x256 for the paper's figures).
        pred_occluded: (B, N, T) bool predicted occlusion.
        pred_tracks: (B, N, T, 2) predicted ``(x, y)``.
        query_mode: ``"first"`` or ``"strided"``.
        get_trackwise_metrics: one value per track, (B, N), instead of per video, (B,).

    Returns:
        ``occlusion_accuracy``, ``pts_within_{1,2,4,8,16}``, ``jaccard_{1,2,4,8,16}``,
        ``average_jaccard``, ``average_pts_within_thresh``: float64 arrays of shape (B,) (or (B, N)).
    """
    gt_occluded = np.asarray(gt_occluded, bool)
    pred_occluded = np.asarray(pred_occluded, bool)
    gt_tracks = np.asarray(gt_tracks, np.float64)
    pred_tracks = np.asarray(pred_tracks, np.float64)
    query_points = np.asarray(query_points, np.float64)
    if gt_occluded.ndim != 3:
        raise InputError(f"gt_occluded must have shape (videos, tracks, frames), got {gt_occluded.shape}")
    b, n, t = gt_occluded.shape
    _check("query_points", query_points, (b, n, 3))
    _check("gt_tracks", gt_tracks, (b, n, t, 2))
    _check("pred_occluded", pred_occluded, (b, n, t))
    _check("pred_tracks", pred_tracks, (b, n, t, 2))
    axes = (2,) if get_trackwise_metrics else (1, 2)
    evaluated = evaluation_mask(query_points[..., 0], t, query_mode)

    def total(mask: np.ndarray) -> np.ndarray:
        return np.sum(mask & evaluated, axis=axes)

    visible, pred_visible = ~gt_occluded, ~pred_occluded
    squared = np.sum(np.square(pred_tracks - gt_tracks), axis=-1)
    visible_count = total(visible)
    with np.errstate(invalid="ignore", divide="ignore"):
        metrics = {"occlusion_accuracy": total(pred_occluded == gt_occluded) / total(np.ones_like(visible))}
        within_fractions, jaccards = [], []
        for delta in THRESHOLDS:
            within = squared < delta * delta
            correct = within & visible
            within_fractions.append(total(correct) / visible_count)
            false_positives = total(pred_visible & (~visible | ~within))
            jaccards.append(total(correct & pred_visible) / (visible_count + false_positives))
            metrics[f"pts_within_{delta}"] = within_fractions[-1]
            metrics[f"jaccard_{delta}"] = jaccards[-1]
    metrics["average_jaccard"] = np.mean(np.stack(jaccards), axis=0)
    metrics["average_pts_within_thresh"] = np.mean(np.stack(within_fractions), axis=0)
    return metrics


def mean_metrics(per_video: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """The benchmark's figures: each key's plain mean over every video of ``per_video`` (results of
    :func:`compute_tapvid_metrics`, concatenated), as the reference averages its per-video values."""
    if not per_video:
        raise InputError("no videos to average: expected at least one result of compute_tapvid_metrics")
    keys = per_video[0].keys()
    return {key: float(np.mean(np.concatenate([np.ravel(m[key]) for m in per_video]))) for key in keys}
