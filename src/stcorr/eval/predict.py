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
from collections.abc import Iterator, Sequence
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
from stcorr.propagation.api import iter_propagate
from stcorr.propagation.heatmaps import decode_heatmaps_topk, draw_gaussian_heatmaps
from stcorr.propagation.labels import VOID, resize_soft
from stcorr.propagation.passes import KEYPOINT_TOPK

__all__ = [
    "model_preset",
    "propagate_mask",
    "propagate_keypoints",
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
    mask = _first_mask(first_mask)
    source = _source(frames)
    if mask.shape != tuple(source.original_size):
        raise InputError(f"the first mask has shape {mask.shape} but the frames are {source.original_size}")
    predictions = iter_propagate(model, source, mask, options=preset.options, size=preset.input_size,
                                 resample=preset.resample if preset.input_size else None, batch_size=batch_size)
    for prediction in predictions:
        yield mask if prediction.t == 0 else np.where(prediction.labels == VOID, 0, prediction.labels)


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
    source = _source(frames)
    size = tuple(source.original_size)
    heatmaps = draw_gaussian_heatmaps(np.asarray(first_points, np.float64), size, preset.sigma, subpixel=False)
    if not bool(resize_soft(heatmaps, preset.input_size or size).any()):
        raise InputError("every first-frame keypoint lies outside the frame: nothing to propagate")
    points = np.full((len(source), len(heatmaps), 2), -1.0)
    points[0] = decode_heatmaps_topk(heatmaps, KEYPOINT_TOPK)[0].numpy()
    predictions = iter_propagate(
        model, source, heatmaps.numpy(), options=preset.options, size=preset.input_size,
        resample=preset.resample if preset.input_size else None, batch_size=batch_size, return_probabilities=True,
    )
    for prediction in predictions:
        if prediction.t > 0:
            maps = torch.from_numpy(prediction.probabilities)
            points[prediction.t] = decode_heatmaps_topk(maps, KEYPOINT_TOPK)[0].numpy()
    return points


# ------------------------------------------------------------------------------------------------
# Datasets


def _videos(items: Sequence[Any], shard: Shard, what: str, progress: bool) -> Iterator[Any]:
    mine = shard.select(items)
    logger.info("%s: rank %d of %d takes %d of %d videos", what, shard.rank, shard.world_size, len(mine), len(items))
    position = shard.rank if shard.distributed else None
    yield from tqdm(
        mine,
        desc=f"{what} [{shard.rank}]" if shard.distributed else what,
        unit="video",
        position=position,
        disable=None if progress else True,
    )


def _write_masks(folder: Path, names: Sequence[str], masks: Iterator[np.ndarray]) -> int:
    count = 0
    for name, ids in zip(names, masks):
        write_mask_png(folder / f"{name}.png", ids)
        count += 1
    return count


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
) -> list[str]:
    """Propagate frame 0's annotation of the shard's DAVIS sequences; write ``out/<seq>/<frame>.png``.

    Returns the names of the sequences written by this process.
    """
    dataset = DavisDataset(root, subset)
    preset = preset or model_preset(model, "davis")
    done = []
    for sequence in _videos(dataset.sequences, shard, "DAVIS", progress):
        start = time.perf_counter()
        source = open_frames(sequence.image_dir)
        first = read_label_png(sequence.annotation_paths()[0])
        count = _write_masks(
            Path(out) / sequence.name, source.names, propagate_mask(model, source, first, preset, batch_size=batch_size)
        )
        logger.info("DAVIS %s: %d frames in %.1f s", sequence.name, count, time.perf_counter() - start)
        done.append(sequence.name)
    return done


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
) -> list[str]:
    """Propagate frame 0's class ids through the shard's VIP videos; write ``out/<video>/<annotation>.png``.

    Frames and annotations are paired in sorted order (the frame folders hold the annotated frames only).
    """
    dataset = VipDataset(root, split)
    preset = preset or model_preset(model, "vip")
    done = []
    for video in _videos(dataset.videos, shard, "VIP", progress):
        start = time.perf_counter()
        frames, annotations = video.frame_paths(), video.annotation_paths()
        if len(frames) != len(annotations):
            raise InputError(
                f"VIP video {video.name!r} has {len(frames)} frames but {len(annotations)} annotations; "
                "the frame folder must hold exactly the annotated frames"
            )
        masks = propagate_mask(
            model, [read_rgb(p) for p in frames], read_label_png(annotations[0]), preset, batch_size=batch_size
        )
        _write_masks(Path(out) / video.name, [p.stem for p in annotations], masks)
        logger.info("VIP %s: %d frames in %.1f s", video.name, len(frames), time.perf_counter() - start)
        done.append(video.name)
    return done


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
) -> list[str]:
    """Propagate frame 0's GT joints through the shard's JHMDB videos; write ``out/<class>/<video>.npy``."""
    dataset = JhmdbDataset(root, list_file)
    preset = preset or model_preset(model, "jhmdb")
    done = []
    for video in _videos(dataset.videos, shard, "JHMDB", progress):
        start = time.perf_counter()
        frames = [read_rgb(p) for p in video.frame_paths()]
        points = propagate_keypoints(model, frames, video.keypoints()[0], preset, batch_size=batch_size)
        save_keypoints(Path(out) / f"{video.name}.npy", points)
        logger.info("JHMDB %s: %d frames in %.1f s", video.name, len(frames), time.perf_counter() - start)
        done.append(video.name)
    return done
