"""Geometry shared by the offline benchmark: pixel grids, homographies and bilinear image sampling.

Pixel (x, y) conventions as everywhere in stcorr: x along the width, pixel centres at integers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["pixel_grid", "apply_homography", "image_tensor", "sample_image", "rescale_matrix"]


def pixel_grid(size: tuple[int, int]) -> np.ndarray:
    """Homogeneous pixel centres (3, H*W), row-major."""
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float64)
    return np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])


def apply_homography(matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Where a 3x3 homography sends every pixel of an (H, W) image: (H, W, 2) (x, y)."""
    mapped = np.asarray(matrix, np.float64) @ pixel_grid(size)
    return (mapped[:2] / mapped[2:]).T.reshape(size[0], size[1], 2)


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) image -> float (1, 3, H, W) for :func:`sample_image`."""
    return torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]


def sample_image(image: np.ndarray | torch.Tensor, coords: np.ndarray, padding: str = "reflection") -> np.ndarray:
    """Bilinear samples of an image at (H, W, 2) pixel (x, y) -> (H, W, 3) float.

    ``image`` is (h, w, 3) or an :func:`image_tensor`; outside points follow ``padding``
    (``"reflection"``, ``"border"`` or ``"zeros"``).
    """
    tensor = image if isinstance(image, torch.Tensor) else image_tensor(image)
    h, w = tensor.shape[-2:]
    grid = (np.asarray(coords) / np.array([max(w - 1, 1), max(h - 1, 1)]) * 2 - 1).astype(np.float32)
    sampled = F.grid_sample(
        tensor, torch.from_numpy(grid)[None], mode="bilinear", padding_mode=padding, align_corners=True
    )
    return sampled[0].permute(1, 2, 0).numpy()


def rescale_matrix(old: tuple[int, int], new: tuple[int, int]) -> np.ndarray:
    """3x3 map from pixel coordinates of an (H, W) image to those of it resized to ``new``:
    x' = (x + 0.5) * W' / W - 0.5, likewise for y."""
    sx, sy = new[1] / old[1], new[0] / old[0]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
