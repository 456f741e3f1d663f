"""How well per-object reliability finds wrong objects: AUROC for "object IoU >= 0.5", and the logistic fit.

:func:`object_samples` propagates a video's frame-0 mask with a model (the DAVIS preset of its stride, one
streaming pass, as the offline benchmark does) and returns, for every annotated object of every predicted
frame, the reliability features (:mod:`stcorr.propagation.reliability`), the reliability the library gives
and the object's true IoU. :func:`auroc` scores a signal (higher = more likely right) against
"IoU >= 0.5"; :func:`fit_logistic` fits the weights of a :class:`~stcorr.propagation.reliability.ReliabilityModel`
(L2-regularised logistic regression by Newton's method, features standardised).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stcorr.eval.presets import preset_for
from stcorr.features import Encoder, encode_batch, feature_stride
from stcorr.propagation.api import iter_propagate
from stcorr.propagation.labels import mask_to_onehot, to_grid
from stcorr.propagation.passes import Geometry, new_tracker
from stcorr.propagation.reliability import CYCLE, FEATURES, ReliabilityModel, cycle_consistency

__all__ = ["ObjectSample", "object_samples", "auroc", "fit_logistic", "signal_aurocs"]

GOOD_IOU = 0.5


@dataclass(frozen=True)
class ObjectSample:
    """One annotated object on one predicted frame."""

    video: str
    t: int
    object_id: int
    iou: float
    reliability: float
    features: dict[str, float]


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else np.count_nonzero(pred & gt) / union


def _grid(model: Encoder, frames: np.ndarray, labels: np.ndarray,
          ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (C, h, w) of one (H, W, 3) uint8 frame and its id map's one-hot (K, h, w) on the grid."""
    rgb = torch.from_numpy(frames).permute(2, 0, 1).float()[None] / 255.0
    features = encode_batch(model, rgb)[0]
    onehot, _ = mask_to_onehot(np.where(labels == 255, 0, labels), ids)
    return features, to_grid(onehot, tuple(features.shape[-2:]), feature_stride(model))


def object_samples(model: Encoder, name: str, frames: np.ndarray, truth: np.ndarray, *,
                   cycle: bool = False) -> list[ObjectSample]:
    """Samples of every annotated object (ids of ``truth[0]``) on frames 1 .. T-1: frame 0's mask propagated
    through ``frames`` with the DAVIS preset of the model's stride. ``cycle`` adds the feature ``"cycle"``
    (1 - forward-backward IoU with frame 0, :func:`~stcorr.propagation.reliability.cycle_consistency`;
    frames encoded a second time)."""
    preset = preset_for("davis", feature_stride(model))
    ids = [int(i) for i in np.unique(truth[0]) if i != 0]
    samples = []
    tracker = None
    anchor = None
    for prediction in iter_propagate(model, frames, truth[0], options=preset.options):
        if cycle and anchor is None:
            anchor = _grid(model, frames[0], truth[0], prediction.ids)
        if cycle and prediction.t > 0:
            features, grid = _grid(model, frames[prediction.t], prediction.labels, prediction.ids)
            ious = cycle_consistency(anchor[0], anchor[1], features, grid, preset.options)
            cycles = {i: 1.0 - v for i, v in zip(prediction.ids, ious)}
        if tracker is None:  # the same tracker the library runs, to read its features
            working = tuple(frames.shape[1:3])
            tracker = new_tracker("mask", Geometry(working, working, feature_stride(model)))
            tracker.anchor(prediction.labels, prediction.ids)
            continue
        features = tracker.features(prediction.labels, prediction.confidence, prediction.ids)
        for k in ids:
            iou = _iou(prediction.labels == k, truth[prediction.t] == k)
            extra = {CYCLE: cycles[k]} if cycle else {}
            samples.append(ObjectSample(name, prediction.t, k, iou, prediction.reliability[k],
                                        {**features[k], **extra}))
    return samples


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` (higher = positive), ties counted half; nan with one class."""
    scores = np.asarray(scores, np.float64)
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _matrix(samples: Sequence[ObjectSample], names: Sequence[str]) -> np.ndarray:
    return np.array([[s.features.get(n, 0.0) for n in names] for s in samples], np.float64)


def fit_logistic(samples: Sequence[ObjectSample], names: Sequence[str] = FEATURES, l2: float = 1.0,
                 iterations: int = 50) -> ReliabilityModel:
    """Logistic regression of "IoU >= 0.5" on the features ``names`` (standardised for the fit, weights
    returned on the raw features)."""
    x = _matrix(samples, names)
    y = np.array([s.iou >= GOOD_IOU for s in samples], np.float64)
    mean, std = x.mean(0), x.std(0)
    std[std == 0] = 1.0
    z = np.concatenate([np.ones((len(x), 1)), (x - mean) / std], axis=1)
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.clip(z @ w, -50, 50)))
        gradient = z.T @ (p - y) + penalty * w
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    weights = w[1:] / std
    bias = w[0] - float((weights * mean).sum())
    return ReliabilityModel({n: round(float(v), 4) for n, v in zip(names, weights)}, round(float(bias), 4))


def signal_aurocs(samples: Sequence[ObjectSample], model: ReliabilityModel | None = None) -> dict[str, float]:
    """AUROC of every single feature (sign chosen so that higher = more likely right: every feature but
    ``confidence`` is evidence *against*), of ``model`` applied to the features, and of the library's own
    reliability (``reliability``)."""
    good = [s.iou >= GOOD_IOU for s in samples]
    out = {}
    for name in (*FEATURES, CYCLE):
        if not any(name in s.features for s in samples):
            continue
        values = [s.features.get(name, 0.0) for s in samples]
        out[name] = auroc(values if name == "confidence" else [-v for v in values], good)
    if model is not None:
        out["model"] = auroc([model(s.features) for s in samples], good)
    out["reliability"] = auroc([s.reliability for s in samples], good)
    return out
