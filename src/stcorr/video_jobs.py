"""One video's job as ``stcorr propagate`` and ``stcorr points`` run it: read its prompt, propagate, write.

:func:`run_video_job` is the one place that turns a request (a video and its first mask, session file or
points, plus the output choices) into files under an output folder; the single-video commands and
``stcorr propagate-many`` (:mod:`stcorr.batch`) both call it, so a video's outputs are the same whichever
command wrote them. Library code: nothing is printed; the caller gives the progress bar and prints the
returned lines.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stcorr.errors import InputError
from stcorr.features import Encoder
from stcorr.propagation.options import PropagationOptions

__all__ = ["VideoRequest", "VideoOutcome", "run_video_job", "EncoderLoader", "BarFactory"]

EncoderLoader = Callable[[Any], Encoder]
"""Loads the encoder a model name (or None: the default model) names."""


class _Bar(Protocol):
    def update(self, n: int = 1) -> Any: ...


BarFactory = Callable[[int], AbstractContextManager[_Bar]]
"""Opens a progress bar over ``total`` frames (e.g. ``tqdm``); its ``update(n)`` is called per frame."""


@dataclass(frozen=True)
class VideoRequest:
    """What to do with one video: exactly one of ``mask``, ``session`` or ``points``, and the outputs wanted.

    ``max_side`` is the working size already resolved (0: full resolution; None: the device's default); a session replays its own
    working size and options. ``overlay`` is an mp4 path, ``overlay_pngs`` a folder (masks only).
    """

    video: str | os.PathLike[str]
    mask: Path | None = None
    session: Path | None = None
    points: Path | None = None
    frame: int = 0
    max_frames: int | None = None
    max_side: int | None = None
    resize_mask: bool = False
    model: str | None = None
    confidence: bool = False
    overlay: Path | None = None
    overlay_pngs: Path | None = None

    @property
    def kind(self) -> str:
        """``"mask"``, ``"session"`` or ``"points"``."""
        given = [name for name in ("mask", "session", "points") if getattr(self, name) is not None]
        if len(given) != 1:
            raise InputError("give the first-frame mask with --mask FILE (or a session exported by the app with "
                             f"--session, or points with `stcorr points`); got {given or 'none'}")
        return given[0]

    @property
    def inputs(self) -> list[str | os.PathLike[str]]:
        """The paths the job reads (the video and its prompt's file): no output may be or hold one."""
        return [path for path in (self.video, self.mask, self.session, self.points) if path is not None]


@dataclass(frozen=True)
class VideoOutcome:
    """What a job wrote: the number of frames and one human-readable line per output."""

    frames: int
    lines: tuple[str, ...]


def run_video_job(request: VideoRequest, out_dir: str | os.PathLike[str], *, encoder: EncoderLoader,
                  options: PropagationOptions, batch_size: int, overwrite: bool, bar: BarFactory) -> VideoOutcome:
    """Propagate ``request``'s prompt through its video and write the outputs under ``out_dir``.

    Masks: ``masks/<frame>.png`` (+ ``confidence/``, overlays), see
    :func:`~stcorr.pipelines.propagate_video_mask`; a session: its masks (``masks/``); points:
    ``points.json`` and ``points.csv`` (+ overlay). Inputs are read and checked before the model is loaded.
    Outputs that are, or hold, one of the request's inputs raise :class:`~stcorr.errors.OutputWriteError`
    before anything is read or written; ``out_dir`` is locked for the job
    (:func:`~stcorr.io.claims.output_lock`: a second run into it fails at once); earlier PNGs in the output
    folders raise :class:`~stcorr.errors.OutputWriteError` unless ``overwrite``.
    """
    jobs = {"mask": _mask_job, "session": _session_job, "points": _points_job}
    return jobs[request.kind](request, Path(out_dir), encoder=encoder, options=options, batch_size=batch_size,
                              overwrite=overwrite, bar=bar)


def _mask_job(request: VideoRequest, out: Path, *, encoder: EncoderLoader, options: PropagationOptions,
              batch_size: int, overwrite: bool, bar: BarFactory) -> VideoOutcome:
    from stcorr.io.frames import open_frames
    from stcorr.pipelines import check_mask_job_outputs, load_first_mask, propagate_video_mask

    check_mask_job_outputs(request.video, out, write_confidence=request.confidence, overlay_path=request.overlay,
                           overlay_dir=request.overlay_pngs, inputs=request.inputs)  # before anything is loaded
    source = open_frames(request.video, max_frames=request.max_frames)
    mask = load_first_mask(request.mask, source.original_size, resize=request.resize_mask)
    model = encoder(request.model)
    with bar(len(source)) as progress:
        job = propagate_video_mask(model, request.video, mask, out, start=request.frame, max_side=request.max_side,
                                   max_frames=request.max_frames, overlay_path=request.overlay,
                                   overlay_dir=request.overlay_pngs, write_confidence=request.confidence,
                                   overwrite=overwrite, progress=progress.update, options=options,
                                   batch_size=batch_size, inputs=request.inputs)
    lines = [f"wrote {job.frames} masks to {job.masks_dir}"]
    if job.reliability:
        lines.append(f"wrote per-object reliability to {job.reliability}")
    if job.confidence_dir:
        lines.append(f"wrote confidence maps to {job.confidence_dir}")
    if job.overlay:
        lines.append(f"wrote overlay video {job.overlay}")
    return VideoOutcome(job.frames, tuple(lines))


def _session_job(request: VideoRequest, out: Path, *, encoder: EncoderLoader, options: PropagationOptions,
                 batch_size: int, overwrite: bool, bar: BarFactory) -> VideoOutcome:
    """Rebuild the app's session from its anchors and options (``--model`` overrides its model), write every
    mask."""
    from stcorr.io.claims import check_apart, claim_png_folder, output_lock
    from stcorr.io.frames import open_frames
    from stcorr.io.reliability import RELIABILITY_FILE, write_reliability_json
    from stcorr.propagation.session import PropagationSession
    from stcorr.session_files import read_session_file, write_session_masks

    check_apart(request.inputs, folders={"the masks folder": out / "masks"},
                files={"the reliability file": out / RELIABILITY_FILE})
    data = read_session_file(request.session)
    with output_lock(out):
        claim_png_folder(out / "masks", overwrite)  # refuse an earlier run's PNGs before loading anything
        model_name = request.model if request.model is not None else data.get("model_name")
        max_frames = request.max_frames if request.max_frames is not None else data.get("max_frames")
        frames = open_frames(request.video, max_frames=max_frames)
        session = PropagationSession.from_dict(data, encoder(model_name), frames)
        with bar(len(session.stale_frames())) as progress:
            masks_dir = write_session_masks(session, out / "masks", progress=progress.update, overwrite=overwrite)
        reliability = write_reliability_json(out / RELIABILITY_FILE, session.frame_names,
                                             [session.result(t).reliability for t in range(session.num_frames)])
    line = (f"replayed {request.session} ({len(session.anchors)} anchors, model {model_name or 'default'}): "
            f"wrote {session.num_frames} masks to {masks_dir} and per-object reliability to {reliability}")
    return VideoOutcome(session.num_frames, (line,))


def _points_job(request: VideoRequest, out: Path, *, encoder: EncoderLoader, options: PropagationOptions,
                batch_size: int, overwrite: bool, bar: BarFactory) -> VideoOutcome:
    from stcorr.io.frames import open_frames
    from stcorr.io.tracks import read_points_file
    from stcorr.pipelines import track_video_points
    from stcorr.propagation.passes import check_points

    source = open_frames(request.video, max_frames=request.max_frames)
    points, names = read_points_file(request.points)
    check_points(points, source.original_size)  # before the model and the progress bar
    model = encoder(request.model)
    with bar(len(source)) as progress:
        path = track_video_points(model, request.video, points, names, out, start=request.frame,
                                  max_side=request.max_side, max_frames=request.max_frames,
                                  overlay_path=request.overlay, progress=progress.update, options=options,
                                  batch_size=batch_size, inputs=request.inputs)
    lines = [f"wrote {path} and {path.with_suffix('.csv')}"]
    if request.overlay:
        lines.append(f"wrote overlay video {request.overlay}")
    return VideoOutcome(len(source), tuple(lines))
