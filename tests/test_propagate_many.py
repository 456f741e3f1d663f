"""``stcorr propagate-many``: per-video outputs equal ``stcorr propagate``'s, one process or two under torchrun;
a killed run resumes; a broken row fails alone; the manifest is checked up front. Tiny generated clips, the
embedded model on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stcorr.batch import DONE_MARKER
from stcorr.batch_manifest import read_manifest
from stcorr.cli import main
from stcorr.errors import InputNotFoundError, ManifestError
from stcorr.frames import read_mask
from stcorr.io.claims import LOCK_NAME, output_lock
from stcorr.outputs import VideoWriter, write_mask_png

av = pytest.importorskip("av")

SIZE = (64, 96)  # H, W
OPTIONS = ["--radius", "4", "--context", "4"]


def _frames(seed: int, count: int, size: tuple[int, int] = SIZE) -> list[np.ndarray]:
    """A smooth random background with a bright square moving right by 2 px per frame."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (size[0] // 8 + 1, size[1] // 8 + 1, 3), dtype=np.uint8)
    background = np.asarray(Image.fromarray(coarse).resize((size[1], size[0]), Image.BILINEAR))
    frames = []
    for t in range(count):
        image = background.copy()
        image[16:40, 10 + 2 * t : 34 + 2 * t] = (250, 240, 30)
        frames.append(image)
    return frames


def _first_mask(size: tuple[int, int] = SIZE) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    mask[16:40, 10:34] = 1
    mask[48:60, 60:90] = 2
    return mask


def _video(path: Path, seed: int, count: int) -> Path:
    with VideoWriter(path, fps=10, crf=10) as writer:
        for image in _frames(seed, count):
            writer.write(image)
    return path


def _folder(path: Path, seed: int, count: int) -> Path:
    path.mkdir()
    for t, image in enumerate(_frames(seed, count)):
        Image.fromarray(image).save(path / f"img{t:03d}.png")
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Three clips (two mp4, one frame folder) and a CSV manifest beside them (relative paths)."""
    root = tmp_path_factory.mktemp("clips")
    _video(root / "a.mp4", 0, 8)
    _folder(root / "b_frames", 1, 6)
    _video(root / "c.mp4", 2, 7)
    write_mask_png(root / "mask.png", _first_mask())
    (root / "videos.csv").write_text("name,video,mask\na,a.mp4,mask.png\nb,b_frames,mask.png\nc,c.mp4,mask.png\n")
    return root


def _pngs(folder: Path) -> dict[str, np.ndarray]:
    """The masks and confidence maps under ``folder`` (not the RGB overlay stills)."""
    return {str(p.relative_to(folder)): read_mask(p) for p in sorted(folder.rglob("*.png"))
            if not p.name.startswith(".") and p.parent.name != "overlay"}


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _many(clips: Path, out: Path, *extra: str) -> int:
    return main(["propagate-many", "--manifest", str(clips / "videos.csv"), "--out", str(out), *OPTIONS, *extra])


@pytest.fixture(scope="module")
def one_process(clips: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("many") / "out"
    assert _many(clips, out, "--confidence") == 0
    return out


def test_one_process_writes_what_propagate_writes(clips: Path, one_process: Path, tmp_path: Path) -> None:
    summary = _summary(one_process)
    assert [(v["name"], v["status"], v["frames"]) for v in summary["videos"]] == [
        ("a", "done", 8), ("b", "done", 6), ("c", "done", 7)]
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 0} and summary["world_size"] == 1
    assert all(v["error"] is None and v["seconds"] > 0 for v in summary["videos"])
    for name, video in (("a", "a.mp4"), ("b", "b_frames"), ("c", "c.mp4")):
        single = tmp_path / name
        assert main(["propagate", "--video", str(clips / video), "--mask", str(clips / "mask.png"),
                     "--out", str(single), "--confidence", *OPTIONS]) == 0
        expected, got = _pngs(single), _pngs(one_process / name)
        assert sorted(got) == sorted(expected) and len(got) == 2 * summary["videos"][ord(name) - 97]["frames"]
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{name}/{key}")
        assert (one_process / name / DONE_MARKER).is_file()
    assert sorted(p.name for p in (one_process / "b" / "masks").iterdir()) == [f"img{t:03d}.png" for t in range(6)]


@pytest.mark.slow  # two fresh processes (imports, model load): 10-30 s on 2 cores
def test_torchrun_two_processes_give_the_same_outputs(clips: Path, one_process: Path, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not found")
    out = tmp_path / "out"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "stcorr", "propagate-many",
               "--manifest", str(clips / "videos.csv"), "--out", str(out), "--confidence", *OPTIONS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.count("videos done") == 1  # rank 0 reports
    summary = _summary(out)
    assert summary["world_size"] == 2 and summary["counts"]["done"] == 3
    assert [v["rank"] for v in summary["videos"]] == [0, 1, 0]
    expected, got = _pngs(one_process), _pngs(out)
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


@pytest.mark.slow  # two fresh processes (imports, model load): 10-30 s on 2 cores
def test_a_killed_run_resumes_and_redoes_only_unfinished_videos(clips: Path, one_process: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "stcorr", "propagate-many", "--manifest", str(clips / "videos.csv"),
               "--out", str(out), "--confidence", *OPTIONS]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while not (out / "a" / DONE_MARKER).exists():
            assert process.poll() is None and time.monotonic() < deadline, "the first video never finished"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert not (out / "summary.json").exists()
    unfinished = [name for name in "bc" if not (out / name / DONE_MARKER).exists()]
    assert unfinished, "the run finished before it was killed"
    first = {p: p.stat().st_mtime_ns for p in (out / "a").rglob("*")}
    leftover = out / unfinished[-1] / ".overlay.mp4.0123456789ab.tmp.mp4"  # as a kill during a write leaves
    leftover.parent.mkdir(exist_ok=True)
    leftover.write_bytes(b"partial")

    assert _many(clips, out, "--confidence") == 0
    summary = _summary(out)
    status = {v["name"]: v["status"] for v in summary["videos"]}
    assert status == {"a": "skipped", **{name: "done" if name in unfinished else "skipped" for name in "bc"}}
    assert summary["videos"][0]["frames"] == 8  # from the marker of the killed run
    assert {p: p.stat().st_mtime_ns for p in (out / "a").rglob("*")} == first  # not redone
    assert not leftover.exists() and not [p for p in out.rglob(".*") if p.name not in (DONE_MARKER, LOCK_NAME)]
    expected, got = _pngs(one_process), _pngs(out)
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)

    assert _many(clips, out, "--confidence") == 0  # complete: nothing to do
    assert _summary(out)["counts"] == {"done": 0, "skipped": 3, "failed": 0}
    assert _many(clips, out, "--confidence", "--radius", "3") == 0  # another job: every video redone
    assert _summary(out)["counts"] == {"done": 3, "skipped": 0, "failed": 0}
    assert _many(clips, out, "--confidence", "--radius", "3", "--overwrite") == 0
    assert _summary(out)["counts"] == {"done": 3, "skipped": 0, "failed": 0}


def test_a_broken_row_is_reported_and_the_others_complete(clips: Path, one_process: Path, tmp_path: Path,
                                                          capsys) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all" * 100)
    write_mask_png(tmp_path / "small.png", np.ones((10, 10), np.uint8))
    rows = [{"name": "a", "video": str(clips / "a.mp4"), "mask": str(clips / "mask.png")},
            {"name": "broken", "video": "broken.mp4", "mask": str(clips / "mask.png")},
            {"name": "wrong-mask", "video": str(clips / "c.mp4"), "mask": "small.png"},
            {"name": "c", "video": str(clips / "c.mp4"), "mask": str(clips / "mask.png")}]
    manifest = tmp_path / "videos.jsonl"
    manifest.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    out = tmp_path / "out"
    code = main(["propagate-many", "--manifest", str(manifest), "--out", str(out), "--confidence", *OPTIONS])
    assert code == 1
    videos = {v["name"]: v for v in _summary(out)["videos"]}
    assert [videos[n]["status"] for n in ("a", "broken", "wrong-mask", "c")] == ["done", "failed", "failed", "done"]
    broken = videos["broken"]["error"]
    assert broken["type"] == "VideoReadError" and "broken.mp4" in broken["message"]
    assert videos["wrong-mask"]["error"]["type"] == "InputError" and "10x10" in videos["wrong-mask"]["error"]["message"]
    assert videos["broken"]["frames"] is None and videos["broken"]["line"] == 2
    assert "failed: broken (manifest line 2): VideoReadError" in capsys.readouterr().err
    for name in ("a", "c"):
        for key, ids in _pngs(one_process / name).items():
            np.testing.assert_array_equal(read_mask(out / name / key), ids)
    assert not (out / "broken" / DONE_MARKER).exists()


def test_batched_videos_match_one_at_a_time(clips: Path, one_process: Path, tmp_path: Path) -> None:
    """``--batch-videos 2`` (meant for GPUs) runs a and b (one working size) through the batched kernel, then c."""
    from stcorr.frames import open_frames

    out = tmp_path / "out"
    assert _many(clips, out, "--confidence", "--batch-videos", "2", "--overlay", "--overlay-pngs") == 0
    assert _summary(out)["counts"]["done"] == 3
    for name, frames in (("a", 8), ("b", 6), ("c", 7)):  # a and b batched, c alone: the same outputs
        assert len(open_frames(out / name / "overlay.mp4")) == frames
        stills = sorted(p.name for p in (out / name / "overlay").glob("*.png"))
        assert stills == sorted(p.name for p in (out / name / "masks").glob("*.png")) and len(stills) == frames
    expected, got = _pngs(one_process / "a"), _pngs(out / "a")
    assert sorted(got) == sorted(expected)
    for key in expected:
        if key.startswith("masks"):  # equal up to the encoder's float differences between batch sizes
            assert (got[key] != expected[key]).mean() < 0.01, key


@pytest.mark.parametrize(("text", "line", "field", "match"), [
    ("name,video,mask\n../up,a.mp4,m.png\n", 2, "name", "starting with '.'"),
    ("name,video,mask\nx/y,a.mp4,m.png\n", 2, "name", "a path"),
    ("name,video,mask\nsummary.json,a.mp4,m.png\n", 2, "name", "summary.json"),
    ("video,mask\n.hidden.mp4,m.png\n", 2, "video", "give a 'name' field"),
    ("name,video,mask\nx,a.mp4,m.png\nX,b.mp4,m.png\n", 3, "name", "already used on line 2"),
    ("video,mask\na.mp4,m.png\nother/a.mp4,m.png\n", 3, "name", "already used on line 2"),
    ("video,frame\na.mp4,0\n", 2, "mask", "exactly one of mask, session, points"),
    ("video,mask,points\na.mp4,m.png,p.json\n", 2, "points", "exactly one of"),
    ("video,mask,frame\na.mp4,m.png,-1\n", 2, "frame", "integer >= 0"),
    ("video,mask,max_side\na.mp4,m.png,big\n", 2, "max_side", "integer >= 0"),
    ("video,mask,resize_mask\na.mp4,m.png,maybe\n", 2, "resize_mask", "true or false"),
    ("video,mask,temperature\na.mp4,m.png,0\n", 2, "temperature", "positive number"),
    ("video,mask,colour\na.mp4,m.png,red\n", 2, "colour", "unknown field"),
    ("video,session,frame\na.mp4,s.json,3\n", 2, "frame", "leave 'frame' out"),
    ("name,video,mask\nx,a.mp4,m.png,extra\n", 2, None, "more cells"),
    ("mask\nm.png\n", 1, None, "CSV header"),
    ('{"video": "a.mp4", "mask": "m.png"}\n\n{"video": "b.mp4", "mask": 3}\n', 3, "mask", "non-empty string"),
    ('{"video": "a.mp4", "mask": "m.png", "frame": "2"}\n', 1, "frame", "integer >= 0"),
    ('{"video": "a.mp4", "mask": "m.png"}\n[1, 2]\n', 2, None, "JSON object"),
    ('{"video": "a.mp4", "mask": "m.png"\n', 1, None, "invalid JSON"),
    ('{"video": "a.mp4", "mask": "m.png", "x": ' + "[" * 100000 + "]" * 100000 + "}\n", 1, None, "nested"),
    ("video,mask\na.mp4,m.png\nb.mp4,\"" + "x" * 200000 + "\"\n", 3, None, "unreadable CSV"),
])
def test_manifest_is_checked_up_front(tmp_path: Path, text: str, line: int, field: str | None, match: str) -> None:
    manifest = tmp_path / ("m.jsonl" if text.startswith("{") else "m.csv")
    manifest.write_text(text)
    with pytest.raises(ManifestError, match=match) as caught:
        read_manifest(manifest)
    assert caught.value.line == line and caught.value.field == field
    assert f"line {line}" in str(caught.value)


def test_manifest_fields_and_command_line_errors(tmp_path: Path, capsys) -> None:
    (tmp_path / "clip_frames").mkdir()
    (tmp_path / "m.csv").write_text("video,mask,frame,max_side,max_frames,resize_mask,radius,model\n"
                                    "clip.mp4,m.png,3,0,9,yes,5,lab-pixels\nclip_frames,m.png,,,,,,\n")
    first, second = read_manifest(tmp_path / "m.csv")
    assert (first.name, first.line, first.max_side, first.options) == ("clip", 2, 0, {"radius": 5})
    assert first.request.video == tmp_path / "clip.mp4" and first.request.mask == tmp_path / "m.png"
    assert (first.request.frame, first.request.max_frames, first.request.resize_mask) == (3, 9, True)
    assert first.request.model == "lab-pixels"
    assert (second.name, second.max_side, second.request.frame) == ("clip_frames", None, 0)
    with pytest.raises(InputNotFoundError):
        read_manifest(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("name,video,mask\n..,a.mp4,m.png\n")
    assert main(["propagate-many", "--manifest", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "line 2, field 'name'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_points_and_session_rows_write_what_points_and_replay_write(clips: Path, tmp_path: Path) -> None:
    from stcorr.frames import open_frames
    from stcorr.loading import load_encoder
    from stcorr.propagation.session import PropagationSession
    from stcorr.session_files import session_to_json, write_session_file

    (tmp_path / "pts.json").write_text(json.dumps({"points": [[20.0, 28.0], [70.0, 50.0]], "point_names": ["s", "b"]}))
    session = PropagationSession(load_encoder(None, device="cpu"), open_frames(clips / "c.mp4"), max_side=48,
                                 context=3, radius=4)
    session.add_mask(0, _first_mask())
    write_session_file(tmp_path / "session.json", session_to_json(session, model=None, video="c.mp4"))
    rows = [{"name": "pts", "video": str(clips / "a.mp4"), "points": "pts.json", "frame": 2},
            {"name": "replay", "video": str(clips / "c.mp4"), "session": "session.json"}]
    (tmp_path / "v.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    out = tmp_path / "out"
    assert main(["propagate-many", "--manifest", str(tmp_path / "v.jsonl"), "--out", str(out), *OPTIONS]) == 0
    assert [v["status"] for v in _summary(out)["videos"]] == ["done", "done"]
    assert main(["points", "--video", str(clips / "a.mp4"), "--points", str(tmp_path / "pts.json"), "--frame", "2",
                 "--out", str(tmp_path / "single_pts"), *OPTIONS]) == 0
    for name in ("points.json", "points.csv"):
        assert (out / "pts" / name).read_text() == (tmp_path / "single_pts" / name).read_text()
    assert main(["propagate", "--video", str(clips / "c.mp4"), "--session", str(tmp_path / "session.json"),
                 "--out", str(tmp_path / "single_replay")]) == 0
    expected, got = _pngs(tmp_path / "single_replay"), _pngs(out / "replay")
    assert sorted(got) == sorted(expected) and len(got) == 7
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_help_shows_the_manifest_and_an_example(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["propagate-many", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--manifest" in text and "(default: 20)" in text and "640 on CPU" in text
    assert "torchrun --standalone --nproc_per_node 4 -m stcorr propagate-many" in text


def test_a_model_that_cannot_load_fails_the_job_not_each_video(clips: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert _many(clips, out, "--model", "no-such-model") == 2
    assert "no-such-model" in capsys.readouterr().err and not (out / "summary.json").exists()


# ------------------------------------------------------------ issue 22's safeguards, per video (merge of main)


def test_a_video_folder_over_its_inputs_is_refused_and_the_others_complete(clips: Path, one_process: Path,
                                                                           tmp_path: Path) -> None:
    """DIR/<name> that is, or holds, one of the row's inputs is that video's failure; nothing of it is
    touched (no marker, no masks), and the other videos are done as usual."""
    out = tmp_path / "out"
    (out / "inside").mkdir(parents=True)
    inner = out / "inside" / "a.mp4"  # the video kept inside its own output folder
    inner.write_bytes((clips / "a.mp4").read_bytes())
    frames = out / "frames"  # a frame folder that is the output folder of its row
    frames.mkdir()
    for path in (clips / "b_frames").iterdir():
        (frames / path.name).write_bytes(path.read_bytes())
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    rows = [{"name": "a", "video": str(clips / "a.mp4"), "mask": str(clips / "mask.png")},
            {"name": "inside", "video": str(inner), "mask": str(clips / "mask.png")},
            {"name": "frames", "video": str(frames), "mask": str(clips / "mask.png")}]
    manifest = tmp_path / "videos.jsonl"
    manifest.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    for extra in ([], ["--batch-videos", "3"]):  # the batched path reruns a failed batch one by one
        assert main(["propagate-many", "--manifest", str(manifest), "--out", str(out), "--confidence",
                     *OPTIONS, *extra]) == 1
        videos = {v["name"]: v for v in _summary(out)["videos"]}
        assert videos["a"]["status"] in ("done", "skipped")
        for name, problem in (("inside", "holds the input"), ("frames", "is the input")):
            assert videos[name]["status"] == "failed", videos[name]
            assert videos[name]["error"]["type"] == "OutputWriteError"
            assert "the video's output folder" in videos[name]["error"]["message"]
            assert problem in videos[name]["error"]["message"]
            assert sorted((out / name).iterdir()) == sorted(p for p in before if p.parent == out / name)
        assert {p: p.read_bytes() for p in before} == before
    for key, ids in _pngs(one_process / "a").items():
        np.testing.assert_array_equal(read_mask(out / "a" / key), ids)


def test_a_video_folder_another_run_holds_is_that_videos_failure(clips: Path, tmp_path: Path) -> None:
    """Each DIR/<name> is locked while its video runs (the folder lock of `stcorr propagate`): a folder held
    by another run fails that video at once; the others are done."""
    out = tmp_path / "out"
    code = "import sys, time\nfrom stcorr.io.claims import output_lock\nwith output_lock(sys.argv[1]):\n" \
           "    print('locked', flush=True)\n    time.sleep(300)\n"
    holder = subprocess.Popen([sys.executable, "-c", code, str(out / "b")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _many(clips, out) == 1
    finally:
        holder.kill()
        holder.wait()
    videos = {v["name"]: v for v in _summary(out)["videos"]}
    assert [videos[n]["status"] for n in "abc"] == ["done", "failed", "done"]
    assert "another stcorr run" in videos["b"]["error"]["message"] and not (out / "b" / DONE_MARKER).exists()
    with output_lock(out / "a"):  # the job let go of its folders
        pass


@pytest.fixture(scope="module")
def long_clips(tmp_path_factory) -> Path:
    """A short clip, then a long one (the one a signal interrupts), then a short one."""
    root = tmp_path_factory.mktemp("long_clips")
    _video(root / "a.mp4", 0, 4)
    _video(root / "long.mp4", 3, 120)
    _video(root / "c.mp4", 2, 4)
    write_mask_png(root / "mask.png", _first_mask())
    (root / "videos.csv").write_text("name,video,mask\na,a.mp4,mask.png\nlong,long.mp4,mask.png\n"
                                     "c,c.mp4,mask.png\n")
    return root


@pytest.mark.slow  # one fresh process per signal (imports, model load): 10-30 s on 2 cores
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_ends_typed_and_leaves_no_done_marker_for_the_unfinished_video(
        long_clips: Path, tmp_path: Path, signum: int, code: int) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "stcorr", "propagate-many", "--manifest", str(long_clips / "videos.csv"),
               "--out", str(out), "--confidence", "--overlay", *OPTIONS]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    masks = out / "long" / "masks"
    try:
        deadline = time.monotonic() + 240
        while not (masks.is_dir() and len(list(masks.glob("*.png"))) >= 3):
            assert process.poll() is None and time.monotonic() < deadline, "the long video never started"
            time.sleep(0.02)
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == code, err
    assert "error: interrupted" in err and "Traceback" not in err
    assert (out / "a" / DONE_MARKER).is_file()
    assert not (out / "long" / DONE_MARKER).exists() and not (out / "c").exists()
    assert not (out / "summary.json").exists()
    written = sorted(p.name for p in masks.glob("*.png"))
    assert written == sorted(p.name for p in (out / "long" / "confidence").glob("*.png"))  # complete pairs
    assert 3 <= len(written) < 120
    assert not (out / "long" / "overlay.mp4").exists()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # temporary files removed

    # the same command again skips a, redoes the unfinished video and does c
    assert main(["propagate-many", "--manifest", str(long_clips / "videos.csv"), "--out", str(out),
                 "--confidence", "--overlay", *OPTIONS]) == 0
    status = {v["name"]: v["status"] for v in _summary(out)["videos"]}
    assert status == {"a": "skipped", "long": "done", "c": "done"}
    assert len(list(masks.glob("*.png"))) == 120 and (out / "long" / "overlay.mp4").is_file()
