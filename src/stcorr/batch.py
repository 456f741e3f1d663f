"""``stcorr propagate-many``: propagate many videos listed in a manifest, resumably, over torchrun processes.

- **Outputs**: each video's outputs go to ``DIR/<name>/`` exactly as ``stcorr propagate`` (or ``stcorr points``)
  writes them, through the same :func:`stcorr.video_jobs.run_video_job`; ``DIR/summary.json`` (atomic, written
  by rank 0 at the end) lists every video in manifest order: status (``done``, ``skipped`` = complete from an
  earlier run, ``failed``), frames, seconds, and the typed error of a failed video.
- **Resumable**: a video's done marker ``DIR/<name>/.stcorr-done.json`` is written last, atomically, and holds
  the job's settings; a video whose marker matches is skipped, any other is redone from scratch (its earlier
  PNGs deleted first). ``overwrite`` redoes every video.
- **Failures are per video**: an exception while a video runs is recorded and the next video starts.
- **Safeguards** (those of ``stcorr propagate``, issue 22): ``DIR/<name>/`` that is, or holds, one of the row's
  inputs is refused (that video's failure), and is locked while its video runs
  (:func:`stcorr.io.claims.output_lock`), so ranks, or two jobs, never write one folder at once. An interrupt
  (``KeyboardInterrupt``, which the command line raises for SIGINT and SIGTERM) is not a video's failure: it
  ends the job, and the unfinished video has no done marker.
- **Processes**: under ``torchrun`` each rank takes ``rows[rank::world_size]``
  (:class:`stcorr.distributed.Shard`), loads the model on its device and at the end all ranks exchange
  their records (gloo, CPU); rank 0 writes the summary. A rank that fails as a whole (e.g. its model cannot be
  loaded) is named in the error every rank raises; a rank that dies makes torchrun end the others.
- **Batched kernel**: with ``batch_videos`` > 1, mask rows annotated on frame 0 that share a working size,
  model and options are propagated together (:func:`stcorr.propagation.api.iter_propagate_batch`; one encoder
  pass and one kernel step per frame for all of them; worthwhile on GPUs). Masks then equal single-video
  propagation up to the encoder's floating-point differences between batch sizes. A batch that fails is rerun
  video by video, so each error lands on its own video.

Library code: messages go to :mod:`logging`; the progress bars (videos, and frames of the current video) are
shown on rank 0 only when asked.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stcorr._atomic import atomic_path, remove_stale_temps
from stcorr.batch_manifest import SUMMARY_NAME, ManifestRow
from stcorr.distributed import BARRIER_TIMEOUT, Shard, gather_objects, process_group, shard_device
from stcorr.errors import OutputWriteError, StcorrError
from stcorr.features import Encoder
from stcorr.io.claims import check_apart, output_lock
from stcorr.propagation.options import PropagationOptions
from stcorr.video_jobs import BarFactory, VideoRequest, run_video_job

__all__ = ["ManySettings", "ManyResult", "run_many", "propagate_rows", "DONE_MARKER", "SUMMARY_NAME"]

logger = logging.getLogger(__name__)

DONE_MARKER = ".stcorr-done.json"
"""Written last into ``DIR/<name>/`` once every output of the video is complete."""


@dataclass(frozen=True)
class ManySettings:
    """The command line's settings, shared by every row (a row may override ``max_side``, ``max_frames``,
    the options and the model). ``max_side`` is resolved (0: full resolution)."""

    model: str | None = None
    device: str | None = None
    options: PropagationOptions = PropagationOptions()
    max_side: int = 0
    max_frames: int | None = None
    batch_size: int = 1
    batch_videos: int = 1
    resize_mask: bool = False
    confidence: bool = False
    overlay: bool = False
    overlay_pngs: bool = False
    overwrite: bool = False


@dataclass(frozen=True)
class ManyResult:
    """The job's outcome: one record per video in manifest order (the summary's ``videos``) and the counts."""

    summary: dict[str, Any]

    @property
    def failed(self) -> int:
        return self.summary["counts"]["failed"]


# ---------------------------------------------------------------------------------------------- per video


def _request(row: ManifestRow, settings: ManySettings, folder: Path) -> VideoRequest:
    """The row's request completed with the command line's settings, outputs inside ``folder``."""
    request = row.request
    masks = request.kind == "mask"
    max_side = settings.max_side if row.max_side is None else row.max_side
    return dataclasses.replace(
        request,
        max_side=max_side,
        max_frames=request.max_frames if request.max_frames is not None else settings.max_frames,
        model=request.model if request.model is not None else settings.model,
        resize_mask=request.resize_mask or settings.resize_mask,
        confidence=settings.confidence and masks,
        overlay=folder / "overlay.mp4" if settings.overlay and request.kind != "session" else None,
        overlay_pngs=folder / "overlay" if settings.overlay_pngs and masks else None,
    )


def _options(row: ManifestRow, settings: ManySettings) -> PropagationOptions:
    return dataclasses.replace(settings.options, **row.options)


def _fingerprint(row: ManifestRow, settings: ManySettings) -> dict[str, str]:
    """Everything that decides a video's outputs, as strings: a done marker counts only for the same job.
    Input paths are made absolute and output paths left out, so the same job run from elsewhere matches."""
    request = _request(row, settings, Path())
    fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}
    fields.update({name: os.path.abspath(fields[name]) for name in ("video", "mask", "session", "points")
                   if fields[name] is not None})
    fields.update(overlay=request.overlay is not None, overlay_pngs=request.overlay_pngs is not None)
    fields.update({f"option.{f.name}": getattr(_options(row, settings), f.name)
                   for f in dataclasses.fields(PropagationOptions)})
    return {key: str(value) for key, value in fields.items()}


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / DONE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_marker(folder: Path, job: dict[str, str], frames: int, seconds: float) -> None:
    with atomic_path(folder / DONE_MARKER) as tmp:
        tmp.write_text(json.dumps({"frames": frames, "seconds": round(seconds, 3), "job": job}) + "\n",
                       encoding="utf-8")


@contextmanager
def _video_folder(request: VideoRequest, folder: Path) -> Iterator[None]:
    """``DIR/<name>`` while its video is (re)done: refused if it is, or holds, one of the video's inputs (the
    job deletes and rewrites what it holds); locked for the block (:func:`~stcorr.io.claims.output_lock`, so
    another run, or another rank given the same folder, fails on that video at once); its done marker and the
    temporary files a killed run left beside its single-file outputs removed first (PNG folders are emptied
    by the job itself)."""
    check_apart(request.inputs, folders={"the video's output folder": folder})
    with output_lock(folder):
        (folder / DONE_MARKER).unlink(missing_ok=True)
        remove_stale_temps(folder)
        yield


def _record(row: ManifestRow, status: str, *, frames: int | None = None, seconds: float | None = None,
            error: BaseException | None = None, rank: int = 0) -> dict[str, Any]:
    return {
        "name": row.name,
        "line": row.line,
        "video": str(row.request.video),
        "status": status,
        "frames": frames,
        "seconds": None if seconds is None else round(seconds, 3),
        "error": None if error is None else {"type": type(error).__name__, "message": str(error)},
        "rank": rank,
    }


class _Encoders:
    """Each model the rows name, loaded once on this process's device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._loaded: dict[Any, Encoder] = {}

    def __call__(self, name: Any) -> Encoder:
        if name not in self._loaded:
            from stcorr.loading import load_encoder

            self._loaded[name] = load_encoder(name, device=self.device)
        return self._loaded[name]


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


def _no_bar(total: int) -> nullcontext[_NoBar]:
    return nullcontext(_NoBar())


def _frames_bar(name: str) -> BarFactory:
    from tqdm import tqdm

    return lambda total: tqdm(total=total, unit="frame", desc=name, leave=False, position=1, dynamic_ncols=True)


def _run_one(row: ManifestRow, out: Path, settings: ManySettings, encoders: _Encoders, bar: BarFactory,
             rank: int) -> dict[str, Any]:
    """Run one video; its record. Any exception is recorded (the job goes on); the marker comes last."""
    folder = out / row.name
    request = _request(row, settings, folder)
    start = time.perf_counter()
    try:
        with _video_folder(request, folder):
            outcome = run_video_job(request, folder, encoder=encoders, options=_options(row, settings),
                                    batch_size=settings.batch_size, overwrite=True, bar=bar)
            seconds = time.perf_counter() - start
            _write_marker(folder, _fingerprint(row, settings), outcome.frames, seconds)
    except Exception as exc:  # noqa: BLE001 - a failed video is recorded with its error; the next one starts
        logger.info("video %s (manifest line %d) failed: %s: %s", row.name, row.line, type(exc).__name__, exc)
        logger.debug("traceback of %s", row.name, exc_info=True)
        return _record(row, "failed", seconds=time.perf_counter() - start, error=exc, rank=rank)
    logger.info("video %s: %d frames in %.1f s", row.name, outcome.frames, seconds)
    return _record(row, "done", frames=outcome.frames, seconds=seconds, rank=rank)


# ------------------------------------------------------------------------------------ several videos at once


def _batch_key(row: ManifestRow, settings: ManySettings) -> tuple[Any, ...] | None:
    """Rows with one key can share the batched kernel (None: this row runs alone)."""
    if settings.batch_videos < 2 or row.request.kind != "mask" or row.request.frame != 0:
        return None
    from stcorr.io.frames import open_frames

    request = _request(row, settings, Path())
    try:
        source = open_frames(request.video, max_frames=request.max_frames)
        side = request.max_side if request.max_side and max(source.original_size) > request.max_side else None
        size = source.resized(max_side=side).size if side else source.size
    except Exception:  # noqa: BLE001 - an unreadable video runs alone, where its error is recorded
        return None
    return (tuple(size), request.max_side, request.model, _options(row, settings))


def _groups(rows: Sequence[ManifestRow], settings: ManySettings) -> Iterator[list[ManifestRow]]:
    """Rows in manifest order, those that can share the batched kernel in groups of up to ``batch_videos``."""
    batches: dict[tuple[Any, ...], list[ManifestRow]] = {}
    for row in rows:
        key = _batch_key(row, settings)
        if key is None:
            yield [row]
            continue
        batches.setdefault(key, []).append(row)
        if len(batches[key]) == settings.batch_videos:
            yield batches.pop(key)
    yield from batches.values()


def _run_batch(rows: list[ManifestRow], out: Path, settings: ManySettings, encoders: _Encoders, bar: BarFactory,
               rank: int) -> list[dict[str, Any]]:
    """Propagate mask rows of one working size together and write each video's outputs; their records."""
    from stcorr.io.frames import open_frames
    from stcorr.pipelines import MaskOutputs, load_first_mask
    from stcorr.propagation.api import iter_propagate_batch

    start = time.perf_counter()
    requests = [_request(row, settings, out / row.name) for row in rows]
    sources = [open_frames(r.video, max_frames=r.max_frames) for r in requests]
    masks = [load_first_mask(r.mask, s.original_size, resize=r.resize_mask) for r, s in zip(requests, sources)]
    outputs = [MaskOutputs(out / row.name, overlay_path=r.overlay, overlay_dir=r.overlay_pngs,
                           write_confidence=r.confidence) for row, r in zip(rows, requests)]
    with ExitStack() as folders:
        for row, request, output in zip(rows, requests, outputs):
            output.check(request.video, request.inputs)
            folders.enter_context(_video_folder(request, out / row.name))
            output.claim(True)
        steps = iter_propagate_batch(encoders(requests[0].model), sources, masks,
                                     options=_options(rows[0], settings), max_side=requests[0].max_side)
        with bar(max(len(s) for s in sources)) as progress, ExitStack() as stack:
            writers = [stack.enter_context(o.writing(r.video, s.names, in_order=True, max_frames=r.max_frames))
                       for o, r, s in zip(outputs, requests, sources)]
            for t, predictions in enumerate(steps):
                for write, source, prediction in zip(writers, sources, predictions):
                    if prediction is not None:
                        write(source.names[t], prediction.labels, prediction.confidence, prediction.reliability)
                progress.update(1)
        seconds = (time.perf_counter() - start) / len(rows)  # each video's share of the batch's time
        for row, source in zip(rows, sources):
            _write_marker(out / row.name, _fingerprint(row, settings), len(source), seconds)
    logger.info("videos %s: propagated together in %.1f s", ", ".join(row.name for row in rows), seconds * len(rows))
    return [_record(row, "done", frames=len(source), seconds=seconds, rank=rank) for row, source in zip(rows, sources)]


# ---------------------------------------------------------------------------------------------- one rank


def _is_done(row: ManifestRow, out: Path, settings: ManySettings) -> dict[str, Any] | None:
    """The done marker of a complete earlier run of this very job (None: the video must be (re)done)."""
    if settings.overwrite:
        return None
    marker = _read_marker(out / row.name)
    if marker is None or marker.get("job") != _fingerprint(row, settings):
        return None
    return marker


def propagate_rows(rows: Sequence[ManifestRow], out: str | os.PathLike[str], settings: ManySettings, *,
                   shard: Shard = Shard(), device: torch.device | None = None,
                   progress: bool = False) -> list[dict[str, Any]]:
    """Propagate this shard's rows (``rows[rank::world_size]``) into ``out``; their records, in row order."""
    out = Path(out)
    mine = shard.select(list(rows))
    device = device if device is not None else shard_device(shard, settings.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # kernels launched without an explicit device go to this rank's GPU
    encoders = _Encoders(device)
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for row in mine:
        marker = _is_done(row, out, settings)
        if marker is None:
            todo.append(row)
        else:
            records[row.name] = _record(row, "skipped", frames=marker.get("frames"), seconds=marker.get("seconds"),
                                        rank=shard.rank)
    logger.info("rank %d of %d: %d videos, %d already done", shard.rank, shard.world_size, len(mine),
                len(mine) - len(todo))
    if any(row.request.model is None and row.request.kind != "session" for row in todo):
        encoders(settings.model)  # a model that cannot be loaded fails the job, not each of its videos
    with _videos_bar(len(mine), len(mine) - len(todo), progress and shard.is_main) as videos:
        for group in _groups(todo, settings):
            bar = _frames_bar(group[0].name) if progress and shard.is_main else _no_bar
            if len(group) > 1:
                try:
                    for record in _run_batch(group, out, settings, encoders, bar, shard.rank):
                        records[record["name"]] = record
                    videos.update(len(group))
                    continue
                except Exception:  # noqa: BLE001 - rerun one by one: each error lands on its own video
                    logger.info("batch of %s failed; running them one by one", [row.name for row in group],
                                exc_info=True)
            for row in group:
                records[row.name] = _run_one(row, out, settings, encoders, bar, shard.rank)
                videos.update(1)
    return [records[row.name] for row in mine]


@contextmanager
def _videos_bar(total: int, done: int, show: bool) -> Iterator[Any]:
    if not show:
        yield _NoBar()
        return
    from tqdm import tqdm

    with tqdm(total=total, initial=done, unit="video", desc="videos", position=0, dynamic_ncols=True) as bar:
        yield bar


# ---------------------------------------------------------------------------------------------- the job


def _summary(rows: Sequence[ManifestRow], records: list[dict[str, Any]], shard: Shard) -> dict[str, Any]:
    by_name = {record["name"]: record for record in records}
    videos = [by_name[row.name] for row in rows]
    counts = {status: sum(v["status"] == status for v in videos) for status in ("done", "skipped", "failed")}
    return {"world_size": shard.world_size, "counts": counts,
            "frames": sum(v["frames"] or 0 for v in videos if v["status"] != "failed"), "videos": videos}


def write_summary(out: Path, summary: dict[str, Any]) -> Path:
    """Write ``out/summary.json`` atomically."""
    path = out / SUMMARY_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return path


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise OutputWriteError(f"the output folder {out} is a file; expected a folder (or a path that does not "
                               "exist yet)")


def run_many(rows: Sequence[ManifestRow], out: str | os.PathLike[str], settings: ManySettings, *,
             shard: Shard = Shard(), progress: bool = False) -> ManyResult:
    """The whole job on this process: its shard of ``rows``, then (all ranks) the exchange of the records and
    (rank 0) ``out/summary.json``. Every rank returns the same :class:`ManyResult`.

    Raises:
        StcorrError: naming the rank, when a rank failed as a whole (not a single video) or lost the others.
    """
    out = Path(out)
    _check_out(out)
    with process_group(shard, timeout=BARRIER_TIMEOUT):
        records: list[dict[str, Any]] = []
        error = None
        try:
            records = propagate_rows(rows, out, settings, shard=shard, progress=progress)
        except StcorrError as exc:
            if not shard.distributed:
                raise
            error = f"{type(exc).__name__}: {exc}"
        try:
            parts = gather_objects({"rank": shard.rank, "records": records, "error": error})
        except RuntimeError as exc:  # gloo: a peer went away
            raise StcorrError(f"rank {shard.rank}: lost the other processes while collecting results ({exc}); a "
                              "process died (torchrun names its rank); run the same command again to resume") from exc
    failed = [part for part in parts if part["error"] is not None]
    if failed:
        first = failed[0]
        raise StcorrError(f"rank {first['rank']} failed: {first['error']} (the videos finished so far are kept "
                          f"under {out} (run the same command again to resume)")
    summary = _summary(rows, [record for part in parts for record in part["records"]], shard)
    if shard.is_main:
        write_summary(out, summary)
    return ManyResult(summary)
