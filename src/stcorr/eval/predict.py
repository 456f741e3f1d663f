"""Model-driven evaluation: propagate benchmark videos with a model and write the result folders that
:mod:`stcorr.eval.cli`'s scorers read.

* :func:`propagate_mask` / :func:`propagate_keypoints` run one video under an :class:`EvalPreset`:
  frames are resized to the preset's input size (bilinear, no antialiasing, like ``cv2.resize``), the
  first labels are brought to that size (masks by PIL nearest, heatmaps bilinearly), and predictions
  are returned at the original size (soft labels upsampled bilinearly before the min-max normalisation
  and arg-max; heatmaps upsampled before the top-5 decoding), as in Spa-then-Temp.
* :func:`predict_davis`, :func:`predict_vip`, :func:`predict_jhmdb` do this for the videos of one
  :class:`~stcorr.eval.sharding.Shard` of a dataset and write ``out/<video>/<frame>.png`` (palette
  PNGs of object or class ids) or ``out/<class>/<video>.npy`` keypoints.

Void (255) in a first mask is treated as background, as the DAVIS semi-supervised protocol does.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from stcorr.datasets import DavisDataset, JhmdbDataset, VipDataset, read_label_png, read_rgb
from stcorr.errors import InputError
from stcorr.eval.presets import EvalPreset, preset_for
from stcorr.eval.sharding import Shard
from stcorr.features import Encoder, feature_stride
from stcorr.io.frames import FrameSource, open_frames
from stcorr.io.masks import write_mask_png
from stcorr.metrics.jhmdb import save_keypoints
from stcorr.propagation.api import FramePrediction, iter_propagate, iter_propagate_batch
from stcorr.propagation.heatmaps import decode_heatmaps_topk, draw_gaussian_heatmaps
from stcorr.propagation.labels import VOID, resize_soft
from stcorr.propagation.passes import KEYPOINT_TOPK

__all__ = [
    "model_preset",
    "propagate_mask",
    "propagate_keypoints",
    "propagate_masks",
    "propagate_keypoints_batch",
    "predict_davis",
    "predict_vip",
    "predict_jhmdb",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def model_preset(model: Encoder, benchmark: str, **overrides: Any) -> EvalPreset:
    """The preset of ``benchmark`` for the model's stride, with ``overrides`` (None keeps a value)."""
    return preset_for(benchmark, feature_stride(model)).with_overrides(**overrides)


def _first_mask(mask: np.ndarray) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise InputError(f"the first mask must be an (H, W) id map, got shape {array.shape}")
    return np.where(array == VOID, 0, array).astype(np.uint8)


def propagate_mask(
    model: Encoder,
    frames: Any,
    first_mask: np.ndarray,
    preset: EvalPreset,
    *,
    batch_size: int = 8,
) -> Iterator[np.ndarray]:
    """Yield the (H, W) uint8 id map of every frame at the original size; frame 0 is ``first_mask``.

    ``frames``: a :class:`FrameSource`, anything :func:`open_frames` accepts, or a list of (H, W, 3)
    uint8 arrays; ``first_mask`` must have the frames' original size. The propagation API works at the
    preset's input size and returns masks at the original size (probabilities upsampled before the arg-max).
    """
    source, mask = _mask_video(frames, first_mask)
    predictions = iter_propagate(model, source, mask, batch_size=batch_size, **_working(preset))
    for prediction in predictions:
        yield _mask_of(prediction, mask)


def propagate_masks(
    model: Encoder,
    videos: Sequence[tuple[Any, np.ndarray]],
    preset: EvalPreset,
) -> Iterator[list[np.ndarray | None]]:
    """:func:`propagate_mask` for several (frames, first mask) videos at once (one batched propagation,
    frames encoded across videos; see :func:`~stcorr.propagation.api.iter_propagate_batch`). Their working
    sizes must match (one frame size, or a preset input size). Yields, per frame index t, each video's (H, W)
    id map, or None once that video has ended."""
    prepared = [_mask_video(frames, mask) for frames, mask in videos]
    steps = iter_propagate_batch(model, [s for s, _ in prepared], [m for _, m in prepared], **_working(preset))
    for step in steps:
        yield [None if p is None else _mask_of(p, mask) for p, (_, mask) in zip(step, prepared)]


def _working(preset: EvalPreset) -> dict[str, Any]:
    """The propagation API's options and working size of ``preset``: its input size, or else the frames' own
    size (``max_side=0``: never the API's default CPU working size, so protocols are the same on any device)."""
    return dict(options=preset.options, size=preset.input_size, max_side=None if preset.input_size else 0,
                resample=preset.resample if preset.input_size else None)


def _mask_video(frames: Any, first_mask: np.ndarray) -> tuple[FrameSource, np.ndarray]:
    """(source, first mask with void as background), the mask checked against the frames' original size."""
    mask = _first_mask(first_mask)
    source = _source(frames)
    if mask.shape != tuple(source.original_size):
        raise InputError(f"the first mask has shape {mask.shape} but the frames are {source.original_size}")
    return source, mask


def _mask_of(prediction: FramePrediction, first_mask: np.ndarray) -> np.ndarray:
    """The (H, W) id map of a prediction (void as background); frame 0 is the first mask."""
    return first_mask if prediction.t == 0 else np.where(prediction.labels == VOID, 0, prediction.labels)


def _source(frames: Any) -> FrameSource:
    """Frames as a :class:`FrameSource` (a list of (H, W, 3) uint8 arrays is stacked)."""
    if isinstance(frames, FrameSource):
        return frames
    if isinstance(frames, (list, tuple)) and all(isinstance(f, np.ndarray) and f.dtype == np.uint8 for f in frames):
        return open_frames(np.stack(frames))
    return open_frames(frames)


def propagate_keypoints(
    model: Encoder,
    frames: Any,
    first_points: np.ndarray,
    preset: EvalPreset,
    *,
    batch_size: int = 8,
) -> np.ndarray:
    """Keypoints of every frame, (T, J, 2) pixel (x, y) in the original frames; (-1, -1) = lost.

    ``first_points`` (J, 2) are frame 0's points; they may lie outside the frame (their heatmap is then
    cut or empty, as in the reference). Heatmaps are drawn at the original size with the reference's
    integer anchoring (``subpixel=False``), and frame 0 is decoded from its own heatmaps like the others.
    """
    video = _KeypointVideo.prepare(frames, first_points, preset)
    predictions = iter_propagate(model, video.source, video.heatmaps, batch_size=batch_size,
                                 return_probabilities=True, **_working(preset))
    for prediction in predictions:
        video.decode(prediction)
    return video.points


def propagate_keypoints_batch(
    model: Encoder, videos: Sequence[tuple[Any, np.ndarray]], preset: EvalPreset
) -> list[np.ndarray]:
    """:func:`propagate_keypoints` for several (frames, first points) videos at once (one batched propagation;
    see :func:`~stcorr.propagation.api.iter_propagate_batch`). Their working sizes must match."""
    prepared = [_KeypointVideo.prepare(frames, points, preset) for frames, points in videos]
    steps = iter_propagate_batch(model, [v.source for v in prepared], [v.heatmaps for v in prepared],
                                 return_probabilities=True, **_working(preset))
    for step in steps:
        for prediction, video in zip(step, prepared):
            if prediction is not None:
                video.decode(prediction)
    return [v.points for v in prepared]


@dataclass(frozen=True)
class _KeypointVideo:
    """A video ready for keypoint propagation: its source, frame 0's heatmaps at the original size, and the
    (T, J, 2) points decoded so far (frame 0 from its own heatmaps)."""

    source: FrameSource
    heatmaps: np.ndarray
    points: np.ndarray

    @staticmethod
    def prepare(frames: Any, first_points: np.ndarray, preset: EvalPreset) -> _KeypointVideo:
        source = _source(frames)
        size = tuple(source.original_size)
        heatmaps = draw_gaussian_heatmaps(np.asarray(first_points, np.float64), size, preset.sigma, subpixel=False)
        if not bool(resize_soft(heatmaps, preset.input_size or size).any()):
            raise InputError("every first-frame keypoint lies outside the frame: nothing to propagate")
        points = np.full((len(source), len(heatmaps), 2), -1.0)
        points[0] = decode_heatmaps_topk(heatmaps, KEYPOINT_TOPK)[0].numpy()
        return _KeypointVideo(source, heatmaps.numpy(), points)

    def decode(self, prediction: FramePrediction) -> None:
        """Store the points of a predicted frame (frame 0 keeps its own)."""
        if prediction.t > 0:
            maps = torch.from_numpy(prediction.probabilities)
            self.points[prediction.t] = decode_heatmaps_topk(maps, KEYPOINT_TOPK)[0].numpy()


# ------------------------------------------------------------------------------------------------
# Datasets


def _mine(items: Sequence[Any], shard: Shard, what: str) -> list[Any]:
    mine = shard.select(items)
    logger.info("%s: rank %d of %d takes %d of %d videos", what, shard.rank, shard.world_size, len(mine), len(items))
    return list(mine)


def _progress(total: int, shard: Shard, what: str, progress: bool) -> tqdm:
    return tqdm(
        total=total,
        desc=f"{what} [{shard.rank}]" if shard.distributed else what,
        unit="video",
        position=shard.rank if shard.distributed else None,
        disable=None if progress else True,
    )


@dataclass(frozen=True)
class _Job:
    """One video to propagate and write: ``load`` gives its inputs (masks: (frames, first mask)); ``names``
    are its frames' output file stems (their count is its length); ``size`` the frame size propagated (videos
    of one size can share a batch)."""

    name: str
    load: Callable[[], Any]
    names: Sequence[str]
    size: tuple[int, int]


def _write_mask_jobs(
    model: Encoder, jobs: list[_Job], out: PathLike, preset: EvalPreset, what: str, *, batch_size: int,
    batch_videos: int, shard: Shard, progress: bool,
) -> list[str]:
    """Propagate and write every job, ``batch_videos`` videos of one size at a time; the names written."""
    if batch_videos < 1:
        raise InputError(f"batch_videos must be >= 1, got {batch_videos}")
    with _progress(len(jobs), shard, what, progress) as bar:
        for batch in _size_batches(jobs, batch_videos):
            start = time.perf_counter()
            loaded = [job.load() for job in batch]
            if len(batch) == 1:
                steps: Iterator[list[np.ndarray | None]] = (
                    [ids] for ids in propagate_mask(model, *loaded[0], preset, batch_size=batch_size)
                )
            else:
                steps = propagate_masks(model, loaded, preset)
            for t, masks in enumerate(steps):
                for job, ids in zip(batch, masks):
                    if ids is not None:
                        write_mask_png(Path(out) / job.name / f"{job.names[t]}.png", ids)
            names = ", ".join(job.name for job in batch)
            logger.info("%s %s: %d frames in %.1f s", what, names, sum(len(j.names) for j in batch),
                        time.perf_counter() - start)
            bar.update(len(batch))
    return [job.name for job in jobs]


def _size_batches(jobs: list[_Job], batch_videos: int) -> Iterator[list[_Job]]:
    """Jobs in batches of at most ``batch_videos`` of one frame size, longest videos first (least padding)."""
    if batch_videos == 1:
        yield from ([job] for job in jobs)
        return
    by_size: dict[tuple[int, int], list[_Job]] = {}
    for job in sorted(jobs, key=lambda j: -len(j.names)):
        by_size.setdefault(job.size, []).append(job)
    for group in by_size.values():
        for i in range(0, len(group), batch_videos):
            yield group[i : i + batch_videos]


def predict_davis(
    model: Encoder,
    root: PathLike,
    out: PathLike,
    subset: str = "val",
    *,
    preset: EvalPreset | None = None,
    shard: Shard = Shard(),
    batch_size: int = 8,
    progress: bool = False,
    batch_videos: int = 1,
) -> list[str]:
    """Propagate frame 0's annotation of the shard's DAVIS sequences; write ``out/<seq>/<frame>.png``.

    ``batch_videos`` > 1 propagates that many sequences of one frame size together (:func:`propagate_masks`).
    Returns the names of the sequences written by this process.
    """
    dataset = DavisDataset(root, subset)
    preset = preset or model_preset(model, "davis")
    jobs = []
    for sequence in _mine(dataset.sequences, shard, "DAVIS"):
        source = open_frames(sequence.image_dir)
        first_path = sequence.annotation_paths()[0]
        jobs.append(_Job(sequence.name, lambda s=source, p=first_path: (s, read_label_png(p)), source.names,
                             preset.input_size or source.size))
    return _write_mask_jobs(model, jobs, out, preset, "DAVIS", batch_size=batch_size, batch_videos=batch_videos,
                            shard=shard, progress=progress)


def predict_vip(
    model: Encoder,
    root: PathLike,
    out: PathLike,
    split: str = "val",
    *,
    preset: EvalPreset | None = None,
    shard: Shard = Shard(),
    batch_size: int = 8,
    progress: bool = False,
    batch_videos: int = 1,
) -> list[str]:
    """Propagate frame 0's class ids through the shard's VIP videos; write ``out/<video>/<annotation>.png``.

    Frames and annotations are paired in sorted order (the frame folders hold the annotated frames only).
    ``batch_videos`` > 1 propagates that many videos of one working size together (:func:`propagate_masks`).
    """
    dataset = VipDataset(root, split)
    preset = preset or model_preset(model, "vip")
    jobs = []
    for video in _mine(dataset.videos, shard, "VIP"):
        frames, annotations = video.frame_paths(), video.annotation_paths()
        if len(frames) != len(annotations):
            raise InputError(
                f"VIP video {video.name!r} has {len(frames)} frames but {len(annotations)} annotations; "
                "the frame folder must hold exactly the annotated frames"
            )
        size = preset.input_size or read_rgb(frames[0]).shape[:2]
        jobs.append(_Job(video.name, lambda f=frames, a=annotations[0]: ([read_rgb(p) for p in f],
                                                                              read_label_png(a)),
                             [p.stem for p in annotations], tuple(size)))
    return _write_mask_jobs(model, jobs, out, preset, "VIP", batch_size=batch_size, batch_videos=batch_videos,
                            shard=shard, progress=progress)


def predict_jhmdb(
    model: Encoder,
    root: PathLike,
    out: PathLike,
    list_file: PathLike | None = None,
    *,
    preset: EvalPreset | None = None,
    shard: Shard = Shard(),
    batch_size: int = 8,
    progress: bool = False,
    batch_videos: int = 1,
) -> list[str]:
    """Propagate frame 0's GT joints through the shard's JHMDB videos; write ``out/<class>/<video>.npy``.

    ``batch_videos`` > 1 propagates that many videos of one working size together
    (:func:`propagate_keypoints_batch`).
    """
    if batch_videos < 1:
        raise InputError(f"batch_videos must be >= 1, got {batch_videos}")
    dataset = JhmdbDataset(root, list_file)
    preset = preset or model_preset(model, "jhmdb")
    mine = _mine(dataset.videos, shard, "JHMDB")
    sizes = [preset.input_size or read_rgb(v.frame_paths()[0]).shape[:2] for v in mine]
    jobs = [_Job(v.name, lambda v=v: v, [p.stem for p in v.frame_paths()], tuple(size))
            for v, size in zip(mine, sizes)]
    with _progress(len(jobs), shard, "JHMDB", progress) as bar:
        for batch in _size_batches(jobs, batch_videos):
            start = time.perf_counter()
            videos = [job.load() for job in batch]
            inputs = [([read_rgb(p) for p in v.frame_paths()], v.keypoints()[0]) for v in videos]
            if len(batch) == 1:
                results = [propagate_keypoints(model, *inputs[0], preset, batch_size=batch_size)]
            else:
                results = propagate_keypoints_batch(model, inputs, preset)
            for video, points in zip(videos, results):
                save_keypoints(Path(out) / f"{video.name}.npy", points)
            logger.info("JHMDB %s: %d frames in %.1f s", ", ".join(v.name for v in videos),
                        sum(len(i[0]) for i in inputs), time.perf_counter() - start)
            bar.update(len(batch))
    return [job.name for job in jobs]
