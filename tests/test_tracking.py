"""track_points: queries at any frame, both ways, visibility; propagate_labels' keypoints; hidden points drawn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stcorr import track_points
from stcorr.baselines import load_baseline
from stcorr.errors import InputError
from stcorr.io.render import overlay
from stcorr.propagation.api import propagate_labels
from stcorr.propagation.tracking import VisibilityModel

pytest.importorskip("skimage")  # real photos
from skimage import data  # noqa: E402

SHIFT = (3, 5)  # (dy, dx) pixels per frame


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_baseline("efficientnet-lite0", device="cpu")


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    photo = data.astronaut()[40:296, 80:368]
    return np.stack([np.roll(photo, (SHIFT[0] * t, SHIFT[1] * t), axis=(0, 1)) for t in range(6)])


@pytest.fixture(scope="module")
def occluded_clip(clip) -> np.ndarray:
    """The translating clip with a patch of another photo covering (150, 120) +- 28 px at frames 3 and 4."""
    patch = data.coffee()[100:156, 200:256]
    frames = clip.copy()
    for t in (3, 4):
        x, y = 140 + SHIFT[1] * t, 100 + SHIFT[0] * t  # where the point (140, 100) of frame 0 is at t
        frames[t, y - 28:y + 28, x - 28:x + 28] = patch
    return frames


def expected_at(point: np.ndarray, t_from: int, t_to: int) -> np.ndarray:
    return point + np.array([SHIFT[1], SHIFT[0]]) * (t_to - t_from)


def test_queries_at_any_frame_tracked_both_ways(model, clip):
    queries = np.array([[0, 140.0, 100.0], [2, 120.0, 150.0], [5, 170.0, 130.0], [2, 90.0, 110.0]])
    tracks = track_points(model, clip, queries, radius=6)
    assert tracks.points.shape == (6, 4, 2) and tracks.visible.shape == (6, 4) and tracks.visible.dtype == bool
    assert tracks.scores.shape == (6, 4) and ((tracks.scores >= 0) & (tracks.scores <= 1)).all()
    for n, (t_query, x, y) in enumerate(queries):
        np.testing.assert_allclose(tracks.points[int(t_query), n], [x, y])
        assert tracks.scores[int(t_query), n] == 1.0 and tracks.cycle_error[int(t_query), n] == 0.0
        errors = [np.linalg.norm(tracks.points[t, n] - expected_at(np.array([x, y]), int(t_query), t))
                  for t in range(6)]
        assert max(errors) < 8.0, (n, errors)  # forwards and backwards, within one stride-8 cell
    assert tracks.visible.mean() > 0.9  # nothing is occluded here


def test_refinement_brings_points_closer_than_propagation(model, clip):
    """Every propagated position is refined against the query's feature; refine=False keeps the propagated ones."""
    queries = np.array([[0, 140.0, 100.0], [2, 120.0, 150.0], [5, 170.0, 130.0], [0, 60.0, 70.0], [3, 200.0, 90.0]])
    refined = track_points(model, clip, queries, radius=6)
    plain = track_points(model, clip, queries, radius=6, refine=False)
    np.testing.assert_array_equal(plain.points, plain.propagated)
    np.testing.assert_array_equal(refined.propagated, plain.propagated)  # the same propagation underneath
    truth = np.stack([[expected_at(q[1:], int(q[0]), t) for q in queries] for t in range(6)])
    error_refined = np.linalg.norm(refined.points - truth, axis=-1)
    error_plain = np.linalg.norm(plain.points - truth, axis=-1)
    assert error_refined.mean() < error_plain.mean(), (error_refined.mean(), error_plain.mean())
    # refinement stays near the propagated position: at most REFINE_RADIUS + 1 half-cells (of 4 px here) away
    assert np.abs(refined.points - refined.propagated).max() <= 3 * 4 + 1e-3


def test_refinement_on_upsampled_frames(model, clip):
    """refine_scale=2 refines on features of the frames upsampled 2x: the same propagation, points near the truth."""
    queries = np.array([[0, 140.0, 100.0], [2, 120.0, 150.0], [5, 170.0, 130.0]])
    fine = track_points(model, clip, queries, radius=6, refine_scale=2)
    plain = track_points(model, clip, queries, radius=6, refine=False)
    np.testing.assert_array_equal(fine.propagated, plain.propagated)
    truth = np.stack([[expected_at(q[1:], int(q[0]), t) for q in queries] for t in range(6)])
    error_fine = np.linalg.norm(fine.points - truth, axis=-1)
    assert error_fine.mean() < np.linalg.norm(plain.points - truth, axis=-1).mean()
    assert error_fine.max() < 8.0
    for bad in (0, 1.5, True):
        with pytest.raises(InputError, match="refine_scale"):
            track_points(model, clip[:2], queries[:1], refine_scale=bad)


def test_each_query_independent_of_the_others(model, clip):
    queries = np.array([[0, 140.0, 100.0], [3, 120.0, 150.0], [3, 60.0, 70.0]])
    together = track_points(model, clip, queries, radius=6)
    for n in range(len(queries)):
        alone = track_points(model, clip, queries[n:n + 1], radius=6)
        np.testing.assert_allclose(alone.points[:, 0], together.points[:, n], atol=1e-4)
        np.testing.assert_allclose(alone.scores[:, 0], together.scores[:, n], atol=1e-5)


def test_a_covered_point_is_hidden(model, occluded_clip):
    tracks = track_points(model, occluded_clip, np.array([[0, 140.0, 100.0]]), radius=6)
    visible = tracks.visible[:, 0]
    assert not visible[3] and not visible[4], tracks.scores[:, 0]
    assert visible[[0, 1, 2, 5]].all(), tracks.scores[:, 0]
    assert tracks.similarity[[3, 4], 0].max() < tracks.similarity[[1, 2, 5], 0].min()


def test_propagate_labels_keypoints_carry_visibility(model, clip):
    points = np.array([[140.0, 100.0], [60.0, 200.0]], np.float32)
    result = propagate_labels(model, clip, points, radius=6, start=2)
    tracks = track_points(model, clip, np.concatenate([[[2], [2]], points], axis=1), radius=6)
    np.testing.assert_array_equal(result.points, tracks.points)
    np.testing.assert_array_equal(result.visible, tracks.visible)
    np.testing.assert_array_equal(result.point_scores, tracks.scores)


def test_visibility_model_is_monotone() -> None:
    model = VisibilityModel(bias=0.0, w_sim=5.0, w_cycle=1.0)
    sim = np.array([0.2, 0.5, 0.9])
    assert (np.diff(model.probability(sim, np.zeros(3))) > 0).all()
    assert (np.diff(model.probability(np.full(3, 0.5), np.array([0.0, 4.0, 20.0]))) < 0).all()


@pytest.mark.parametrize(
    ("queries", "message"),
    [
        (np.zeros((2, 2)), "shape"),
        (np.array([[6, 10.0, 10.0]]), "query frames"),
        (np.array([[1.5, 10.0, 10.0]]), "query frames"),
        (np.array([[0, 400.0, 10.0]]), "outside"),
        (np.array([[0, np.nan, 10.0]]), "finite"),
    ],
)
def test_bad_queries(model, clip, queries, message):
    with pytest.raises(InputError, match=message):
        track_points(model, clip, queries)


def test_hidden_points_are_drawn_as_rings() -> None:
    frame = np.zeros((40, 40, 3), np.uint8)
    points = np.array([[10.0, 10.0], [30.0, 30.0]])
    image = overlay(frame, np.zeros((40, 40), np.uint8), points=points, point_radius=6,
                    point_visible=np.array([True, False]))
    assert image[10, 10].any()  # a filled disc
    assert not image[30, 30].any() and image[30, 36].any()  # a ring: hollow centre, coloured edge
    with pytest.raises(InputError, match="point_visible"):
        overlay(frame, np.zeros((40, 40), np.uint8), points=points, point_visible=np.array([True]))
