"""COCO run-length encoding (RLE) of binary masks, written from COCO's definition.

A mask of height H and width W is read in column-major (Fortran) order, top to bottom then left to right, and
stored as the lengths of alternating runs, starting with a run of zeros (possibly of length 0):
``{"size": [H, W], "counts": [c0, c1, ...]}``. The compressed form stores the same counts as one ASCII string:
from the fourth count on each is replaced by its difference to the count two places before, and every value is
written as 5-bit groups (low first) offset by 48, bit 0x20 meaning "more groups follow" and bit 0x10 of the last
group the sign. pycocotools' ``mask.encode`` writes that string (as bytes); JSON files hold it as text.

Every decoder here validates counts (non-negative integers that sum to H * W) before allocating the mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from stcorr.errors import InputError

__all__ = ["encode", "decode", "area", "bbox", "compress", "decompress", "counts_of", "MAX_PIXELS"]

MAX_PIXELS = 2**31 - 1
"""The largest H * W accepted (pycocotools stores counts as 32-bit unsigned integers)."""


def encode(mask: np.ndarray, *, compressed: bool = True) -> dict:
    """The COCO RLE of an (H, W) boolean (or 0/1) mask: ``{"size": [H, W], "counts": str | list[int]}``.

    ``compressed=True`` gives the string form (what pycocotools' ``mask.encode`` gives, as text), else the
    list of run lengths (COCO's "uncompressed RLE").
    """
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        raise InputError(f"expected an (H, W) mask array, got {type(mask).__name__} "
                         f"of shape {getattr(mask, 'shape', None)}")
    height, width = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(edges).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)
    counts: list[int] = [int(run) for run in runs] if flat.size else []
    return {"size": [int(height), int(width)], "counts": compress(counts) if compressed else counts}


def compress(counts: Sequence[int]) -> str:
    """COCO's string form of a list of run lengths."""
    out = bytearray()
    for index, count in enumerate(counts):
        value = int(count) - (int(counts[index - 2]) if index > 2 else 0)
        more = True
        while more:
            group = value & 0x1F
            value >>= 5  # arithmetic shift: a negative value ends at -1
            more = value != -1 if group & 0x10 else value != 0
            if more:
                group |= 0x20
            out.append(group + 48)
    return out.decode("ascii")


def decompress(text: str) -> list[int]:
    """The run lengths of COCO's string form (inverse of :func:`compress`); malformed text raises InputError."""
    data = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    counts: list[int] = []
    position = 0
    while position < len(data):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(data):
                raise InputError("compressed RLE counts end in the middle of a number; the string is truncated")
            group = data[position] - 48
            if not 0 <= group < 64:
                raise InputError(f"compressed RLE counts hold the character {chr(data[position])!r}, outside the "
                                 "alphabet '0'..'o' COCO uses")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if shift > 70:
                raise InputError("compressed RLE counts hold a number of more than 70 bits; the string is corrupt")
        if group & 0x10:
            value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def counts_of(rle: object, *, where: str = "segmentation") -> tuple[int, int, list[int]]:
    """``(H, W, counts)`` of an RLE dict, checked: size two positive integers, counts a list of non-negative
    integers or a compressed string, the counts summing to H * W. Nothing the size of the mask is allocated."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise InputError(f"{where}: expected an RLE object {{\"size\": [H, W], \"counts\": ...}}, got "
                         f"{_shown(rle)}; polygon segmentations are not read (convert them to RLE first, "
                         "e.g. with pycocotools' frPyObjects)")
    size = rle["size"]
    if (not isinstance(size, Sequence) or isinstance(size, str) or len(size) != 2
            or not all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in size)):
        raise InputError(f"{where}: expected \"size\" to be [H, W], two positive integers, got {_shown(size)}")
    height, width = size
    if height * width > MAX_PIXELS:
        raise InputError(f"{where}: size {height}x{width} is {height * width} pixels, more than the {MAX_PIXELS} "
                         "COCO RLE holds; check the file")
    raw = rle["counts"]
    if isinstance(raw, str):
        counts = decompress(raw)
    elif isinstance(raw, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in raw):
        counts = list(raw)
    else:
        raise InputError(f"{where}: expected \"counts\" to be a list of integers or a compressed RLE string, "
                         f"got {_shown(raw)}")
    if any(count < 0 for count in counts):
        raise InputError(f"{where}: RLE counts must be non-negative, got {min(counts)}")
    total = sum(counts)
    if total != height * width:
        raise InputError(f"{where}: RLE counts sum to {total} pixels, but size {height}x{width} has "
                         f"{height * width}; the counts and the size do not belong together")
    return height, width, counts


def decode(rle: Mapping) -> np.ndarray:
    """The (H, W) boolean mask of an RLE dict (either counts form), validated by :func:`counts_of` first."""
    height, width, counts = counts_of(rle)
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, np.asarray(counts, dtype=np.int64))
    return flat.reshape((height, width), order="F")


def area(rle: Mapping) -> int:
    """Foreground pixels of an RLE dict (pycocotools' ``mask.area``)."""
    return int(sum(counts_of(rle)[2][1::2]))


def bbox(rle: Mapping) -> list[int]:
    """``[x, y, w, h]`` of the foreground's bounding box (pycocotools' ``mask.toBbox``), ``[0, 0, 0, 0]`` if empty."""
    height, _, counts = counts_of(rle)
    starts = np.cumsum([0] + counts[:-1], dtype=np.int64)
    first = starts[1::2]
    lengths = np.asarray(counts[1::2], dtype=np.int64)
    keep = lengths > 0
    first, last = first[keep], first[keep] + lengths[keep] - 1
    if not first.size:
        return [0, 0, 0, 0]
    x_first, y_first = np.divmod(first, height)
    x_last, y_last = np.divmod(last, height)
    x0, x1 = int(x_first.min()), int(x_last.max())
    # a run that wraps into the next column covers every row
    wraps = x_last > x_first
    y0 = 0 if wraps.any() else int(y_first.min())
    y1 = height - 1 if wraps.any() else int(y_last.max())
    return [x0, y0, x1 - x0 + 1, y1 - y0 + 1]


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
