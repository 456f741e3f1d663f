"""DAVIS J&F: per-frame parity with vos_benchmark (which embeds davis2017-evaluation's measures),
hand-computed cases, the F edge-case table, statistics and aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stcorr.errors import InputError
from stcorr.metrics import davis

pytest.importorskip("skimage")
pytest.importorskip("vos_benchmark")  # the reference implementation compared against
from skimage.morphology import disk  # noqa: E402
from vos_benchmark.evaluator import Evaluator  # noqa: E402
from vos_benchmark.utils import _seg2bmap  # noqa: E402

SIZES = [(1, 7), (6, 1), (2, 2), (9, 13), (48, 64), (120, 77), (480, 854)]


def random_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Empty, full, a union of ellipses of random sizes, optionally with salt noise."""
    h, w = shape
    kind = rng.random()
    if kind < 0.08:
        return np.zeros(shape, bool)
    if kind < 0.16:
        return np.ones(shape, bool)
    yy, xx = np.ogrid[:h, :w]
    mask = np.zeros(shape, bool)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(-0.1, 1.1) * h, rng.uniform(-0.1, 1.1) * w
        ry, rx = rng.uniform(0.5, max(1.0, h / 2)), rng.uniform(0.5, max(1.0, w / 2))
        mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    if rng.random() < 0.3:
        mask ^= rng.random(shape) < 0.01
    return mask


def reference_j_f(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float] | None:
    """J and F from vos_benchmark for object 1 (None when it skips the frame: both masks empty)."""
    evaluator = Evaluator()
    evaluator.feed_frame(pred.astype(np.uint8), gt.astype(np.uint8))
    if 1 not in evaluator.object_iou:
        return None
    return float(evaluator.object_iou[1][0]), float(evaluator.boundary_f[1][0])


@pytest.mark.parametrize("shape", SIZES)
def test_j_and_f_match_vos_benchmark(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    compared = 0
    for _ in range(40 if shape[0] * shape[1] < 50_000 else 12):
        pred, gt = random_mask(rng, shape), random_mask(rng, shape)
        if rng.random() < 0.3:  # a near miss: the GT shifted by a few pixels
            pred = np.roll(gt, (int(rng.integers(-5, 6)), int(rng.integers(-5, 6))), axis=(0, 1))
        expected = reference_j_f(pred, gt)
        if expected is None:
            continue
        assert davis.region_similarity(pred, gt) == pytest.approx(expected[0], abs=1e-9)
        assert davis.boundary_f_measure(pred, gt) == pytest.approx(expected[1], abs=1e-9)
        compared += 1
    assert compared >= 8


@pytest.mark.parametrize("shape", SIZES)
def test_boundary_map_matches_reference(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(7)
    for _ in range(10):
        mask = random_mask(rng, shape)
        np.testing.assert_array_equal(davis.boundary_map(mask), _seg2bmap(mask))


def test_boundary_map_by_hand() -> None:
    dot = np.zeros((3, 3), bool)
    dot[1, 1] = True
    expected = np.zeros((3, 3), bool)
    expected[:2, :2] = True  # the boundary sits half a pixel towards the origin
    np.testing.assert_array_equal(davis.boundary_map(dot), expected)
    assert not davis.boundary_map(np.ones((4, 5), bool)).any()  # a full mask has no boundary
    corner = np.zeros((3, 3), bool)
    corner[2, 2] = True  # bottom-right pixel: never a boundary itself
    assert davis.boundary_map(corner).tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 0]]


def test_region_similarity_by_hand() -> None:
    pred = np.zeros((4, 4), bool)
    gt = np.zeros((4, 4), bool)
    pred[0:2, 0:2] = True  # 4 px
    gt[1:3, 1:3] = True  # 4 px, overlap 1
    assert davis.region_similarity(pred, gt) == pytest.approx(1 / 7)
    assert davis.region_similarity(pred, pred) == 1.0
    assert davis.region_similarity(np.zeros((4, 4)), gt) == 0.0
    assert davis.region_similarity(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0


def test_f_by_hand_two_dots() -> None:
    # 10x10 frame: tolerance ceil(0.008 * 14.14) = 1 px. Dot boundaries are 2x2 blocks two columns apart,
    # so half of each block is within 1 px of the other: P = R = 0.5.
    pred = np.zeros((10, 10), bool)
    gt = np.zeros((10, 10), bool)
    pred[4, 4] = True
    gt[4, 6] = True
    assert davis.boundary_radius((10, 10)) == 1
    assert davis.boundary_precision_recall(pred, gt) == (0.5, 0.5)
    assert davis.boundary_f_measure(pred, gt) == pytest.approx(0.5)


def test_f_edge_cases() -> None:
    empty = np.zeros((20, 30), bool)
    full = np.ones((20, 30), bool)
    square = empty.copy()
    square[5:10, 5:12] = True
    assert davis.boundary_precision_recall(empty, square) == (1.0, 0.0)
    assert davis.boundary_f_measure(empty, square) == 0.0
    assert davis.boundary_precision_recall(square, empty) == (0.0, 1.0)
    assert davis.boundary_f_measure(square, empty) == 0.0
    assert davis.boundary_precision_recall(empty, empty) == (1.0, 1.0)
    assert davis.boundary_f_measure(empty, empty) == 1.0
    assert davis.boundary_f_measure(full, full) == 1.0  # no boundary on either side
    assert davis.boundary_f_measure(full, square) == 0.0
    far = empty.copy()
    far[15:19, 25:29] = True  # > 1 px (ceil(0.008 * 36.06) = 1) from the square: P = R = 0
    assert davis.boundary_f_measure(far, square) == 0.0


@pytest.mark.parametrize(("shape", "radius"), [((480, 854), 8), ((480, 910), 9), ((1080, 1920), 18), ((10, 10), 1)])
def test_boundary_radius(shape: tuple[int, int], radius: int) -> None:
    assert davis.boundary_radius(shape) == radius


def test_boundary_radius_in_pixels() -> None:
    assert davis.boundary_radius((480, 854), 3) == 3
    with pytest.raises(InputError):
        davis.boundary_radius((480, 854), 2.5)


@pytest.mark.parametrize("radius", [0, 1, 2, 5, 8, 18])
def test_dilate_disk_matches_skimage_disk(radius: int) -> None:
    dot = np.zeros((2 * radius + 5, 2 * radius + 7), bool)
    dot[radius + 2, radius + 3] = True
    dilated = davis.dilate_disk(dot, radius)
    window = dilated[2 : 2 * radius + 3, 3 : 2 * radius + 4]
    np.testing.assert_array_equal(window, disk(radius).astype(bool))
    assert dilated.sum() == disk(radius).sum()
    if radius == 8:
        assert dilated.sum() == 197


def test_dilate_disk_clips_at_borders() -> None:
    mask = np.zeros((5, 5), bool)
    mask[0, 0] = True
    assert davis.dilate_disk(mask, 2).sum() == 6  # the quarter of disk(2) inside the frame: (0,0),(0,1),(0,2),(1,0),(1,1),(2,0)


def test_statistics_by_hand() -> None:
    assert davis.statistics([0.7]) == (pytest.approx(0.7), 1.0, 0.0)
    # N = 2: edges 0,0,1,1,1 -> bin 0 = [v0], bin 3 = [v1]
    assert davis.statistics([0.9, 0.3]) == pytest.approx((0.6, 0.5, 0.6))
    # N = 3: edges 0,1,1,2,2 -> bin 0 = v[0:2], bin 3 = v[2:3]; 0.5 is not a recall (strict >)
    assert davis.statistics([1.0, 0.5, 0.0]) == pytest.approx((0.5, 1 / 3, 0.75 - 0.0))
    # N = 5: edges 0..4 -> bin 0 = v[0:2], bin 3 = v[3:5]
    assert davis.statistics([1.0, 0.8, 0.6, 0.4, 0.2]) == pytest.approx((0.6, 0.6, 0.9 - 0.3))
    assert all(math.isnan(v) for v in davis.statistics([]))


def test_statistics_long_sequences_do_not_wrap() -> None:
    # N = 300: edges 0, 75, 150, 224, 299. The reference's uint8 cast would turn 299 into 43.
    values = np.arange(300, dtype=float)
    expected_decay = np.mean(values[0:76]) - np.mean(values[224:300])
    assert davis.statistics(values).decay == pytest.approx(expected_decay)


def test_statistics_equal_reference_bins_up_to_256_frames() -> None:
    """For N <= 256 the uint8-cast edges of the reference do not wrap, so decay is identical.

    (Edges are taken back to Python ints, as numpy 1.x promoted ``uint8 + 1``; under numpy 2 the
    reference's ``edge + 1`` itself overflows at N = 256.)
    """
    rng = np.random.default_rng(3)
    for n in [1, 2, 3, 4, 7, 50, 99, 255, 256]:
        values = rng.random(n)
        edges = [int(e) for e in (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.uint8)]
        reference = np.nanmean(values[edges[0] : edges[1] + 1]) - np.nanmean(values[edges[3] : edges[4] + 1])
        assert davis.statistics(values).decay == reference


def test_count_objects_uses_max_id_and_ignores_void() -> None:
    first = np.zeros((4, 4), np.uint8)
    first[0, 0], first[1, 1], first[3, 3] = 1, 3, 255
    assert davis.count_objects(first) == 3  # id 2 absent from frame 0 but still an object
    assert davis.count_objects(np.full((2, 2), 255, np.uint8)) == 0


def test_evaluated_frames_skip_first_and_last() -> None:
    assert list(davis.evaluated_frame_indices(5)) == [1, 2, 3]
    assert list(davis.evaluated_frame_indices(2)) == []


def test_score_sequence_per_object_values() -> None:
    gt = np.zeros((20, 30), np.uint8)
    gt[2:8, 2:8] = 1
    gt[10:15, 10:20] = 2
    gt[0, :] = 255  # void: background
    pred = gt.copy()
    pred[pred == 255] = 0
    pred[10:15, 10:20] = 0  # object 2 missed
    scores = davis.score_sequence([gt, gt], [pred, pred], 2, sequence="s")
    assert [o.key for o in scores] == ["s_1", "s_2"]
    np.testing.assert_array_equal(scores[0].j, [1.0, 1.0])
    np.testing.assert_array_equal(scores[0].f, [1.0, 1.0])
    np.testing.assert_array_equal(scores[1].j, [0.0, 0.0])
    np.testing.assert_array_equal(scores[1].f, [0.0, 0.0])


def test_score_sequence_rejects_bad_predictions() -> None:
    gt = np.zeros((6, 6), np.uint8)
    gt[1:3, 1:3] = 1
    with pytest.raises(InputError, match="predicted id 2"):
        davis.score_sequence([gt], [gt * 2], 1)
    with pytest.raises(InputError, match="shape"):
        davis.score_sequence([gt], [np.zeros((6, 7), np.uint8)], 1)
    with pytest.raises(InputError, match="frame count"):
        davis.score_sequence([gt, gt], [gt], 1)


def test_summarize_pools_objects_across_sequences() -> None:
    a = davis.ObjectScores("a", 1, np.array([1.0, 1.0]), np.array([1.0, 0.0]))
    b1 = davis.ObjectScores("b", 1, np.array([0.0, 0.0]), np.array([0.5, 0.5]))
    b2 = davis.ObjectScores("b", 2, np.array([0.3, 0.6]), np.array([1.0, 1.0]))
    summary = davis.summarize([a, b1, b2])
    # Pooled over the 3 objects, not over the 2 sequences.
    assert summary.j_mean == pytest.approx((1.0 + 0.0 + 0.45) / 3)
    assert summary.f_mean == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert summary.jf_mean == pytest.approx((summary.j_mean + summary.f_mean) / 2)
    assert summary.j_recall == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    assert summary.j_decay == pytest.approx((0.0 + 0.0 - 0.3) / 3)
    assert summary.f_decay == pytest.approx((1.0 + 0.0 + 0.0) / 3)
    assert list(summary.as_dict()) == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
