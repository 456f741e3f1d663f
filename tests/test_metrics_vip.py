"""VIP mIoU: pooled confusion matrix against a direct per-class computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from stcorr.errors import InputError
from stcorr.metrics import vip


def direct_miou(gts: list[np.ndarray], preds: list[np.ndarray], num_classes: int = 20) -> tuple[float, list[float]]:
    """IoU per class from pixel sets pooled over all frames; classes with an empty union skipped."""
    ious = []
    for c in range(num_classes):
        inter = union = 0
        for gt, pred in zip(gts, preds):
            valid = gt < num_classes
            inter += np.count_nonzero((gt == c) & (pred == c) & valid)
            union += np.count_nonzero(((gt == c) | (pred == c)) & valid)
        ious.append(inter / union if union else math.nan)
    present = [v for v in ious if not math.isnan(v)]
    return sum(present) / len(present), ious


def random_frames(rng: np.random.Generator, n: int, shape: tuple[int, int], classes: int) -> tuple[list, list]:
    gts, preds = [], []
    for _ in range(n):
        gt = rng.integers(0, classes, shape).astype(np.uint8)
        gt[rng.random(shape) < 0.1] = 255
        pred = np.where(rng.random(shape) < 0.7, gt % 20, rng.integers(0, classes, shape)).astype(np.uint8)
        gts.append(gt)
        preds.append(pred)
    return gts, preds


def test_pooled_miou_matches_direct_computation() -> None:
    rng = np.random.default_rng(0)
    gts, preds = random_frames(rng, 5, (31, 47), 20)
    confusion = sum(vip.confusion_matrix(g, p) for g, p in zip(gts, preds))
    expected_miou, expected_ious = direct_miou(gts, preds)
    assert vip.mean_iou(confusion) == pytest.approx(expected_miou, abs=1e-12)
    np.testing.assert_allclose(vip.class_iou(confusion), expected_ious, atol=1e-12)


def test_absent_classes_are_nan_and_skipped() -> None:
    rng = np.random.default_rng(1)
    gts, preds = random_frames(rng, 3, (20, 20), 5)  # classes 5..19 never appear
    confusion = sum(vip.confusion_matrix(g, p) for g, p in zip(gts, preds))
    ious = vip.class_iou(confusion)
    assert np.isnan(ious[5:]).all() and not np.isnan(ious[:5]).any()
    assert vip.mean_iou(confusion) == pytest.approx(np.mean(ious[:5]))
    assert vip.mean_iou(confusion) == pytest.approx(direct_miou(gts, preds)[0])


def test_void_pixels_are_ignored() -> None:
    gt = np.array([[0, 1], [255, 255]], np.uint8)
    pred = np.array([[0, 1], [1, 3]], np.uint8)
    confusion = vip.confusion_matrix(gt, pred)
    assert confusion.sum() == 2
    assert confusion[0, 0] == 1 and confusion[1, 1] == 1
    assert vip.mean_iou(confusion) == 1.0  # class 3 predicted only on void: no union anywhere


def test_iou_by_hand() -> None:
    gt = np.array([[0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1]], np.uint8)
    # class 0: inter 1, union 2; class 1: inter 2, union 3
    assert vip.mean_iou(vip.confusion_matrix(gt, pred)) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_pooling_differs_from_per_frame_mean() -> None:
    gt1, pred1 = np.zeros((1, 4), np.uint8), np.zeros((1, 4), np.uint8)  # class 0 perfect
    gt2, pred2 = np.array([[0, 1, 1, 1]], np.uint8), np.array([[1, 1, 1, 1]], np.uint8)
    pooled = vip.mean_iou(vip.confusion_matrix(gt1, pred1) + vip.confusion_matrix(gt2, pred2))
    # pooled: class 0 inter 4 / union 5; class 1 inter 3 / union 4
    assert pooled == pytest.approx((4 / 5 + 3 / 4) / 2)
    per_frame = (vip.mean_iou(vip.confusion_matrix(gt1, pred1)) + vip.mean_iou(vip.confusion_matrix(gt2, pred2))) / 2
    assert per_frame == pytest.approx((1.0 + (0 / 1 + 3 / 4) / 2) / 2)
    assert pooled != pytest.approx(per_frame)


def test_prediction_out_of_range_is_rejected() -> None:
    gt = np.zeros((2, 2), np.uint8)
    with pytest.raises(InputError, match="outside"):
        vip.confusion_matrix(gt, np.full((2, 2), 20, np.uint8))
    with pytest.raises(InputError, match="size"):
        vip.confusion_matrix(gt, np.zeros((2, 3), np.uint8))


def test_nearest_resize_matches_pil_on_index_images() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 20, (35, 58)).astype(np.uint8)
    for size in [(70, 116), (24, 40), (480, 854)]:
        expected = np.asarray(Image.fromarray(labels).resize(size[::-1], Image.Resampling.NEAREST))
        np.testing.assert_array_equal(vip.resize_labels_nearest(labels, size), expected)
    assert vip.resize_labels_nearest(labels, labels.shape).shape == labels.shape
