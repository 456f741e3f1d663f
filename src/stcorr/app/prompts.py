"""Prompts faster than painting: a box around an object gives its mask on one frame (OpenCV GrabCut).

:func:`box_mask` initialises GrabCut (a colour-model graph cut, ``cv2.grabCut``) with the box: outside it is
sure background, inside it is probably foreground; a few iterations fit a colour mixture model for each and
cut along image edges. The result is meant as a start that the brush refines: it fails where the object's
colours are those of its surroundings (camouflage, shadows), on thin parts, and it keeps only what lies
inside the box. Measured on generated clips in ``benchmarks/box_prompt.py`` (see the README).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from stcorr.errors import InputError

__all__ = ["box_mask", "normalise_box", "GRABCUT_ITERATIONS", "MIN_BOX"]

logger = logging.getLogger(__name__)
GRABCUT_ITERATIONS = 5  # GrabCut's iterations (OpenCV's examples use 5; more rarely change the mask)
MIN_BOX = 4  # a box narrower or lower than this many pixels is refused (a click, not a box)


def _require_cv2():  # noqa: ANN202 - the cv2 module
    try:
        import cv2
    except ImportError as exc:
        raise ImportError('the box prompt needs OpenCV: pip install "stcorr[app]" (opencv-python-headless)') from exc
    return cv2


def normalise_box(corner: Sequence[float], other: Sequence[float], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Two opposite corners (x, y), in any order, as ``(x0, y0, x1, y1)`` pixel bounds (x1, y1 exclusive)
    clipped to a frame of ``size`` (H, W); :class:`InputError` if the box is smaller than :data:`MIN_BOX`."""
    try:
        (ax, ay), (bx, by) = (float(v) for v in corner), (float(v) for v in other)
    except (TypeError, ValueError) as exc:
        raise InputError(f"a box is two corners (x, y), got {corner!r} and {other!r}") from exc
    height, width = size
    x0, x1 = sorted((ax, bx))
    y0, y1 = sorted((ay, by))
    box = (max(0, int(x0)), max(0, int(y0)), min(width, int(x1) + 1), min(height, int(y1) + 1))
    if box[2] - box[0] < MIN_BOX or box[3] - box[1] < MIN_BOX:
        raise InputError(f"the box {box[2] - box[0]}x{box[3] - box[1]} px (corners {tuple(corner)} and {tuple(other)}) "
                         f"is smaller than {MIN_BOX}x{MIN_BOX} px inside the frame; click two opposite corners "
                         "of the object")
    return box


def box_mask(frame: np.ndarray, box: tuple[int, int, int, int], iterations: int = GRABCUT_ITERATIONS) -> np.ndarray:
    """The (H, W) bool mask of the object inside ``box`` = ``(x0, y0, x1, y1)`` (x1, y1 exclusive) on an
    (H, W, 3) uint8 RGB frame, by GrabCut initialised with the box. Empty if GrabCut finds no object.

    The box must leave some of the frame outside it (GrabCut learns the background there)."""
    cv2 = _require_cv2()
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InputError(f"box_mask needs an (H, W, 3) uint8 RGB frame, got shape {frame.shape} {frame.dtype}")
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise InputError(f"the box {box} is not inside the {width}x{height} frame (x0 < x1 <= W, y0 < y1 <= H)")
    if (x1 - x0) * (y1 - y0) > 0.95 * width * height:
        raise InputError("the box covers (almost) the whole frame: GrabCut needs background around it; draw the "
                         "box closer around the object, or paint it with the brush")
    mask = np.zeros((height, width), np.uint8)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = np.ascontiguousarray(frame[..., ::-1])
    cv2.grabCut(bgr, mask, (x0, y0, x1 - x0, y1 - y0), background, foreground, int(iterations),
                cv2.GC_INIT_WITH_RECT)
    found = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    logger.debug("box %s: GrabCut kept %d of %d px", box, int(found.sum()), (x1 - x0) * (y1 - y0))
    return found
