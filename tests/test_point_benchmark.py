"""The offline point benchmark: exact tracks and visibility on semi-synthetic videos, the logistic fit, a quick run."""

from __future__ import annotations

import numpy as np
import pytest

from stcorr.eval.point_benchmark import (
    PointBenchmarkConfig,
    benchmark_videos,
    calibration,
    fit_visibility,
    point_video,
)
from stcorr.eval.synthetic import make_video

pytest.importorskip("skimage")  # the photos of the synthetic videos


def test_tracks_and_visibility_are_exact() -> None:
    video = make_video(1, 12, size=(128, 128), num_objects=3)
    points = point_video(video, spacing=10.0)
    assert points.points.shape[1:] == (12, 2) and points.occluded.shape == points.points.shape[:2]
    assert points.occluded.any() and (~points.occluded).any()
    pixels = points.points * 128 - 0.5  # back to pixel centres at integers
    col, row = np.round(pixels[..., 0]).astype(int), np.round(pixels[..., 1]).astype(int)
    for n in range(len(pixels)):
        for t in range(12):
            inside = 0 <= col[n, t] < 128 and 0 <= row[n, t] < 128
            shows = inside and video.masks[t, row[n, t], col[n, t]] != 0
            if not points.occluded[n, t]:  # a visible point lies on an object pixel
                assert shows
    # an occluded point lies under another (later, nearer) object, or outside the frame
    hidden = points.occluded & (col >= 0) & (col < 128) & (row >= 0) & (row < 128)
    t_idx = np.broadcast_to(np.arange(12), hidden.shape)
    assert (video.masks[t_idx[hidden], row[hidden], col[hidden]] >= 2).all()


def test_only_objects_that_others_pass_in_front_of_give_points() -> None:
    """With ``min_hidden``, an object's points count only when that share of them is covered by a later object."""
    for seed in range(4):
        video = make_video(seed, 12, size=(128, 128), num_objects=3)
        every = point_video(video, spacing=10.0)
        strict = point_video(video, spacing=10.0, min_hidden=0.25)
        assert len(strict.points) <= len(every.points)
        kept = {tuple(track[0]) for track in np.round(strict.points, 5)}
        assert kept <= {tuple(track[0]) for track in np.round(every.points, 5)}  # a subset of the same tracks
        if len(strict.points):
            pixels = strict.points * 128 - 0.5
            inside = ((pixels >= 0) & (pixels <= 127)).all(axis=-1)
            # hidden inside the frame = behind a later object; a quarter of the points at least
            assert (strict.occluded & inside).any(axis=1).mean() >= 0.25


def test_the_benchmark_videos_have_points_that_go_behind_others() -> None:
    videos = benchmark_videos(PointBenchmarkConfig.quick())
    assert len(videos) == 2
    for video in videos:
        assert (~video.occluded[:, :-1] & video.occluded[:, 1:]).any()


def test_fit_recovers_a_known_logistic_model() -> None:
    rng = np.random.default_rng(0)
    similarity = rng.uniform(0, 1, 20000)
    cycle = rng.uniform(0, 30, 20000)
    best = rng.uniform(0, 1, 20000)
    logit = -1.0 + 6.0 * similarity - 1.2 * np.log1p(cycle) + 2.0 * best
    visible = rng.random(20000) < 1 / (1 + np.exp(-logit))
    fitted = fit_visibility(similarity, cycle, best, visible)
    assert fitted.bias == pytest.approx(-1.0, abs=0.3)
    assert fitted.w_sim == pytest.approx(6.0, abs=0.4)
    assert fitted.w_cycle == pytest.approx(1.2, abs=0.15)
    assert fitted.w_best == pytest.approx(2.0, abs=0.3)
    probability = fitted.probability(similarity, cycle, best)
    assert abs(probability.mean() - visible.mean()) < 0.01  # calibrated in the large
    only = fit_visibility(similarity, cycle, best, visible, use=("similarity",))
    assert only.w_cycle == 0.0 and only.w_best == 0.0 and only.w_sim > 0


def test_quick_run_from_the_command_line(tmp_path, capsys) -> None:
    """``python -m stcorr.eval offline --quick --points-only``: rows with visibility and "all visible"."""
    import json

    from stcorr.eval.cli import main

    out = tmp_path / "points.json"
    assert main(["offline", "--quick", "--points-only", "--baselines", "--models", "efficientnet-lite0",
                 "--json", str(out)]) == 0
    assert "| efficientnet-lite0, all visible |" in capsys.readouterr().out
    rows = json.loads(out.read_text())["points"]["rows"]
    assert list(rows) == ["efficientnet-lite0", "efficientnet-lite0, all visible"]
    ours, all_visible = rows["efficientnet-lite0"]["first"], rows["efficientnet-lite0, all visible"]["first"]
    assert ours["average_pts_within_thresh"] == all_visible["average_pts_within_thresh"]  # the same tracks
    assert all_visible["occlusion_accuracy"] < 1.0  # these scenes have occluded points
    for key in ("average_jaccard", "occlusion_accuracy"):
        assert 0.0 <= ours[key] <= 1.0
    data = json.loads(out.read_text())["points"]
    gain = data["gains"]["efficientnet-lite0"]["first"]["average_jaccard"]  # paired over the 2 videos
    assert gain["low"] <= gain["mean"] <= gain["high"] and gain["videos"] == 2
    assert gain["mean"] == pytest.approx(ours["average_jaccard"] - all_visible["average_jaccard"], abs=1e-9)
    assert 0.0 < data["occluded"]["first"] < 1.0
    # (that visibility finds hidden points is tested in test_tracking.py; the full run's table is in the README)


def test_calibration_by_hand() -> None:
    scores = np.array([0.05, 0.15, 0.15, 0.95, 1.0, 0.55])
    visible = np.array([False, True, False, True, True, False])
    result = calibration(scores, visible, bins=10)
    assert result.counts == (1, 2, 0, 0, 0, 1, 0, 0, 0, 2)  # 1.0 falls in the last bin
    assert result.predicted[1] == pytest.approx(0.15) and result.observed[1] == pytest.approx(0.5)
    assert result.observed[9] == 1.0 and result.predicted[9] == pytest.approx(0.975)
    gaps = 1 * 0.05 + 2 * 0.35 + 1 * 0.55 + 2 * 0.025
    assert result.ece == pytest.approx(gaps / 6)
    assert result.brier == pytest.approx(np.mean((scores - visible) ** 2))
    with pytest.raises(ValueError, match="one shape"):
        calibration(scores, visible[:3])


def test_quick_fit_reports_constants_ablations_and_calibration(capsys) -> None:
    """``python -m stcorr.eval offline --quick --fit-visibility``: fitted constants, the ablation rows and the
    calibration table of the fitted scores."""
    from stcorr.eval.cli import main

    assert main(["offline", "--quick", "--fit-visibility", "--models", "efficientnet-lite0"]) == 0
    out = capsys.readouterr().out
    assert "all terms: VisibilityModel(" in out and "| efficientnet-lite0, similarity only |" in out
    table = [line for line in out.splitlines() if line.startswith("| 0.")]
    assert len(table) == 10
    pairs = sum(int(line.split("|")[2]) for line in table)
    assert pairs > 0 and "first: ECE" in out
