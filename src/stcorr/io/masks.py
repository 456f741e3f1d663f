"""Masks: the DAVIS palette, id-map checks, and reading and writing mask and confidence PNGs.

Id maps are integer arrays (H, W) with values in [0, 255], 0 = background and 255 = void.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal, overload

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from stcorr._atomic import write_atomic
from stcorr.checks import check_unit_range, describe, to_numpy
from stcorr.errors import InputError, InputNotFoundError

__all__ = ["davis_palette", "read_mask", "write_mask_png", "write_confidence_png", "as_ids", "SIXTEEN_BIT_MODES",
           "oversized_image"]

PathLike = str | os.PathLike[str]
ArrayLike = np.ndarray | torch.Tensor
Colors = dict[int, tuple[int, ...]]

SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
"""Pillow modes of 16-bit grayscale images."""


def oversized_image(path: PathLike, exc: Exception) -> str:
    """The message for an image Pillow refuses to decode (``Image.DecompressionBombError``): a small file can
    hold an image of billions of pixels, so the size is checked from the header before any pixel is read."""
    return (f"{path} is too large to decode safely ({exc}); images above {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} "
            "million pixels are refused before decoding. Downscale it, or check that it is the file you meant")


@lru_cache(maxsize=1)
def readonly_palette() -> np.ndarray:
    index = np.arange(256)
    palette = np.zeros((256, 3), dtype=np.int64)
    for bit in range(8):  # bit (7 - bit) of channel c is bit (3 * bit + c) of the index
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    palette = palette.astype(np.uint8)
    palette.flags.writeable = False
    return palette


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC palette, (256, 3) ``uint8``, built by the VOC bit-interleave rule.

    Entry 0 is black (background), 1 is (128, 0, 0), 2 is (0, 128, 0), ... Entry 255 (void) is the
    rule's own (224, 224, 192), a light beige that stays visible on dark frames. Returns a copy.
    """
    return readonly_palette().copy()


def as_ids(ids: ArrayLike) -> np.ndarray:
    """Validate an (H, W) id map with integer values in [0, 255] and return it as ``uint8``."""
    expected = "an (H, W) integer id map with values in [0, 255] (0 = background, 255 = void)"
    if not isinstance(ids, (np.ndarray, torch.Tensor)):
        raise InputError(f"expected {expected}, got {describe(ids)}")
    array = to_numpy(ids)
    if array.ndim != 2 or not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise InputError(f"expected {expected}, got {describe(ids)}; cast with .astype(np.uint8) if needed")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise InputError(
            f"expected {expected}, got values in [{array.min()}, {array.max()}]; "
            "stcorr masks hold at most 254 objects"
        )
    return array.astype(np.uint8)



def save_png(image: Image.Image, path: PathLike) -> Path:
    """Write a PIL image as PNG atomically."""
    return write_atomic(path, lambda tmp: image.save(tmp, format="PNG"))


def write_mask_png(path: PathLike, ids: ArrayLike) -> Path:
    """Write an (H, W) id map as an indexed ('P') PNG with the DAVIS palette; return the path.

    Values must be integers in [0, 255] (255 = void), else :class:`InputError`. Read back exactly by
    :func:`read_mask`.
    """
    image = Image.fromarray(as_ids(ids))  # 2-D uint8: mode "L"
    image.putpalette(readonly_palette().tobytes())  # turns the 'L' image into a 'P' image
    return save_png(image, path)


def write_confidence_png(path: PathLike, conf: ArrayLike) -> Path:
    """Write an (H, W) float confidence map in [0, 1] as an 8-bit grayscale PNG (value * 255, rounded)."""
    array = to_numpy(conf) if isinstance(conf, (np.ndarray, torch.Tensor)) else None
    if array is None or array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"expected an (H, W) float confidence map in [0, 1], got {describe(conf)}")
    check_unit_range(array, "a confidence map")
    return save_png(Image.fromarray((array * 255.0 + 0.5).astype(np.uint8)), path)


# --------------------------------------------------------------------------------------------------
# Overlays


def _color_keys(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _ids_from_colors(rgb: np.ndarray) -> np.ndarray:
    """Map (H, W, 3) colours to ids: black -> 0; DAVIS palette indices if every colour is in the
    palette, else 1, 2, ... by first appearance in row-major order."""
    keys, first, inverse = np.unique(_color_keys(rgb).ravel(), return_index=True, return_inverse=True)
    palette_index = {int(key): index for index, key in enumerate(_color_keys(davis_palette()))}
    if all(int(key) in palette_index for key in keys):
        ids = np.array([palette_index[int(key)] for key in keys], dtype=np.int64)
    else:
        colored = np.flatnonzero(keys != 0)
        if len(colored) > 254:
            raise InputError(
                f"mask has {len(colored)} distinct non-black colours, more than the 254 objects supported; "
                "it is probably antialiased or JPEG-compressed. Save masks as lossless PNG without smoothing"
            )
        ids = np.zeros(len(keys), dtype=np.int64)
        ids[colored[np.argsort(first[colored])]] = np.arange(1, len(colored) + 1)
    return ids[inverse].reshape(rgb.shape[:2])


def _mask_ids(image: Image.Image) -> tuple[np.ndarray, Colors]:
    """(ids, colours of the ids present) for a mask image of any mode."""
    if image.mode in ("P", "PA"):
        ids = np.asarray(image.getchannel(0) if image.mode == "PA" else image).astype(np.int64)
        palette = np.zeros((256, 3), dtype=np.int64)
        raw = np.asarray(image.getpalette() or [], dtype=np.int64)[: 256 * 3]
        palette.ravel()[: len(raw)] = raw
        return ids, {int(i): tuple(int(c) for c in palette[i]) for i in np.unique(ids)}
    if image.mode in ("L", "LA", "1") or image.mode in SIXTEEN_BIT_MODES:
        gray = image.getchannel(0) if image.mode == "LA" else image
        ids = np.asarray(gray.convert("L") if image.mode == "1" else gray).astype(np.int64)
        return ids, {int(v): (int(v),) * 3 for v in np.unique(ids)}
    rgba = np.asarray(image.convert("RGBA"))
    rgb = np.where(rgba[..., 3:] == 0, 0, rgba[..., :3])  # fully transparent pixels are background
    ids = _ids_from_colors(rgb)
    flat_ids, flat_rgb = ids.ravel(), rgb.reshape(-1, 3)
    present, first = np.unique(flat_ids, return_index=True)
    return ids, {int(i): tuple(int(c) for c in flat_rgb[j]) for i, j in zip(present, first)}


@overload
def read_mask(path: str | os.PathLike[str], *, return_colors: Literal[False] = False) -> np.ndarray: ...
@overload
def read_mask(path: str | os.PathLike[str], *, return_colors: Literal[True]) -> tuple[np.ndarray, Colors]: ...
def read_mask(path: str | os.PathLike[str], *, return_colors: bool = False) -> np.ndarray | tuple[np.ndarray, Colors]:
    """Read a mask image into an (H, W) ``int64`` id map (0 = background).

    * palette ('P') PNGs: the palette indices;
    * grayscale ('L', '1', 16-bit): the pixel values;
    * colour (RGB/RGBA) images: black and fully transparent pixels -> 0; if every other colour is
      an exact DAVIS palette colour, its palette index; otherwise ids 1, 2, ... in order of first
      appearance (row-major scan). More than 254 such colours raises :class:`InputError`.

    With ``return_colors=True``, also return ``{id: (r, g, b)}``, the colour each present id has in
    the file ((v, v, v) for grayscale masks). Masks written by
    :func:`write_mask_png` read back exactly.
    """
    mask_path = Path(path)
    try:
        with Image.open(mask_path) as image:
            image.load()
            ids, colors = _mask_ids(image)
    except FileNotFoundError as exc:
        raise InputNotFoundError(
            f"mask {mask_path} does not exist; expected a PNG annotation of the first frame"
        ) from exc
    except IsADirectoryError as exc:
        raise InputError(f"mask {mask_path} is a folder; expected a PNG annotation of the first frame") from exc
    except Image.DecompressionBombError as exc:
        raise InputError(f"mask {oversized_image(mask_path, exc)}") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read mask {mask_path}: {exc}; expected a PNG image") from exc
    return (ids, colors) if return_colors else ids
