"""JHMDB keypoint propagation: PCK under the two reference protocols, and joint heatmaps.

PCK. For every frame, the reference size is
``0.6 * ||(max_x - min_x, max_y - min_y)||`` over the GT positions of the frame's *counted* joints,
and a joint is counted when its **predicted** position is "visible". Distances divided by that size
are pooled per joint over all videos and frames; PCK@a(joint) = 100 * #(d <= a) / #counted, and the
reported number is the mean of the 15 per-joint PCKs (percent, as in the references).

Protocols (:data:`PROTOCOLS`):

* ``"stt"`` (default) - VFS / Spa-then-Temp ``pck_evaluate``: frame 0 counted, visible = predicted
  x > 0. The protocol behind the Spa-then-Temp numbers this library reproduces.
* ``"crw"`` - CRW / UVC ``eval_pck.py``: frame 0 skipped, visible = predicted x >= 0.

Both follow the references' box quirks (the box extremes start from -1 and 1e6) and count a
distance divided by a zero-size box (inf or NaN) as a miss. Predictions longer than the GT are
truncated to the GT length. Deviation: a joint that is never counted gets a NaN PCK and is left
out of the mean (the references divide by zero).

Keypoint arrays are ``(T, 15, 2)`` float pixel ``(x, y)`` in the original frame, pixel centres at
integers (JHMDB ``pos_img`` minus 1); ``(-1, -1)`` marks a joint with no prediction.
Joint order: :data:`JHMDB_JOINTS`.

Heatmaps (:mod:`stcorr.propagation.heatmaps`, re-exported here): :func:`draw_gaussian_heatmaps` and
:func:`decode_heatmaps_topk` follow the VFS / Spa-then-Temp pose pipeline (unnormalised Gaussian,
sigma 4 px, top-5 decoding).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from stcorr._atomic import atomic_path
from stcorr.errors import DataReadError, InputError
from stcorr.propagation.heatmaps import decode_heatmaps_topk, draw_gaussian_heatmaps

__all__ = [
    "JHMDB_JOINTS",
    "NUM_JOINTS",
    "PCK_THRESHOLDS",
    "PROTOCOLS",
    "Protocol",
    "PckResult",
    "visible_joints",
    "joint_distances",
    "pck",
    "load_keypoints",
    "save_keypoints",
    "draw_gaussian_heatmaps",
    "decode_heatmaps_topk",
]

JHMDB_JOINTS: tuple[str, ...] = (
    "neck", "belly", "face", "right-shoulder", "left-shoulder", "right-hip", "left-hip", "right-elbow",
    "left-elbow", "right-knee", "left-knee", "right-wrist", "left-wrist", "right-ankle", "left-ankle",
)  # fmt: skip
NUM_JOINTS = len(JHMDB_JOINTS)
PCK_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
Protocol = Literal["stt", "crw"]
PROTOCOLS: tuple[str, ...] = ("stt", "crw")

_BOX_MAX_START = -1.0
_BOX_MIN_START = 1e6
_BOX_SCALE = 0.6


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def _as_keypoints(keypoints: np.ndarray | Sequence, name: str) -> np.ndarray:
    array = np.asarray(keypoints, dtype=np.float64)
    if array.ndim != 3 or array.shape[2] != 2:
        raise InputError(f"{name} must have shape (T, joints, 2) of (x, y) pixels, got {array.shape}")
    return array


# ------------------------------------------------------------------------------------------------
# PCK


def visible_joints(pred: np.ndarray, protocol: Protocol = "stt") -> np.ndarray:
    """(T, J) mask of counted joints: predicted x > 0 (``stt``) or not x < 0 (``crw``)."""
    _check_protocol(protocol)
    x = _as_keypoints(pred, "pred")[..., 0]
    return x > 0 if protocol == "stt" else ~(x < 0)


def _reference_sizes(gt: np.ndarray, visible: np.ndarray, protocol: Protocol) -> np.ndarray:
    """(T,) 0.6 x diagonal of the box of each frame's counted GT joints, with the references' sentinels.

    CRW starts its running max/min at -1 / 1e6; VFS fills uncounted joints with those values. Both
    agree unless every joint is counted and all lie beyond a sentinel.
    """
    low = np.where(visible[..., None], gt, _BOX_MIN_START).min(axis=1)
    high = np.where(visible[..., None], gt, _BOX_MAX_START).max(axis=1)
    if protocol == "crw":
        low, high = np.minimum(low, _BOX_MIN_START), np.maximum(high, _BOX_MAX_START)
    size = high - low
    return _BOX_SCALE * np.sqrt(size[:, 0] * size[:, 0] + size[:, 1] * size[:, 1])


def joint_distances(pred: np.ndarray, gt: np.ndarray, protocol: Protocol = "stt") -> tuple[np.ndarray, np.ndarray]:
    """Normalised distances ``(T, J)`` and the mask of counted entries for one video.

    ``pred`` is truncated to the GT length (a shorter prediction raises :class:`InputError`).
    Under ``crw`` frame 0 is never counted. A zero-size box yields inf/NaN, which PCK counts as a miss.
    """
    _check_protocol(protocol)
    pred, gt = _as_keypoints(pred, "pred"), _as_keypoints(gt, "gt")
    if pred.shape[0] < gt.shape[0] or pred.shape[1:] != gt.shape[1:]:
        raise InputError(f"prediction of shape {pred.shape} does not cover the GT of shape {gt.shape}")
    pred = pred[: gt.shape[0]]
    counted = visible_joints(pred, protocol)
    if protocol == "crw":
        counted[:1] = False
    sizes = _reference_sizes(gt, counted, protocol)
    delta = pred - gt
    with np.errstate(divide="ignore", invalid="ignore"):
        distances = np.sqrt(delta[..., 0] * delta[..., 0] + delta[..., 1] * delta[..., 1]) / sizes[:, None]
    return distances, counted


@dataclass(frozen=True)
class PckResult:
    """PCK in percent: ``per_joint[i, j]`` at ``thresholds[i]`` for joint ``j``; ``mean[i]`` over joints."""

    thresholds: tuple[float, ...]
    per_joint: np.ndarray
    counts: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        """Mean over joints of the per-joint PCK (joints never counted are skipped)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            return np.nanmean(self.per_joint, axis=1)

    def as_dict(self) -> dict[str, float]:
        """``{"PCK@0.1": ..., ...}`` (percent)."""
        return {f"PCK@{alpha:g}": float(value) for alpha, value in zip(self.thresholds, self.mean)}


def pck(
    videos: Iterable[tuple[np.ndarray, np.ndarray]],
    protocol: Protocol = "stt",
    thresholds: Sequence[float] = PCK_THRESHOLDS,
) -> PckResult:
    """PCK over ``(prediction, ground truth)`` keypoint pairs of shape ``(T, J, 2)``, pooled per joint."""
    _check_protocol(protocol)
    parts: list[list[np.ndarray]] = []
    for pred, gt in videos:
        distances, counted = joint_distances(pred, gt, protocol)
        if parts and len(parts) != distances.shape[1]:
            raise InputError(f"videos disagree on the number of joints: {distances.shape[1]} vs {len(parts)}")
        parts = parts or [[] for _ in range(distances.shape[1])]
        for j, joint_parts in enumerate(parts):
            joint_parts.append(distances[counted[:, j], j])
    pooled = [np.concatenate(p) for p in parts] if parts else [np.zeros(0) for _ in range(NUM_JOINTS)]
    counts = np.array([d.size for d in pooled], dtype=np.int64)
    alphas = tuple(float(a) for a in thresholds)
    table = np.full((len(alphas), len(pooled)), np.nan)
    for j, d in enumerate(pooled):
        if d.size:
            table[:, j] = [100.0 * np.count_nonzero(d <= alpha) / d.size for alpha in alphas]
    return PckResult(alphas, table, counts)


# ------------------------------------------------------------------------------------------------
# Keypoint result files


def save_keypoints(path: str | os.PathLike[str], keypoints: np.ndarray) -> Path:
    """Write a ``(T, J, 2)`` keypoint array as ``.npy`` (float64) or ``.json`` (``{"keypoints": [...]}``)."""
    path = Path(path)
    array = _as_keypoints(keypoints, "keypoints")
    if path.suffix not in (".npy", ".json"):
        raise InputError(f"keypoint files end in .npy or .json, got {path.name}")
    with atomic_path(path) as tmp:
        if path.suffix == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, array)
        else:
            tmp.write_text(json.dumps({"keypoints": array.tolist()}))
    return path


def load_keypoints(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a keypoint file written by :func:`save_keypoints` (or any tool following its format)."""
    path = Path(path)
    if not path.is_file():
        raise DataReadError(f"keypoint file {path} not found")
    try:
        if path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            content = json.loads(path.read_text())
            if not isinstance(content, dict) or "keypoints" not in content:
                raise InputError(f'{path}: expected a JSON object {{"keypoints": [[[x, y], ...], ...]}}')
            data = content["keypoints"]
        else:
            raise InputError(f"keypoint files end in .npy or .json, got {path.name}")
    except (OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise DataReadError(f"cannot read keypoint file {path}: {exc}") from exc
    try:
        return _as_keypoints(data, str(path))
    except ValueError as exc:  # ragged JSON lists
        raise InputError(f"{path}: keypoints must form a (T, J, 2) array: {exc}") from exc


# ------------------------------------------------------------------------------------------------
# Heatmaps
