"""The checks of a session dictionary (:meth:`PropagationSession.to_dict`, or a ``session.json``) before use.

A session file is untrusted input: :func:`check_session_dict` validates it completely (format, keys, types,
shapes against ``frame_size``, run-length counts summing exactly to H x W, value ranges, options, working
size) without allocating anything that grows with the numbers it holds, and raises one
:class:`~stcorr.errors.InputError` naming the field, what was expected, what was given and how to fix it.
Only then are masks decoded (:meth:`PropagationSession.from_dict` also compares ``frame_size`` with the
frames first, so a decoded mask is never larger than a frame).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stcorr.errors import InputError
from stcorr.io.frames import RESAMPLING
from stcorr.propagation.options import PropagationOptions

__all__ = ["check_session_dict", "ANCHOR_KINDS", "SESSION_FORMATS"]

SESSION_FORMATS = (1, 2)
"""The formats this version reads; ``to_dict`` writes the last (2: anchors carry ``objects``, options
``directions``)."""

ANCHOR_KINDS = ("mask", "soft", "points")
_FIX = "export the session again from `stcorr app` (or PropagationSession.to_dict) instead of editing it by hand"
_MAX_ID = 255  # mask values: ids 0..254, 255 = void


def _fail(field: str, expected: str, value: Any) -> InputError:
    try:
        shown = repr(value)
    except RecursionError:
        shown = "a value nested too deeply to show"
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return InputError(f"session {field}: expected {expected}, got {shown} ({type(value).__name__}); {_FIX}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _int(field: str, value: Any, low: int, high: int | None = None) -> int:
    """An integer in [low, high] (bools, floats such as 1.7 and strings such as "2" are refused)."""
    if not _is_int(value) or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise _fail(field, f"an integer {bound}", value)
    return int(value)


def _optional_int(field: str, value: Any, low: int) -> None:
    if value is not None:
        _int(field, value, low)


def _pair(field: str, value: Any) -> tuple[int, int]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise _fail(field, "[height, width], two positive integers", value)
    return _int(f"{field}[0]", value[0], 1), _int(f"{field}[1]", value[1], 1)


def _int_list(field: str, value: Any, low: int, high: int | None = None) -> list[int]:
    """A list of integers in [low, high], checked one by one (no array is built from unchecked numbers)."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise _fail(field, "a list of integers", value)
    for index, item in enumerate(value):
        _int(f"{field}[{index}]", item, low, high)
    return [int(item) for item in value]


def _numbers(field: str, value: Any) -> np.ndarray:
    """A nested list of numbers as a float32 array (strings, bools, ragged or too deeply nested lists refused)."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise _fail(field, "a nested list of numbers", value)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, RecursionError) as exc:
        raise _fail(field, f"a rectangular nested list of numbers ({exc})", value) from None
    if array.dtype.kind not in "iuf" or array.dtype == object:
        raise _fail(field, "numbers only (no strings, booleans or null)", value)
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise _fail(field, "finite numbers", value)
    return array


def _check_mask(field: str, anchor: Mapping[str, Any], frame_size: tuple[int, int]) -> None:
    for key in ("shape", "values", "counts"):
        if key not in anchor:
            raise _fail(field, f'a mask anchor with "shape", "values" and "counts" (no "{key}")', dict(anchor))
    shape = _pair(f"{field}['shape']", anchor["shape"])
    if shape != frame_size:
        raise InputError(f"session {field}['shape']: the mask is {list(shape)} but frame_size is "
                         f"{list(frame_size)}; every mask has the frames' size (H, W); {_FIX}")
    values = _int_list(f"{field}['values']", anchor["values"], 0, _MAX_ID)
    counts = _int_list(f"{field}['counts']", anchor["counts"], 0)
    if len(values) != len(counts):
        raise InputError(f"session {field}: 'values' has {len(values)} entries but 'counts' {len(counts)}; "
                         f"a run-length mask holds one count per value; {_FIX}")
    total, pixels = sum(counts), frame_size[0] * frame_size[1]
    if total != pixels:
        raise InputError(f"session {field}['counts']: the run lengths sum to {total} pixels, a {frame_size[0]}x"
                         f"{frame_size[1]} mask has {pixels}; the mask is corrupt; {_FIX}")


def _check_array(field: str, kind: str, anchor: Mapping[str, Any], frame_size: tuple[int, int]) -> None:
    if "array" not in anchor:
        raise _fail(field, f'a {kind} anchor with an "array"', dict(anchor))
    array = _numbers(f"{field}['array']", anchor["array"])
    if kind == "points" and (array.ndim != 2 or array.shape[1] != 2 or len(array) < 1):
        raise _fail(f"{field}['array']", "keypoints [[x, y], ...] (N >= 1 rows of 2 numbers)",
                    f"a list of shape {array.shape}")
    if kind == "soft" and (array.ndim != 3 or tuple(array.shape[1:]) != frame_size or len(array) < 1):
        raise _fail(f"{field}['array']", f"soft labels of shape (K, {frame_size[0]}, {frame_size[1]})",
                    f"a list of shape {array.shape}")


def _check_anchor(index: int, anchor: Any, num_frames: int, frame_size: tuple[int, int]) -> tuple[int, str]:
    field = f"['anchors'][{index}]"
    if not isinstance(anchor, Mapping):
        raise _fail(field, 'an object {"frame": ..., "kind": ..., ...}', anchor)
    for key in ("frame", "kind"):
        if key not in anchor:
            raise _fail(field, f'an anchor with "{key}" (every anchor has "frame" and "kind")', dict(anchor))
    frame = _int(f"{field}['frame']", anchor["frame"], 0, num_frames - 1)
    kind = anchor["kind"]
    if kind not in ANCHOR_KINDS:
        raise _fail(f"{field}['kind']", f"one of {ANCHOR_KINDS}", kind)
    if kind == "mask":
        _check_mask(field, anchor, frame_size)
    else:
        _check_array(field, kind, anchor, frame_size)
    if anchor.get("objects") is not None:
        _int_list(f"{field}['objects']", anchor["objects"], 1, _MAX_ID - 1)
    return frame, kind


def _check_anchors(anchors: Any, num_frames: int, frame_size: tuple[int, int]) -> None:
    if not isinstance(anchors, Sequence) or isinstance(anchors, str):
        raise _fail("['anchors']", 'a list of anchors [{"frame": 0, "kind": "mask", ...}, ...]', anchors)
    seen: dict[int, str] = {}
    for index, anchor in enumerate(anchors):
        frame, kind = _check_anchor(index, anchor, num_frames, frame_size)
        if frame in seen:
            raise InputError(f"session ['anchors'][{index}]: frame {frame} has two anchors; keep one; {_FIX}")
        if seen and kind not in seen.values():
            raise InputError(f"session ['anchors'][{index}]: a {kind} anchor among {next(iter(seen.values()))} "
                             f"anchors; every anchor of a session has one kind; {_FIX}")
        seen[frame] = kind


def _check_options(options: Any) -> None:
    if not isinstance(options, Mapping):
        raise _fail("['options']", "an object of propagation options (PropagationOptions.to_dict)", options)
    try:
        PropagationOptions.from_dict(dict(options))
    except InputError as exc:
        raise InputError(f"session ['options']: {exc}; {_FIX}") from None
    except TypeError as exc:  # a value of a type the dataclass cannot even compare
        raise InputError(f"session ['options']: {exc}; {_FIX}") from None


def _check_working_size(data: Mapping[str, Any]) -> None:
    _optional_int("['max_side']", data.get("max_side"), 1)
    if data.get("size") is not None:
        _pair("['size']", data["size"])
        if data.get("max_side") is not None:
            raise InputError(f"session: 'max_side' and 'size' are exclusive, give at most one; {_FIX}")
    resample = data.get("resample")
    if resample is not None and resample not in RESAMPLING:
        raise _fail("['resample']", f"null or one of {RESAMPLING}", resample)


def _check_file_keys(data: Mapping[str, Any]) -> None:
    """The keys a session file adds (:mod:`stcorr.session_files`): model name, video hint, frame limit."""
    for key in ("model_name", "video"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise _fail(f"[{key!r}]", "null or a string", data[key])
    _optional_int("['max_frames']", data.get("max_frames"), 1)
    if data.get("model") is not None and not isinstance(data["model"], Mapping):
        raise _fail("['model']", "null or the model's configuration (an object)", data["model"])


def check_session_dict(data: Any, formats: Sequence[int] = SESSION_FORMATS) -> None:
    """Raise :class:`InputError` unless ``data`` is a complete, consistent session dictionary.

    Checks the ``format`` (one of ``formats``), the required keys (``format``, ``num_frames``,
    ``frame_size``, ``options``, ``anchors``) and the optional ones (``max_side``, ``size``, ``resample``,
    ``model``, and a session file's ``model_name``, ``video``, ``max_frames``); each anchor's integer
    ``frame`` within ``num_frames``, its ``kind``, its mask (``shape`` equal to ``frame_size``, ``values``
    ids in [0, 255], non-negative integer ``counts`` summing to H x W) or its ``array`` (keypoints (N, 2),
    soft labels (K, H, W)), and an optional ``objects`` list of object ids (1..254). Unknown keys are ignored.
    Nothing is allocated from the numbers checked: a file claiming 10**12 pixels is refused, never expanded.
    """
    if not isinstance(data, Mapping):
        raise InputError(f"expected a session dictionary (PropagationSession.to_dict, or a session.json), "
                         f"got {type(data).__name__}")
    missing = [key for key in ("format", "num_frames", "frame_size", "options", "anchors") if key not in data]
    if missing:
        raise InputError(f"the session has no {', '.join(repr(k) for k in missing)}: expected the dictionary "
                         f"PropagationSession.to_dict writes; {_FIX}")
    if not _is_int(data["format"]) or data["format"] not in formats:
        raise _fail("['format']", f"a session format this version reads ({', '.join(map(str, formats))}); "
                    "update stcorr to read newer sessions", data["format"])
    num_frames = _int("['num_frames']", data["num_frames"], 1)
    frame_size = _pair("['frame_size']", data["frame_size"])
    _check_options(data["options"])
    _check_working_size(data)
    _check_file_keys(data)
    _check_anchors(data["anchors"], num_frames, frame_size)
