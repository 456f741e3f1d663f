"""Masks as the browser paints them, and the pictures the app shows (pure NumPy and HTML, no Gradio).

The editor holds one RGBA paint layer over the frame. Object ``i`` is painted in its DAVIS palette colour,
semi-transparent (:data:`PAINT_OPACITY`, so the object under the paint stays visible); erased or never painted
pixels are transparent (background, id 0). :func:`ids_to_layer` and :func:`layer_to_ids` convert between that
layer and an (H, W) id mask, exactly for every id 1..255.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from stcorr.errors import InputError
from stcorr.io.masks import davis_palette

__all__ = [
    "MAX_OBJECTS",
    "object_color_hex",
    "object_color_name",
    "brush_colors",
    "PAINT_OPACITY",
    "object_panel",
    "ids_to_layer",
    "layer_to_ids",
    "confidence_view",
    "SUSPECT_BELOW",
    "reliability_strip",
]

MAX_OBJECTS = 10  # brush colours offered in the editor (ids 1..10); uploaded masks may hold any id 1..254
PAINT_OPACITY = 0.6  # of the brush and of the masks the editor shows: the frame stays visible under the paint
_PAINTED = 64  # a layer pixel with at least this alpha is painted (a stroke's faint anti-aliased rim is not)
_CLEAR = 3 * 12**2  # squared RGB distance under which a pixel is plainly its nearest palette colour
_MAX_BLEND_CANDIDATES = 64  # blends "i over j" are tried among at most this many ids (pairs grow as its square)
_COLOR_NAMES = ("dark red", "green", "olive", "navy", "purple", "teal", "grey", "maroon", "red", "grass")


def object_color_hex(object_id: int) -> str:
    """The ``#rrggbb`` palette colour of an object id (1 is dark red, 2 green, ...)."""
    r, g, b = (int(v) for v in davis_palette()[object_id])
    return f"#{r:02x}{g:02x}{b:02x}"


def object_color_name(object_id: int) -> str:
    """A word for the colour of the brush colours' ids 1..MAX_OBJECTS (``"colour <id>"`` above)."""
    return _COLOR_NAMES[object_id - 1] if 1 <= object_id <= len(_COLOR_NAMES) else f"colour {object_id}"


def brush_colors() -> list[tuple[str, float]]:
    """The editor's brush colours: objects 1..MAX_OBJECTS, each ``(#rrggbb, PAINT_OPACITY)``."""
    return [(object_color_hex(i), PAINT_OPACITY) for i in range(1, MAX_OBJECTS + 1)]


def ids_to_layer(ids: np.ndarray) -> np.ndarray:
    """(H, W) ids -> (H, W, 4) uint8 RGBA paint layer: palette colours at :data:`PAINT_OPACITY`, transparent
    background."""
    ids = np.asarray(ids)
    layer = np.zeros((*ids.shape, 4), np.uint8)
    painted = ids != 0
    layer[painted, :3] = davis_palette()[ids[painted]]
    layer[painted, 3] = round(255 * PAINT_OPACITY)
    return layer


def layer_to_ids(layer: np.ndarray, ids: Collection[int] | None = None) -> np.ndarray:
    """(H, W, 4) RGBA paint layer -> (H, W) uint8 ids among ``ids`` (default every id 1..255).

    A painted pixel (alpha at least a faint stroke rim's) gets the id of the nearest palette colour. Where
    a semi-transparent stroke of object i covers paint of object j (alpha above one stroke's) the pixel's
    colour is their blend, which can lie nearer to a third palette colour: such a pixel gets the id i of
    the nearest blend "i over j" when that is nearer than every plain colour. Give as ``ids`` the ids that
    can be there (the brush colours and the ids the frame shows): fewer candidates, fewer confusions."""
    layer = np.asarray(layer)
    if layer.ndim != 3 or layer.shape[2] != 4:
        raise InputError(f"expected an (H, W, 4) RGBA paint layer, got shape {layer.shape}")
    candidates = np.arange(1, 256) if ids is None else np.array(sorted({int(i) for i in ids} - {0}), np.int64)
    out = np.zeros(layer.shape[:2], np.uint8)
    painted = layer[..., 3] >= _PAINTED
    if not painted.any() or not candidates.size:
        return out
    palette = davis_palette()[candidates].astype(np.float32)
    colors = layer[painted, :3].astype(np.float32)
    distances = ((colors[:, None, :] - palette[None, :, :]) ** 2).sum(-1)
    best = distances.argmin(1)
    chosen = candidates[best]
    # a stroke over paint of another object: alpha a + a (1 - a), colour (c_i + (1 - a) c_j) / (2 - a)
    a = PAINT_OPACITY
    layered = layer[painted, 3] >= round(255 * (a + a * (1 - a) / 2))
    unclear = layered & (distances[np.arange(len(best)), best] > _CLEAR)
    if unclear.any() and len(candidates) > 1 and len(candidates) <= _MAX_BLEND_CANDIDATES:
        top = 1.0 / (2.0 - a)
        blends = (top * palette[:, None, :] + (1.0 - top) * palette[None, :, :]).reshape(-1, 3)  # (i, j) pairs
        pairs = ((colors[unclear][:, None, :] - blends[None, :, :]) ** 2).sum(-1)
        pairs[:, np.arange(len(candidates)) * (len(candidates) + 1)] = np.inf  # i over i is a plain colour
        nearer = pairs.min(1) < distances[unclear].min(1)
        over = candidates[pairs.argmin(1) // len(candidates)]
        chosen[np.flatnonzero(unclear)[nearer]] = over[nearer]
    out[painted] = chosen.astype(np.uint8)
    return out


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


def object_panel(rows: Sequence[tuple[int, str, bool, Sequence[int]]], selected: int) -> str:
    """The object panel as HTML: per object ``(id, name, visible, anchor frames)`` a row with its colour
    swatch, id, colour word, name, whether the overlay shows it and its anchors; the ``selected`` object (the
    brush's) is marked. Each row carries ``data-object``, ``data-visible`` and ``data-selected``."""
    if not rows:
        return ('<div class="object-panel"><i>No objects yet: choose an object below and paint it '
                "(or draw a box).</i></div>")
    lines = []
    for object_id, name, visible, anchors in rows:
        mark = "&#9998; " if object_id == selected else ""
        frames = ", ".join(map(str, anchors)) or "none"
        text = html.escape(name) if name else '<span style="color:#888">(no name)</span>'
        lines.append(
            f'<div class="object-row" data-object="{object_id}" data-visible="{str(visible).lower()}" '
            f'data-selected="{str(object_id == selected).lower()}" style="display:flex;gap:6px;align-items:center;'
            f'font:13px sans-serif;{"font-weight:bold;" if object_id == selected else ""}'
            f'{"" if visible else "opacity:0.45;"}">'
            f'<span style="display:inline-block;width:14px;height:14px;background:{object_color_hex(object_id)}">'
            f"</span>{mark}{object_id} {object_color_name(object_id)}: {text}"
            f'<span style="color:#666">{"" if visible else " (hidden)"} anchors {frames}</span></div>')
    return f'<div class="object-panel">{"".join(lines)}</div>'
