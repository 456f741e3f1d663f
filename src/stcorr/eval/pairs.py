"""Real image pairs with exact dense ground truth.

* **Motorcycle** (Middlebury 2014, in scikit-image: ``skimage.data.stereo_motorcycle()``): left ->
  right through the left disparity, x_right = x_left - d; ``inf`` = unknown.
* **Aloe** (Middlebury 2006, ``opencv-doc``: ``aloeL.jpg``, ``aloeR.jpg``, ``aloeGT.png``): the same,
  with an 8-bit left disparity in pixels, 0 = unknown.
* **Graffiti 1->3** (Oxford affine set, ``opencv-doc``: ``graf1.png``, ``graf3.png``, ``H1to3p.xml``):
  a planar scene, target = H13 * source (homogeneous pixels); the OpenCV FileStorage XML is parsed here.

Every pair is brought to a working resolution (longest side ``max_side``): images are resized
(antialiased); the ground truth is evaluated exactly at the working pixels (disparity read at the
nearest full-resolution pixel and scaled; homography conjugated by the rescaling). A source pixel is
*valid* when its ground truth is known, it lands inside the target and, for stereo, it is not
occluded in the target view: a left pixel is occluded when another left pixel with a disparity larger
by more than :data:`OCCLUSION_TOLERANCE` px lands on the same right pixel (a z-buffer on the known
disparities; pixels hidden behind surfaces of unknown disparity cannot be detected).
Each target pixel's source is known for the homography (inverse map) and, for stereo, from the valid
source pixels splatted to the nearest target pixel (front-most wins); other target pixels are unknown.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from stcorr.errors import DataReadError, InputError
from stcorr.eval.sources import opencv_data_dir
from stcorr.eval.warp import apply_homography, image_tensor, rescale_matrix, sample_image

__all__ = [
    "PAIR_NAMES",
    "OCCLUSION_TOLERANCE",
    "ImagePair",
    "read_opencv_matrix",
    "stereo_pair",
    "homography_pair",
    "load_pair",
    "load_pairs",
]

PAIR_NAMES: tuple[str, ...] = ("motorcycle", "aloe", "graffiti")
OCCLUSION_TOLERANCE = 1.0
UNKNOWN = 255


@dataclass(frozen=True)
class ImagePair:
    """Two images and the exact correspondence from ``source`` to ``target`` at working resolution.

    ``flow`` (H, W, 2): target (x, y) of each source pixel, meaningful where ``valid``.
    ``target_source`` (H', W', 2): source (x, y) shown by each target pixel, known where ``target_valid``.
    """

    name: str
    source: np.ndarray = field(repr=False)
    target: np.ndarray = field(repr=False)
    flow: np.ndarray = field(repr=False)
    valid: np.ndarray = field(repr=False)
    target_source: np.ndarray = field(repr=False)
    target_valid: np.ndarray = field(repr=False)
    description: str = ""

    def transfer(self, labels: np.ndarray) -> np.ndarray:
        """Source labels (H, W) pushed through the ground truth: target labels (H', W'), 255 where unknown."""
        labels = np.asarray(labels)
        if labels.shape != self.source.shape[:2]:
            raise InputError(f"labels of shape {labels.shape} do not match the source {self.source.shape[:2]}")
        index = np.rint(self.target_source).astype(np.int64)
        xs = index[..., 0].clip(0, labels.shape[1] - 1)
        ys = index[..., 1].clip(0, labels.shape[0] - 1)
        return np.where(self.target_valid, labels[ys, xs], UNKNOWN).astype(np.uint8)

    def photometric_errors(self) -> tuple[float, float]:
        """Mean absolute RGB difference over valid source pixels between the source and the target
        sampled at the ground-truth position, and at the same position (identity)."""
        source = self.source.astype(np.float64)
        target = image_tensor(self.target)
        warped = sample_image(target, self.flow, padding="border")
        height, width = self.source.shape[:2]
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
        same = sample_image(target, np.stack([xs, ys], axis=-1), padding="border")
        valid = self.valid
        return float(np.abs(warped - source)[valid].mean()), float(np.abs(same - source)[valid].mean())


def read_opencv_matrix(path: str | Path, key: str) -> np.ndarray:
    """A matrix ``key`` of an OpenCV FileStorage XML file (``type_id="opencv-matrix"``), as float64."""
    path = Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise DataReadError(f"cannot read OpenCV XML {path}: {exc}") from exc
    node = root.find(key)
    if node is None:
        raise InputError(f"{path} has no matrix {key!r}")
    try:
        rows, cols = int(node.findtext("rows", "")), int(node.findtext("cols", ""))
        values = np.array([float(v) for v in (node.findtext("data") or "").split()])
    except ValueError as exc:
        raise InputError(f"{path}: matrix {key!r} is malformed: {exc}") from exc
    if values.size != rows * cols:
        raise InputError(f"{path}: matrix {key!r} declares {rows}x{cols} but holds {values.size} values")
    return values.reshape(rows, cols)


def _working_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    if max_side is None or max(size) <= max_side:
        return size
    scale = max_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == size:
        return image
    resized = F.interpolate(image_tensor(image), size=size, mode="bilinear", align_corners=False, antialias=True)
    return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _occluded(disparity: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Left pixels hidden in the right view by a nearer (larger-disparity) left pixel."""
    height, width = disparity.shape
    ys, xs = np.nonzero(known)
    d = disparity[ys, xs]
    columns = np.rint(xs - d).astype(np.int64)
    inside = (columns >= 0) & (columns < width)
    ys, xs, d, columns = ys[inside], xs[inside], d[inside], columns[inside]
    front = np.full((height, width), -np.inf)
    np.maximum.at(front, (ys, columns), d)
    occluded = np.zeros((height, width), bool)
    occluded[ys, xs] = d < front[ys, columns] - OCCLUSION_TOLERANCE
    return occluded


def _splat(
    flow: np.ndarray, valid: np.ndarray, depth: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Send valid source pixels to their nearest target pixel; where several land, the largest ``depth`` wins."""
    ys, xs = np.nonzero(valid)
    tx, ty = np.rint(flow[ys, xs, 0]).astype(np.int64), np.rint(flow[ys, xs, 1]).astype(np.int64)
    inside = (tx >= 0) & (tx < size[1]) & (ty >= 0) & (ty < size[0])
    ys, xs, tx, ty = ys[inside], xs[inside], tx[inside], ty[inside]
    cells = ty * size[1] + tx
    order = np.lexsort((depth[ys, xs], cells))  # by cell, then depth: the last of each cell is the front-most
    last = np.r_[cells[order][1:] != cells[order][:-1], True]
    chosen = order[last]
    target_source = np.zeros((*size, 2))
    target_valid = np.zeros(size, bool)
    target_source[ty[chosen], tx[chosen]] = np.stack([xs[chosen], ys[chosen]], axis=1)
    target_valid[ty[chosen], tx[chosen]] = True
    return target_source, target_valid


def stereo_pair(
    name: str,
    left: np.ndarray,
    right: np.ndarray,
    disparity: np.ndarray,
    known: np.ndarray,
    *,
    max_side: int | None = 512,
    description: str = "",
) -> ImagePair:
    """A rectified stereo pair, left -> right through the left disparity (pixels at full resolution)."""
    if left.shape != right.shape or left.shape[:2] != disparity.shape or disparity.shape != known.shape:
        raise InputError(f"{name}: left {left.shape}, right {right.shape}, disparity {disparity.shape} disagree")
    full = disparity.shape
    valid_full = known & ~_occluded(np.where(known, disparity, 0.0), known)
    size = _working_size(full, max_side)
    to_full = np.linalg.inv(rescale_matrix(full, size))
    positions = apply_homography(to_full, size)  # working pixel -> full-resolution position
    nearest_x = np.rint(positions[..., 0]).astype(np.int64).clip(0, full[1] - 1)
    nearest_y = np.rint(positions[..., 1]).astype(np.int64).clip(0, full[0] - 1)
    scaled = np.where(known, disparity, 0.0)[nearest_y, nearest_x] * size[1] / full[1]
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float64)
    flow = np.stack([xs - scaled, ys], axis=-1)
    valid = valid_full[nearest_y, nearest_x] & (flow[..., 0] > -0.5) & (flow[..., 0] < size[1] - 0.5)
    target_source, target_valid = _splat(flow, valid, scaled, size)
    return ImagePair(
        name, _resize(left, size), _resize(right, size), flow, valid, target_source, target_valid, description
    )


def homography_pair(
    name: str,
    source: np.ndarray,
    target: np.ndarray,
    matrix: np.ndarray,
    *,
    max_side: int | None = 512,
    description: str = "",
) -> ImagePair:
    """Two views of a plane: target pixel = ``matrix`` applied to the source pixel (full resolution)."""
    full_s, full_t = source.shape[:2], target.shape[:2]
    scale = min(1.0, max_side / max(*full_s, *full_t)) if max_side else 1.0
    size_s = (max(1, round(full_s[0] * scale)), max(1, round(full_s[1] * scale)))
    size_t = (max(1, round(full_t[0] * scale)), max(1, round(full_t[1] * scale)))
    working = (
        rescale_matrix(full_t, size_t) @ np.asarray(matrix, np.float64) @ np.linalg.inv(rescale_matrix(full_s, size_s))
    )
    flow = apply_homography(working, size_s)
    target_source = apply_homography(np.linalg.inv(working), size_t)

    def inside(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return (
            (points[..., 0] > -0.5)
            & (points[..., 0] < size[1] - 0.5)
            & (points[..., 1] > -0.5)
            & (points[..., 1] < size[0] - 0.5)
        )

    return ImagePair(
        name,
        _resize(source, size_s),
        _resize(target, size_t),
        flow,
        inside(flow, size_t),
        target_source,
        inside(target_source, size_s),
        description,
    )


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _motorcycle(max_side: int | None) -> ImagePair:
    from skimage import data

    left, right, disparity = data.stereo_motorcycle()
    known = np.isfinite(disparity)
    return stereo_pair(
        "motorcycle",
        left,
        right,
        disparity.astype(np.float64),
        known,
        max_side=max_side,
        description="Middlebury 2014 Motorcycle (scikit-image), left -> right, GT disparity",
    )


def _aloe(folder: Path, max_side: int | None) -> ImagePair:
    disparity = np.asarray(Image.open(folder / "aloeGT.png").convert("L")).astype(np.float64)
    return stereo_pair(
        "aloe",
        _read_rgb(folder / "aloeL.jpg"),
        _read_rgb(folder / "aloeR.jpg"),
        disparity,
        disparity > 0,
        max_side=max_side,
        description="Middlebury 2006 Aloe (opencv-doc), left -> right, GT disparity",
    )


def _graffiti(folder: Path, max_side: int | None) -> ImagePair:
    matrix = read_opencv_matrix(folder / "H1to3p.xml", "H13")
    return homography_pair(
        "graffiti",
        _read_rgb(folder / "graf1.png"),
        _read_rgb(folder / "graf3.png"),
        matrix,
        max_side=max_side,
        description="Oxford Graffiti 1 -> 3 (opencv-doc), GT homography",
    )


_FILES = {"aloe": ("aloeL.jpg", "aloeR.jpg", "aloeGT.png"), "graffiti": ("graf1.png", "graf3.png", "H1to3p.xml")}


def load_pair(name: str, *, max_side: int | None = 512, opencv_dir: Path | None = None) -> ImagePair:
    """One pair of :data:`PAIR_NAMES`.

    Raises:
        ImportError: ``motorcycle`` without scikit-image.
        DataReadError: an opencv-doc pair whose files are not found.
    """
    if name == "motorcycle":
        return _motorcycle(max_side)
    if name not in _FILES:
        raise InputError(f"unknown pair {name!r}; expected one of {', '.join(PAIR_NAMES)}")
    folder = opencv_dir or opencv_data_dir()
    missing = [f for f in _FILES[name] if folder is None or not (folder / f).is_file()]
    if missing:
        where = (
            f"in {folder}" if folder is not None else "(no opencv-doc examples/data folder; see stcorr.eval.sources)"
        )
        raise DataReadError(f"the {name} pair needs {', '.join(missing)}, not found {where}")
    return (_aloe if name == "aloe" else _graffiti)(folder, max_side)


def load_pairs(
    names: Sequence[str] = PAIR_NAMES, *, max_side: int | None = 512, opencv_dir: Path | None = None
) -> tuple[list[ImagePair], dict[str, str]]:
    """The pairs that can be loaded, and ``{name: reason}`` for those that are absent."""
    pairs, absent = [], {}
    for name in names:
        try:
            pairs.append(load_pair(name, max_side=max_side, opencv_dir=opencv_dir))
        except (ImportError, DataReadError) as exc:
            absent[name] = str(exc)
    return pairs, absent
