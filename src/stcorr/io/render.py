"""Rendering: RGB frame conversion, image files and overlays of masks and points on frames.

Frames are ``uint8`` arrays (H, W, 3) or float tensors (3, H, W) in [0, 1] (what
:func:`stcorr.io.frames.open_frames` yields); points are (x, y) pixel coordinates, x along the width,
with pixel centres at integer coordinates (the centre of the top-left pixel is (0, 0)).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stcorr._atomic import write_atomic
from stcorr.checks import check_unit_range, describe, to_numpy
from stcorr.errors import InputError
from stcorr.io.masks import as_ids, readonly_palette

__all__ = ["as_uint8_rgb", "write_image", "overlay"]

PathLike = str | os.PathLike[str]
ArrayLike = np.ndarray | torch.Tensor


def as_uint8_rgb(frame: ArrayLike) -> np.ndarray:
    """Return an RGB frame (array or tensor) as an (H, W, 3) ``uint8`` array.

    The layout follows the dtype, so no shape guessing is needed: ``uint8`` frames are
    channels-last (H, W, 3); float frames are channels-first (3, H, W) with values in [0, 1] (as
    yielded by :class:`stcorr.io.frames.FrameSource`) and are rounded to 8 bits.
    """
    if not isinstance(frame, (np.ndarray, torch.Tensor)):
        raise InputError(f"expected an RGB frame array or tensor, got {describe(frame)}")
    array = to_numpy(frame)
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating) and array.ndim == 3 and array.shape[0] == 3:
        check_unit_range(array, "a float (3, H, W) frame")
        return np.ascontiguousarray((array.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8))
    raise InputError(
        f"expected an RGB frame as uint8 (H, W, 3) or float (3, H, W) in [0, 1], got {describe(frame)}; "
        "permute the channel axis to match its dtype's layout"
    )


# --------------------------------------------------------------------------------------------------
# Images

def write_image(path: PathLike, image: ArrayLike, *, jpeg_quality: int = 95) -> Path:
    """Write an RGB frame (see :func:`as_uint8_rgb`) as PNG or JPEG, chosen by the suffix of ``path``."""
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
    image_format = formats.get(Path(path).suffix.lower())
    if image_format is None:
        raise InputError(f"expected a .png, .jpg or .jpeg path, got {str(path)!r}")
    pil = Image.fromarray(as_uint8_rgb(image))
    options = {"quality": jpeg_quality} if image_format == "JPEG" else {}
    return write_atomic(path, lambda tmp: pil.save(tmp, format=image_format, **options))



def _contour_mask(ids: np.ndarray) -> np.ndarray:
    """Object pixels (id != 0) with a differently labelled pixel among their 8 neighbours.

    The contour is 1 px wide on the inside of each object (2 px where two objects touch); image
    borders are not contours.
    """
    padded = np.pad(ids, 1, mode="edge")
    height, width = ids.shape
    differs = np.zeros(ids.shape, dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if (dy, dx) != (1, 1):
                differs |= padded[dy : dy + height, dx : dx + width] != ids
    return differs & (ids != 0)


def _as_points(points: ArrayLike) -> np.ndarray:
    array = to_numpy(points) if isinstance(points, (np.ndarray, torch.Tensor)) else np.asarray(points)
    if array.ndim != 2 or array.shape[1] != 2 or not np.issubdtype(array.dtype, np.number):
        raise InputError(f"expected points as an (N, 2) array of (x, y) pixel coordinates, got {describe(array)}")
    return array.astype(np.float64)


def _point_colors(count: int, point_colors: ArrayLike | None) -> np.ndarray:
    if point_colors is None:
        return readonly_palette()[np.arange(count) % 254 + 1]  # point i gets the colour of object id i + 1
    colors = to_numpy(point_colors) if isinstance(point_colors, torch.Tensor) else np.asarray(point_colors)
    if colors.shape != (count, 3):
        raise InputError(f"expected point_colors of shape ({count}, 3) uint8, got shape {colors.shape}")
    return colors.astype(np.uint8)


def _draw_dots(image: np.ndarray, points: np.ndarray, colors: np.ndarray, radius: float,
               hollow: np.ndarray | None = None) -> None:
    """Draw filled discs in place (rings where ``hollow``); points with a non-finite coordinate are skipped."""
    height, width = image.shape[:2]
    ring = max(1.0, radius / 3.0)
    for i, ((x, y), color) in enumerate(zip(points, colors)):
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        top, bottom = max(math.ceil(y - radius), 0), min(math.floor(y + radius) + 1, height)
        left, right = max(math.ceil(x - radius), 0), min(math.floor(x + radius) + 1, width)
        if top >= bottom or left >= right:
            continue
        rows = np.arange(top, bottom)[:, None]
        cols = np.arange(left, right)[None, :]
        squared = (rows - y) ** 2 + (cols - x) ** 2
        disc = squared <= radius**2
        if hollow is not None and hollow[i]:
            disc &= squared > (radius - ring) ** 2
        image[top:bottom, left:right][disc] = color


def overlay(
    frame_rgb_uint8: ArrayLike,
    ids: ArrayLike,
    *,
    alpha: float = 0.5,
    contours: bool = True,
    points: ArrayLike | None = None,
    point_colors: ArrayLike | None = None,
    point_radius: float | None = None,
    point_visible: ArrayLike | None = None,
) -> np.ndarray:
    """Blend coloured masks (and optional keypoints) on a frame; return (H, W, 3) ``uint8``.

    Every non-zero id (255 = void included) is tinted with its DAVIS palette colour:
    ``(1 - alpha) * frame + alpha * colour``. With ``contours``, each object's inner 1 px boundary
    is drawn in its opaque colour. ``points`` (N, 2) (x, y) are drawn as filled discs of radius
    ``point_radius`` (default ``max(2, max(H, W) / 160)``), coloured by ``point_colors`` (N, 3) or
    by the palette (point i gets the colour of id i + 1); non-finite points are skipped. With
    ``point_visible`` (N,) bool, hidden points are drawn as rings (hollow circles) instead. ``frame``
    may also be a float (3, H, W) tensor in [0, 1] (see :func:`as_uint8_rgb`).
    """
    image = as_uint8_rgb(frame_rgb_uint8)
    labels = as_ids(ids)
    if labels.shape != image.shape[:2]:
        raise InputError(f"ids of shape {labels.shape} do not match the frame's size {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"expected alpha in [0, 1], got {alpha}")
    palette = readonly_palette()
    # only the object pixels are blended (the rest is the frame unchanged): (1 - alpha) * frame + alpha * colour
    result = image.copy()
    objects = np.flatnonzero(labels != 0)
    pixels, object_ids = result.reshape(-1, 3), labels.reshape(-1)[objects]
    blended = (1.0 - alpha) * pixels[objects].astype(np.float32) + alpha * palette[object_ids].astype(np.float32)
    pixels[objects] = (blended + 0.5).astype(np.uint8)
    if contours:
        edge = _contour_mask(labels)
        result[edge] = palette[labels[edge]]
    if points is not None:
        xy = _as_points(points)
        radius = point_radius if point_radius is not None else max(2.0, max(image.shape[:2]) / 160.0)
        hidden = None
        if point_visible is not None:
            shown = to_numpy(point_visible) if isinstance(point_visible, torch.Tensor) else np.asarray(point_visible)
            if shown.shape != (len(xy),):
                raise InputError(f"expected point_visible of shape ({len(xy)},) bool, got shape {shown.shape}")
            hidden = ~shown.astype(bool)
        _draw_dots(result, xy, _point_colors(len(xy), point_colors), radius, hidden)
    return result


# --------------------------------------------------------------------------------------------------
# Point tracks
