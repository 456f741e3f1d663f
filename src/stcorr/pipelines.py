"""End-to-end jobs on a video: propagate a mask or points and write the outputs, frame by frame.

Each job streams: frames are read, propagated and written one at a time, so memory does not depend on
the video's length (a backward pass from ``start`` holds frames 0..start of a video file). Frames may
be processed at a reduced size (``max_side``); outputs are mapped back to the original resolution
(masks by nearest neighbour, points by scaling).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stcorr._signals import uninterrupted
from stcorr.errors import InputError
from stcorr.features import Encoder
from stcorr.io.claims import check_apart, claim_png_folder, output_lock
from stcorr.io.frames import open_frames
from stcorr.io.masks import read_mask, write_confidence_png, write_mask_png
from stcorr.io.reliability import RELIABILITY_FILE, write_reliability_json
from stcorr.io.render import overlay, write_image
from stcorr.io.tracks import read_points_file, write_points_csv, write_points_json
from stcorr.io.video import VideoWriter
from stcorr.propagation.labels import resize_ids_nearest
from stcorr.propagation.options import PropagationOptions
from stcorr.propagation.session import PropagationSession

__all__ = [
    "MaskJob",
    "propagate_video_mask",
    "track_video_points",
    "render_overlay_video",
    "read_points_file",
    "write_overlay_pngs",
    "contact_sheet",
    "claim_png_folder",
    "check_mask_job_outputs",
]

Progress = Callable[[int], None]
MAX_SHEET_WIDTH = 32768  # widest contact sheet in pixels
MAX_SHEET_PIXELS = 200_000_000  # largest contact sheet (width x height); 2.4 GB of float RGB while resizing


@dataclass(frozen=True)
class MaskJob:
    """Where a mask-propagation job wrote its outputs."""

    masks_dir: Path
    confidence_dir: Path | None
    overlay: Path | None
    frames: int
    reliability: Path | None = None  # reliability.json (per frame and object)


def load_first_mask(path: str | os.PathLike[str], size: tuple[int, int], *, resize: bool = False) -> np.ndarray:
    """Read a first-frame mask PNG and check (or, with ``resize``, fit) it to the frames' (H, W)."""
    mask = read_mask(path)
    if mask.shape != size:
        if not resize:
            raise InputError(
                f"the mask {path} is {mask.shape[1]}x{mask.shape[0]} but the frames are {size[1]}x{size[0]}; "
                "pass --resize-mask (nearest neighbour) or give a mask of the frames' size"
            )
        mask = resize_ids_nearest(mask, size).astype(np.uint8)
    return mask


def _path_of(video: Any) -> Any:
    """The path of a video given as one (else None: arrays and lists cannot be overwritten)."""
    return video if isinstance(video, (str, os.PathLike)) else None


def _session(model: Encoder, video: Any, options: PropagationOptions | None, max_side: int | None,
             max_frames: int | None, batch_size: int, option_keywords: dict[str, Any]) -> PropagationSession:
    """A one-shot session (features streamed, not kept) at the working size ``max_side``."""
    source = open_frames(video, max_frames=max_frames)
    return PropagationSession(model, source, options=options, max_side=max_side, batch_size=batch_size,
                              keep=False, **option_keywords)


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
    overwrite: bool = False,
    progress: Progress | None = None,
    options: PropagationOptions | None = None,
    batch_size: int = 8,
    inputs: Sequence[str | os.PathLike[str]] = (),
    **option_keywords: Any,
) -> MaskJob:
    """Propagate ``mask`` (ids at the video's original size) and write ``out_dir/masks/<frame>.png``.

    Palette PNGs are named like the input frames; ``write_confidence`` adds ``out_dir/confidence/``;
    ``overlay_path`` renders an mp4 of the frames with coloured masks (frame by frame as they are predicted
    when ``start`` is 0, else once all masks are written), ``overlay_dir`` the same as one PNG per frame. The
    propagation runs at the working size ``max_side`` through
    :class:`~stcorr.propagation.session.PropagationSession` (both directions from ``start``); masks come at
    the original size, probabilities upsampled before the arg-max. ``options`` (or their keywords, e.g.
    ``context=5``) are the :class:`~stcorr.propagation.options.PropagationOptions`.

    A PNG folder of this job (``masks/``, ``confidence/``, ``overlay_dir``) that already holds PNGs raises
    :class:`~stcorr.errors.OutputWriteError` before any work, so two runs never mix; ``overwrite=True``
    deletes those PNGs first. Outputs that are, or hold, an input (``video`` or one of ``inputs``, e.g. the
    mask's file) are refused before anything is deleted; ``out_dir`` (and ``overlay_dir``) are locked for the
    run, so a second run into them fails at once. A frame's mask and confidence map are written together
    (an interrupt of the command line waits for the pair). Overlay videos and other files are replaced
    atomically. ``out_dir/reliability.json`` holds every frame's per-object reliability
    (:func:`~stcorr.io.reliability.write_reliability_json`).
    """
    masks_dir, confidence_dir = check_mask_job_outputs(video, out_dir, write_confidence=write_confidence,
                                                       overlay_path=overlay_path, overlay_dir=overlay_dir,
                                                       inputs=inputs)
    session = _session(model, video, options, max_side, max_frames, batch_size, option_keywords)
    if mask.shape != session.frame_size:
        raise InputError(f"mask of shape {mask.shape} does not match the frames' size {session.frame_size}")
    with _locked(out_dir, overlay_dir):
        for folder in (masks_dir, confidence_dir, overlay_dir):
            if folder is not None:
                claim_png_folder(Path(folder), overwrite)
        session.add_mask(start, mask)
        streamed = overlay_path if start == 0 else None  # frames come in video order: draw the overlay as they come
        reliability: list[dict[int, float] | None] = [None] * session.num_frames
        with _streamed_overlay(video, streamed, max_frames) as draw:
            for prediction in session.propagate():
                reliability[prediction.t] = prediction.reliability
                name = session.frame_names[prediction.t]
                with uninterrupted():
                    write_mask_png(masks_dir / f"{name}.png", prediction.labels)
                    if confidence_dir is not None:
                        write_confidence_png(confidence_dir / f"{name}.png", prediction.confidence)
                draw(prediction.labels)
                if progress:
                    progress(1)
        reliability_path = write_reliability_json(Path(out_dir) / RELIABILITY_FILE, session.frame_names, reliability)
        if overlay_path is not None and streamed is None:
            render_overlay_video(video, masks_dir, overlay_path, max_frames=max_frames)
        written = Path(overlay_path) if overlay_path is not None else None
        if overlay_dir is not None:
            write_overlay_pngs(video, masks_dir, overlay_dir, max_frames=max_frames)
    return MaskJob(masks_dir, confidence_dir, written, session.num_frames, reliability_path)


def check_mask_job_outputs(video: Any, out_dir: str | os.PathLike[str], *, write_confidence: bool = False,
                           overlay_path: str | os.PathLike[str] | None = None,
                           overlay_dir: str | os.PathLike[str] | None = None,
                           inputs: Sequence[str | os.PathLike[str] | None] = ()) -> tuple[Path, Path | None]:
    """The masks and confidence folders of :func:`propagate_video_mask`, once checked to be apart from the
    inputs and from each other (:func:`~stcorr.io.claims.check_apart`); nothing is created or deleted."""
    masks_dir = Path(out_dir) / "masks"
    confidence_dir = Path(out_dir) / "confidence" if write_confidence else None
    check_apart([_path_of(video), *inputs],
                folders={"the masks folder": masks_dir, "the confidence folder": confidence_dir,
                         "the overlay PNG folder (--overlay-pngs)": overlay_dir},
                files={"the overlay video (--overlay)": overlay_path,
                       "the reliability file": Path(out_dir) / RELIABILITY_FILE})
    return masks_dir, confidence_dir


@contextmanager
def _locked(*folders: str | os.PathLike[str] | None) -> Iterator[None]:
    """Hold :func:`~stcorr.io.claims.output_lock` on each distinct folder (a folder inside another locked one
    is covered by it)."""
    chosen: list[Path] = []
    for folder in folders:
        if folder is None:
            continue
        real = Path(os.path.realpath(folder))
        if not any(real == other or other in real.parents for other in chosen):
            chosen.append(real)
    with ExitStack() as stack:
        for folder in chosen:
            stack.enter_context(output_lock(folder))
        yield


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
    options: PropagationOptions | None = None,
    batch_size: int = 8,
    inputs: Sequence[str | os.PathLike[str]] = (),
    **option_keywords: Any,
) -> Path:
    """Track (x, y) points given at frame ``start`` (original pixels); write ``points.json`` and ``points.csv``.

    Outputs that are an input (``video`` or one of ``inputs``, e.g. the points file) are refused first;
    ``out_dir`` is locked for the run (a second run into it fails at once)."""
    out = Path(out_dir)
    check_apart([_path_of(video), *inputs], files={"points.json": out / "points.json",
                                                  "points.csv": out / "points.csv", "the overlay video": overlay_path})
    session = _session(model, video, options, max_side, max_frames, batch_size, option_keywords)
    with output_lock(out):
        tracks = np.full((session.num_frames, len(points), 2), np.nan, np.float32)
        scores = np.zeros((session.num_frames, len(points)), np.float32)
        session.add_points(start, points)
        for prediction in session.propagate():
            valid = prediction.point_scores > 0
            tracks[prediction.t] = np.where(valid[:, None], prediction.points, np.nan)
            scores[prediction.t] = prediction.point_scores
            if progress:
                progress(1)
        write_points_json(out / "points.json", tracks, scores, session.frame_names, point_names=names)
        write_points_csv(out / "points.csv", tracks, scores, session.frame_names, point_names=names)
        if overlay_path:
            render_overlay_video(video, None, overlay_path, points=tracks, max_frames=max_frames)
    return out / "points.json"


def contact_sheet(video: Any, indices: Sequence[int], path: str | os.PathLike[str], *, width: int = 1200) -> Path:
    """Write the frames ``indices`` of ``video`` side by side as one image (PNG/JPEG), ``width`` px wide
    (1 to :data:`MAX_SHEET_WIDTH`). The image may not replace the video or one of its frames."""
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_SHEET_WIDTH:
        raise InputError(f"the sheet's width must be a whole number of pixels from 1 to {MAX_SHEET_WIDTH}, "
                         f"got {width!r}; e.g. --width 1200")
    check_apart([_path_of(video)], files={"the sheet": path})
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
    if height * width > MAX_SHEET_PIXELS:
        raise InputError(f"a sheet {width} px wide would be {height} px high ({height * width / 1e6:.0f} million "
                         f"pixels, the limit is {MAX_SHEET_PIXELS / 1e6:.0f} million); give a smaller --width or "
                         "fewer frames")
    resized = F.interpolate(strip[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return write_image(path, resized[0].clamp(0, 1))
