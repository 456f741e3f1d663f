"""Point tracks: reading query points, writing (T, N, 2) tracks and their scores as JSON or CSV."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from stcorr._atomic import write_atomic
from stcorr.checks import describe, to_numpy
from stcorr.errors import InputError, InputNotFoundError

__all__ = ["read_points_file", "write_points_json", "write_points_csv"]

PathLike = str | os.PathLike[str]
ArrayLike = np.ndarray | torch.Tensor

_COORD_DECIMALS = 4  # point coordinates and scores are rounded to 1e-4 in JSON/CSV files


def _point_names(count: int, point_names: Sequence[str] | None) -> list[str]:
    names = [f"p{i}" for i in range(count)] if point_names is None else [str(n) for n in point_names]
    if len(names) != count:
        raise InputError(f"expected {count} point names (one per point), got {len(names)}")
    return names


def _as_tracks(
    points: ArrayLike, scores: ArrayLike, names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    xy = to_numpy(points) if isinstance(points, torch.Tensor) else np.asarray(points)
    conf = to_numpy(scores) if isinstance(scores, torch.Tensor) else np.asarray(scores)
    if xy.ndim != 3 or xy.shape[2] != 2 or not np.issubdtype(xy.dtype, np.number):
        raise InputError(f"expected points of shape (T, N, 2) holding (x, y), got {describe(xy)}")
    if conf.shape != xy.shape[:2] or not np.issubdtype(conf.dtype, np.number):
        raise InputError(f"expected scores of shape {xy.shape[:2]} (T, N) matching the points, got {describe(conf)}")
    frame_names = [str(name) for name in names]
    if len(frame_names) != xy.shape[0]:
        raise InputError(f"expected {xy.shape[0]} frame names (one per frame), got {len(frame_names)}")
    return xy.astype(np.float64), conf.astype(np.float64), frame_names


def _number(value: float) -> float | None:
    """A rounded float, or None for NaN/inf (an invisible or missing point)."""
    return round(float(value), _COORD_DECIMALS) if math.isfinite(value) else None


def write_points_json(
    path: PathLike, points: ArrayLike, scores: ArrayLike, names: Sequence[str], *,
    point_names: Sequence[str] | None = None,
) -> Path:
    """Write (T, N, 2) point tracks and (T, N) scores as JSON; return the path.

    Layout: ``{"frame_names": [T frame names], "point_names": [N names], "points": T x N x [x, y],
    "scores": T x N}`` (point names default to ``p0, p1, ...``; stcorr 0.1.0 called the frame names
    ``"names"``), values
    rounded to 4 decimals, non-finite values written as ``null``. ``np.array(data["points"],
    dtype=float)`` loads the tracks back (``null`` becomes NaN).
    """
    xy, conf, frame_names = _as_tracks(points, scores, names)
    data = {
        "frame_names": frame_names,
        "point_names": _point_names(xy.shape[1], point_names),
        "points": [[[_number(x), _number(y)] for x, y in frame] for frame in xy],
        "scores": [[_number(s) for s in frame] for frame in conf],
    }

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, separators=(",", ":"))
            handle.write("\n")

    return write_atomic(path, write)


def write_points_csv(
    path: PathLike, points: ArrayLike, scores: ArrayLike, names: Sequence[str], *,
    point_names: Sequence[str] | None = None,
) -> Path:
    """Write point tracks as CSV with columns ``frame,frame_name,point_id,x,y,score,point_name``, one row per
    point and frame (stcorr 0.1.0 called ``frame_name`` ``name``).

    Values are rounded to 4 decimals; non-finite values are left empty.
    """
    xy, conf, frame_names = _as_tracks(points, scores, names)
    labels = _point_names(xy.shape[1], point_names)

    def cell(value: float) -> float | str:
        number = _number(value)
        return "" if number is None else number

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["frame", "frame_name", "point_id", "x", "y", "score", "point_name"])
            for t, name in enumerate(frame_names):
                for n in range(xy.shape[1]):
                    writer.writerow([t, name, n, cell(xy[t, n, 0]), cell(xy[t, n, 1]), cell(conf[t, n]), labels[n]])

    return write_atomic(path, write)


# --------------------------------------------------------------------------------------------------


def read_points_file(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str]]:
    """Read query points and their names from JSON.

    Accepted: ``[[x, y], ...]`` or ``{"points": [[x, y], ...], "point_names": ["nose", ...]}`` (x, y in pixels
    of the annotated frame). The older key ``"names"`` for point names is still read. Names default to
    ``p0, p1, ...``.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputNotFoundError(f"points file {path} does not exist; expected JSON [[x, y], ...]") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read points from {path}: {exc}; expected JSON [[x, y], ...]") from exc
    except RecursionError as exc:
        raise InputError(f"cannot read points from {path}: its JSON is nested too deeply; expected JSON "
                         "[[x, y], ...]") from exc
    points = data.get("points") if isinstance(data, dict) else data
    if _holds_bool(points):
        raise InputError(f"{path} holds true/false where a coordinate belongs; points must be numbers, "
                         "[[x, y], ...] in pixels")
    try:
        array = np.asarray(points, dtype=np.float32) if points is not None else np.empty((0,))
    except (TypeError, ValueError):
        array = np.empty((0,))  # not numbers, or ragged
    if array.ndim != 2 or array.shape[1] != 2 or len(array) == 0:
        raise InputError(f"{path} must hold (x, y) points: [[x, y], ...] or {{\"points\": [[x, y], ...]}}")
    names = _point_names_of(data, path) if isinstance(data, dict) else []
    if names and len(names) != len(array):
        raise InputError(f"{path} names {len(names)} points but holds {len(array)}; give one name per point")
    return array, names or [f"p{i}" for i in range(len(array))]


def _holds_bool(points: object) -> bool:
    """True if a JSON points list holds a boolean among its coordinates (NumPy would read it as 0 or 1)."""
    return isinstance(points, list) and any(
        isinstance(point, list) and any(isinstance(value, bool) for value in point) for point in points)


def _point_names_of(data: dict, path: str | os.PathLike[str]) -> list[str]:
    """Point names under ``"point_names"``, or under the older key ``"names"``."""
    if "point_names" in data and "names" in data:
        raise InputError(f"{path} has both \"point_names\" and the older \"names\"; keep only \"point_names\"")
    names = data.get("point_names", data.get("names", []))
    if not isinstance(names, list):
        raise InputError(f"\"point_names\" in {path} must be a list of strings, got {type(names).__name__}")
    return [str(n) for n in names]
