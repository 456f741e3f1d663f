"""Output folders never destroy inputs, never mix runs, and survive Ctrl-C, SIGTERM and kill -9.

Reliability probe 2026-12-07, cases B33, B34, B39, B41 (outputs over inputs), G01 (two runs into one folder),
B92-B96 (interrupts), B74-B76 (sheet width), B89/B90 (decompression bombs), B11/B12 (points files), D45.
The process tests run the real command line in subprocesses (`python -m stcorr`) with the lab-pixels baseline
on tiny clips; SIGSTOP/SIGCONT make the timing deterministic.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stcorr.cli import main
from stcorr.errors import InputError, OutputWriteError
from stcorr.io.claims import check_apart, output_lock
from stcorr.io.masks import write_mask_png

try:
    import av
except ImportError:
    av = None
needs_av = pytest.mark.skipif(av is None, reason="needs PyAV (pip install 'stcorr[video]')")

H, W = 32, 48


def _frame(t: int) -> np.ndarray:
    image = np.full((H, W, 3), 60, np.uint8)
    image[8:20, (2 * t) % 28:(2 * t) % 28 + 12] = (220, 40, 40)
    image[20:30, 30:44] = (40, 200, 60)
    return image


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    folder = tmp_path / "clip"
    folder.mkdir()
    for t in range(6):
        Image.fromarray(_frame(t)).save(folder / f"{t:05d}.png")
    return folder


@pytest.fixture
def mask(tmp_path: Path) -> Path:
    ids = np.zeros((H, W), np.uint8)
    ids[8:20, 0:12] = 1
    ids[20:30, 30:44] = 2
    return write_mask_png(tmp_path / "mask.png", ids)


def _digest(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def _propagate(*argv: str | Path) -> int:
    return main(["propagate", "--model", "lab-pixels", "--device", "cpu", *map(str, argv)])


# ------------------------------------------------------------------------------ outputs over inputs


def test_overlay_pngs_into_the_input_frames_folder_is_refused_and_nothing_deleted(clip, mask, tmp_path, capsys):
    """B33: --overlay-pngs = the frames folder with --overwrite used to delete every input frame."""
    before = _digest(clip)
    assert _propagate("--video", clip, "--mask", mask, "--out", tmp_path / "o", "--overlay-pngs", clip,
                      "--overwrite") == 2
    assert "is the input" in capsys.readouterr().err
    assert _digest(clip) == before


def test_frames_kept_in_out_masks_are_refused_with_overwrite(clip, mask, tmp_path, capsys):
    """B34: input frames in OUT/masks and --overwrite used to delete them before they were read."""
    out = tmp_path / "o"
    shutil.copytree(clip, out / "masks")
    before = _digest(out / "masks")
    assert _propagate("--video", out / "masks", "--mask", mask, "--out", out, "--overwrite") == 2
    assert "the masks folder" in capsys.readouterr().err
    assert _digest(out / "masks") == before


def test_a_mask_file_inside_the_masks_folder_is_refused(clip, mask, tmp_path, capsys):
    out = tmp_path / "o"
    (out / "masks").mkdir(parents=True)
    kept = shutil.copy(mask, out / "masks" / "00000.png")
    before = Path(kept).read_bytes()
    assert _propagate("--video", clip, "--mask", kept, "--out", out, "--overwrite") == 2
    assert "holds the input" in capsys.readouterr().err
    assert Path(kept).read_bytes() == before


def test_overlay_pngs_into_the_masks_folder_is_refused(clip, mask, tmp_path, capsys):
    """B39: --overlay-pngs OUT/masks used to replace every mask with an RGB overlay."""
    out = tmp_path / "o"
    assert _propagate("--video", clip, "--mask", mask, "--out", out, "--overlay-pngs", out / "masks") == 2
    assert "is also the masks folder" in capsys.readouterr().err
    assert not (out / "masks").exists()


@needs_av
def test_overlay_onto_the_input_video_is_refused(mask, tmp_path, capsys):
    """B41: --overlay = the input video used to replace it."""
    from stcorr.io.video import VideoWriter

    video = tmp_path / "in.mp4"
    with VideoWriter(video, fps=10) as writer:
        for t in range(4):
            writer.write(_frame(t))
    before = video.read_bytes()
    assert _propagate("--video", video, "--mask", mask, "--out", tmp_path / "o", "--overlay", video) == 2
    assert "the overlay video (--overlay)" in capsys.readouterr().err
    assert video.read_bytes() == before
    linked = tmp_path / "link.mp4"  # the same file under another name (symlink) is the input too
    linked.symlink_to(video)
    assert _propagate("--video", video, "--mask", mask, "--out", tmp_path / "o", "--overlay", linked) == 2
    assert video.read_bytes() == before


def test_check_apart_rules(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "00000.png").write_bytes(b"x")
    check_apart([frames], folders={"masks": tmp_path / "out" / "masks"}, files={"video": tmp_path / "o.mp4"})
    check_apart([frames], folders={"masks": frames / "out" / "masks"})  # a subfolder is never read as frames
    with pytest.raises(OutputWriteError, match="holds the input"):
        check_apart([frames], folders={"pngs": tmp_path})
    with pytest.raises(OutputWriteError, match="into the frames folder"):
        check_apart([frames], files={"sheet": frames / "sheet.png"})
    with pytest.raises(OutputWriteError, match="is the input"):
        check_apart([frames / "00000.png"], files={"sheet": frames / "00000.png"})
    hard = tmp_path / "hard.png"
    os.link(frames / "00000.png", hard)
    with pytest.raises(OutputWriteError, match="is the input"):  # a hard link is the same file
        check_apart([frames / "00000.png"], files={"out": hard})


def test_sheet_onto_a_frame_of_its_input_is_refused(clip, capsys):
    before = _digest(clip)
    assert main(["sheet", str(clip), "--frames", "0", "1", "--out", str(clip / "00000.png")]) == 2
    assert "into the frames folder" in capsys.readouterr().err
    assert _digest(clip) == before


@pytest.mark.parametrize("width", ["0", "-5", "300000"])
def test_sheet_width_out_of_range_is_typed(clip, tmp_path, width, capsys):
    """B74-B76: --width 0 / -5 / 300000 raised raw RuntimeErrors (the last after trying to allocate 360 GB)."""
    assert main(["sheet", str(clip), "--frames", "0", "1", "--out", str(tmp_path / "s.png"), "--width", width]) == 2
    assert "width" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()


def test_sheet_of_huge_height_is_refused(clip, tmp_path):
    from stcorr.pipelines import contact_sheet

    with pytest.raises(InputError, match="million pixels"):
        contact_sheet(clip, [0], tmp_path / "s.png", width=30000)  # 30000 x 20000 px for one 48x32 frame


def test_mask_next_to_session_is_refused(clip, mask, tmp_path, capsys):
    """D45: --mask was silently ignored when --session was given."""
    session = tmp_path / "session.json"
    session.write_text("{}")
    assert _propagate("--video", clip, "--session", session, "--mask", mask, "--out", tmp_path / "o") == 2
    assert "--mask would be ignored" in capsys.readouterr().err


# ------------------------------------------------------------------------------ untrusted files


def _bomb(path: Path) -> Path:
    Image.new("1", (20000, 20000)).save(path)  # 400 Mpx, a few kB on disk
    return path


def test_decompression_bomb_frame_is_typed(clip, mask, tmp_path, capsys):
    """B89: a 20000x20000 PNG frame raised Pillow's raw DecompressionBombError."""
    _bomb(clip / "00006.png")
    assert _propagate("--video", clip, "--mask", mask, "--out", tmp_path / "o") == 2
    assert "Downscale" in capsys.readouterr().err


def test_decompression_bomb_mask_is_typed(clip, tmp_path, capsys):
    """B90: a 20000x20000 mask PNG raised Pillow's raw DecompressionBombError."""
    assert _propagate("--video", clip, "--mask", _bomb(tmp_path / "bomb.png"), "--out", tmp_path / "o") == 2
    assert "Downscale" in capsys.readouterr().err


def test_deeply_nested_points_file_is_typed(clip, tmp_path, capsys):
    """B11: 100k nested brackets raised a raw RecursionError."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    assert main(["points", "--video", str(clip), "--points", str(deep), "--out", str(tmp_path / "o"),
                 "--model", "lab-pixels"]) == 2
    assert "nested" in capsys.readouterr().err


def test_bool_point_is_refused(clip, tmp_path, capsys):
    """B12: [[true, false]] was read as the point (1, 0)."""
    points = tmp_path / "p.json"
    points.write_text(json.dumps([[True, False]]))
    assert main(["points", "--video", str(clip), "--points", str(points), "--out", str(tmp_path / "o"),
                 "--model", "lab-pixels"]) == 2
    assert "numbers" in capsys.readouterr().err


# ------------------------------------------------------------------------------ processes


def _cli(*argv: str | Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stcorr", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for(condition, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended early (rc {process.returncode}): {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.02)


@pytest.fixture
def long_video(tmp_path: Path) -> Path:
    if av is None:
        pytest.skip("needs PyAV")
    from stcorr.io.video import VideoWriter

    path = tmp_path / "long.mp4"
    with VideoWriter(path, fps=25) as writer:
        for t in range(400):
            writer.write(_frame(t))
    return path


def _pngs(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.png")) if folder.is_dir() else []


def _temps(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if ".tmp" in path.name)


def test_two_runs_into_one_folder_the_second_fails_fast(long_video, mask, tmp_path):
    """G01: two runs into one --out both exited 0 with their masks mixed. Now the second fails at once and
    the first finishes with all of its own masks."""
    out = tmp_path / "o"
    first = _cli("propagate", "--video", long_video, "--mask", mask, "--out", out, "--model", "lab-pixels",
                 "--device", "cpu", "--max-frames", "60")
    try:
        _wait_for(lambda: len(_pngs(out / "masks")) >= 2, first)
        first.send_signal(signal.SIGSTOP)  # holding its lock, mid-run
        second = _cli("propagate", "--video", long_video, "--mask", mask, "--out", out, "--model", "lab-pixels",
                      "--device", "cpu")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2 and f"pid {first.pid}" in err and "another stcorr run" in err, err
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert len(_pngs(out / "masks")) == 60 and _temps(out) == []


def test_lock_is_released_when_the_holder_ends(tmp_path):
    code = "import sys\nfrom stcorr.io.claims import output_lock\nwith output_lock(sys.argv[1]):\n    pass\n"
    with output_lock(tmp_path / "o"):
        result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o")], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode != 0 and "another stcorr run" in result.stderr
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_ends_typed_with_complete_pairs_and_no_temp_files(long_video, mask, tmp_path, signum, code):
    """B92-B95: Ctrl-C printed a traceback and left one mask without its confidence map; SIGTERM left the
    overlay's hidden temporary mp4."""
    out = tmp_path / "o"
    run = _cli("propagate", "--video", long_video, "--mask", mask, "--out", out, "--model", "lab-pixels",
               "--device", "cpu", "--confidence", "--overlay", out / "overlay.mp4")
    _wait_for(lambda: len(_pngs(out / "masks")) >= 3, run)
    run.send_signal(signum)
    _, err = run.communicate(timeout=120)
    assert run.returncode == code, err
    assert "error: interrupted" in err and "Traceback" not in err
    masks, confidence = _pngs(out / "masks"), _pngs(out / "confidence")
    assert masks == confidence and 3 <= len(masks) < 400
    assert not (out / "overlay.mp4").exists() and _temps(out) == []


def test_temp_files_of_a_killed_run_are_removed_by_the_next_run(long_video, mask, tmp_path):
    """B96: kill -9 left a hidden .overlay.mp4.*.tmp.mp4 that no later run removed."""
    out = tmp_path / "o"
    run = _cli("propagate", "--video", long_video, "--mask", mask, "--out", out, "--model", "lab-pixels",
               "--device", "cpu", "--overlay", out / "overlay.mp4", "--max-frames", "60")
    _wait_for(lambda: len(_pngs(out / "masks")) >= 3, run)
    run.kill()
    run.communicate(timeout=60)
    assert any(name.startswith(".overlay.mp4.") for name in _temps(out))  # what kill -9 leaves
    (out / ".overlay.mp4.0123456789ab.tmp.mp4").write_bytes(b"left by stcorr 0.1.0")
    again = _cli("propagate", "--video", long_video, "--mask", mask, "--out", out, "--model", "lab-pixels",
                 "--device", "cpu", "--overlay", out / "overlay.mp4", "--max-frames", "10", "--overwrite")
    _, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    assert _temps(out) == [] and (out / "overlay.mp4").is_file() and len(_pngs(out / "masks")) == 10
