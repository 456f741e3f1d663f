"""Masks as the browser paints them, and the pictures the app shows (pure NumPy, no Gradio).

The editor holds one RGBA paint layer over the frame. Object ``i`` is painted in its DAVIS palette colour
(opaque); erased or never painted pixels are transparent (background, id 0). :func:`ids_to_layer` and
:func:`layer_to_ids` convert between that layer and an (H, W) id mask, exactly for every id 1..255.
"""

from __future__ import annotations

import numpy as np

from stcorr.errors import InputError
from stcorr.io.masks import davis_palette

__all__ = [
    "MAX_OBJECTS",
    "object_color_hex",
    "ids_to_layer",
    "layer_to_ids",
    "confidence_view",
    "confidence_strip",
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


def confidence_strip(scores: list[float | None], current: int, *, height: int = 24, cell: int = 12) -> np.ndarray:
    """One cell per frame: green (confident) to red (uncertain), grey while not propagated, anchors blue
    (score None is "not computed", nan is "anchor"); the current frame is marked by a white bar below."""
    image = np.full((height + 4, cell * len(scores), 3), 255, np.uint8)
    for t, score in enumerate(scores):
        if score is None:
            color = (170, 170, 170)
        elif np.isnan(score):
            color = (40, 90, 220)
        else:
            s = float(np.clip(score, 0.0, 1.0))
            color = (int(230 * (1 - s) + 20), int(200 * s + 20), 40)
        image[:height, t * cell : (t + 1) * cell - 1] = color
    image[height:, current * cell : (current + 1) * cell - 1] = (30, 30, 30)
    return image
