"""``reliability.json``: the per-object reliability of every frame of a propagation (see
:mod:`stcorr.propagation.reliability`), written atomically next to the masks."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from stcorr._atomic import write_atomic
from stcorr.errors import InputError

__all__ = ["RELIABILITY_FILE", "write_reliability_json", "read_reliability_json"]

RELIABILITY_FILE = "reliability.json"
_DECIMALS = 4


def write_reliability_json(path: str | os.PathLike[str], frame_names: Sequence[str],
                           reliability: Sequence[Mapping[int, float] | None], *, threshold: float = 0.5) -> Path:
    """Write ``{"frame_names": [...], "objects": [ids], "reliability": T x {id: value}, "threshold": t,
    "suspect_frames": {id: [frame indices below threshold]}, "first_suspect_frame": index or null}``.

    ``reliability[t]`` maps object id -> value in [0, 1] (None or missing: no value for that frame).
    """
    if len(frame_names) != len(reliability):
        raise InputError(f"expected one reliability entry per frame ({len(frame_names)}), got {len(reliability)}")
    objects = sorted({int(i) for values in reliability if values for i in values})
    frames = []
    suspects: dict[str, list[int]] = {str(i): [] for i in objects}
    for t, values in enumerate(reliability):
        row = {}
        for i, value in sorted((values or {}).items()):
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise InputError(f"reliability of object {i} at frame {t} must be in [0, 1], got {value}")
            row[str(int(i))] = round(float(value), _DECIMALS)
            if value < threshold:
                suspects[str(int(i))].append(t)
        frames.append(row)
    first = min((f[0] for f in suspects.values() if f), default=None)
    data = {"frame_names": [str(n) for n in frame_names], "objects": objects, "threshold": threshold,
            "reliability": frames, "suspect_frames": suspects, "first_suspect_frame": first}

    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    return write_atomic(path, write)


def read_reliability_json(path: str | os.PathLike[str]) -> list[dict[int, float]]:
    """The per-frame ``{object id: reliability}`` of a file written by :func:`write_reliability_json`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [{int(i): float(v) for i, v in row.items()} for row in data["reliability"]]
