"""The run log (``log.jsonl``, one JSON line per logged step) and its loss plot (``losses.png``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from stcorr._atomic import atomic_path

__all__ = ["LOG_NAME", "PLOT_NAME", "PLOT_SKIP", "read_log", "keep_log_until", "append_log", "plot_losses"]

LOG_NAME = "log.jsonl"
PLOT_NAME = "losses.png"


def read_log(out: Path) -> list[dict[str, float]]:
    """The records of ``RUN/log.jsonl``."""
    path = Path(out) / LOG_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def keep_log_until(out: Path, step: int) -> None:
    kept = [record for record in read_log(out) if record["step"] <= step]
    with atomic_path(out / LOG_NAME) as tmp:
        tmp.write_text("".join(json.dumps(record) + "\n" for record in kept), encoding="utf-8")


def append_log(out: Path, record: Mapping[str, float]) -> None:
    with open(out / LOG_NAME, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


PLOT_SKIP = ("step", "it_per_s", "samples_per_s", "time")
_PANEL_SIZE = (760, 120)
_MARGIN = 8


def plot_losses(records: list[Mapping[str, float]], path: Path) -> None:
    """One panel per logged series (total loss, each part, then lr) against the step, drawn with PIL; atomic."""
    names = [name for name in records[0] if name not in PLOT_SKIP] if records else []
    series = [name for name in names if name != "lr"] + [name for name in names if name == "lr"]
    width, height = _PANEL_SIZE
    image = Image.new("RGB", (width, max(1, len(series)) * height), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    steps = [record["step"] for record in records]
    for row, name in enumerate(series):
        top = row * height
        values = [float(record.get(name, math.nan)) for record in records]
        finite = [v for v in values if math.isfinite(v)]
        draw.rectangle((0, top, width - 1, top + height - 1), outline="#bbbbbb")
        if not finite:
            continue
        low, high = min(finite), max(finite)
        span_v, span_s = (high - low) or 1.0, (steps[-1] - steps[0]) or 1
        points = [
            (_MARGIN + (width - 2 * _MARGIN) * (s - steps[0]) / span_s,
             top + height - _MARGIN - (height - 3 * _MARGIN) * (v - low) / span_v)
            for s, v in zip(steps, values)
            if math.isfinite(v)
        ]
        draw.line(points, fill="#1f77b4", width=2) if len(points) > 1 else draw.point(points, fill="#1f77b4")
        label = f"{name}: last {finite[-1]:.4g}  min {low:.4g}  max {high:.4g}  (steps {steps[0]}-{steps[-1]})"
        draw.text((_MARGIN, top + 2), label, fill="black", font=font)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
