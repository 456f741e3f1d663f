"""Scoring result folders on DAVIS-2017 (J&F), VIP (mIoU) and JHMDB (PCK), like the reference tools.

Result layouts:

* DAVIS: ``DIR/<seq>/<frame>.png``, single-channel indexed PNGs at GT size, one per evaluated GT
  frame (the first and last frames are not read). Object ids as in the first GT frame.
* VIP: ``DIR/<video>/<frame>.png`` class-id PNGs, one per GT annotation, frame 0 included; another
  size is nearest-resized to the GT size.
* JHMDB: ``DIR/<class>/<video>.npy`` or ``.json`` keypoints of shape ``(T, 15, 2)``, pixel
  ``(x, y)`` in the original frame, ``-1`` for missing (:func:`stcorr.metrics.jhmdb.save_keypoints`).

Every score is recomputed from the PNGs / keypoint files; no cached CSV is ever read. A missing
folder or file or a malformed result raises a typed error.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from stcorr._atomic import atomic_path
from stcorr.datasets import DavisDataset, JhmdbDataset, VipDataset, read_label_png
from stcorr.errors import DataReadError, InputError
from stcorr.metrics import davis, jhmdb, vip

__all__ = [
    "DavisEvaluation",
    "VipEvaluation",
    "JhmdbEvaluation",
    "evaluate_davis",
    "evaluate_vip",
    "evaluate_jhmdb",
    "write_davis_csv",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def _results_dir(results: PathLike) -> Path:
    path = Path(results)
    if not path.is_dir():
        raise DataReadError(f"results folder not found: {path}")
    return path


def _result_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataReadError(f"missing result for {what}: {path}")
    return path


def _json_number(value: float) -> float | None:
    """JSON has no NaN: undefined values are written as null."""
    return None if math.isnan(value) else float(value)


# ------------------------------------------------------------------------------------------------
# DAVIS


@dataclass(frozen=True)
class DavisEvaluation:
    """DAVIS semi-supervised scores of a result folder."""

    subset: str
    summary: davis.DavisSummary
    objects: tuple[davis.ObjectScores, ...]
    evaluated_frames: dict[str, list[str]]

    def to_json(self) -> dict[str, Any]:
        per_object = {
            o.key: {
                "J-Mean": o.j_stats.mean, "J-Recall": o.j_stats.recall, "J-Decay": o.j_stats.decay,
                "F-Mean": o.f_stats.mean, "F-Recall": o.f_stats.recall, "F-Decay": o.f_stats.decay,
            }
            for o in self.objects
        }  # fmt: skip
        per_sequence: dict[str, Any] = {
            name: {"frames": frames, "J": {}, "F": {}} for name, frames in self.evaluated_frames.items()
        }
        for o in self.objects:
            per_sequence[o.sequence]["J"][str(o.object_id)] = o.j.tolist()
            per_sequence[o.sequence]["F"][str(o.object_id)] = o.f.tolist()
        return {
            "benchmark": "davis2017",
            "set": self.subset,
            "task": "semi-supervised",
            "bound_th": davis.BOUND_TH,
            "num_sequences": len(self.evaluated_frames),
            "num_objects": self.summary.num_objects,
            **{k: _json_number(v) for k, v in self.summary.as_dict().items()},
            "per_object": {k: {m: _json_number(v) for m, v in d.items()} for k, d in per_object.items()},
            "per_sequence": per_sequence,
        }


def evaluate_davis(
    root: PathLike, results: PathLike, subset: str = "val", *, progress: bool = False
) -> DavisEvaluation:
    """Score ``results/<seq>/<frame>.png`` against DAVIS ``root`` like davis2017-evaluation.

    ``progress`` shows a bar on an interactive stderr (as every ``evaluate_*`` function here).
    """
    dataset = DavisDataset(root, subset)
    results = _results_dir(results)
    objects: list[davis.ObjectScores] = []
    evaluated: dict[str, list[str]] = {}
    for sequence in tqdm(dataset, desc="DAVIS", unit="seq", disable=None if progress else True):
        annotations = sequence.annotation_paths()
        indices = davis.evaluated_frame_indices(len(annotations))
        num_objects = davis.count_objects(read_label_png(annotations[0]))
        folder = results / sequence.name
        if not folder.is_dir():
            raise DataReadError(f"missing results for sequence {sequence.name!r}: {folder} is not a folder")
        gt = (read_label_png(annotations[i]) for i in indices)
        pred = (read_label_png(_result_file(folder / f"{annotations[i].stem}.png", sequence.name)) for i in indices)
        objects += davis.score_sequence(gt, pred, num_objects, sequence=sequence.name)
        evaluated[sequence.name] = [annotations[i].stem for i in indices]
        logger.debug("DAVIS %s: %d objects, %d frames", sequence.name, num_objects, len(indices))
    return DavisEvaluation(subset, davis.summarize(objects), tuple(objects), evaluated)


def write_davis_csv(evaluation: DavisEvaluation, path: Path) -> None:
    """Per-object means like the official ``per-sequence_results-<set>.csv``."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Sequence", "J-Mean", "F-Mean"])
        for o in evaluation.objects:
            writer.writerow([o.key, f"{o.j_stats.mean:.3f}", f"{o.f_stats.mean:.3f}"])


# ------------------------------------------------------------------------------------------------
# VIP


@dataclass(frozen=True)
class VipEvaluation:
    """VIP scores of a result folder: the pooled confusion matrix and its IoUs."""

    split: str
    confusion: np.ndarray
    num_videos: int
    num_frames: int

    @property
    def class_iou(self) -> np.ndarray:
        return vip.class_iou(self.confusion)

    @property
    def miou(self) -> float:
        return vip.mean_iou(self.confusion)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "vip",
            "split": self.split,
            "num_videos": self.num_videos,
            "num_frames": self.num_frames,
            "mIoU": _json_number(self.miou),
            "IoU": {name: _json_number(v) for name, v in zip(vip.VIP_CLASSES, self.class_iou)},
        }


def evaluate_vip(root: PathLike, results: PathLike, split: str = "val", *, progress: bool = False) -> VipEvaluation:
    """Score ``results/<video>/<frame>.png`` against VIP ``root``: pooled 20-class confusion, frame 0 included."""
    dataset = VipDataset(root, split)
    results = _results_dir(results)
    confusion = np.zeros((vip.NUM_CLASSES, vip.NUM_CLASSES), dtype=np.int64)
    num_frames = 0
    for video in tqdm(dataset, desc="VIP", unit="video", disable=None if progress else True):
        for annotation in video.annotation_paths():
            gt = read_label_png(annotation)
            pred = read_label_png(_result_file(results / video.name / annotation.name, video.name))
            confusion += vip.confusion_matrix(gt, vip.resize_labels_nearest(pred, gt.shape))
            num_frames += 1
    return VipEvaluation(split, confusion, len(dataset), num_frames)


# ------------------------------------------------------------------------------------------------
# JHMDB


@dataclass(frozen=True)
class JhmdbEvaluation:
    """JHMDB PCK of a result folder."""

    protocol: str
    result: jhmdb.PckResult
    num_videos: int

    def to_json(self) -> dict[str, Any]:
        per_joint = {
            f"PCK@{alpha:g}": {name: _json_number(v) for name, v in zip(jhmdb.JHMDB_JOINTS, row)}
            for alpha, row in zip(self.result.thresholds, self.result.per_joint)
        }
        return {
            "benchmark": "jhmdb",
            "protocol": self.protocol,
            "num_videos": self.num_videos,
            **{k: _json_number(v) for k, v in self.result.as_dict().items()},
            "per_joint": per_joint,
            "counted": dict(zip(jhmdb.JHMDB_JOINTS, self.result.counts.tolist())),
        }


def _keypoint_file(results: Path, name: str) -> Path:
    candidates = [p for p in (results / f"{name}.npy", results / f"{name}.json") if p.is_file()]
    if not candidates:
        raise DataReadError(f"missing results for video {name!r}: no {results / name}.npy or .json")
    if len(candidates) > 1:
        raise InputError(f"results for video {name!r} are ambiguous: both {name}.npy and {name}.json in {results}")
    return candidates[0]


def evaluate_jhmdb(
    root: PathLike,
    results: PathLike,
    list_file: PathLike | None = None,
    protocol: jhmdb.Protocol = "stt",
    *,
    progress: bool = False,
) -> JhmdbEvaluation:
    """Score ``results/<class>/<video>.{npy,json}`` keypoints against the JHMDB split list's GT."""
    dataset = JhmdbDataset(root, list_file)
    results = _results_dir(results)
    pairs = (
        (jhmdb.load_keypoints(_keypoint_file(results, video.name)), video.keypoints())
        for video in tqdm(dataset, desc="JHMDB", unit="video", disable=None if progress else True)
    )
    return JhmdbEvaluation(protocol, jhmdb.pck(pairs, protocol), len(dataset))
