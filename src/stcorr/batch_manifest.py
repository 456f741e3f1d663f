"""The manifest of ``stcorr propagate-many``: one row per video, as CSV (with a header) or JSON lines.

Fields (CSV columns or JSON keys; only ``video`` and one prompt are required):

- ``video``: a video file or a folder of frames; ``name``: the output folder ``DIR/<name>/`` (default: the
  video's file name without its suffix, or the folder's name);
- the prompt, exactly one of ``mask`` (first-frame mask PNG), ``session`` (a session.json exported by
  ``stcorr app``) or ``points`` (a points JSON, as ``stcorr points`` reads);
- ``frame``: the annotated frame (default 0; not with ``session``);
- per-video options: ``max_side`` (0 = full resolution), ``max_frames``, ``resize_mask`` (true/false),
  ``context``, ``radius``, ``topk``, ``temperature``, ``model``.

Relative paths are relative to the manifest's folder. The whole manifest is checked before any work: a
malformed row raises :class:`~stcorr.errors.ManifestError` naming its line and field; names that would leave
``DIR`` (``..``, ``/``, hidden names) and duplicate names are refused. Whether the files exist and can be read
is found out per video (a broken video fails alone).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stcorr.errors import InputError, InputNotFoundError, ManifestError
from stcorr.propagation.options import PropagationOptions
from stcorr.video_jobs import VideoRequest

__all__ = ["ManifestRow", "read_manifest", "FIELDS", "SUMMARY_NAME"]

SUMMARY_NAME = "summary.json"
PROMPTS = ("mask", "session", "points")
PATHS = ("video", *PROMPTS)
INTS = {"frame": 0, "max_side": 0, "max_frames": 1, "context": 0, "radius": 1, "topk": 1}  # field: smallest value
OPTIONS = ("context", "radius", "topk", "temperature")
FIELDS = ("name", *PATHS, "frame", "max_side", "max_frames", "resize_mask", *OPTIONS, "model")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass(frozen=True)
class ManifestRow:
    """One checked row: its ``line`` in the file, its output folder ``name``, the video's ``request`` (paths
    resolved) and the per-video settings that override the command line's (``max_side``: None = not given,
    0 = full resolution; ``options``: propagation option overrides)."""

    line: int
    name: str
    request: VideoRequest
    max_side: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


def _error(path: Path, line: int, field_name: str | None, message: str) -> ManifestError:
    where = f"{path}, line {line}" + (f", field {field_name!r}" if field_name else "")
    return ManifestError(f"manifest {where}: {message}", line=line, field=field_name)


def _is_jsonl(path: Path, text: str) -> bool:
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return True
    if path.suffix.lower() in (".csv", ".tsv"):
        return False
    return text.lstrip().startswith("{")


def _raw_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any], bool]]:
    """(line, fields, from CSV) per row; empty CSV cells and JSON nulls are left out."""
    if _is_jsonl(path, text):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _error(path, number, None, f"expected one JSON object per line, got invalid JSON ({exc.msg})")
            except RecursionError:
                raise _error(path, number, None, "expected one flat JSON object per line, got deeply nested JSON")
            if not isinstance(row, dict):
                raise _error(path, number, None, f"expected a JSON object, got {type(row).__name__}")
            yield number, {k: v for k, v in row.items() if v is not None}, False
        return
    reader = csv.DictReader(text.splitlines(keepends=True))
    try:
        yield from _csv_rows(path, reader)
    except csv.Error as exc:
        message = f"expected CSV with a header, got unreadable CSV ({exc})"
        raise _error(path, reader.line_num + 1, None, message) from exc


def _csv_rows(path: Path, reader: csv.DictReader) -> Iterator[tuple[int, dict[str, Any], bool]]:
    if not reader.fieldnames or "video" not in [f.strip() for f in reader.fieldnames]:
        raise _error(path, 1, None, f"expected a CSV header naming the columns (at least 'video' and one of "
                     f"{', '.join(PROMPTS)}), got {reader.fieldnames}")
    for row in reader:
        if None in row:
            raise _error(path, reader.line_num, None, f"more cells than the header's {len(reader.fieldnames)} "
                         "columns; quote cells that hold commas")
        yield reader.line_num, {k.strip(): v.strip() for k, v in row.items() if v is not None and v.strip()}, True


def _int(path: Path, line: int, name: str, value: Any, from_csv: bool) -> int:
    low = INTS[name]
    number: int | None = None
    if from_csv:
        try:
            number = int(value)
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    if number is None or number < low:
        raise _error(path, line, name, f"expected an integer >= {low}, got {value!r}")
    return number


def _float(path: Path, line: int, name: str, value: Any, from_csv: bool) -> float:
    number: float | None = None
    if from_csv:
        try:
            number = float(value)
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    if number is None or not math.isfinite(number) or number <= 0:
        raise _error(path, line, name, f"expected a positive number, got {value!r}")
    return number


def _bool(path: Path, line: int, name: str, value: Any, from_csv: bool) -> bool:
    if not from_csv and isinstance(value, bool):
        return value
    if from_csv and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise _error(path, line, name, f"expected true or false, got {value!r}")


def _text(path: Path, line: int, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _error(path, line, name, f"expected a non-empty string, got {value!r}")
    return value


def check_name(name: str) -> str | None:
    """Why ``name`` cannot be a folder directly inside the output folder (None if it can)."""
    if name in (".", "..") or name.startswith("."):
        return "a name starting with '.' (hidden, or leaving the output folder)"
    if any(sep in name for sep in ("/", "\\", "\0")) or os.path.isabs(name):
        return "a path, not one folder name"
    if name == SUMMARY_NAME:
        return f"the name of the job's {SUMMARY_NAME}"
    if len(name.encode("utf-8")) > 255:
        return "longer than 255 bytes"
    return None


def _row(path: Path, line: int, raw: dict[str, Any], from_csv: bool) -> ManifestRow:
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise _error(path, line, unknown[0], f"unknown field; expected some of {', '.join(FIELDS)}")
    if "video" not in raw:
        raise _error(path, line, "video", "missing: expected a video file or a folder of frames")
    prompts = [name for name in PROMPTS if name in raw]
    if len(prompts) != 1:
        raise _error(path, line, prompts[1] if prompts else "mask",
                     f"expected exactly one of {', '.join(PROMPTS)} (the first mask, a session file or points), "
                     f"got {', '.join(prompts) or 'none'}")
    if "session" in raw and "frame" in raw:
        raise _error(path, line, "frame", "a session replays its own anchors; leave 'frame' out")
    base = path.parent
    paths = {name: base / _text(path, line, name, raw[name]) for name in PATHS if name in raw}
    video = paths.pop("video")
    name = _text(path, line, "name", raw["name"]) if "name" in raw else (video.name if video.is_dir() else video.stem)
    why = check_name(name)
    if why is not None:
        where = "name" if "name" in raw else "video"
        raise _error(path, line, where, f"the output folder name {name!r} is {why}; expected one folder name "
                     "inside the output folder (give a 'name' field)")
    ints = {key: _int(path, line, key, raw[key], from_csv) for key in INTS if key in raw}
    options: dict[str, Any] = {key: ints[key] for key in OPTIONS if key in ints}
    if "temperature" in raw:
        options["temperature"] = _float(path, line, "temperature", raw["temperature"], from_csv)
    try:
        PropagationOptions(**options)
    except InputError as exc:
        raise _error(path, line, next(iter(options)), str(exc)) from exc
    request = VideoRequest(
        video, **paths, frame=ints.get("frame", 0), max_frames=ints.get("max_frames"),
        resize_mask=_bool(path, line, "resize_mask", raw["resize_mask"], from_csv) if "resize_mask" in raw else False,
        model=_text(path, line, "model", raw["model"]) if "model" in raw else None,
    )
    return ManifestRow(line, name, request, ints.get("max_side"), options)


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestRow]:
    """Read and check a whole manifest (CSV, or JSON lines for ``.jsonl``/``.ndjson``/``.json`` or content that
    starts with ``{``); the rows in file order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputNotFoundError(f"the manifest {path} does not exist; give a CSV or JSON-lines file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read the manifest {path}: {exc}; expected a UTF-8 CSV or JSON-lines file") from exc
    rows: list[ManifestRow] = []
    seen: dict[str, int] = {}
    for line, raw, from_csv in _raw_rows(path, text):
        row = _row(path, line, raw, from_csv)
        folded = row.name.casefold()  # two names that differ in case only are one folder on some file systems
        if folded in seen:
            raise _error(path, line, "name", f"the output folder name {row.name!r} is already used on line "
                         f"{seen[folded]}; expected a unique name per video (give a 'name' field)")
        seen[folded] = line
        rows.append(row)
    if not rows:
        raise ManifestError(f"the manifest {path} has no rows; expected one row per video")
    return rows
