"""propagate_labels / iter_propagate / match_points on real photos moved by known transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stcorr.baselines import load_baseline
from stcorr.errors import InputError
from stcorr.propagation.api import iter_propagate, propagate_labels
from stcorr.propagation.matching import match_points

pytest.importorskip("skimage")  # real photos
from skimage import data  # noqa: E402

SHIFT = (3, 5)  # (dy, dx) pixels per frame


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """Real ImageNet features (EfficientNet-Lite0, packaged weights): a deterministic, decent encoder."""
    return load_baseline("efficientnet-lite0", device="cpu")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return data.astronaut()[40:296, 80:368]  # 256 x 288 real photo


def shifted(image: np.ndarray, t: int) -> np.ndarray:
    return np.roll(image, (SHIFT[0] * t, SHIFT[1] * t), axis=(0, 1))


@pytest.fixture(scope="module")
def clip(photo) -> np.ndarray:
    return np.stack([shifted(photo, t) for t in range(6)])


@pytest.fixture(scope="module")
def mask(photo) -> np.ndarray:
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[60:150, 90:190] = 3   # the face and helmet region
    mask[170:230, 30:110] = 7  # a shoulder patch
    return mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_mask_follows_translation(model, clip, mask):
    result = propagate_labels(model, clip, mask, radius=6, context=3)
    assert result.labels.shape == (6, *mask.shape) and result.labels.dtype == np.uint8
    assert result.ids == (0, 3, 7)
    assert set(np.unique(result.labels)) <= {0, 3, 7}
    np.testing.assert_array_equal(result.labels[0], mask)
    for t in range(1, 6):
        expected = shifted(mask, t)
        for object_id in (3, 7):
            assert iou(result.labels[t] == object_id, expected == object_id) > 0.85, (t, object_id)
    assert result.confidence.shape == result.labels.shape
    assert 0 <= result.confidence.min() and result.confidence.max() <= 1


def test_start_in_the_middle_propagates_both_ways(model, clip, mask):
    start = 3
    result = propagate_labels(model, clip, shifted(mask, start), start=start, radius=6, context=3)
    np.testing.assert_array_equal(result.labels[start], shifted(mask, start))
    for t in (0, 5):
        assert iou(result.labels[t] == 3, shifted(mask, t) == 3) > 0.8


def test_anchor_is_output_as_given_and_used(model, clip, mask):
    corrected = shifted(mask, 2)
    result = propagate_labels(model, clip, mask, anchors={2: corrected}, radius=6)
    np.testing.assert_array_equal(result.labels[2], corrected)
    assert iou(result.labels[4] == 3, shifted(mask, 4) == 3) > 0.8
    with pytest.raises(InputError, match="not among"):
        bad = mask.copy()
        bad[0, 0] = 9
        propagate_labels(model, clip, mask, anchors={2: bad})


def test_iter_propagate_equals_batch_form(model, clip, mask):
    """The streaming pass and propagate_labels (a PropagationSession) are separate paths over the kernel."""
    result = propagate_labels(model, clip, mask, radius=6)
    for t, labels, confidence in iter_propagate(model, clip, mask, radius=6):
        np.testing.assert_array_equal(labels, result.labels[t])
        np.testing.assert_allclose(confidence, result.confidence[t])


def test_soft_labels_and_probabilities(model, clip, mask):
    soft = np.stack([(mask == 0), (mask == 3), (mask == 7)]).astype(np.float32)
    result = propagate_labels(model, clip, soft, return_probabilities=True, radius=6)
    hard = propagate_labels(model, clip, mask, radius=6)
    np.testing.assert_array_equal(np.array((0, 3, 7), np.uint8)[result.labels], hard.labels)
    assert result.probabilities.shape == (6, 3, *mask.shape)
    np.testing.assert_allclose(result.probabilities[1:].sum(axis=1), 1.0, atol=1e-4)


def test_keypoints_follow_translation(model, clip):
    points = np.array([[140.0, 100.0], [60.0, 200.0], [220.0, 60.0]], np.float32)
    result = propagate_labels(model, clip, points, radius=6)
    assert result.labels is None and result.points.shape == (6, 3, 2)
    np.testing.assert_allclose(result.points[0], points)
    errors = np.stack([
        np.linalg.norm(result.points[t] - (points + np.array([SHIFT[1] * t, SHIFT[0] * t])), axis=1)
        for t in range(1, 6)
    ])
    assert errors.max() < 8.0, errors  # within one feature cell (stride 8) on every frame, no drift
    assert errors.mean() < 5.0, errors
    assert (result.point_scores > 0).all()


def test_match_points_translation_and_mutual_flag(model, photo):
    points = np.array([[140.0, 100.0], [60.0, 200.0], [220.0, 60.0], [100.0, 150.0]], np.float32)
    moved = shifted(photo, 2)
    matches = match_points(model, photo, moved, points, topk=4)
    expected = points + np.array([2 * SHIFT[1], 2 * SHIFT[0]])
    assert np.linalg.norm(matches.points - expected, axis=1).max() < 6.0
    assert matches.mutual.all()
    assert (matches.scores > 0.5).all()
    windowed = match_points(model, photo, moved, points, radius=4, topk=4)
    np.testing.assert_allclose(windowed.points, matches.points, atol=1.0)


@pytest.mark.parametrize("radius", [None, 6])
def test_match_points_between_frames_of_different_sizes(model, radius):
    """Two crops of one photo, of different sizes, offset by a known shift that is not a multiple of the
    stride: a point at (x, y) in A is at (x - 13, y - 21) in B. Before the fix the window was centred at the
    same *relative* position (off by tens of pixels here) and the soft-argmax averaged distant cells."""
    scene = data.astronaut()
    frame_a = scene[40:296, 80:368]  # 256 x 288
    frame_b = scene[61:381, 93:493]  # 320 x 400, origin moved by (dy, dx) = (21, 13)
    points = np.array([[140.0, 100.0], [60.0, 200.0], [220.0, 60.0], [100.0, 150.0], [250.0, 230.0]], np.float32)
    matches = match_points(model, frame_a, frame_b, points, radius=radius, topk=4)
    expected = points - np.array([13.0, 21.0], np.float32)
    errors = np.linalg.norm(matches.points - expected, axis=1)
    assert errors.max() < 6.0, errors
    assert matches.mutual.all()
    back = match_points(model, frame_b, frame_a, expected, radius=radius, topk=4)
    assert np.linalg.norm(back.points - points, axis=1).max() < 6.0


def test_bad_inputs(model, clip, mask):
    with pytest.raises(InputError, match="do not fit"):
        propagate_labels(model, clip, mask[:100])
    with pytest.raises(InputError, match="at least 2 frames"):
        propagate_labels(model, clip[:1], mask)
    with pytest.raises(InputError, match="no labels"):
        propagate_labels(model, clip, np.full_like(mask, 255))
    with pytest.raises(InputError, match="outside"):
        propagate_labels(model, clip, np.array([[-5.0, 10.0]]))
    with pytest.raises(InputError, match="254"):
        propagate_labels(model, clip, mask.astype(np.int64) * 100)
    with pytest.raises(InputError, match="outside frame_a"):
        match_points(model, clip[0], clip[1], np.array([[1000.0, 5.0]]))


def test_empty_object_mask_still_propagates_background(model, clip):
    background_only = np.zeros(clip.shape[1:3], np.uint8)
    result = propagate_labels(model, clip, background_only)
    assert (result.labels == 0).all()


def test_void_pixels_carry_no_label(model, clip, mask):
    with_void = mask.copy()
    with_void[:, :20] = 255
    result = propagate_labels(model, clip, with_void, radius=6)
    np.testing.assert_array_equal(result.labels[0], with_void)
    assert result.ids == (0, 3, 7)
