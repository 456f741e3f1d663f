"""Where the offline benchmark finds real images: scikit-image's bundled photos and Debian ``opencv-doc``.

``opencv-doc``'s ``examples/data`` folder is looked up, in order, under ``$STCORR_OPENCV_DATA``,
``data/opencv/`` (relative to the working directory) and ``/usr/share/doc/opencv-doc/examples/data``
(get it with ``apt-get download opencv-doc`` and ``dpkg-deb --fsys-tarfile opencv-doc_*.deb | tar -x
./usr/share/doc/opencv-doc/examples/data``). scikit-image is imported only when a photo is asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "OPENCV_DATA_ENV",
    "SKIMAGE_PHOTOS",
    "OPENCV_PHOTOS",
    "Photo",
    "opencv_data_dir",
    "skimage_photos",
    "opencv_photos",
    "photo_library",
]

OPENCV_DATA_ENV = "STCORR_OPENCV_DATA"
_OPENCV_CANDIDATES = (Path("data/opencv"), Path("/usr/share/doc/opencv-doc/examples/data"))

SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "brick", "grass", "gravel",
)  # fmt: skip
"""Real photos and textures shipped in the scikit-image wheel (grey ones are repeated to RGB)."""

OPENCV_PHOTOS: tuple[str, ...] = (
    "aero1.jpg", "apple.jpg", "baboon.jpg", "building.jpg", "butterfly.jpg", "fruits.jpg", "home.jpg",
    "leuvenA.jpg", "messi5.jpg", "orange.jpg", "smarties.png", "squirrel_cls.jpg", "starry_night.jpg", "stuff.jpg",
)  # fmt: skip
"""Photos of ``opencv-doc``'s ``examples/data`` used when the folder is present."""


@dataclass(frozen=True)
class Photo:
    """A named RGB photo, (H, W, 3) uint8."""

    name: str
    image: np.ndarray = field(repr=False)


def opencv_data_dir() -> Path | None:
    """The ``opencv-doc`` ``examples/data`` folder, or None when it is not found (see the module doc)."""
    configured = os.environ.get(OPENCV_DATA_ENV)
    candidates = ([Path(configured).expanduser()] if configured else []) + list(_OPENCV_CANDIDATES)
    for folder in candidates:
        if folder.is_dir():
            return folder
    return None


def _rgb(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (
            (np.clip(array, 0, 1) * 255).round().astype(np.uint8) if array.dtype.kind == "f" else array.astype(np.uint8)
        )
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


@lru_cache(maxsize=1)
def skimage_photos() -> tuple[Photo, ...]:
    """:data:`SKIMAGE_PHOTOS` from the installed scikit-image.

    Raises:
        ImportError: scikit-image is not installed.
    """
    try:
        from skimage import data
    except ImportError as exc:
        raise ImportError("the offline benchmark needs scikit-image for its photos: pip install scikit-image") from exc
    return tuple(Photo(name, _rgb(getattr(data, name)())) for name in SKIMAGE_PHOTOS)


def opencv_photos(folder: Path | None = None) -> tuple[Photo, ...]:
    """:data:`OPENCV_PHOTOS` found in ``folder`` (default: :func:`opencv_data_dir`); empty when absent."""
    folder = folder or opencv_data_dir()
    if folder is None:
        return ()
    photos = []
    for name in OPENCV_PHOTOS:
        path = folder / name
        if path.is_file():
            with Image.open(path) as image:
                photos.append(Photo(f"opencv:{Path(name).stem}", np.asarray(image.convert("RGB"))))
    return tuple(photos)


def photo_library(include_opencv: bool = True) -> tuple[Photo, ...]:
    """scikit-image photos, then (if wanted and present) opencv-doc photos, in a fixed order."""
    return skimage_photos() + (opencv_photos() if include_opencv else ())
