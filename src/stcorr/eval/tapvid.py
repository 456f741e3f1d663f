"""TAP-Vid (``python -m stcorr.eval tapvid``): the released files, tapnet's query sampling, tracks scored exactly.

**Files**, read in the layout tapnet releases them:

- ``tapvid_davis.pkl``: a dict video name -> ``{"video": uint8 (T, H, W, 3), "points": float32 (N, T, 2)
  normalised (x, y) in [0, 1], "occluded": bool (N, T)}``;
- ``tapvid_rgb_stacking.pkl``: a list of such dicts (named ``<file stem>-<index>``);
- TAP-Vid-Kinetics: a folder of ``*_of_0010.pkl`` files, each a list (or dict) of such dicts whose ``video``
  may be a list of JPEG-encoded frames (bytes).

The pickles are read with a restricted unpickler that rebuilds only NumPy arrays, dtypes and scalars plus
plain containers and bytes. A pickle can name any importable callable, which ``pickle.load`` then runs, so
an untrusted file could execute code; the released files need nothing else, and anything else is refused
with a :class:`~stcorr.errors.DataReadError`.

**Queries**, as tapnet samples them: ``first``: each track with a visible point is queried at its first
visible frame; ``strided``: at every 5th frame (0, 5, 10, ...) where it is visible, each such frame a
separate query (a track appears once per query). Coordinates are TAP-Vid raster coordinates at 256x256
(pixel (i, j) centred at (j + 0.5, i + 0.5)): the normalised points times 256.

**Resolution** (reported as separate categories): ``256`` runs the model on frames resized to 256x256;
``full`` runs it on the frames as stored in the file and rescales the tracks to 256x256 for scoring.

Each query is tracked with :func:`stcorr.propagation.tracking.track_points` (its output does not depend on the
other queries) and scored with :func:`stcorr.metrics.tapvid.compute_tapvid_metrics`; the figures are the
means over videos. Under ``torchrun`` each rank tracks ``videos[rank::world_size]``; rank 0 gathers the
per-video metrics written to ``--out``.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stcorr._atomic import atomic_path
from stcorr.errors import DataReadError, InputError
from stcorr.features import Encoder
from stcorr.metrics.tapvid import QUERY_MODES, compute_tapvid_metrics, mean_metrics
from stcorr.propagation.tracking import PointTracks, track_points

__all__ = [
    "RASTER",
    "RESOLUTIONS",
    "QUERY_STRIDE",
    "TapVidVideo",
    "Queries",
    "load_pickle",
    "load_tapvid",
    "sample_queries_first",
    "sample_queries_strided",
    "sample_queries",
    "predict_video",
    "score_video",
]

RASTER = 256
RESOLUTIONS = ("256", "full")
QUERY_STRIDE = 5

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArraysOnly(pickle.Unpickler):
    """Rebuilds NumPy arrays, dtypes and scalars; refuses every other global (which pickle would call)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed (only NumPy arrays are read)")


def load_pickle(path: str | Path) -> Any:
    """Read a TAP-Vid pickle with the restricted unpickler (NumPy arrays, containers, bytes, numbers only)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return _ArraysOnly(handle).load()
    except FileNotFoundError as exc:
        raise DataReadError(f"no TAP-Vid file at {path}: give tapvid_davis.pkl, tapvid_rgb_stacking.pkl or the "
                            "TAP-Vid-Kinetics folder of *_of_0010.pkl") from exc
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as exc:
        raise DataReadError(f"{path} is not a TAP-Vid pickle of NumPy arrays: {exc}") from exc


@dataclass(frozen=True)
class TapVidVideo:
    """One video of a TAP-Vid file: ``video`` uint8 (T, H, W, 3), ``points`` (N, T, 2) normalised (x, y),
    ``occluded`` (N, T) bool."""

    name: str
    video: np.ndarray
    points: np.ndarray
    occluded: np.ndarray


def _decode_frames(frames: Any, name: str) -> np.ndarray:
    if isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4:
        return frames
    if isinstance(frames, (list, tuple, np.ndarray)) and len(frames) and isinstance(frames[0], bytes):
        return np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in frames])
    raise DataReadError(f"{name}: 'video' must be uint8 (T, H, W, 3) or a list of JPEG bytes, got "
                        f"{type(frames).__name__}")


def _video(name: str, entry: Any) -> TapVidVideo:
    if not isinstance(entry, dict) or not {"video", "points", "occluded"} <= set(entry):
        raise DataReadError(f"{name}: expected a dict with 'video', 'points' and 'occluded', got "
                            f"{sorted(entry) if isinstance(entry, dict) else type(entry).__name__}")
    video = _decode_frames(entry["video"], name)
    points = np.asarray(entry["points"], np.float32)
    occluded = np.asarray(entry["occluded"], bool)
    t = len(video)
    if points.ndim != 3 or points.shape[1:] != (t, 2) or occluded.shape != points.shape[:2]:
        raise DataReadError(f"{name}: expected points (N, {t}, 2) and occluded (N, {t}) for {t} frames, got "
                            f"{points.shape} and {occluded.shape}")
    return TapVidVideo(name, video, points, occluded)


def _entries(data: Any, stem: str) -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        yield from ((str(name), entry) for name, entry in data.items())
    elif isinstance(data, list):
        yield from ((f"{stem}-{i:04d}", entry) for i, entry in enumerate(data))
    else:
        raise DataReadError(f"{stem}: expected a dict of videos or a list of videos, got {type(data).__name__}")


def load_tapvid(path: str | Path) -> list[TapVidVideo]:
    """Every video of a TAP-Vid pickle, or of a folder of TAP-Vid-Kinetics ``*.pkl`` files (in name order)."""
    path = Path(path)
    files = sorted(path.glob("*.pkl")) if path.is_dir() else [path]
    if not files:
        raise DataReadError(f"no *.pkl files in {path}")
    return [_video(name, entry) for file in files for name, entry in _entries(load_pickle(file), file.stem)]


@dataclass(frozen=True)
class Queries:
    """Queries sampled from one video's tracks: ``query_points`` (n, 3) ``(t, y, x)`` raster, ``target_points``
    (n, T, 2) raster ``(x, y)``, ``occluded`` (n, T)."""

    query_points: np.ndarray
    target_points: np.ndarray
    occluded: np.ndarray


def sample_queries_first(occluded: np.ndarray, points: np.ndarray) -> Queries:
    """Each track with a visible frame, queried at its first visible frame (``points`` in raster (x, y))."""
    keep = (~occluded).any(axis=1)
    occluded, points = occluded[keep], points[keep]
    first = np.argmax(~occluded, axis=1)
    at = points[np.arange(len(points)), first]
    query = np.stack([first.astype(np.float64), at[:, 1], at[:, 0]], axis=1)
    return Queries(query, points, occluded)


def sample_queries_strided(occluded: np.ndarray, points: np.ndarray, stride: int = QUERY_STRIDE) -> Queries:
    """Every track visible at frame 0, stride, 2 stride, ...: one query per such frame, grouped by frame."""
    queries, tracks, occ = [], [], []
    for t in range(0, occluded.shape[1], stride):
        rows = np.flatnonzero(~occluded[:, t])
        queries.append(np.stack([np.full(len(rows), float(t)), points[rows, t, 1], points[rows, t, 0]], axis=1))
        tracks.append(points[rows])
        occ.append(occluded[rows])
    return Queries(np.concatenate(queries), np.concatenate(tracks), np.concatenate(occ))


def sample_queries(video: TapVidVideo, query_mode: str) -> Queries:
    """The queries of ``query_mode`` (``first`` or ``strided``) at the 256x256 raster."""
    points = video.points.astype(np.float64) * RASTER
    if query_mode == "first":
        return sample_queries_first(video.occluded, points)
    if query_mode == "strided":
        return sample_queries_strided(video.occluded, points)
    raise InputError(f"query_mode must be one of {QUERY_MODES}, got {query_mode!r}")


def predict_video(
    model: Encoder, frames: np.ndarray, query_points: np.ndarray, resolution: str = "256", **track_options: Any
) -> tuple[np.ndarray, np.ndarray, PointTracks]:
    """Track raster queries ``(t, y, x)`` (n, 3) at 256x256 through ``frames`` uint8 (T, H, W, 3).

    Returns raster tracks (n, T, 2) ``(x, y)`` at 256x256, predicted occlusion (n, T) and the raw
    :class:`PointTracks` (at the frames' size). ``resolution``: ``"256"`` (the model sees 256x256 frames) or
    ``"full"`` (the frames as given).
    """
    if resolution not in RESOLUTIONS:
        raise InputError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    height, width = frames.shape[1:3]
    scale = np.array([width / RASTER, height / RASTER])
    xy = query_points[:, [2, 1]] * scale - 0.5  # raster -> pixel centres at integers of the frames
    xy = np.clip(xy, 0, [width - 1, height - 1])
    queries = np.concatenate([np.round(query_points[:, :1]), xy], axis=1)
    working = {"size": (RASTER, RASTER)} if resolution == "256" else {"max_side": 0}  # 0: the frames as stored
    tracks = track_points(model, frames, queries, **working, **track_options)
    raster = (tracks.points.transpose(1, 0, 2) + 0.5) / scale
    return raster, ~tracks.visible.T, tracks


def score_video(queries: Queries, pred_tracks: np.ndarray, pred_occluded: np.ndarray,
                query_mode: str) -> dict[str, float]:
    """TAP-Vid metrics of one video's predictions (floats)."""
    metrics = compute_tapvid_metrics(queries.query_points[None], queries.occluded[None], queries.target_points[None],
                                     pred_occluded[None], pred_tracks[None], query_mode)
    return {key: float(value[0]) for key, value in metrics.items()}


def evaluate_videos(
    model: Encoder, videos: Sequence[TapVidVideo], query_mode: str, resolution: str, *, progress: bool = False,
    **track_options: Any,
) -> dict[str, dict[str, float]]:
    """Per-video TAP-Vid metrics of ``model`` (video name -> metrics)."""
    from tqdm import tqdm

    results = {}
    for video in tqdm(videos, desc=f"tapvid {query_mode} {resolution}", unit="video", disable=not progress):
        queries = sample_queries(video, query_mode)
        if len(queries.query_points) == 0:
            continue
        tracks, occluded, _ = predict_video(model, video.video, queries.query_points, resolution, **track_options)
        results[video.name] = score_video(queries, tracks, occluded, query_mode)
    return results


def summarize(per_video: dict[str, dict[str, float]]) -> dict[str, float]:
    """The benchmark's figures: every metric's mean over the videos."""
    return mean_metrics([{k: np.array([v]) for k, v in m.items()} for m in per_video.values()])


def write_shard(per_video: dict[str, dict[str, float]], folder: Path, rank: int) -> Path:
    """This rank's per-video metrics as ``folder/metrics-rank<r>.json`` (written atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"metrics-rank{rank:03d}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(per_video, indent=1, allow_nan=True) + "\n")
    return path


def read_shards(folder: Path, world_size: int) -> dict[str, dict[str, float]]:
    """The per-video metrics every rank wrote to ``folder``."""
    merged: dict[str, dict[str, float]] = {}
    for rank in range(world_size):
        path = folder / f"metrics-rank{rank:03d}.json"
        try:
            merged.update(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise DataReadError(f"cannot read rank {rank}'s TAP-Vid metrics {path}: {exc}") from exc
    return merged
