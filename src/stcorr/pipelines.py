"""End-to-end jobs on a video: propagate a mask or points and write the outputs, frame by frame.

Each job streams: frames are read, propagated and written one at a time, so memory does not depend on
the video's length (a backward pass from ``start`` holds frames 0..start of a video file). Frames may
be processed at a reduced size (``max_side``); outputs are mapped back to the original resolution
(masks by nearest neighbour, points by scaling).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from stcorr.propagation.tracking import track_points

__all__ = [
    "MaskJob",
    "MaskOutputs",
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
    """Read a first-frame mask (a PNG, or the first frame of a COCO / YouTube-VIS ``.json``) and check (or, with
    ``resize``, fit) it to the frames' (H, W)."""
    if Path(path).suffix.lower() == ".json":
        from stcorr.io.annotations import first_frame_ids

        mask = first_frame_ids(path)
    else:
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
    outputs = MaskOutputs(out_dir, overlay_path=overlay_path, overlay_dir=overlay_dir,
                          write_confidence=write_confidence)
    outputs.check(video, inputs)
    session = _session(model, video, options, max_side, max_frames, batch_size, option_keywords)
    if mask.shape != session.frame_size:
        raise InputError(f"mask of shape {mask.shape} does not match the frames' size {session.frame_size}")
    with outputs.locked():
        outputs.claim(overwrite)
        session.add_mask(start, mask)
        # frames come in video order when start is 0: the overlay is then drawn as they come
        with outputs.writing(video, session.frame_names, in_order=start == 0, max_frames=max_frames) as write:
            for prediction in session.propagate():
                write(session.frame_names[prediction.t], prediction.labels, prediction.confidence,
                      prediction.reliability)
                if progress:
                    progress(1)
    return outputs.job(session.num_frames)


class MaskOutputs:
    """One video's mask outputs as :func:`propagate_video_mask` writes them: ``out_dir/masks/<frame>.png``,
    optionally ``out_dir/confidence/<frame>.png``, an overlay mp4 and a folder of overlay PNGs.

    Shared by every writer of per-video mask outputs (one video, or several propagated together), so they
    write the same files with the same safeguards. Use: :meth:`check` (before anything is loaded), then
    :meth:`locked` around :meth:`claim`, :meth:`writing` (around the predictions) and :meth:`job`.
    """

    # A per-video output computed from every frame's result (reliability.json) is written in `writing`, so
    # that `stcorr propagate` and both paths of `stcorr propagate-many` (one video, batched) write it.

    def __init__(self, out_dir: str | os.PathLike[str], *, overlay_path: str | os.PathLike[str] | None = None,
                 overlay_dir: str | os.PathLike[str] | None = None, write_confidence: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.masks_dir = self.out_dir / "masks"
        self.confidence_dir = self.out_dir / "confidence" if write_confidence else None
        self.overlay_path = Path(overlay_path) if overlay_path is not None else None
        self.overlay_dir = Path(overlay_dir) if overlay_dir is not None else None
        self.reliability_path = self.out_dir / RELIABILITY_FILE

    def check(self, video: Any, inputs: Sequence[str | os.PathLike[str] | None] = ()) -> None:
        """Refuse outputs that are, or hold, an input (``video`` or one of ``inputs``) or share a path
        (:func:`~stcorr.io.claims.check_apart`); nothing is created or deleted."""
        check_apart([_path_of(video), *inputs],
                    folders={"the masks folder": self.masks_dir, "the confidence folder": self.confidence_dir,
                             "the overlay PNG folder (--overlay-pngs)": self.overlay_dir},
                    files={"the overlay video (--overlay)": self.overlay_path,
                           "the reliability file": self.reliability_path})

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold :func:`~stcorr.io.claims.output_lock` on ``out_dir`` (and on the overlay PNG folder when it lies
        outside) for the block: a second run into them fails at once."""
        chosen: list[Path] = []
        for folder in (self.out_dir, self.overlay_dir):
            if folder is None:
                continue
            real = Path(os.path.realpath(folder))
            if not any(real == other or other in real.parents for other in chosen):
                chosen.append(real)
        with ExitStack() as stack:
            for folder in chosen:
                stack.enter_context(output_lock(folder))
            yield

    def claim(self, overwrite: bool) -> None:
        """Refuse PNG folders holding an earlier run's PNGs (:func:`claim_png_folder`); ``overwrite`` empties them."""
        for folder in (self.masks_dir, self.confidence_dir, self.overlay_dir):
            if folder is not None:
                claim_png_folder(folder, overwrite)

    @contextmanager
    def writing(self, video: Any, frame_names: Sequence[str], *, in_order: bool, max_frames: int | None
                ) -> Iterator[Callable[..., None]]:
        """A function ``write(frame name, labels, confidence, reliability=None)`` for each prediction;
        ``in_order`` (frames come 0, 1, 2, ...) draws the overlay video as they come, else it is rendered from
        the masks at the end. A frame's mask and confidence map are written together (an interrupt of the
        command line waits for the pair); the frames' per-object reliability goes to ``reliability.json``
        (in the order of ``frame_names``) once every frame is written."""
        streamed = self.overlay_path if in_order else None
        reliability: dict[str, Mapping[int, float] | None] = {}
        with _streamed_overlay(video, streamed, max_frames) as draw:
            def write(name: str, labels: np.ndarray, confidence: np.ndarray | None,
                      frame_reliability: Mapping[int, float] | None = None) -> None:
                with uninterrupted():
                    write_mask_png(self.masks_dir / f"{name}.png", labels)
                    if self.confidence_dir is not None:
                        write_confidence_png(self.confidence_dir / f"{name}.png", confidence)
                reliability[name] = frame_reliability
                draw(labels)

            yield write
        write_reliability_json(self.reliability_path, frame_names, [reliability.get(n) for n in frame_names])
        if self.overlay_path is not None and streamed is None:
            render_overlay_video(video, self.masks_dir, self.overlay_path, max_frames=max_frames)
        if self.overlay_dir is not None:
            write_overlay_pngs(video, self.masks_dir, self.overlay_dir, max_frames=max_frames)

    def job(self, frames: int) -> MaskJob:
        return MaskJob(self.masks_dir, self.confidence_dir, self.overlay_path, frames, self.reliability_path)


def check_mask_job_outputs(video: Any, out_dir: str | os.PathLike[str], *, write_confidence: bool = False,
                           overlay_path: str | os.PathLike[str] | None = None,
                           overlay_dir: str | os.PathLike[str] | None = None,
                           inputs: Sequence[str | os.PathLike[str] | None] = ()) -> tuple[Path, Path | None]:
    """The masks and confidence folders of :func:`propagate_video_mask`, once checked to be apart from the
    inputs and from each other (:meth:`MaskOutputs.check`); nothing is created or deleted."""
    outputs = MaskOutputs(out_dir, overlay_path=overlay_path, overlay_dir=overlay_dir,
                          write_confidence=write_confidence)
    outputs.check(video, inputs)
    return outputs.masks_dir, outputs.confidence_dir


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
                    max_frames: int | None, visible: np.ndarray | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(frame name, overlay image) per frame: the masks of ``masks_dir`` and/or ``points`` (T, N, 2) drawn
    (points hidden according to ``visible`` (T, N) as rings)."""
    source = open_frames(video, max_frames=max_frames)
    for t, frame in enumerate(source):
        mask_file = Path(masks_dir) / f"{source.names[t]}.png" if masks_dir is not None else None
        has_mask = mask_file is not None and mask_file.is_file()
        ids = read_mask(mask_file) if has_mask else np.zeros(source.size, np.uint8)
        yield source.names[t], overlay(frame, ids, points=None if points is None else points[t],
                                       point_visible=None if visible is None else visible[t])


def render_overlay_video(video: Any, masks_dir: str | os.PathLike[str] | None, path: str | os.PathLike[str], *,
                         fps: float | None = None, points: np.ndarray | None = None,
                         max_frames: int | None = None, point_visible: np.ndarray | None = None) -> Path:
    """Render an mp4 of ``video`` with the masks of ``masks_dir`` (named like the frames) blended on top.

    ``points`` (T, N, 2) draws keypoints as dots instead of (or on top of) masks; with ``point_visible``
    (T, N) bool, hidden points as rings.
    """
    fps = fps or open_frames(video).fps or 10.0
    with VideoWriter(path, fps=fps) as writer:
        for _, image in _overlay_frames(video, masks_dir, points, max_frames, point_visible):
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
    """Track (x, y) points given at frame ``start`` (original pixels) with visibility
    (:func:`~stcorr.propagation.tracking.track_points`); write ``points.json`` and ``points.csv``.

    Outputs that are an input (``video`` or one of ``inputs``, e.g. the points file) are refused first;
    ``out_dir`` is locked for the run (a second run into it fails at once)."""
    out = Path(out_dir)
    check_apart([_path_of(video), *inputs], files={"points.json": out / "points.json",
                                                  "points.csv": out / "points.csv", "the overlay video": overlay_path})
    source = open_frames(video, max_frames=max_frames)
    queries = np.concatenate([np.full((len(points), 1), start, np.float64), np.asarray(points, np.float64)], axis=1)
    with output_lock(out):
        tracks = track_points(model, source, queries, options=options, max_side=max_side, batch_size=batch_size,
                              progress=progress, **option_keywords)
        write_points_json(out / "points.json", tracks.points, tracks.scores, source.names, point_names=names,
                          visible=tracks.visible)
        write_points_csv(out / "points.csv", tracks.points, tracks.scores, source.names, point_names=names,
                         visible=tracks.visible)
        if overlay_path:
            render_overlay_video(video, None, overlay_path, points=tracks.points, max_frames=max_frames,
                                 point_visible=tracks.visible)
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
