"""End-to-end jobs on a video: propagate a mask or points and write the outputs, frame by frame.

Each job streams: frames are read, propagated and written one at a time, so memory does not depend on
the video's length (a backward pass from ``start`` holds frames 0..start of a video file). Frames may
be processed at a reduced size (``max_side``); outputs are mapped back to the original resolution
(masks by nearest neighbour, points by scaling).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stcorr.errors import InputError
from stcorr.features import Encoder
from stcorr.frames import FrameSource, open_frames, read_mask
from stcorr.outputs import (
    VideoWriter,
    overlay,
    write_confidence_png,
    write_image,
    write_mask_png,
    write_points_csv,
    write_points_json,
)
from stcorr.propagation.api import FramePrediction, iter_propagate

__all__ = [
    "MaskJob",
    "propagate_video_mask",
    "track_video_points",
    "render_overlay_video",
    "read_points_file",
    "write_overlay_pngs",
    "contact_sheet",
]

Progress = Callable[[int], None]


@dataclass(frozen=True)
class MaskJob:
    """Where a mask-propagation job wrote its outputs."""

    masks_dir: Path
    confidence_dir: Path | None
    overlay: Path | None
    frames: int


def _resize_ids(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if ids.shape == size:
        return ids
    tensor = torch.from_numpy(ids.astype(np.int64))[None, None].float()
    return F.interpolate(tensor, size=size, mode="nearest-exact")[0, 0].numpy().astype(ids.dtype)


def _resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if values.shape == size:
        return values
    tensor = torch.from_numpy(values)[None, None]
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def load_first_mask(path: str | os.PathLike[str], size: tuple[int, int], *, resize: bool = False) -> np.ndarray:
    """Read a first-frame mask PNG and check (or, with ``resize``, fit) it to the frames' (H, W)."""
    mask = read_mask(path)
    if mask.shape != size:
        if not resize:
            raise InputError(
                f"the mask {path} is {mask.shape[1]}x{mask.shape[0]} but the frames are {size[1]}x{size[0]}; "
                "pass --resize-mask (nearest neighbour) or give a mask of the frames' size"
            )
        mask = _resize_ids(mask, size)
    return mask


def _both_directions(model: Encoder, source: FrameSource, first: Any, start: int, options: dict[str, Any]
                     ) -> Iterator[FramePrediction]:
    yield from iter_propagate(model, source, first, start=start, direction="forward", **options)
    if start > 0:
        backward = iter_propagate(model, source, first, start=start, direction="backward", **options)
        next(backward)  # frame `start` was already yielded
        yield from backward


def propagate_video_mask(
    model: Encoder,
    video: Any,
    mask: np.ndarray,
    out_dir: str | os.PathLike[str],
    *,
    start: int = 0,
    max_side: int | None = None,
    max_frames: int | None = None,
    overlay_path: str | os.PathLike[str] | None = None,
    overlay_dir: str | os.PathLike[str] | None = None,
    write_confidence: bool = False,
    progress: Progress | None = None,
    **options: Any,
) -> MaskJob:
    """Propagate ``mask`` (ids at the video's original size) and write ``out_dir/masks/<frame>.png``.

    Palette PNGs are named like the input frames; ``write_confidence`` adds ``out_dir/confidence/``;
    ``overlay_path`` renders an mp4 of the frames with coloured masks (frame by frame as they are predicted
    when ``start`` is 0, else once all masks are written), ``overlay_dir`` the same as one PNG per frame. ``options`` go to
    :func:`stcorr.propagation.api.iter_propagate` (context, radius, topk, temperature, ...).
    """
    source = open_frames(video, max_side=max_side, max_frames=max_frames)
    if mask.shape != source.original_size:
        raise InputError(f"mask of shape {mask.shape} does not match the frames' size {source.original_size}")
    masks_dir = Path(out_dir) / "masks"
    confidence_dir = Path(out_dir) / "confidence" if write_confidence else None
    first = _resize_ids(mask, source.size)
    streamed = overlay_path if start == 0 else None  # frames come in video order: draw the overlay as they come
    with _streamed_overlay(video, streamed, max_frames) as draw:
        for prediction in _both_directions(model, source, first, start, options):
            name = source.names[prediction.t]
            ids = _resize_ids(prediction.labels, source.original_size)
            write_mask_png(masks_dir / f"{name}.png", ids)
            draw(ids)
            if confidence_dir is not None:
                write_confidence_png(confidence_dir / f"{name}.png",
                                     _resize_map(prediction.confidence, source.original_size))
            if progress:
                progress(1)
    if overlay_path is not None and streamed is None:
        render_overlay_video(video, masks_dir, overlay_path, max_frames=max_frames)
    written = Path(overlay_path) if overlay_path is not None else None
    if overlay_dir is not None:
        write_overlay_pngs(video, masks_dir, overlay_dir, max_frames=max_frames)
    return MaskJob(masks_dir, confidence_dir, written, len(source))


@contextmanager
def _streamed_overlay(video: Any, path: str | os.PathLike[str] | None, max_frames: int | None
                      ) -> Iterator[Callable[[np.ndarray], None]]:
    """A function that blends the next frame of ``video`` with its mask ids and appends it to the mp4 ``path``
    (nothing when ``path`` is None). The file appears only if the block completes (see :class:`VideoWriter`)."""
    if path is None:
        yield lambda ids: None
        return
    frames = iter(open_frames(video, max_frames=max_frames))
    with VideoWriter(path, fps=open_frames(video).fps or 10.0) as writer:
        yield lambda ids: writer.write(overlay(next(frames), ids))


def _overlay_frames(video: Any, masks_dir: str | os.PathLike[str] | None, points: np.ndarray | None,
                    max_frames: int | None) -> Iterator[tuple[str, np.ndarray]]:
    """(frame name, overlay image) per frame: the masks of ``masks_dir`` and/or ``points`` (T, N, 2) drawn."""
    source = open_frames(video, max_frames=max_frames)
    for t, frame in enumerate(source):
        mask_file = Path(masks_dir) / f"{source.names[t]}.png" if masks_dir is not None else None
        has_mask = mask_file is not None and mask_file.is_file()
        ids = read_mask(mask_file) if has_mask else np.zeros(source.size, np.uint8)
        yield source.names[t], overlay(frame, ids, points=None if points is None else points[t])


def render_overlay_video(video: Any, masks_dir: str | os.PathLike[str] | None, path: str | os.PathLike[str], *,
                         fps: float | None = None, points: np.ndarray | None = None,
                         max_frames: int | None = None) -> Path:
    """Render an mp4 of ``video`` with the masks of ``masks_dir`` (named like the frames) blended on top.

    ``points`` (T, N, 2) draws keypoints as dots instead of (or on top of) masks.
    """
    fps = fps or open_frames(video).fps or 10.0
    with VideoWriter(path, fps=fps) as writer:
        for _, image in _overlay_frames(video, masks_dir, points, max_frames):
            writer.write(image)
    return Path(path)


def write_overlay_pngs(video: Any, masks_dir: str | os.PathLike[str] | None, out_dir: str | os.PathLike[str], *,
                       points: np.ndarray | None = None, max_frames: int | None = None) -> Path:
    """Write one overlay PNG per frame, named like the frames, into ``out_dir``."""
    for name, image in _overlay_frames(video, masks_dir, points, max_frames):
        write_image(Path(out_dir) / f"{name}.png", image)
    return Path(out_dir)


def read_points_file(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str]]:
    """Read query points and their names from JSON.

    Accepted: ``[[x, y], ...]`` or ``{"points": [[x, y], ...], "point_names": ["nose", ...]}`` (x, y in pixels
    of the annotated frame). The older key ``"names"`` for point names is still read. Names default to
    ``p0, p1, ...``.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read points from {path}: {exc}; expected JSON [[x, y], ...]") from exc
    points = data.get("points") if isinstance(data, dict) else data
    try:
        array = np.asarray(points, dtype=np.float32) if points is not None else np.empty((0,))
    except (TypeError, ValueError):
        array = np.empty((0,))
    if array.ndim != 2 or array.shape[1] != 2 or len(array) == 0:
        raise InputError(f"{path} must hold (x, y) points: [[x, y], ...] or {{\"points\": [[x, y], ...]}}")
    names = _point_names_of(data, path) if isinstance(data, dict) else []
    if names and len(names) != len(array):
        raise InputError(f"{path} names {len(names)} points but holds {len(array)}; give one name per point")
    return array, names or [f"p{i}" for i in range(len(array))]


def _point_names_of(data: dict[str, Any], path: str | os.PathLike[str]) -> list[str]:
    """Point names under ``"point_names"``, or under the older key ``"names"``."""
    if "point_names" in data and "names" in data:
        raise InputError(f"{path} has both \"point_names\" and the older \"names\"; keep only \"point_names\"")
    names = data.get("point_names", data.get("names", []))
    if not isinstance(names, list):
        raise InputError(f"\"point_names\" in {path} must be a list of strings, got {type(names).__name__}")
    return [str(n) for n in names]


def track_video_points(
    model: Encoder,
    video: Any,
    points: np.ndarray,
    names: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    start: int = 0,
    max_side: int | None = None,
    max_frames: int | None = None,
    overlay_path: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> Path:
    """Track (x, y) points given at frame ``start`` (original pixels); write ``points.json`` and ``points.csv``."""
    source = open_frames(video, max_side=max_side, max_frames=max_frames)
    scale = np.array([source.size[1] / source.original_size[1], source.size[0] / source.original_size[0]],
                     dtype=np.float32)
    tracks = np.full((len(source), len(points), 2), np.nan, np.float32)
    scores = np.zeros((len(source), len(points)), np.float32)
    for prediction in _both_directions(model, source, points * scale, start, options):
        valid = prediction.point_scores > 0
        tracks[prediction.t] = np.where(valid[:, None], prediction.points / scale, np.nan)
        scores[prediction.t] = prediction.point_scores
        if progress:
            progress(1)
    out = Path(out_dir)
    write_points_json(out / "points.json", tracks, scores, source.names, point_names=names)
    write_points_csv(out / "points.csv", tracks, scores, source.names, point_names=names)
    if overlay_path:
        render_overlay_video(video, None, overlay_path, points=tracks, max_frames=max_frames)
    return out / "points.json"


def contact_sheet(video: Any, indices: Sequence[int], path: str | os.PathLike[str], *, width: int = 1200) -> Path:
    """Write the frames ``indices`` of ``video`` side by side as one image (PNG/JPEG), ``width`` px wide."""
    source = open_frames(video)
    wanted = sorted(set(indices))
    if not wanted or wanted[0] < 0 or wanted[-1] >= len(source):
        raise InputError(f"frame indices must lie in [0, {len(source) - 1}], got {list(indices)}")
    picked = {}
    for t, frame in enumerate(source):
        if t in wanted:
            picked[t] = frame
        if t == wanted[-1]:
            break
    strip = torch.cat([picked[t] for t in indices], dim=2)
    height = max(1, round(strip.shape[1] * width / strip.shape[2]))
    resized = F.interpolate(strip[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return write_image(path, resized[0].clamp(0, 1))
