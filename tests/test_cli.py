"""The command line on videos generated here with PyAV: masks, points, overlays, errors, memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stcorr.baselines import load_baseline
from stcorr.cli import main
from stcorr.errors import InputError
from stcorr.frames import open_frames, read_mask
from stcorr.outputs import VideoWriter, write_mask_png
from stcorr.pipelines import propagate_video_mask, render_overlay_video

av = pytest.importorskip("av")

SIZE = (96, 128)  # H, W
STEP = 2  # pixels per frame the square moves right
SIDE = 40  # side of the moving square (5 feature cells)


def texture(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """A crop of a real photo (scikit-image): seed 0 the background, seed 1 the moving square."""
    data = pytest.importorskip("skimage.data")

    photo = data.astronaut()[100:, 50:] if seed == 0 else data.chelsea()[80:, 150:]
    return np.ascontiguousarray(photo[: shape[0] * 2 : 2, : shape[1] * 2 : 2])


def square_mask(t: int) -> np.ndarray:
    mask = np.zeros(SIZE, np.uint8)
    mask[28 : 28 + SIDE, 20 + STEP * t : 20 + SIDE + STEP * t] = 1
    return mask


def frame(t: int, background: np.ndarray, patch: np.ndarray) -> np.ndarray:
    image = background.copy()
    image[28 : 28 + SIDE, 20 + STEP * t : 20 + SIDE + STEP * t] = patch
    return image


def write_video(path: Path, count: int, size: tuple[int, int] = SIZE) -> Path:
    background, patch = texture(0, size), texture(1, (SIDE, SIDE))
    with VideoWriter(path, fps=10, crf=10) as writer:
        for t in range(count):
            writer.write(frame(t % 20, background, patch) if size == SIZE else background)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("clip")
    video = write_video(folder / "clip.mp4", 12)
    mask = write_mask_png(folder / "first.png", square_mask(0))
    return video, mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def follows_square(ids: np.ndarray, t: int, min_iou: float) -> None:
    """The square's mask overlaps its true position and moved at least half of the true motion.

    (ImageNet EfficientNet-Lite0 features at stride 8 lag behind sub-cell motion of a small pasted
    object; the test checks the pipeline, not the encoder's accuracy.)"""
    predicted, truth = ids == 1, square_mask(t) == 1
    assert iou(predicted, truth) > min_iou
    moved = np.nonzero(predicted)[1].mean() - np.nonzero(square_mask(0))[1].mean()
    assert t < 5 or moved >= 0.5 * STEP * t


def test_propagate_writes_masks_and_overlay(tmp_path, clip):
    video, mask = clip
    out = tmp_path / "out"
    code = main(["propagate", "--video", str(video), "--mask", str(mask), "--model", "efficientnet-lite0",
                 "--out", str(out), "--overlay", str(out / "overlay.mp4"), "--confidence", "--radius", "4",
                 "--overlay-pngs", str(out / "overlay")])
    assert code == 0
    masks = sorted((out / "masks").glob("*.png"))
    assert [m.stem for m in masks] == [f"{t:05d}" for t in range(12)]
    assert len(list((out / "confidence").glob("*.png"))) == 12
    stills = sorted((out / "overlay").glob("*.png"))
    assert [p.stem for p in stills] == [m.stem for m in masks]
    still = np.asarray(Image.open(stills[0]))
    assert still.shape == (*SIZE, 3) and (still != frame(0, texture(0, SIZE), texture(1, (SIDE, SIDE)))).any()
    np.testing.assert_array_equal(read_mask(masks[0]), square_mask(0))
    follows_square(read_mask(masks[1]), 1, 0.75)
    follows_square(read_mask(masks[-1]), 11, 0.5)
    overlay = open_frames(out / "overlay.mp4")
    assert len(overlay) == 12 and overlay.size == SIZE
    assert not list(out.rglob(".*tmp*"))
    # The overlay is written while masks are predicted; it shows the same as rendering it from the masks after.
    rendered = open_frames(render_overlay_video(video, out / "masks", tmp_path / "after.mp4"))
    for streamed_frame, rendered_frame in zip(overlay, rendered):
        assert (streamed_frame - rendered_frame).abs().max() < 1e-6


def test_propagate_from_a_middle_frame_of_a_folder(tmp_path):
    background, patch = texture(0, SIZE), texture(1, (SIDE, SIDE))
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for t in range(8):
        Image.fromarray(frame(t, background, patch)).save(frames_dir / f"img{t}.png")
    write_mask_png(tmp_path / "m.png", square_mask(4))
    assert main(["propagate", "--video", str(frames_dir), "--mask", str(tmp_path / "m.png"), "--frame", "4",
                 "--model", "efficientnet-lite0", "--out", str(tmp_path / "out"), "--radius", "4"]) == 0
    masks = {p.stem: read_mask(p) for p in (tmp_path / "out" / "masks").glob("*.png")}
    assert sorted(masks) == sorted(f"img{t}" for t in range(8))
    assert iou(masks["img0"] == 1, square_mask(0) == 1) > 0.6
    assert iou(masks["img7"] == 1, square_mask(7) == 1) > 0.6


def test_points_command(tmp_path, clip):
    video, _ = clip
    (tmp_path / "pts.json").write_text(json.dumps({"points": [[36.0, 48.0], [100.0, 80.0]],
                                                   "point_names": ["sq", "bg"]}))
    out = tmp_path / "out"
    assert main(["points", "--video", str(video), "--points", str(tmp_path / "pts.json"), "--model",
                 "efficientnet-lite0", "--out", str(out), "--overlay", str(out / "points.mp4"), "--radius", "4"]) == 0
    data = json.loads((out / "points.json").read_text())
    tracks = np.array(data["points"], dtype=float)
    assert tracks.shape == (12, 2, 2) and data["frame_names"] == [f"{t:05d}" for t in range(12)]
    assert data["point_names"] == ["sq", "bg"]
    assert abs(tracks[-1, 0, 0] - (36.0 + STEP * 11)) < 8 and abs(tracks[-1, 0, 1] - 48.0) < 8
    assert abs(tracks[-1, 1, 0] - 100.0) < 8
    csv_lines = (out / "points.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 12 * 2 and csv_lines[0].endswith(",point_name,visible")
    visible = np.array(data["visible"])
    assert visible.shape == (12, 2) and visible.dtype == bool and visible[0].all()
    scores = np.array(data["scores"])
    assert ((scores >= 0) & (scores <= 1)).all() and (scores[0] == 1).all()
    assert (visible == (scores >= 0.5)).all()
    assert len(open_frames(out / "points.mp4")) == 12


def test_mask_of_another_size(tmp_path, clip, capsys):
    video, _ = clip
    big = np.kron(square_mask(0), np.ones((2, 2), np.uint8))
    write_mask_png(tmp_path / "big.png", big)
    args = ["propagate", "--video", str(video), "--mask", str(tmp_path / "big.png"), "--model", "lab-pixels",
            "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert "--resize-mask" in capsys.readouterr().err
    assert main(args + ["--resize-mask"]) == 0
    np.testing.assert_array_equal(read_mask(tmp_path / "out" / "masks" / "00000.png"), square_mask(0))


def test_rgb_coloured_mask_is_mapped_to_ids(tmp_path, clip):
    video, _ = clip
    rgb = np.zeros((*SIZE, 3), np.uint8)
    rgb[square_mask(0) == 1] = (10, 200, 30)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert main(["propagate", "--video", str(video), "--mask", str(tmp_path / "rgb.png"), "--model", "lab-pixels",
                 "--out", str(tmp_path / "out")]) == 0
    np.testing.assert_array_equal(read_mask(tmp_path / "out" / "masks" / "00000.png"), square_mask(0))


def test_corrupt_video_and_unwritable_output(tmp_path, clip, capsys):
    video, mask = clip
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert main(["propagate", "--video", str(bad), "--mask", str(mask), "--model", "lab-pixels",
                 "--out", str(tmp_path / "o")]) == 2
    assert "error:" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["propagate", "--video", str(video), "--mask", str(mask), "--model", "lab-pixels",
                 "--out", str(blocker / "out")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_models_and_info_commands(capsys):
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "stt-r18-s8" in listing and "not on disk" in listing
    assert main(["info"]) == 0
    assert "torch" in capsys.readouterr().out


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_300_frame_video_streams_in_bounded_memory(tmp_path):
    video = write_video(tmp_path / "long.mp4", 300, size=(120, 160))
    mask = np.zeros((120, 160), np.uint8)
    mask[40:80, 50:100] = 1
    samples: list[float] = []
    job = propagate_video_mask(load_baseline("lab-pixels"), video, mask, tmp_path / "out",
                               overlay_path=tmp_path / "out" / "o.mp4", progress=lambda n: samples.append(rss_mb()),
                               context=5, radius=4)
    assert job.frames == 300 and len(samples) == 300
    assert len(open_frames(tmp_path / "out" / "o.mp4")) == 300
    growth = max(samples[50:]) - samples[50]
    assert growth < 30, f"RSS grew by {growth:.1f} MB between frame 50 and 300"


def test_sheet_command(tmp_path, clip):
    video, _ = clip
    assert main(["sheet", str(video), "--frames", "0", "5", "11", "--out", str(tmp_path / "s.png"), "--width", "384"]) == 0
    image = Image.open(tmp_path / "s.png")
    assert image.size == (384, 96)
    assert main(["sheet", str(video), "--frames", "99", "--out", str(tmp_path / "t.png")]) == 2


def test_models_table_lines_up_and_lists_the_baselines(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0]
    rows = [line for line in lines[1:] if line.strip() and not line.startswith("Give")]
    for column in ("kind", "arch", "stride", "status", "description"):
        start = header.index(column)
        assert all(row[start - 2 : start] == "  " and row[start] != " " for row in rows), column
    names = [row.split()[0] for row in rows]
    assert {"lab-pixels", "random-r18", "efficientnet-lite0", "efficientnet-lite2", "embedded-lite2-s8", "embedded-r18-s8",
            "stt-r18-s8"} <= set(names)
    assert len(names) == len(set(names))  # a name listed once
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["lab-pixels"]["kind"] == "baseline" and listing["embedded-lite2-s8"]["default"] is True


@pytest.mark.parametrize("command", ["propagate", "points"])
def test_help_shows_defaults_and_an_example(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 20)" in text and "(default: 0.07)" in text and "(default: 0)" in text
    assert "640 on CPU" in text
    assert "example:" in text and f"stcorr {command} --video" in text.split("example:")[1]


def test_features_stream_frame_by_frame_on_cpu():
    from stcorr.cli import working_batch_size

    assert working_batch_size(None, "cpu") == 1 and working_batch_size(None, "cuda") == 8
    assert working_batch_size(4, "cpu") == 4
    with pytest.raises(InputError, match="--batch-size"):
        working_batch_size(0, "cpu")


def test_working_size_defaults_to_640_on_cpu():
    from stcorr.cli import CPU_MAX_SIDE, working_max_side

    assert CPU_MAX_SIDE == 640
    assert working_max_side(None, "cpu") == 640 and working_max_side(None, "cuda") is None
    assert working_max_side(0, "cpu") is None and working_max_side(320, "cuda") == 320
    with pytest.raises(InputError, match="--max-side"):
        working_max_side(-1, "cpu")


@pytest.mark.parametrize("argv", [["--help"], ["propagate", "--help"], ["models"]])
def test_help_and_models_do_not_import_torch(argv):
    """`stcorr --help` / `stcorr models` answer without importing PyTorch (about 2 s of the 4-5 s they took)."""
    import subprocess
    import sys

    code = ("import sys\nfrom stcorr.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'torchvision', 'av') if m in sys.modules)\n"
            "print('HEAVY', heavy)\n")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_points_file_reads_old_and_new_point_name_keys(tmp_path):
    from stcorr.pipelines import read_points_file

    new = tmp_path / "new.json"
    new.write_text(json.dumps({"points": [[1, 2], [3, 4]], "point_names": ["nose", "hand"]}))
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"points": [[1, 2], [3, 4]], "names": ["nose", "hand"]}))
    for path in (new, old):
        points, names = read_points_file(path)
        assert names == ["nose", "hand"] and points.tolist() == [[1, 2], [3, 4]]
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"points": [[1, 2]], "names": ["a"], "point_names": ["a"]}))
    with pytest.raises(InputError, match="point_names"):
        read_points_file(both)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"points": [[1, 2], [3, 4]], "point_names": ["a"]}))
    with pytest.raises(InputError, match="one name per point"):
        read_points_file(wrong)
