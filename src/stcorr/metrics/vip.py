"""VIP human-parsing mIoU: one confusion matrix pooled over every frame of every video.

Protocol (CRW/UVC ``eval_vip.py``, VFS/Spa-then-Temp ``vip_dataset.py``):

* 20 classes including background (:data:`VIP_CLASSES`);
* only GT pixels with a label in ``[0, 20)`` count, so void 255 is ignored;
* every frame is scored, **including frame 0** (the GT copy);
* predictions of another size are resized to the GT size with PIL nearest before scoring;
* per-class IoU = diag / (row sum + column sum - diag) of the pooled matrix; mIoU is the NaN-mean
  over classes, so a class absent from both GT and predictions everywhere is skipped.

Deviation: a prediction label outside ``[0, num_classes)`` on a counted pixel raises
:class:`InputError` (the reference's flat bincount would silently alias it into another cell).
Values are fractions in [0, 1], as the reference prints them.
"""

from __future__ import annotations

import warnings

import numpy as np

from stcorr.errors import InputError
from stcorr.propagation.labels import resize_ids_nearest

__all__ = ["VIP_CLASSES", "NUM_CLASSES", "confusion_matrix", "class_iou", "mean_iou", "resize_labels_nearest"]

VIP_CLASSES: tuple[str, ...] = (
    "background", "hat", "hair", "sunglasses", "upper-clothes", "dress", "coat", "socks", "pants", "gloves",
    "scarf", "skirt", "torso-skin", "face", "right-arm", "left-arm", "right-leg", "left-leg", "right-shoe",
    "left-shoe",
)  # fmt: skip
NUM_CLASSES = len(VIP_CLASSES)


def _as_labels(labels: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 2 or not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise InputError(f"{name} must be a 2-D integer label map, got shape {array.shape} and dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(num_classes, num_classes) pixel counts, rows = GT class, columns = predicted class.

    GT pixels outside ``[0, num_classes)`` (void 255) are ignored; ``pred`` must have the GT size.
    """
    gt, pred = _as_labels(gt, "gt"), _as_labels(pred, "pred")
    if gt.shape != pred.shape:
        raise InputError(f"gt and pred differ in size: {gt.shape} vs {pred.shape}; resize the prediction first")
    counted = (gt >= 0) & (gt < num_classes)
    gt_counted, pred_counted = gt[counted], pred[counted]
    if pred_counted.size and (pred_counted.min() < 0 or pred_counted.max() >= num_classes):
        bad = pred_counted[(pred_counted < 0) | (pred_counted >= num_classes)][0]
        raise InputError(f"predicted label {bad} is outside [0, {num_classes}) on a scored pixel")
    flat = np.bincount(gt_counted * num_classes + pred_counted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def class_iou(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU of a confusion matrix; NaN for a class with an empty union."""
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise InputError(f"confusion must be a square matrix, got shape {confusion.shape}")
    hits = np.diag(confusion)
    union = confusion.sum(axis=1) + confusion.sum(axis=0) - hits
    with np.errstate(divide="ignore", invalid="ignore"):
        return hits / union


def mean_iou(confusion: np.ndarray) -> float:
    """NaN-mean of :func:`class_iou` (NaN only if every class is empty)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return float(np.nanmean(class_iou(confusion)))


def resize_labels_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a label map to ``size = (H, W)`` with PIL nearest (the reference's resampling)."""
    return resize_ids_nearest(_as_labels(labels, "labels"), size)
