"""Masks as the browser paints them, and the pictures the app shows (pure NumPy and HTML, no Gradio).

The editor holds one RGBA paint layer over the frame. Object ``i`` is painted in its DAVIS palette colour
(opaque); erased or never painted pixels are transparent (background, id 0). :func:`ids_to_layer` and
:func:`layer_to_ids` convert between that layer and an (H, W) id mask, exactly for every id 1..255.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

from stcorr.errors import InputError
from stcorr.io.masks import davis_palette

__all__ = [
    "MAX_OBJECTS",
    "object_color_hex",
    "ids_to_layer",
    "layer_to_ids",
    "confidence_view",
    "SUSPECT_BELOW",
    "reliability_strip",
]

MAX_OBJECTS = 10  # brush colours offered in the editor (ids 1..10); uploaded masks may hold any id 1..254
_OPAQUE = 128  # a layer pixel with at least this alpha is painted


def object_color_hex(object_id: int) -> str:
    """The ``#rrggbb`` palette colour of an object id (1 is dark red, 2 green, ...)."""
    r, g, b = (int(v) for v in davis_palette()[object_id])
    return f"#{r:02x}{g:02x}{b:02x}"


def ids_to_layer(ids: np.ndarray) -> np.ndarray:
    """(H, W) ids -> (H, W, 4) uint8 RGBA paint layer: palette colours, transparent background."""
    ids = np.asarray(ids)
    layer = np.zeros((*ids.shape, 4), np.uint8)
    painted = ids != 0
    layer[painted, :3] = davis_palette()[ids[painted]]
    layer[painted, 3] = 255
    return layer


def layer_to_ids(layer: np.ndarray) -> np.ndarray:
    """(H, W, 4) RGBA paint layer -> (H, W) uint8 ids: each painted pixel gets the id of the nearest palette
    colour (brush colours are exact palette colours; nearest only absorbs blending at stroke edges)."""
    layer = np.asarray(layer)
    if layer.ndim != 3 or layer.shape[2] != 4:
        raise InputError(f"expected an (H, W, 4) RGBA paint layer, got shape {layer.shape}")
    ids = np.zeros(layer.shape[:2], np.uint8)
    painted = layer[..., 3] >= _OPAQUE
    if painted.any():
        palette = davis_palette()[1:].astype(np.int32)  # ids 1..255
        colors = layer[painted, :3].astype(np.int32)
        distances = ((colors[:, None, :] - palette[None, :, :]) ** 2).sum(-1)
        ids[painted] = (distances.argmin(1) + 1).astype(np.uint8)
    return ids


def confidence_view(frame: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """The frame in grey with low confidence shown in red: (H, W, 3) uint8 (red = where to look for errors)."""
    grey = frame.astype(np.float32).mean(-1, keepdims=True) * 0.6
    doubt = (1.0 - np.clip(confidence, 0.0, 1.0))[..., None]
    red = np.array([255.0, 40.0, 40.0], np.float32)
    return (grey * (1.0 - doubt) + red * doubt + 0.5).clip(0, 255).astype(np.uint8)


SUSPECT_BELOW = 0.5  # an object's reliability under this marks its frame as suspect (red in the strip)
_STATE_COLORS = {"ok": "#2e9e44", "suspect": "#d83a2c", "none": "#b4b4b4"}
_STATE_WORDS = {"ok": "reliable", "suspect": "suspect", "none": "not computed"}


def _state(value: float | None) -> str:
    if value is None:
        return "none"
    return "suspect" if value < SUSPECT_BELOW else "ok"


def _runs(values: Sequence[float | None]) -> list[tuple[int, int, str, float | None]]:
    """Consecutive frames of one state as (first, last, state, lowest value in the run)."""
    runs: list[tuple[int, int, str, float | None]] = []
    for t, value in enumerate(values):
        state = _state(value)
        if runs and runs[-1][2] == state:
            first, _, _, low = runs[-1]
            runs[-1] = (first, t, state, low if value is None or (low is not None and low <= value) else value)
        else:
            runs.append((t, t, state, value))
    return runs


def reliability_strip(rows: Mapping[int, Sequence[float | None]], current: int, anchors: Collection[int], *,
                      num_frames: int, row_px: int = 12) -> str:
    """The per-object reliability strip as HTML (an SVG per row): for each object, labelled by a swatch of
    its palette colour, one cell per frame: green reliable (>= :data:`SUSPECT_BELOW`), red suspect, grey not
    computed (None). Equal neighbouring cells are drawn as one ``rect`` carrying ``data-object``,
    ``data-first``, ``data-last`` and ``data-state``; anchors are ticks above the rows, the current frame a bar
    below. Without objects a single grey row says so."""
    frames = max(int(num_frames), 1)
    height = f'height="{row_px}" width="100%" viewBox="0 0 {frames} 1" preserveAspectRatio="none"'

    def line(label: str, cells: str, extra: str = "") -> str:
        return (f'<div class="strip-row"{extra} style="display:flex;align-items:center;gap:4px;margin:1px 0">'
                f'<div style="width:40px;flex:none;font:11px monospace">{label}</div>'
                f'<svg {height} style="flex:1;display:block">{cells}</svg></div>')

    ticks = "".join(f'<rect class="anchor" data-frame="{t}" x="{t}" y="0" width="1" height="1" fill="#2858dc"/>'
                    for t in sorted(anchors))
    html = [line("anchor", ticks, ' data-kind="anchors"')]
    if not rows:
        html.append(line("", f'<rect x="0" y="0" width="{frames}" height="1" fill="{_STATE_COLORS["none"]}">'
                             "<title>no objects yet</title></rect>"))
    for object_id, values in sorted(rows.items()):
        cells = []
        for first, last, state, low in _runs(values):
            value = "" if low is None else f", lowest {low:.2f}"
            cells.append(f'<rect data-object="{object_id}" data-first="{first}" data-last="{last}" '
                         f'data-state="{state}" x="{first}" y="0" width="{last - first + 1}" height="1" '
                         f'fill="{_STATE_COLORS[state]}"><title>object {object_id}, frames {first}-{last}: '
                         f"{_STATE_WORDS[state]}{value}</title></rect>")
        swatch = (f'<span style="display:inline-block;width:12px;height:10px;background:{object_color_hex(object_id)};'
                  f'vertical-align:middle"></span> {object_id}')
        html.append(line(swatch, "".join(cells), f' data-object="{object_id}"'))
    marker = (f'<rect class="current" data-frame="{current}" x="{current}" y="0" width="1" height="1" '
              'fill="#1e1e1e"/>')
    html.append(line("frame", marker, ' data-kind="current"'))
    return f'<div class="reliability-strip" data-frames="{frames}">{"".join(html)}</div>'
