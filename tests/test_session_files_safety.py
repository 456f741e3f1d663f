"""Untrusted session dictionaries and files (reliability probe, group D): every malformed one gets an
InputError naming the field before anything is allocated from its numbers; a sound one still replays."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stcorr import PropagationOptions, PropagationSession
from stcorr.baselines import LabPixelEncoder
from stcorr.cli import main as cli_main
from stcorr.errors import InputError
from stcorr.propagation.session_format import check_session_dict
from stcorr.session_files import read_session_file

OPTIONS = PropagationOptions(context=2, radius=3, topk=4, compute_dtype=torch.float32)
T, H, W = 6, 32, 48


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return LabPixelEncoder(stride=4).eval()


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    rng = np.random.default_rng(0)
    frames = (rng.random((T, H, W, 3)) * 80 + 40).astype(np.uint8)
    for t in range(T):
        frames[t, 8:20, 6 + 2 * t:18 + 2 * t] = (220, 30, 30)
    return frames


@pytest.fixture(scope="module")
def mask() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[8:20, 6:18] = 1
    mask[22:30, 30:44] = 2
    return mask


@pytest.fixture()
def saved(model, clip, mask) -> dict:
    session = PropagationSession(model, clip, options=OPTIONS)
    session.add_mask(0, mask)
    session.add_mask(3, mask)
    return json.loads(json.dumps(session.to_dict()))


def _set(path: tuple, value):
    def change(d: dict) -> None:
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _drop(*path):
    def change(d: dict) -> None:
        target = d
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return change


def _counts_plus_one(d: dict) -> None:
    d["anchors"][0]["counts"] = [c + 1 for c in d["anchors"][0]["counts"]]


def _strings_as_values(d: dict) -> None:
    d["anchors"][0]["values"] = ["a"] * len(d["anchors"][0]["values"])


# (probe case, change, the words the message must hold)
MALFORMED = [
    ("D04", _drop("options"), "no 'options'"),
    ("D05", _set(("options",), [1, 2]), r"\['options'\].*object"),
    ("D09", _drop("frame_size"), "no 'frame_size'"),
    ("D12", _set(("anchors",), 5), r"\['anchors'\].*list"),
    ("D13", _set(("anchors",), {"0": {}}), r"\['anchors'\].*list"),
    ("D14", _drop("anchors", 0, "kind"), r"\['anchors'\]\[0\].*\"kind\""),
    ("D15", _drop("anchors", 0, "frame"), r"\['anchors'\]\[0\].*\"frame\""),
    ("D16", _set(("anchors", 0, "counts", 0), -5), r"\['counts'\]\[0\].*>= 0"),
    ("D17", _counts_plus_one, r"sum to \d+ pixels, a 32x48 mask has 1536"),
    ("D23", _strings_as_values, r"\['values'\]\[0\].*integer"),
    ("D24", _set(("anchors", 0, "values"), [0]), "'values' has 1 entries but 'counts'"),
    ("D25", _set(("anchors", 1, "frame"), "abc"), r"\['frame'\].*integer"),
    ("D26", _set(("anchors", 1, "frame"), 1.7), r"\['frame'\].*integer.*1\.7"),
    ("D27", _set(("anchors", 1, "frame"), "2"), r"\['frame'\].*integer.*'2'"),
    ("D29", _set(("anchors", 1, "frame"), True), r"\['frame'\].*integer.*True"),
    ("D30", _set(("anchors", 0, "kind"), "banana"), r"\['kind'\].*one of"),
    ("D31", _set(("anchors",), [{"frame": 0, "kind": "points", "array": [["a", "b"]]}]), "numbers only"),
    ("D54", _set(("max_frames",), "abc"), r"\['max_frames'\].*integer"),
    ("frame out of range", _set(("anchors", 1, "frame"), T), r"\['frame'\].*in \[0, 5\]"),
    ("value over 255", _set(("anchors", 0, "values", 0), 300), r"\['values'\]\[0\].*\[0, 255\]"),
    ("shape differs", _set(("anchors", 0, "shape"), [16, 48]), "the mask is \\[16, 48\\] but frame_size"),
    ("format", _set(("format",), 99), r"\['format'\].*update stcorr"),
    ("format bool", _set(("format",), True), r"\['format'\]"),
    ("num_frames", _set(("num_frames",), "6"), r"\['num_frames'\]"),
    ("frame_size", _set(("frame_size",), [32]), r"\['frame_size'\]"),
    ("option value", _set(("options", "context"), "abc"), r"\['options'\].*context"),
    ("unknown option", _set(("options", "bogus"), 1), r"\['options'\].*unknown"),
    ("size", _set(("size",), [0, 5]), r"\['size'\]"),
    ("max_side", _set(("max_side",), -1), r"\['max_side'\]"),
    ("resample", _set(("resample",), "cubic"), r"\['resample'\]"),
    ("two anchors on a frame", _set(("anchors", 1, "frame"), 0), "frame 0 has two anchors"),
    ("mixed kinds", _set(("anchors", 1), {"frame": 3, "kind": "points", "array": [[1.0, 2.0]]}), "one kind"),
    ("objects", _set(("anchors", 0, "objects"), [1, "x"]), r"\['objects'\]\[1\]"),
    ("soft shape", _set(("anchors",), [{"frame": 0, "kind": "soft", "array": [[[0.5]]]}]), r"\(K, 32, 48\)"),
    ("points shape", _set(("anchors",), [{"frame": 0, "kind": "points", "array": [[1.0, 2.0, 3.0]]}]),
     r"keypoints"),
    ("ragged points", _set(("anchors",), [{"frame": 0, "kind": "points", "array": [[1.0, 2.0], [3.0]]}]),
     "rectangular"),
    ("model name", _set(("model_name",), 5), r"\['model_name'\]"),
]


@pytest.mark.parametrize("case, change, message", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_a_malformed_session_dict_is_a_typed_error_naming_the_field(model, clip, saved, case, change, message):
    change(saved)
    with pytest.raises(InputError, match=message):
        PropagationSession.from_dict(saved, model, clip)


@pytest.mark.parametrize("counts", [10**12, 3 * 10**9, 4 * 10**8], ids=["D18", "D19", "D61"])
def test_huge_run_lengths_are_refused_before_any_allocation(model, clip, saved, counts):
    saved["anchors"][0].update(values=[1], counts=[counts])
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=f"sum to {counts} pixels"):
            PropagationSession.from_dict(saved, model, clip)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20  # the 4 GB (or 7 TiB) expansion never happens


def test_an_upscaled_working_size_is_refused_before_allocating(model, clip, saved):  # D37
    saved["size"] = [20000, 30000]
    with pytest.raises(InputError, match=r"20000x30000.*at most 4x each side.*resize the frames yourself"):
        PropagationSession.from_dict(saved, model, clip)


def test_a_sound_session_still_replays_identically(model, clip, mask, saved):
    session = PropagationSession.from_dict(saved, model, clip)
    assert sorted(session.anchors) == [0, 3]
    assert session.anchors[0].dtype == np.uint8 and np.array_equal(session.anchors[0], mask)
    reference = PropagationSession(model, clip, options=OPTIONS)
    reference.add_mask(0, mask)
    reference.add_mask(3, mask)
    for a, b in zip(session.propagate(), reference.propagate()):
        assert a.t == b.t and np.array_equal(a.labels, b.labels)


def test_the_validator_accepts_per_anchor_objects_and_the_formats_it_is_given(saved):
    saved["anchors"][0]["objects"] = [1, 2]
    check_session_dict(saved)
    saved["format"] = 3
    with pytest.raises(InputError, match="format"):
        check_session_dict(saved)
    check_session_dict(saved, formats=(1, 2, 3))
    saved["anchors"][0]["objects"] = [0]  # background is no object
    with pytest.raises(InputError, match="objects"):
        check_session_dict(saved, formats=(1, 2, 3))


def test_points_and_soft_anchors_pass_the_check(model, clip, mask):
    points = PropagationSession(model, clip, options=OPTIONS)
    points.add_points(0, [[10.0, 12.0], [30.5, 20.0]])
    replay = PropagationSession.from_dict(json.loads(json.dumps(points.to_dict())), model, clip)
    np.testing.assert_array_equal(replay.anchors[0], points.anchors[0])
    soft = PropagationSession(model, clip, options=OPTIONS)
    soft.add_labels(0, np.stack([mask == 0, mask == 1]).astype(np.float32))
    check_session_dict(json.loads(json.dumps(soft.to_dict())))


# ------------------------------------------------------------------ session files and the CLI


@pytest.fixture(scope="module")
def folder(tmp_path_factory, clip) -> Path:
    folder = tmp_path_factory.mktemp("clip")
    for t, frame in enumerate(clip):
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    return folder


def _replay(folder: Path, session: Path, out: Path, *extra: str) -> list[str]:
    return ["propagate", "--video", str(folder), "--session", str(session), "--model", "lab-pixels",
            "--out", str(out), *extra]


FILE_CASES = [
    ("D49", _drop("anchors", 0, "kind"), '"kind"'),
    ("D50", _drop("frame_size"), "no 'frame_size'"),
    ("D54", _set(("max_frames",), "abc"), r"\['max_frames'\]"),
    ("D58", _set(("anchors", 0, "counts", 0), -5), r">= 0"),
    ("D61", _set(("anchors", 0), {"frame": 0, "kind": "mask", "shape": [H, W], "values": [1],
                                  "counts": [400_000_000]}), "sum to 400000000 pixels"),
]


@pytest.mark.parametrize("case, change, message", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_a_malformed_session_file_ends_with_error_exit_2(folder, saved, tmp_path, capsys, case, change, message):
    change(saved)
    path = tmp_path / "session.json"
    path.write_text(json.dumps(saved))
    with pytest.raises(InputError, match=message):
        read_session_file(path)
    assert cli_main(_replay(folder, path, tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "session.json" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "masks").exists() or not any((tmp_path / "o" / "masks").iterdir())


def test_a_deeply_nested_session_file_is_a_typed_error(folder, tmp_path, capsys):  # D46
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="nested too deeply"):
        read_session_file(path)
    assert cli_main(_replay(folder, path, tmp_path / "o")) == 2
    assert "nested too deeply" in capsys.readouterr().err


def test_mask_next_to_session_is_refused(folder, saved, tmp_path, capsys, mask):  # D45
    path = tmp_path / "session.json"
    path.write_text(json.dumps(saved))
    Image.fromarray(mask[:16, :24]).save(tmp_path / "small.png")
    assert cli_main(_replay(folder, path, tmp_path / "o", "--mask", str(tmp_path / "small.png"))) == 2
    assert "--mask" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert cli_main(_replay(folder, path, tmp_path / "ok")) == 0
    assert len(list((tmp_path / "ok" / "masks").glob("*.png"))) == T


def test_a_deeply_nested_session_dict_is_a_typed_error(model, clip, saved):
    deep: list = []
    inner = deep
    for _ in range(100_000):
        inner.append([])
        inner = inner[0]
    for anchors in ([deep], [{"frame": 0, "kind": "points", "array": deep}]):
        saved["anchors"] = anchors
        with pytest.raises(InputError, match=r"\['anchors'\]\[0\]"):
            PropagationSession.from_dict(saved, model, clip)
