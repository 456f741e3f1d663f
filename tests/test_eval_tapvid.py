"""``python -m stcorr.eval tapvid`` on small files written in the released TAP-Vid layouts."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stcorr.errors import DataReadError
from stcorr.eval import tapvid
from stcorr.eval.cli import main

T, SIZE, STEP = 6, 96, 4  # frames, side (px), horizontal motion per frame (px)


def _texture(rng: np.random.Generator) -> np.ndarray:
    coarse = rng.integers(0, 256, (SIZE // 8 + 4, 2 * SIZE // 8 + 4, 3), np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((coarse.shape[1] * 8, coarse.shape[0] * 8), Image.BILINEAR))


def _example(seed: int) -> dict[str, np.ndarray]:
    """A texture sliding right by STEP px per frame; 3 tracks, the last hidden at frames 2-3 (a grey bar)."""
    rng = np.random.default_rng(seed)
    texture = _texture(rng)
    video = np.stack([texture[16:16 + SIZE, 64 - STEP * t:64 - STEP * t + SIZE] for t in range(T)])
    start = np.array([[30.0, 40.0], [60.0, 50.0], [45.0, 70.0]])  # pixel centres at integers
    points = np.stack([start + [STEP * t, 0] for t in range(T)], axis=1)  # (N, T, 2)
    occluded = np.zeros((3, T), bool)
    occluded[2, 2:4] = True
    for t in (2, 3):
        x, y = points[2, t].astype(int)
        video[t, y - 10:y + 11, x - 10:x + 11] = 128
    return {"video": video, "points": ((points + 0.5) / SIZE).astype(np.float32), "occluded": occluded}


@pytest.fixture(scope="module")
def davis_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tapvid") / "tapvid_davis.pkl"
    path.write_bytes(pickle.dumps({"slide-a": _example(0), "slide-b": _example(1)}))
    return path


def test_reads_the_three_released_layouts(davis_file: Path, tmp_path: Path) -> None:
    videos = tapvid.load_tapvid(davis_file)
    assert [v.name for v in videos] == ["slide-a", "slide-b"]
    assert videos[0].video.shape == (T, SIZE, SIZE, 3) and videos[0].points.shape == (3, T, 2)
    stacking = tmp_path / "tapvid_rgb_stacking.pkl"
    stacking.write_bytes(pickle.dumps([_example(0)]))
    assert [v.name for v in tapvid.load_tapvid(stacking)] == ["tapvid_rgb_stacking-0000"]
    kinetics = tmp_path / "kinetics"
    kinetics.mkdir()
    example = _example(2)
    jpegs = []
    for frame in example["video"]:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
        jpegs.append(buffer.getvalue())
    (kinetics / "0000_of_0010.pkl").write_bytes(pickle.dumps([{**example, "video": jpegs}]))
    (video,) = tapvid.load_tapvid(kinetics)
    assert video.video.shape == (T, SIZE, SIZE, 3) and np.abs(video.video.astype(int) - example["video"]).mean() < 8


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo never run",))


def test_pickles_with_other_globals_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v": _Payload()}))
    with pytest.raises(DataReadError, match="not allowed"):
        tapvid.load_pickle(path)
    with pytest.raises(DataReadError, match="no TAP-Vid file"):
        tapvid.load_pickle(tmp_path / "absent.pkl")


def test_query_sampling_as_tapnet() -> None:
    occluded = np.array([[True, False, False, False, False, False, True],
                         [False, False, False, False, False, True, False],
                         [True, True, True, True, True, True, True]])
    points = np.arange(3 * 7 * 2, dtype=np.float64).reshape(3, 7, 2)
    first = tapvid.sample_queries_first(occluded, points)
    assert first.query_points.tolist() == [[1, points[0, 1, 1], points[0, 1, 0]], [0, points[1, 0, 1], points[1, 0, 0]]]
    assert first.target_points.shape == (2, 7, 2)  # the never-visible track is dropped
    strided = tapvid.sample_queries_strided(occluded, points, stride=5)
    # frame 0: track 1 only; frame 5: track 0 only (track 1 occluded there)
    assert strided.query_points[:, 0].tolist() == [0, 5]
    np.testing.assert_array_equal(strided.target_points, points[[1, 0]])
    np.testing.assert_array_equal(strided.occluded, occluded[[1, 0]])


def test_perfect_predictions_score_one(davis_file: Path) -> None:
    video = tapvid.load_tapvid(davis_file)[0]
    for mode in tapvid.QUERY_MODES:
        queries = tapvid.sample_queries(video, mode)
        scores = tapvid.score_video(queries, queries.target_points, queries.occluded, mode)
        assert scores["average_jaccard"] == 1.0 and scores["occlusion_accuracy"] == 1.0


@pytest.mark.parametrize("mode", ["first", "strided"])
def test_end_to_end(davis_file: Path, tmp_path: Path, capsys, mode: str) -> None:
    out = tmp_path / "scores.json"
    args = ["tapvid", "--data", str(davis_file), "--model", "efficientnet-lite0", "--query-mode", mode,
            "--json", str(out), "--radius", "4", "--context", "4"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "AJ" in printed and "OA" in printed and "2 videos" in printed
    data = json.loads(out.read_text())
    assert data["query_mode"] == mode and sorted(data["per_video"]) == ["slide-a", "slide-b"]
    mean = data["mean"]
    assert set(mean) >= {"average_jaccard", "average_pts_within_thresh", "occlusion_accuracy", "jaccard_1"}
    assert mean["pts_within_16"] > 0.9  # the slide is tracked
    per_video = [m["average_jaccard"] for m in data["per_video"].values()]
    assert mean["average_jaccard"] == pytest.approx(np.mean(per_video))
    # the frames are stored at 96x96: "full" tracks at 96x96 and rescales to the 256 raster, another category
    assert main([*args, "--resolution", "full", "--json", str(tmp_path / "full.json")]) == 0
    full = json.loads((tmp_path / "full.json").read_text())
    assert full["resolution"] == "full" and full["mean"]["pts_within_16"] > 0.75  # a 12x12 feature grid


def test_missing_file_exits_with_code_2(tmp_path: Path, capsys) -> None:
    assert main(["tapvid", "--data", str(tmp_path / "none.pkl"), "--model", "lab-pixels"]) == 2
    assert "no TAP-Vid file" in capsys.readouterr().err


def test_torchrun_ranks_split_the_videos_and_rank0_scores(davis_file: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    single = tmp_path / "single.json"
    common = ["--data", str(davis_file), "--model", "lab-pixels", "--radius", "4", "--context", "4"]
    assert main(["tapvid", *common, "--json", str(single)]) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    scores = tmp_path / "scores.json"
    process = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "stcorr.eval", "tapvid", *common,
         "--out", str(tmp_path / "out"), "--json", str(scores)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, check=False,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    assert process.stdout.count("<δavg") == 1  # only rank 0 scores
    sharded, alone = json.loads(scores.read_text()), json.loads(single.read_text())
    assert sharded["world_size"] == 2 and sharded["per_video"] == alone["per_video"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics-rank000.json", "metrics-rank001.json"]


def test_a_video_with_nothing_to_score_is_null_in_json(tmp_path: Path) -> None:
    example = _example(3)
    example["occluded"][:] = True
    example["occluded"][0, -1] = False  # one track, visible at the last frame only: 'first' scores no frame
    path = tmp_path / "tapvid_davis.pkl"
    path.write_bytes(pickle.dumps({"last-only": example}))
    out = tmp_path / "scores.json"
    assert main(["tapvid", "--data", str(path), "--model", "lab-pixels", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["per_video"]["last-only"]["average_jaccard"] is None and data["mean"]["occlusion_accuracy"] is None
