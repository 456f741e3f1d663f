"""Tests of stcorr.outputs: palette, mask/confidence/image PNGs, overlays, point tracks, videos, atomicity."""

from __future__ import annotations

import csv
import gc
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stcorr.errors import InputError, OutputWriteError
from stcorr.frames import open_frames, read_mask
from stcorr.outputs import (
    VideoWriter,
    davis_palette,
    overlay,
    write_atomic,
    write_confidence_png,
    write_image,
    write_mask_png,
    write_points_csv,
    write_points_json,
)

try:
    import av
except ImportError:  # only the video tests need PyAV; they skip without it
    av = None
needs_av = pytest.mark.skipif(av is None, reason="needs PyAV (pip install 'stcorr[video]')")


def moving_square(index: int, height: int, width: int) -> np.ndarray:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 2] = 90
    left = (3 * index) % (width - 16)
    image[8:24, left : left + 16] = (250, 200, 40)
    return image


def decode(path: Path) -> tuple[list[np.ndarray], float]:
    """All frames of a video as uint8 (H, W, 3), and its frame rate, read with PyAV directly."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, float(stream.average_rate)


def blocked_path(tmp_path: Path, name: str) -> Path:
    """A path whose parent is a regular file: unwritable even for root."""
    (tmp_path / "file").write_text("I am not a folder")
    return tmp_path / "file" / name


def leftovers(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if ".tmp" in entry.name)


# --------------------------------------------------------------------------------------------------
# Palette and PNGs


def test_davis_palette() -> None:
    palette = davis_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert palette[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert palette[255].tolist() == [224, 224, 192]
    assert len(np.unique(palette, axis=0)) == 256
    palette[1] = 0  # a copy: the next call is unaffected
    assert davis_palette()[1].tolist() == [128, 0, 0]


def test_mask_png_round_trip(tmp_path: Path) -> None:
    ids = np.random.default_rng(0).integers(0, 256, (37, 53))
    ids[0, 0], ids[0, 1] = 0, 255
    path = write_mask_png(tmp_path / "masks" / "00000.png", ids)  # missing folders are created
    with Image.open(path) as image:
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image.getpalette(), dtype=np.uint8).reshape(-1, 3)[:256], davis_palette())
    assert np.array_equal(read_mask(path), ids)
    # The same masks, saved as plain RGB, map back to the same ids through the DAVIS palette.
    Image.fromarray(davis_palette()[ids]).save(tmp_path / "rgb.png")
    assert np.array_equal(read_mask(tmp_path / "rgb.png"), ids)


def test_mask_png_accepts_tensors_and_bools(tmp_path: Path) -> None:
    write_mask_png(tmp_path / "t.png", torch.tensor([[0, 3], [3, 1]]))
    assert read_mask(tmp_path / "t.png").tolist() == [[0, 3], [3, 1]]
    write_mask_png(tmp_path / "b.png", np.array([[True, False]]))
    assert read_mask(tmp_path / "b.png").tolist() == [[1, 0]]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (np.array([[0, 256]]), r"values in \[0, 256\]"),
        (np.array([[-1, 2]]), r"values in \[-1, 2\]"),
        (np.zeros((2, 2), np.float32), "float32"),
        (np.zeros((2, 2, 1), np.uint8), r"shape \(2, 2, 1\)"),
        ([[0, 1]], "got list"),
    ],
)
def test_mask_png_rejects_bad_ids(tmp_path: Path, ids: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        write_mask_png(tmp_path / "m.png", ids)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_confidence_png(tmp_path: Path) -> None:
    conf = np.random.default_rng(1).random((20, 30)).astype(np.float32)
    conf[0, 0], conf[0, 1] = 0.0, 1.0
    path = write_confidence_png(tmp_path / "c.png", torch.from_numpy(conf))
    with Image.open(path) as image:
        assert image.mode == "L"
        stored = np.asarray(image)
    assert np.abs(stored / 255 - conf).max() <= 0.5 / 255 + 1e-6
    assert stored[0, 0] == 0 and stored[0, 1] == 255
    with pytest.raises(InputError, match="clip or rescale"):
        write_confidence_png(tmp_path / "bad.png", conf + 0.5)
    with pytest.raises(InputError, match="float confidence map"):
        write_confidence_png(tmp_path / "bad.png", (conf * 255).astype(np.uint8))


def test_write_image_png_exact_and_jpeg(tmp_path: Path) -> None:
    image = moving_square(2, 32, 48)
    with Image.open(write_image(tmp_path / "f.png", image)) as png:
        assert np.array_equal(np.asarray(png), image)
    chw = torch.from_numpy(image).permute(2, 0, 1) / 255
    with Image.open(write_image(tmp_path / "f.jpg", chw)) as jpeg:
        assert np.abs(np.asarray(jpeg).astype(int) - image).mean() < 3
    with pytest.raises(InputError, match=r"\.png, \.jpg or \.jpeg"):
        write_image(tmp_path / "f.gif", image)
    with pytest.raises(InputError, match="permute"):
        write_image(tmp_path / "g.png", torch.from_numpy(image).permute(2, 0, 1))  # uint8 must be (H, W, 3)


# --------------------------------------------------------------------------------------------------
# Overlays


def test_overlay_fill_contours_and_background() -> None:
    frame = np.full((20, 20, 3), 100, dtype=np.uint8)
    ids = np.zeros((20, 20), dtype=np.int64)
    ids[5:15, 5:15] = 1
    ids[5:15, 15:18] = 2
    out = overlay(frame, ids, alpha=0.5)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    palette = davis_palette().astype(int)
    fill = np.round(0.5 * 100 + 0.5 * palette[1]).astype(np.uint8)
    assert np.array_equal(out[0, 0], frame[0, 0])  # background untouched
    assert np.array_equal(out[10, 10], fill)  # interior blended
    assert np.array_equal(out[5, 10], palette[1]) and np.array_equal(out[10, 14], palette[1])  # contours
    assert np.array_equal(out[10, 15], palette[2])  # both sides of a shared border are contours
    assert not np.array_equal(out[5, 10], out[10, 10])
    plain = overlay(frame, ids, alpha=0.5, contours=False)
    assert np.array_equal(plain[5, 10], fill)
    assert np.array_equal(overlay(frame, ids, alpha=0.0, contours=False), frame)


def test_overlay_points_and_float_frames() -> None:
    frame = np.zeros((30, 40, 3), dtype=np.uint8)
    ids = np.zeros((30, 40), dtype=np.uint8)
    points = np.array([[10.0, 5.0], [30.0, 20.0], [np.nan, 3.0], [500.0, 500.0]])
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], dtype=np.uint8)
    out = overlay(frame, ids, points=points, point_colors=colors, point_radius=2)
    assert out[5, 10].tolist() == [255, 0, 0] and out[7, 10].tolist() == [255, 0, 0]
    assert out[20, 30].tolist() == [0, 255, 0] and out[20, 33].tolist() == [0, 0, 0]
    assert not (out == [0, 0, 255]).all(axis=-1).any()  # the NaN point is skipped
    default = overlay(frame, ids, points=points[:2])
    assert default[5, 10].tolist() == davis_palette()[1].tolist()

    rgb = moving_square(0, 30, 40)
    chw = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    ids[2:9, 3:7] = 4
    assert np.array_equal(overlay(chw, ids), overlay(rgb, ids))


def test_overlay_rejects_mismatches() -> None:
    frame = np.zeros((10, 10, 3), dtype=np.uint8)
    with pytest.raises(InputError, match="do not match"):
        overlay(frame, np.zeros((10, 11), dtype=np.uint8))
    with pytest.raises(InputError, match="alpha"):
        overlay(frame, np.zeros((10, 10), dtype=np.uint8), alpha=2.0)
    with pytest.raises(InputError, match=r"\(N, 2\)"):
        overlay(frame, np.zeros((10, 10), dtype=np.uint8), points=np.zeros((3, 3)))


# --------------------------------------------------------------------------------------------------
# Point tracks


@pytest.fixture
def tracks() -> tuple[np.ndarray, np.ndarray, list[str]]:
    points = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2) + 0.25
    scores = np.linspace(0, 1, 6, dtype=np.float32).reshape(3, 2)
    points[1, 1] = np.nan
    scores[2, 0] = np.nan
    return points, scores, ["a", "b", "c"]


def test_points_json(tmp_path: Path, tracks: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    points, scores, names = tracks
    path = write_points_json(tmp_path / "p.json", torch.from_numpy(points), scores, names)
    data = json.loads(path.read_text())
    assert data["frame_names"] == names and data["point_names"] == ["p0", "p1"] and "names" not in data
    assert data["points"][1][1] == [None, None] and data["scores"][2][0] is None
    loaded = np.array(data["points"], dtype=float)
    assert np.allclose(loaded, points, equal_nan=True)
    assert np.allclose(np.array(data["scores"], dtype=float), scores, atol=1e-4, equal_nan=True)


def test_points_csv(tmp_path: Path, tracks: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    points, scores, names = tracks
    path = write_points_csv(tmp_path / "p.csv", points, scores, names)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and list(rows[0]) == ["frame", "frame_name", "point_id", "x", "y", "score", "point_name"]
    assert rows[1] == {"frame": "0", "frame_name": "a", "point_id": "1", "x": "2.25", "y": "3.25", "score": "0.2",
                       "point_name": "p1"}
    assert rows[3]["x"] == "" and rows[3]["y"] == "" and rows[4]["score"] == ""


@pytest.mark.parametrize(
    ("points", "scores", "names", "message"),
    [
        (np.zeros((3, 2)), np.zeros((3,)), ["a"] * 3, r"\(T, N, 2\)"),
        (np.zeros((3, 2, 2)), np.zeros((3, 3)), ["a"] * 3, r"scores of shape \(3, 2\)"),
        (np.zeros((3, 2, 2)), np.zeros((3, 2)), ["a"] * 2, "expected 3 frame names"),
    ],
)
def test_points_reject_bad_shapes(
    tmp_path: Path, points: np.ndarray, scores: np.ndarray, names: list[str], message: str
) -> None:
    for writer in (write_points_json, write_points_csv):
        with pytest.raises(InputError, match=message):
            writer(tmp_path / "p", points, scores, names)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# Atomic writes and unwritable folders


def test_failing_write_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_atomic(target, fail)
    assert target.read_text() == "old" and leftovers(tmp_path) == []

    def os_fail(tmp: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputWriteError, match="out.txt: No space left"):
        write_atomic(target, os_fail)
    assert target.read_text() == "old" and leftovers(tmp_path) == []


def test_write_atomic_renames_only_at_the_end(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"

    def write(tmp: Path) -> None:
        assert tmp.parent == tmp_path and tmp.suffix == ".bin"  # same folder, same suffix
        tmp.write_bytes(b"data")
        assert not target.exists()

    assert write_atomic(target, write) == target
    assert target.read_bytes() == b"data" and leftovers(tmp_path) == []


@needs_av
def test_unclosed_video_writer_leaves_nothing_when_collected(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "v.mp4")
    writer.write(moving_square(0, 32, 32))
    assert len(leftovers(tmp_path)) == 1
    del writer
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_target_that_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "m.png").mkdir()
    with pytest.raises(OutputWriteError, match="m.png"):
        write_mask_png(tmp_path / "m.png", np.zeros((2, 2), np.uint8))
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "write",
    [
        lambda path: write_mask_png(path, np.zeros((4, 4), np.uint8)),
        lambda path: write_confidence_png(path, np.zeros((4, 4), np.float32)),
        lambda path: write_image(path.with_suffix(".png"), np.zeros((4, 4, 3), np.uint8)),
        lambda path: write_points_json(path, np.zeros((1, 1, 2)), np.zeros((1, 1)), ["0"]),
        lambda path: write_points_csv(path, np.zeros((1, 1, 2)), np.zeros((1, 1)), ["0"]),
        lambda path: VideoWriter(path.with_suffix(".mp4")),
    ],
)
@needs_av
def test_unwritable_folder(tmp_path: Path, write) -> None:
    path = blocked_path(tmp_path, "out.png")
    with pytest.raises(OutputWriteError, match=r"file/out\.(png|mp4)"):
        write(path)


# --------------------------------------------------------------------------------------------------
# Videos


@needs_av
def test_video_writer_round_trip(tmp_path: Path) -> None:
    frames = [moving_square(i, 48, 64) for i in range(20)]
    path = tmp_path / "v.mp4"
    with VideoWriter(path, fps=12) as writer:
        for index, frame in enumerate(frames):
            # uint8 (H, W, 3) and float (3, H, W) frames are both accepted
            writer.write(frame if index % 2 else torch.from_numpy(frame).permute(2, 0, 1) / 255)
        assert not path.exists()  # only a hidden temporary file exists while writing
    decoded, fps = decode(path)
    assert len(decoded) == 20 and fps == 12.0 and writer.frames_written == 20
    assert decoded[0].shape == (48, 64, 3)
    for got, want in zip(decoded, frames):
        assert np.abs(got.astype(int) - want).mean() < 4
    assert leftovers(tmp_path) == []
    assert len(open_frames(path)) == 20


@needs_av
def test_video_writer_pads_odd_sizes(tmp_path: Path) -> None:
    frames = [moving_square(i, 49, 65) for i in range(6)]
    with VideoWriter(tmp_path / "odd.mp4", fps=25) as writer:
        for frame in frames:
            writer.write(frame)
    decoded, _ = decode(tmp_path / "odd.mp4")
    assert len(decoded) == 6 and decoded[0].shape == (50, 66, 3)
    assert np.abs(decoded[3][:49, :65].astype(int) - frames[3]).mean() < 4


@needs_av
def test_video_writer_mpeg4(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "m.mp4", fps=10, codec="mpeg4") as writer:
        for index in range(5):
            writer.write(moving_square(index, 32, 48))
    decoded, _ = decode(tmp_path / "m.mp4")
    assert len(decoded) == 5 and decoded[0].shape == (32, 48, 3)


@needs_av
def test_exception_inside_video_writer_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    with pytest.raises(RuntimeError, match="stop"):
        with VideoWriter(path) as writer:
            writer.write(moving_square(0, 32, 32))
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputWriteError, match="closed"):
        writer.write(moving_square(1, 32, 32))


@needs_av
def test_video_writer_keeps_the_previous_video_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    path.write_bytes(b"previous")
    with pytest.raises(InputError, match=r"size \(32, 32\)"):
        with VideoWriter(path) as writer:
            writer.write(moving_square(0, 32, 32))
            writer.write(moving_square(1, 32, 48))
    assert path.read_bytes() == b"previous" and leftovers(tmp_path) == []


@needs_av
def test_video_writer_without_frames(tmp_path: Path) -> None:
    with pytest.raises(OutputWriteError, match="no frame was written"):
        with VideoWriter(tmp_path / "v.mp4"):
            pass
    assert list(tmp_path.iterdir()) == []


@needs_av
def test_video_writer_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="fps"):
        VideoWriter(tmp_path / "v.mp4", fps=0)
    with pytest.raises(OutputWriteError, match="not available"):
        VideoWriter(tmp_path / "v.mp4", codec="no-such-codec")
    with pytest.raises(InputError, match="suffix such as .mp4"):
        VideoWriter(tmp_path / "video")
    with pytest.raises(OutputWriteError, match="does not support"):
        with VideoWriter(tmp_path / "v.webm", codec="libx264") as writer:
            writer.write(moving_square(0, 32, 32))
    assert list(tmp_path.iterdir()) == []


@needs_av
def test_video_writer_keeps_ntsc_rates(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "v.mp4", fps=np.float64(30000 / 1001)) as writer:
        writer.write(moving_square(0, 32, 32))
    assert str(writer.fps) == "30000/1001"
    assert abs(open_frames(tmp_path / "v.mp4").fps - 29.97) < 0.01


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc to read the RSS")
@needs_av
def test_streaming_uses_bounded_memory(tmp_path: Path) -> None:
    count, height, width = 300, 120, 160
    source_path = tmp_path / "long.mp4"
    with VideoWriter(source_path, fps=30) as writer:
        for index in range(count):
            writer.write(moving_square(index, height, width))

    source = open_frames(source_path)
    assert len(source) == count
    peak = baseline = 0
    with VideoWriter(tmp_path / "copy.mp4", fps=source.fps or 30) as writer:
        for index, frame in enumerate(source):
            writer.write(frame)
            if index == 30:  # after the decoder's and the encoder's buffers have filled up
                baseline = peak = _rss_bytes()
            elif index > 30 and index % 10 == 0:
                peak = max(peak, _rss_bytes())
    # Holding the frames would cost 300 x 230 kB (float32) = 69 MB; streaming stays far below.
    assert peak - baseline < 15 * 2**20
    assert len(decode(tmp_path / "copy.mp4")[0]) == count
