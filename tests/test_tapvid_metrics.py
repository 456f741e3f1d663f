"""TAP-Vid metrics: hand-computed cases (thresholds hit exactly, both query modes) and a loop-based reference."""

from __future__ import annotations

import numpy as np
import pytest

from stcorr.errors import InputError
from stcorr.metrics.tapvid import THRESHOLDS, compute_tapvid_metrics, evaluation_mask, mean_metrics


def _one_track(pred_visible_at_3: bool = False) -> tuple[np.ndarray, ...]:
    """One track of 4 frames queried at frame 1. Ground truth visible at 0, 1, 2, occluded at 3.

    Predictions: frame 0 off by (3, 4) (distance 5), frame 1 (the query frame) far off and occluded (never
    scored), frame 2 off by exactly 2 px in x (d^2 = 4: not < 2^2, but < 4^2), frame 3 predicted occluded
    (or visible)."""
    query = np.array([[[1.0, 10.5, 20.5]]])  # (t, y, x)
    gt_tracks = np.full((1, 1, 4, 2), [20.5, 10.5])
    gt_occluded = np.array([[[False, False, False, True]]])
    pred_tracks = gt_tracks.copy()
    pred_tracks[0, 0, 0] += [3.0, 4.0]
    pred_tracks[0, 0, 1] += [100.0, 100.0]
    pred_tracks[0, 0, 2] += [2.0, 0.0]
    pred_occluded = np.array([[[False, True, False, not pred_visible_at_3]]])
    return query, gt_occluded, gt_tracks, pred_occluded, pred_tracks


def test_first_mode_by_hand() -> None:
    # scored: frames 2 and 3 only
    metrics = compute_tapvid_metrics(*_one_track(), query_mode="first")
    assert metrics["occlusion_accuracy"].tolist() == [1.0]
    assert [metrics[f"pts_within_{d}"][0] for d in THRESHOLDS] == [0, 0, 1, 1, 1]
    # delta 1, 2: the visible prediction at frame 2 is a false positive and no true positive: 0 / (1 + 1)
    assert [metrics[f"jaccard_{d}"][0] for d in THRESHOLDS] == [0, 0, 1, 1, 1]
    assert metrics["average_jaccard"][0] == pytest.approx(0.6)
    assert metrics["average_pts_within_thresh"][0] == pytest.approx(0.6)


def test_strided_mode_by_hand() -> None:
    # scored: frames 0, 2, 3 (not the query frame 1); visible ground truth at 0 and 2
    metrics = compute_tapvid_metrics(*_one_track(), query_mode="strided")
    assert metrics["occlusion_accuracy"].tolist() == [1.0]
    # frame 0 is 5 px off: within 8 and 16 only; frame 2 exactly 2 px: within 4, 8, 16
    assert [metrics[f"pts_within_{d}"][0] for d in THRESHOLDS] == [0, 0, 0.5, 1, 1]
    # delta 4: TP 1 (frame 2), FP 1 (frame 0 visible but 5 px off), ground truth 2 -> 1 / 3
    assert [metrics[f"jaccard_{d}"][0] for d in THRESHOLDS] == pytest.approx([0, 0, 1 / 3, 1, 1])
    assert metrics["average_jaccard"][0] == pytest.approx(7 / 15)
    assert metrics["average_pts_within_thresh"][0] == pytest.approx(0.5)


def test_occluded_point_predicted_visible_is_a_false_positive_per_video() -> None:
    a = _one_track(False)
    b = _one_track(True)
    batch = [np.concatenate([x, y]) for x, y in zip(a, b)]
    metrics = compute_tapvid_metrics(*batch, query_mode="first")
    assert metrics["occlusion_accuracy"].tolist() == [1.0, 0.5]
    # video b at delta 4: TP 1, FP 1 (frame 3 occluded but predicted visible), 1 visible -> 1/2
    assert metrics["jaccard_4"].tolist() == [1.0, 0.5]
    assert metrics["jaccard_1"].tolist() == [0.0, 0.0]  # 0 / (1 + 2)
    # <delta ignores occlusion predictions
    assert metrics["pts_within_4"].tolist() == [1.0, 1.0]
    assert metrics["average_jaccard"].shape == (2,)
    assert mean_metrics([metrics])["occlusion_accuracy"] == 0.75


def test_exact_threshold_is_a_miss_for_every_delta() -> None:
    for delta in THRESHOLDS:
        query = np.array([[[0.0, 0.5, 0.5]]])
        gt = np.zeros((1, 1, 2, 2)) + 0.5
        pred = gt.copy()
        pred[0, 0, 1] += [0.6 * delta, 0.8 * delta]  # exactly delta away
        occluded = np.zeros((1, 1, 2), bool)
        metrics = compute_tapvid_metrics(query, occluded, gt, occluded, pred, "first")
        assert metrics[f"pts_within_{delta}"][0] == 0.0
        nudged = pred.copy()
        nudged[0, 0, 1] -= 1e-9
        metrics = compute_tapvid_metrics(query, occluded, gt, occluded, nudged, "first")
        assert metrics[f"pts_within_{delta}"][0] == 1.0


def test_query_frames_are_rounded() -> None:
    mask = evaluation_mask(np.array([1.4, 1.6]), 4, "first")
    assert mask.tolist() == [[False, False, True, True], [False, False, False, True]]
    assert evaluation_mask(np.array([2.0]), 4, "strided").tolist() == [[True, True, False, True]]
    with pytest.raises(InputError, match="query_mode"):
        evaluation_mask(np.array([0.0]), 4, "last")


def _loop_reference(query, gt_occ, gt_tracks, pred_occ, pred_tracks, mode, trackwise=False):
    """Written independently: explicit counters per video (or per track), frame by frame."""
    b, n, t = gt_occ.shape
    shape = (b, n) if trackwise else (b,)
    out = {}
    counts = {key: np.zeros(shape) for key in ("evaluated", "agree", "visible")}
    for d in THRESHOLDS:
        for key in ("within", "tp", "fp"):
            counts[f"{key}{d}"] = np.zeros(shape)
    for v in range(b):
        for i in range(n):
            q = int(np.floor(query[v, i, 0] + 0.5))
            slot = (v, i) if trackwise else (v,)
            for f in range(t):
                if (mode == "first" and f <= q) or (mode == "strided" and f == q):
                    continue
                counts["evaluated"][slot] += 1
                counts["agree"][slot] += gt_occ[v, i, f] == pred_occ[v, i, f]
                visible = not gt_occ[v, i, f]
                counts["visible"][slot] += visible
                dx, dy = pred_tracks[v, i, f] - gt_tracks[v, i, f]
                for d in THRESHOLDS:
                    close = dx * dx + dy * dy < d * d
                    counts[f"within{d}"][slot] += close and visible
                    counts[f"tp{d}"][slot] += close and visible and not pred_occ[v, i, f]
                    counts[f"fp{d}"][slot] += (not pred_occ[v, i, f]) and (not visible or not close)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["occlusion_accuracy"] = counts["agree"] / counts["evaluated"]
        for d in THRESHOLDS:
            out[f"pts_within_{d}"] = counts[f"within{d}"] / counts["visible"]
            out[f"jaccard_{d}"] = counts[f"tp{d}"] / (counts["visible"] + counts[f"fp{d}"])
    out["average_jaccard"] = sum(out[f"jaccard_{d}"] for d in THRESHOLDS) / len(THRESHOLDS)
    out["average_pts_within_thresh"] = sum(out[f"pts_within_{d}"] for d in THRESHOLDS) / len(THRESHOLDS)
    return out


@pytest.mark.parametrize("mode", ["first", "strided"])
@pytest.mark.parametrize("trackwise", [False, True])
def test_matches_loop_reference_on_random_data(mode: str, trackwise: bool) -> None:
    rng = np.random.default_rng(7)
    b, n, t = 3, 6, 9
    gt_tracks = rng.uniform(0, 256, (b, n, t, 2))
    pred_tracks = gt_tracks + rng.normal(0, 6, (b, n, t, 2))
    pred_tracks[0, :2, :3] = np.round(pred_tracks[0, :2, :3])  # some integer offsets
    gt_tracks[0, :2, :3] = np.round(gt_tracks[0, :2, :3])
    gt_occ = rng.random((b, n, t)) < 0.3
    pred_occ = rng.random((b, n, t)) < 0.3
    query_frames = rng.integers(0, t - 1, (b, n)).astype(float) + rng.uniform(-0.3, 0.3, (b, n))
    query = np.concatenate([query_frames[..., None], rng.uniform(0, 256, (b, n, 2))], axis=-1)
    ours = compute_tapvid_metrics(query, gt_occ, gt_tracks, pred_occ, pred_tracks, mode, trackwise)
    expected = _loop_reference(query, gt_occ, gt_tracks, pred_occ, pred_tracks, mode, trackwise)
    assert set(ours) == set(expected) == {
        "occlusion_accuracy", "average_jaccard", "average_pts_within_thresh",
        *(f"pts_within_{d}" for d in THRESHOLDS), *(f"jaccard_{d}" for d in THRESHOLDS),
    }
    for key in expected:
        assert ours[key].shape == ((b, n) if trackwise else (b,))
        np.testing.assert_allclose(ours[key], expected[key], rtol=0, atol=1e-12, equal_nan=True, err_msg=key)


def test_bad_shapes_are_input_errors() -> None:
    query, gt_occ, gt_tracks, pred_occ, pred_tracks = _one_track()
    with pytest.raises(InputError, match="pred_tracks"):
        compute_tapvid_metrics(query, gt_occ, gt_tracks, pred_occ, pred_tracks[:, :, :2], "first")
    with pytest.raises(InputError, match="query_mode"):
        compute_tapvid_metrics(query, gt_occ, gt_tracks, pred_occ, pred_tracks, "every")
