"""A small generated clip for the tests: coloured shapes moving over a smooth textured background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (96, 128)  # (H, W)


def shapes_frames(count: int = 12, size: tuple[int, int] = SIZE, disc_from: int = 0,
                  twin_from: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 3) uint8 frames and (T, H, W) uint8 ground-truth ids (1 = red square, 2 = blue disc, which
    enters at frame ``disc_from``; with ``twin_from``, 3 = a second red square, a look-alike of the first that
    appears right below it at that frame and moves with it)."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = np.stack([120 + 40 * np.sin(xx / 9.0), 110 + 40 * np.cos(yy / 7.0),
                           100 + 30 * np.sin((xx + yy) / 11.0)], -1)
    frames = np.empty((count, height, width, 3), np.uint8)
    ids = np.zeros((count, height, width), np.uint8)
    for t in range(count):
        image = background.copy()
        left, top = 12 + 3 * t, 20
        square = (xx >= left) & (xx < left + 24) & (yy >= top) & (yy < top + 24)
        disc = ((xx - 90) ** 2 + (yy - (24 + 3 * t)) ** 2 <= 11**2) & (t >= disc_from)
        twin = (xx >= left) & (xx < left + 24) & (yy >= top + 28) & (yy < top + 52)
        twin &= twin_from is not None and t >= twin_from
        image[square | twin] = (220, 40, 40)
        image[disc] = (40, 60, 220)
        frames[t] = image.clip(0, 255).astype(np.uint8)
        ids[t][square] = 1
        ids[t][disc] = 2
        ids[t][twin] = 3
    return frames, ids


def write_shapes_folder(folder: Path, count: int = 12, size: tuple[int, int] = SIZE,
                        disc_from: int = 0, twin_from: int | None = None) -> tuple[Path, np.ndarray]:
    """Write the clip as PNG frames 00000.png ... into ``folder``; returns it and the ground-truth ids."""
    frames, ids = shapes_frames(count, size, disc_from, twin_from)
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    return folder, ids
