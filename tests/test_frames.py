"""Tests of stcorr.frames: every accepted source, resizing, lazy reading, typed errors and read_mask."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stcorr.errors import InputError, VideoReadError
from stcorr.frames import FrameSource, open_frames, read_mask
from stcorr.outputs import davis_palette

try:
    import av
except ImportError:  # only the video tests need PyAV; they skip without it
    av = None
needs_av = pytest.mark.skipif(av is None, reason="needs PyAV (pip install 'stcorr[video]')")

HEIGHT, WIDTH, COUNT = 48, 64, 24


def pattern(index: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A gradient background with a 12x12 white square moving 2 px right per frame, (H, W, 3) uint8."""
    rows = np.linspace(0, 160, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 200, width, dtype=np.float32)[None, :]
    image = np.stack([rows + 0 * cols, 0 * rows + cols, np.full((height, width), 60.0)], axis=-1)
    left = (2 * index) % (width - 12)
    image[10:22, left : left + 12] = 255
    return image.astype(np.uint8)


def as_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255


def write_video(
    path: Path, frames: list[np.ndarray], *, codec: str = "libx264", pix_fmt: str = "yuv420p", fps: int = 25, options=None
) -> Path:
    """Encode frames with PyAV directly (independent of stcorr.outputs)."""
    pytest.importorskip("av")
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        if codec == "libx264":
            stream.options = {"crf": "10", "preset": "ultrafast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def frames_uint8() -> np.ndarray:
    return np.stack([pattern(i) for i in range(COUNT)])


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory, frames_uint8: np.ndarray) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", list(frames_uint8))


def save_folder(folder: Path, frames: np.ndarray, names: list[str]) -> Path:
    folder.mkdir(exist_ok=True)
    for frame, name in zip(frames, names):
        Image.fromarray(frame).save(folder / name)
    return folder


# --------------------------------------------------------------------------------------------------
# Folders


def test_folder_natural_sort_ignores_other_files_and_is_exact(tmp_path: Path, frames_uint8: np.ndarray) -> None:
    names = ["frame10.png", "frame2.png", "frame1.png"]  # written out of order
    save_folder(tmp_path, frames_uint8[:3], names)
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "sub.png").mkdir()
    Image.fromarray(frames_uint8[0]).save(tmp_path / ".hidden.png")

    source = open_frames(tmp_path)
    assert isinstance(source, FrameSource)
    assert source.names == ("frame1", "frame2", "frame10")
    assert len(source) == 3 and source.size == source.original_size == (HEIGHT, WIDTH) and source.fps is None
    expected = {"frame10": frames_uint8[0], "frame2": frames_uint8[1], "frame1": frames_uint8[2]}
    for name, frame in zip(source.names, source):
        assert frame.dtype == torch.float32 and frame.shape == (3, HEIGHT, WIDTH) and frame.device.type == "cpu"
        assert torch.equal(frame, as_chw(expected[name]))
    assert torch.equal(source[-1], as_chw(expected["frame10"]))


def test_folder_of_jpegs_and_str_path(tmp_path: Path, frames_uint8: np.ndarray) -> None:
    save_folder(tmp_path, frames_uint8[:4], [f"{i:05d}.jpg" for i in range(4)])
    source = open_frames(str(tmp_path))
    assert len(source) == 4 and source.names[0] == "00000"
    for frame, original in zip(source, frames_uint8):
        assert (frame - as_chw(original)).abs().mean() < 0.03


def test_single_image_file_is_one_frame(tmp_path: Path, frames_uint8: np.ndarray) -> None:
    Image.fromarray(frames_uint8[5]).save(tmp_path / "still.png")
    source = open_frames(tmp_path / "still.png")
    assert source.names == ("still",)
    assert torch.equal(source[0], as_chw(frames_uint8[5]))


def test_folder_iteration_is_lazy(tmp_path: Path, frames_uint8: np.ndarray) -> None:
    save_folder(tmp_path, frames_uint8[:4], [f"f{i}.png" for i in range(4)])
    source = open_frames(tmp_path)
    frames = iter(source)
    assert torch.equal(next(frames), as_chw(frames_uint8[0]))
    # Damage a later frame after opening: only reaching it fails, so frames are read one at a time.
    data = (tmp_path / "f2.png").read_bytes()
    (tmp_path / "f2.png").write_bytes(data[: len(data) // 2])
    assert torch.equal(next(frames), as_chw(frames_uint8[1]))
    with pytest.raises(VideoReadError, match="f2.png"):
        next(frames)


def test_empty_folder_and_folder_without_images(tmp_path: Path) -> None:
    with pytest.raises(VideoReadError, match="no .png/.jpg/.jpeg image"):
        open_frames(tmp_path)
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(VideoReadError, match="readme.txt"):
        open_frames(tmp_path)


def test_folder_with_different_sizes_names_the_file(tmp_path: Path, frames_uint8: np.ndarray) -> None:
    save_folder(tmp_path, frames_uint8[:3], ["a1.png", "a2.png", "a3.png"])
    Image.fromarray(frames_uint8[0][:40]).save(tmp_path / "a2.png")
    with pytest.raises(VideoReadError, match=r"a2\.png has size \(40, 64\).*a1\.png has \(48, 64\)"):
        open_frames(tmp_path)


def test_folder_with_duplicate_stems(tmp_path: Path, frames_uint8: np.ndarray) -> None:
    save_folder(tmp_path, frames_uint8[:2], ["x.png", "x.jpg"])
    with pytest.raises(VideoReadError, match="share the name 'x'"):
        open_frames(tmp_path)


def test_colour_modes_become_rgb(tmp_path: Path) -> None:
    rgba = np.random.default_rng(0).integers(0, 256, (8, 10, 4), dtype=np.uint8)
    rgba[..., 3] = np.arange(10, dtype=np.uint8) * 25  # varying alpha must be ignored
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "0.png")
    gray = np.arange(80, dtype=np.uint8).reshape(8, 10) * 3
    Image.fromarray(gray, mode="L").save(tmp_path / "1.png")
    gray16 = (np.arange(80, dtype=np.uint16).reshape(8, 10) * 800).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "2.png")  # saved as an I;16 PNG

    frames = list(open_frames(tmp_path))
    assert torch.equal(frames[0], as_chw(rgba[..., :3]))
    assert torch.equal(frames[1], as_chw(np.repeat(gray[..., None], 3, axis=2)))
    expected16 = torch.from_numpy(gray16.astype(np.float32) / 65535).expand(3, -1, -1)
    assert torch.allclose(frames[2], expected16, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Arrays, tensors and lists


def test_every_array_form_gives_the_same_frames(frames_uint8: np.ndarray) -> None:
    chw = frames_uint8.transpose(0, 3, 1, 2)
    floats = frames_uint8.astype(np.float32) / 255
    forms = {
        "numpy THWC uint8": frames_uint8,
        "numpy TCHW uint8": np.ascontiguousarray(chw),
        "numpy THWC float32": floats,
        "numpy TCHW float64": floats.transpose(0, 3, 1, 2).astype(np.float64),
        "torch THWC uint8": torch.from_numpy(frames_uint8),
        "torch TCHW float32": torch.from_numpy(floats).permute(0, 3, 1, 2),
        "torch TCHW float16": torch.from_numpy(floats).permute(0, 3, 1, 2).half(),
        "list of PIL": [Image.fromarray(frame) for frame in frames_uint8],
        "list of arrays": list(frames_uint8),
        "tuple of tensors": tuple(torch.from_numpy(frame) for frame in frames_uint8),
        "list of RGBA arrays": [np.dstack([frame, np.full(frame.shape[:2], 7, np.uint8)]) for frame in frames_uint8],
    }
    expected = [as_chw(frame) for frame in frames_uint8]
    for label, data in forms.items():
        source = open_frames(data)
        assert len(source) == COUNT and source.size == (HEIGHT, WIDTH), label
        assert source.names[0] == "00000" and source.names[-1] == f"{COUNT - 1:05d}", label
        tolerance = 1e-3 if "float16" in label else 1e-6
        for got, want in zip(source, expected):
            assert got.dtype == torch.float32 and got.shape == (3, HEIGHT, WIDTH), label
            assert torch.allclose(got, want, atol=tolerance), label


def test_grayscale_arrays_and_pil_modes_in_lists() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    source = open_frames([gray, Image.fromarray(gray, mode="L"), Image.fromarray(gray, mode="L").convert("LA")])
    for frame in source:
        assert torch.equal(frame, as_chw(np.repeat(gray[..., None], 3, axis=2)))


def test_ambiguous_layout_reads_channels_last() -> None:
    data = np.zeros((2, 3, 5, 3), dtype=np.uint8)
    data[..., 0] = 255  # channels-last reading: a red (3, 5) frame
    source = open_frames(data)
    assert source.size == (3, 5)
    assert torch.equal(source[0][0], torch.ones(3, 5)) and source[0][1:].abs().sum() == 0


def test_frames_do_not_alias_the_input() -> None:
    data = torch.rand(2, 3, 4, 5)
    frame = open_frames(data)[0]
    frame.zero_()
    assert data[0].sum() > 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.full((2, 4, 4, 3), 2.0, np.float32), "divide by 255"),
        (np.full((2, 4, 4, 3), np.nan, np.float32), r"\[0, 1\]"),
        (np.zeros((2, 4, 4, 3), np.int64), "dtype int64"),
        (np.zeros((4, 4, 3), np.uint8), "add a time axis"),
        (np.zeros((2, 4, 4, 5), np.uint8), r"got shape \(2, 4, 4, 5\)"),
        (np.zeros((0, 4, 4, 3), np.uint8), "T = 0"),
        ([], "empty list"),
        ([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)], "list item 1 has size"),
        ([np.zeros((3, 4, 5), np.uint8)], r"list item 0 has shape \(3, 4, 5\)"),
        ([np.zeros((4, 4, 3), np.float32) - 1], "list item 0"),
        (["frame.png"], "list item 0 is a str"),
        (42, "got a int"),
    ],
)
def test_bad_arrays_raise_input_error(data: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        open_frames(data)  # type: ignore[arg-type]


def test_indexing_rules(frames_uint8: np.ndarray) -> None:
    source = open_frames(frames_uint8)
    assert torch.equal(source[np.int64(2)], source[-COUNT + 2])
    with pytest.raises(IndexError):
        source[COUNT]
    with pytest.raises(TypeError):
        source[1.0]  # type: ignore[index]


# --------------------------------------------------------------------------------------------------
# Resizing


def test_resizing_keeps_original_size(frames_uint8: np.ndarray) -> None:
    shrunk = open_frames(frames_uint8, max_side=32)
    assert shrunk.size == (24, 32) and shrunk.original_size == (HEIGHT, WIDTH)
    frame = next(iter(shrunk))
    assert frame.shape == (3, 24, 32) and 0 <= frame.min() and frame.max() <= 1
    assert abs(frame.mean() - as_chw(frames_uint8[0]).mean()) < 0.01  # antialiased: mean preserved

    assert open_frames(frames_uint8, max_side=100).size == (HEIGHT, WIDTH)  # never upscales
    grown = open_frames(frames_uint8, short_side=96)
    assert grown.size == (96, 128) and grown[3].shape == (3, 96, 128)
    assert open_frames(np.zeros((1, 10, 30, 3), np.uint8), short_side=4).size == (4, 12)


def test_resizing_a_flat_frame_keeps_its_value() -> None:
    flat = np.full((1, 30, 50, 3), 77, np.uint8)
    frame = open_frames(flat, max_side=17)[0]
    assert torch.allclose(frame, torch.full_like(frame, 77 / 255), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs", [{"max_side": 0}, {"short_side": -3}, {"max_side": 2.5}, {"max_side": 8, "short_side": 8}]
)
def test_bad_resize_arguments(kwargs: dict, frames_uint8: np.ndarray) -> None:
    with pytest.raises(InputError):
        open_frames(frames_uint8, **kwargs)


# --------------------------------------------------------------------------------------------------
# Videos


@needs_av
def test_mp4_is_read_lazily_with_close_values(mp4: Path, frames_uint8: np.ndarray) -> None:
    source = open_frames(mp4)
    assert len(source) == COUNT and source.size == (HEIGHT, WIDTH) and source.fps == 25.0
    assert source.names[:2] == ("00000", "00001")
    frames = iter(source)
    first = next(frames)  # decoding starts without reading the whole video
    assert first.shape == (3, HEIGHT, WIDTH) and first.dtype == torch.float32
    decoded = [first, *frames]
    assert len(decoded) == COUNT
    for frame, original in zip(decoded, frames_uint8):
        assert (frame - as_chw(original)).abs().mean() < 0.02
    assert torch.equal(source[7], decoded[7])


@needs_av
def test_mp4_resized(mp4: Path) -> None:
    source = open_frames(mp4, max_side=32)
    assert source.size == (24, 32) and source.original_size == (HEIGHT, WIDTH)
    assert all(frame.shape == (3, 24, 32) for frame in source)


@needs_av
def test_mkv_frame_count_by_demuxing(tmp_path: Path, frames_uint8: np.ndarray) -> None:
    path = write_video(tmp_path / "clip.mkv", list(frames_uint8[:13]))
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # the container does not record a count
    source = open_frames(path)
    assert len(source) == 13 and sum(1 for _ in source) == 13


@needs_av
def test_odd_size_video(tmp_path: Path) -> None:
    frames = [pattern(i, 49, 65) for i in range(5)]
    path = write_video(tmp_path / "odd.mp4", frames, pix_fmt="yuv444p")
    source = open_frames(path)
    assert source.size == (49, 65) and len(source) == 5
    for frame, original in zip(source, frames):
        assert (frame - as_chw(original)).abs().mean() < 0.02


@needs_av
def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(VideoReadError, match="does not exist"):
        open_frames(tmp_path / "nope.mp4")


@needs_av
def test_random_bytes_video(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoReadError, match="noise.mp4"):
        open_frames(path)


@needs_av
def test_truncated_mp4_index_at_end(tmp_path: Path, mp4: Path) -> None:
    data = mp4.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VideoReadError, match="cut.mp4"):
        open_frames(path)


@needs_av
def test_truncated_mp4_index_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(1)
    noisy = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(20)]
    full = write_video(tmp_path / "full.mp4", noisy, options={"movflags": "faststart"})
    data = full.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) * 2 // 3])
    with caplog.at_level("WARNING", logger="stcorr.frames"):
        source = open_frames(path)  # the index survives and announces 20 frames; 14 packets remain
    assert len(source) == 14
    assert "announces 20 frames but holds 14" in caplog.text
    with pytest.raises(VideoReadError, match=r"cut\.mp4 ended after \d+ frames.*truncated"):
        list(source)  # the last packet is cut short too


@needs_av
def test_missing_pyav_is_explained(monkeypatch: pytest.MonkeyPatch, mp4: Path) -> None:
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match=r'pip install "stcorr\[video\]"'):
        open_frames(mp4)


# --------------------------------------------------------------------------------------------------
# read_mask


def test_read_palette_mask_gives_indices_and_colours(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 1], [2, 7, 0]], dtype=np.uint8)
    image = Image.fromarray(ids, mode="L")
    image.putpalette([0, 0, 0, 10, 20, 30, 40, 50, 60] + [255, 0, 255] * 253)
    image.save(tmp_path / "m.png")
    got, colors = read_mask(tmp_path / "m.png", return_colors=True)
    assert got.dtype == np.int64 and np.array_equal(got, ids)
    assert colors == {0: (0, 0, 0), 1: (10, 20, 30), 2: (40, 50, 60), 7: (255, 0, 255)}


def test_read_grayscale_mask_gives_values(tmp_path: Path) -> None:
    ids = np.array([[0, 3], [200, 3]], dtype=np.uint8)
    Image.fromarray(ids, mode="L").save(tmp_path / "m.png")
    assert np.array_equal(read_mask(tmp_path / "m.png"), ids)


def test_read_rgb_mask_with_davis_colours(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 5], [255, 5, 0]])
    Image.fromarray(davis_palette()[ids]).save(tmp_path / "m.png")
    got, colors = read_mask(tmp_path / "m.png", return_colors=True)
    assert np.array_equal(got, ids)
    assert colors[5] == tuple(davis_palette()[5])


def test_read_rgb_mask_with_other_colours_by_first_appearance(tmp_path: Path) -> None:
    rgba = np.zeros((2, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[0, 1, :3] = (250, 10, 10)  # first non-black colour -> 1
    rgba[0, 2, :3] = (10, 250, 10)  # -> 2
    rgba[1, 0, :3] = (250, 10, 10)
    rgba[1, 3] = (10, 10, 250, 0)  # fully transparent -> background
    rgba[1, 2, :3] = (128, 0, 0)  # a DAVIS colour, but not all colours are: order of appearance
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "m.png")
    got, colors = read_mask(tmp_path / "m.png", return_colors=True)
    assert np.array_equal(got, [[0, 1, 2, 0], [1, 0, 3, 0]])
    assert colors == {0: (0, 0, 0), 1: (250, 10, 10), 2: (10, 250, 10), 3: (128, 0, 0)}


def test_read_mask_rejects_smooth_colour_images(tmp_path: Path) -> None:
    noise = np.random.default_rng(2).integers(1, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "m.png")
    with pytest.raises(InputError, match="antialiased or JPEG"):
        read_mask(tmp_path / "m.png")


def test_read_mask_errors(tmp_path: Path) -> None:
    with pytest.raises(VideoReadError, match="does not exist"):
        read_mask(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(VideoReadError, match="bad.png"):
        read_mask(tmp_path / "bad.png")
