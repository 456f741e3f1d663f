"""``python -m stcorr.eval {davis,vip,jhmdb} --model``: a model propagated over small generated datasets,
its result files written and scored; presets, overrides, sharding and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from stcorr.baselines import LabPixelEncoder
from stcorr.datasets import read_label_png
from stcorr.eval import evaluate_davis, main
from stcorr.eval.predict import predict_davis, propagate_mask
from stcorr.eval.presets import PRESETS, preset_for
from stcorr.eval.sharding import Shard
from stcorr.eval.sources import skimage_photos
from stcorr.eval.synthetic import make_video
from stcorr.metrics import jhmdb
from stcorr.outputs import write_mask_png

pytest.importorskip("skimage")

MODEL = "lab-pixels"  # cheap, weight-free, stride 8


@pytest.fixture(scope="module")
def videos():
    photos = skimage_photos()
    return [make_video(seed, 7, size=(72, 96), photos=photos) for seed in (3, 4, 5)]


def save_frames(folder: Path, frames: np.ndarray, suffix: str = ".jpg") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:05d}{suffix}", quality=95)


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory, videos) -> Path:
    root = tmp_path_factory.mktemp("davis")
    names = []
    for i, video in enumerate(videos):
        name = f"seq{i}"
        names.append(name)
        save_frames(root / "JPEGImages" / "480p" / name, video.frames)
        for t, mask in enumerate(video.masks):
            if t == 0 and i == 0:
                mask = mask.copy()
                mask[:2] = 255  # void in the first frame counts as background
            write_mask_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", mask)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
    return root


def davis_jf(root: Path, results: Path) -> float:
    return evaluate_davis(root, results).summary.jf_mean


def test_presets_follow_the_reference_configs() -> None:
    expected = {
        ("davis", 8): (None, 12),
        ("davis", 4): (None, 35),
        ("vip", 8): ((560, 560), 16),
        ("vip", 4): ((560, 560), 35),
        ("jhmdb", 8): ((320, 320), 5),
        ("jhmdb", 4): ((320, 320), 12),
    }
    assert {key: (p.input_size, p.radius) for key, p in PRESETS.items()} == expected
    for preset in PRESETS.values():
        assert (preset.context, preset.topk, preset.temperature) == (20, 10, 0.07)
    assert preset_for("davis", 8).label_downsampling == "nearest" and preset_for("davis", 8).minmax_normalize
    assert preset_for("jhmdb", 8).label_downsampling == "bilinear" and preset_for("jhmdb", 8).sigma == 4.0
    overridden = preset_for("vip", 8).with_overrides(radius=3, topk=None)
    assert (overridden.radius, overridden.topk) == (3, 10)
    with pytest.raises(ValueError, match="stride 16"):
        preset_for("davis", 16)


def test_davis_model_to_pngs_to_scores(tmp_path: Path, davis_root: Path, videos, capsys) -> None:
    out, scores = tmp_path / "out", tmp_path / "scores.json"
    assert main(["davis", "--root", str(davis_root), "--model", MODEL, "--out", str(out), "--json", str(scores)]) == 0
    printed = capsys.readouterr().out
    assert "propagating lab-pixels: davis stride 8: native size, context 20, radius 12, top-10" in printed
    data = json.loads(scores.read_text())
    assert data["model"] == MODEL and data["propagation"]["radius"] == 12 and data["world_size"] == 1
    assert data["J&F-Mean"] == pytest.approx(davis_jf(davis_root, out))  # the scorer reads what was written

    for i, video in enumerate(videos):
        pngs = sorted((out / f"seq{i}").glob("*.png"))
        assert [p.stem for p in pngs] == [f"{t:05d}" for t in range(len(video.frames))]
        assert Image.open(pngs[1]).mode == "P"
        first = np.where(video.masks[0] == 255, 0, video.masks[0])
        if i == 0:
            first[:2] = 0
        np.testing.assert_array_equal(read_label_png(pngs[0]), first)
        # the CLI writes exactly what the library propagates from the same frames
        model = LabPixelEncoder().eval()
        frames = [
            np.asarray(Image.open(davis_root / "JPEGImages/480p" / f"seq{i}" / f"{t:05d}.jpg"))
            for t in range(len(video.frames))
        ]
        expected = list(
            propagate_mask(
                model,
                np.stack(frames),
                read_label_png(davis_root / "Annotations/480p" / f"seq{i}" / "00000.png"),
                preset_for("davis", 8),
            )
        )
        for t in (1, len(frames) - 1):
            np.testing.assert_array_equal(read_label_png(pngs[t]), expected[t])

    assert 0 < data["J&F-Mean"] <= 1


def test_overrides_and_shards(tmp_path: Path, davis_root: Path) -> None:
    out, scores = tmp_path / "out", tmp_path / "scores.json"
    argv = [
        "davis",
        "--root",
        str(davis_root),
        "--model",
        MODEL,
        "--out",
        str(out),
        "--json",
        str(scores),
        "--radius",
        "2",
        "--topk",
        "3",
        "--context",
        "1",
        "--temperature",
        "0.05",
    ]
    assert main(argv) == 0
    knobs = json.loads(scores.read_text())["propagation"]
    assert (knobs["radius"], knobs["topk"], knobs["context"], knobs["temperature"]) == (2, 3, 1, 0.05)

    model, preset = (
        LabPixelEncoder().eval(),
        preset_for("davis", 8).with_overrides(radius=2, topk=3, context=1, temperature=0.05),
    )
    sharded = tmp_path / "sharded"
    done = [predict_davis(model, davis_root, sharded, preset=preset, shard=Shard(rank, 2)) for rank in (0, 1)]
    assert done == [["seq0", "seq2"], ["seq1"]]
    for png in out.rglob("*.png"):
        np.testing.assert_array_equal(read_label_png(png), read_label_png(sharded / png.relative_to(out)))


def test_torchrun_ranks_split_the_videos_and_rank0_scores(tmp_path: Path, davis_root: Path) -> None:
    single = tmp_path / "single"
    assert main(["davis", "--root", str(davis_root), "--model", MODEL, "--out", str(single)]) == 0
    out, scores = tmp_path / "out", tmp_path / "scores.json"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "stcorr.eval",
            "davis",
            "--root",
            str(davis_root),
            "--model",
            MODEL,
            "--out",
            str(out),
            "--json",
            str(scores),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    assert process.stdout.count("J&F-Mean") == 1  # only rank 0 scores
    assert json.loads(scores.read_text())["world_size"] == 2
    pngs = sorted(p.relative_to(single) for p in single.rglob("*.png"))
    assert pngs == sorted(p.relative_to(out) for p in out.rglob("*.png"))
    for png in pngs:
        np.testing.assert_array_equal(read_label_png(out / png), read_label_png(single / png))


def test_vip_model_square_resize_and_class_ids(tmp_path: Path, videos) -> None:
    fine = tmp_path / "VIP_Fine"
    names = ["videos1", "videos2"]
    for name, video in zip(names, videos):
        save_frames(fine / "Images" / name, video.frames)
        for t, mask in enumerate(video.masks):
            path = fine / "Annotations" / "Category_ids" / name / f"{t:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.where(mask > 0, mask + 10, 0).astype(np.uint8)).save(path)  # class ids 11..13
    (fine / "lists").mkdir()
    (fine / "lists" / "val_videos.txt").write_text("\n".join(names) + "\n")
    out, scores = tmp_path / "out", tmp_path / "vip.json"
    assert main(["vip", "--root", str(tmp_path), "--model", MODEL, "--out", str(out), "--json", str(scores)]) == 0
    data = json.loads(scores.read_text())
    assert data["propagation"]["input_size"] == [560, 560] and data["propagation"]["radius"] == 16
    assert 0.3 < data["mIoU"] <= 1.0 and data["num_frames"] == 14
    for name, video in zip(names, videos):
        predicted = [read_label_png(out / name / f"{t:05d}.png") for t in range(len(video.frames))]
        assert all(p.shape == video.masks.shape[1:] for p in predicted)  # back at the GT size
        np.testing.assert_array_equal(predicted[0], np.where(video.masks[0] > 0, video.masks[0] + 10, 0))
        assert set(np.unique(np.stack(predicted))) <= {0, 11, 12, 13}


def test_jhmdb_model_keypoints_in_original_pixels(tmp_path: Path, videos) -> None:
    lines, truths = [], {}
    for i, video in enumerate(videos[:2]):
        scene, name = video.scene, f"clap/video{i}"
        # 15 "joints" fixed on the objects, moving with them
        local = np.stack(np.meshgrid([-6.0, 0.0, 6.0], [-8.0, -4.0, 0.0, 4.0, 8.0]), -1).reshape(15, 2)
        tracks = np.stack(
            [
                scene.track(j % len(scene.objects), local[j : j + 1], t)[0]
                for t in range(len(video.frames))
                for j in range(15)
            ]
        ).reshape(-1, 15, 2)
        truths[name] = tracks
        mat = tmp_path / "joint_positions" / name / "joint_positions.mat"
        mat.parent.mkdir(parents=True)
        scipy.io.savemat(mat, {"pos_img": tracks.transpose(2, 1, 0) + 1})  # (2, 15, T), 1-based
        save_frames(tmp_path / "Rename_Images" / name, video.frames, ".png")
        lines.append(f"joint_positions/{name}/joint_positions.mat Rename_Images/{name}")
    (tmp_path / "testlist_split1.txt").write_text("\n".join(lines) + "\n")
    out, scores = tmp_path / "out", tmp_path / "pck.json"
    argv = ["jhmdb", "--root", str(tmp_path), "--model", MODEL, "--out", str(out), "--json", str(scores)]
    assert main(argv + ["--protocol", "crw"]) == 0
    data = json.loads(scores.read_text())
    assert data["propagation"]["input_size"] == [320, 320] and data["propagation"]["radius"] == 5
    assert data["protocol"] == "crw" and 0 < data["PCK@0.5"] <= 100
    for name, truth in truths.items():
        points = jhmdb.load_keypoints(out / f"{name}.npy")
        assert points.shape == truth.shape
        inside = (truth[0, :, 0] >= 0) & (truth[0, :, 0] <= 95) & (truth[0, :, 1] >= 0) & (truth[0, :, 1] <= 71)
        assert np.abs(points[0] - truth[0])[inside].max() <= 1.0  # frame 0: its own heatmap, reference anchoring
        assert np.all((points[1:] >= -1) & (points[1:, :, 0:1] <= 96) & (points[1:, :, 1:] <= 72))
    batched = tmp_path / "batched"  # --batch-videos: both videos in one batch, the same keypoints
    assert main(["jhmdb", "--root", str(tmp_path), "--model", MODEL, "--out", str(batched), "--batch-videos", "2"]) == 0
    for name in truths:
        alone, together = (jhmdb.load_keypoints(folder / f"{name}.npy") for folder in (out, batched))
        np.testing.assert_array_equal(together, alone)


def test_model_errors_exit_with_code_2(tmp_path: Path, davis_root: Path, capsys) -> None:
    base = ["davis", "--root", str(davis_root), "--out", str(tmp_path / "out")]
    assert main(base + ["--model", "no-such-model"]) == 2
    assert "neither a manifest name" in capsys.readouterr().err
    checkpoint = tmp_path / "broken.pth"
    checkpoint.write_bytes(b"not a checkpoint")
    assert main(base + ["--model", str(checkpoint)]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["davis", "--root", str(tmp_path / "missing"), "--model", MODEL, "--out", str(tmp_path)]) == 2
    assert "DAVIS root not found" in capsys.readouterr().err
    for argv in (
        ["davis", "--root", ".", "--model", MODEL],
        ["davis", "--root", ".", "--results", ".", "--radius", "3"],
        ["davis", "--root", ".", "--results", ".", "--model", MODEL, "--out", "x"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "--model needs --out" in capsys.readouterr().err


def test_batched_videos_write_the_masks_of_one_at_a_time(tmp_path: Path, videos) -> None:
    """--batch-videos: sequences of one size propagate together (the shorter one padded, one batch of two and
    a batch of one), and every PNG equals the one-at-a-time result; VIP (square working size) too."""
    from stcorr.eval.predict import predict_vip

    root = tmp_path / "davis"
    lengths = {"seq0": 7, "seq1": 4, "seq2": 6}
    for (name, length), video in zip(lengths.items(), videos):
        save_frames(root / "JPEGImages" / "480p" / name, video.frames[:length])
        for t, mask in enumerate(video.masks[:length]):
            write_mask_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", mask)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(lengths) + "\n")
    model = LabPixelEncoder().eval()
    preset = preset_for("davis", 8).with_overrides(radius=3, topk=5, context=2)
    one, two = tmp_path / "one", tmp_path / "two"
    predict_davis(model, root, one, preset=preset)
    assert sorted(predict_davis(model, root, two, preset=preset, batch_videos=2)) == sorted(lengths)
    pngs = sorted(p.relative_to(one) for p in one.rglob("*.png"))
    assert pngs == sorted(p.relative_to(two) for p in two.rglob("*.png")) and len(pngs) == sum(lengths.values())
    for png in pngs:
        np.testing.assert_array_equal(read_label_png(one / png), read_label_png(two / png))
    assert main(["davis", "--root", str(root), "--model", MODEL, "--out", str(tmp_path / "cli"), "--radius", "3",
                 "--batch-videos", "3"]) == 0

    fine = tmp_path / "VIP_Fine"
    for name, video in zip(lengths, videos):
        save_frames(fine / "Images" / name, video.frames[: lengths[name]])
        for t, mask in enumerate(video.masks[: lengths[name]]):
            write_mask_png(fine / "Annotations" / "Category_ids" / name / f"{t:05d}.png", mask)
    (fine / "lists").mkdir()
    (fine / "lists" / "val_videos.txt").write_text("\n".join(lengths) + "\n")
    vip = preset_for("vip", 8).with_overrides(radius=3, topk=5, context=2, input_size=(96, 128))
    predict_vip(model, tmp_path, one / "vip", preset=vip)
    predict_vip(model, tmp_path, two / "vip", preset=vip, batch_videos=3)
    for png in (one / "vip").rglob("*.png"):
        np.testing.assert_array_equal(read_label_png(png), read_label_png(two / "vip" / png.relative_to(one / "vip")))
