"""Keypoints as heatmaps: drawing Gaussians at points and decoding points from heatmaps.

Keypoints are propagated as one heatmap channel per point (the JHMDB protocol of VFS / Spa-then-Temp):
an unnormalised Gaussian (sigma 4 px, peak 1, a 6 sigma + 1 window) is drawn at each point at image
resolution, and a point is read back from a heatmap as the weighted mean of its top-5 pixels.
Points are (x, y) pixels, pixel centres at integers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from stcorr.errors import InputError

__all__ = ["draw_gaussian_heatmaps", "decode_heatmaps_topk"]


def _gaussian_axis(coords: np.ndarray, length: int, sigma: float, subpixel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per point, signed offsets of pixels ``0 .. length-1`` from the Gaussian centre, and the window mask."""
    half = math.floor(3 * sigma + 0.5)  # centre index of the (6 sigma + 1)-wide kernel
    pixels = np.arange(length, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        if subpixel:
            offsets = pixels - coords[:, None]
            inside = np.abs(pixels - np.floor(coords + 0.5)[:, None]) <= half
        else:  # the reference: window [trunc(p - 3s), trunc(p + 3s + 1)), kernel anchored at its start
            start = np.trunc(coords - 3 * sigma)[:, None]
            stop = np.trunc(coords + 3 * sigma + 1)[:, None]
            offsets = (pixels - start) - half
            inside = (pixels >= start) & (pixels < stop) & (pixels - start < math.ceil(6 * sigma + 1))
    return offsets, inside & np.isfinite(coords)[:, None]


def draw_gaussian_heatmaps(
    points: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    size: tuple[int, int],
    sigma: float = 4.0,
    *,
    subpixel: bool = True,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One unnormalised Gaussian heatmap per point: ``(N, H, W)``, values in [0, 1].

    ``points`` are ``(N, 2)`` pixel ``(x, y)``, pixel centres at integers. The Gaussian
    ``exp(-d^2 / (2 sigma^2))`` is cut to a square window of ``6 sigma + 1`` pixels (25 px for
    sigma 4), as in the VFS / Spa-then-Temp reference; pixels outside the frame are dropped and a
    point whose window misses the frame (or a NaN point) gives an all-zero map. The result is on
    the device of ``points`` when it is a tensor.

    Sub-pixel handling: with ``subpixel=True`` (default) the Gaussian is centred on the exact point
    and the window on the nearest pixel, so the peak is 1 only for integer points and
    :func:`decode_heatmaps_topk` recovers any point at least half a pixel inside the frame within
    half a pixel (0.3 px at most for sigma 4, k 5); on the frame border the cut Gaussian pulls the
    estimate inwards (< 1 px in a corner). ``subpixel=False`` reproduces the reference exactly: the
    kernel is anchored at ``trunc(p - 3 sigma)``, so its centre is ``floor(p)`` for ``p >= 3 sigma``
    and ``ceil(p)`` below (up to 1 px off), and the peak is always 1.
    """
    device = points.device if isinstance(points, torch.Tensor) else torch.device("cpu")
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    coords = np.asarray(points, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InputError(f"points must have shape (N, 2) of (x, y) pixels, got {coords.shape}")
    height, width = (int(s) for s in size)
    if height <= 0 or width <= 0:
        raise InputError(f"size must be a positive (H, W), got {size}")
    if not sigma > 0:
        raise InputError(f"sigma must be positive, got {sigma}")
    dx, inside_x = _gaussian_axis(coords[:, 0], width, sigma, subpixel)
    dy, inside_y = _gaussian_axis(coords[:, 1], height, sigma, subpixel)
    window = inside_y[:, :, None] & inside_x[:, None, :]
    with np.errstate(invalid="ignore"):
        squared = dx[:, None, :] ** 2 + dy[:, :, None] ** 2
        heatmaps = np.where(window, np.exp(-squared / (2 * sigma**2)), 0.0)
    return torch.from_numpy(heatmaps).to(device=device, dtype=dtype)


def decode_heatmaps_topk(heatmaps: torch.Tensor | np.ndarray, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints from non-negative heatmaps ``(..., H, W)``: the top-k weighted mean.

    Coordinates ``(..., 2)`` are pixel ``(x, y)`` = the mean of the ``k`` largest pixels weighted by
    their values (renormalised to sum 1), as VFS / Spa-then-Temp ``img2coord``. An all-zero map
    gives ``(-1, -1)``. Scores ``(...)`` are each map's peak value (0 for an empty map). Ties at the
    k-th value are broken by ``torch.topk``.
    """
    maps = torch.as_tensor(heatmaps)
    if maps.ndim < 2 or maps.shape[-1] == 0 or maps.shape[-2] == 0:
        raise InputError(f"heatmaps must have shape (..., H, W) with H, W > 0, got {tuple(maps.shape)}")
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    maps = maps.to(torch.float64) if not maps.is_floating_point() else maps
    width = maps.shape[-1]
    flat = maps.reshape(*maps.shape[:-2], -1)
    values, indices = flat.topk(min(k, flat.shape[-1]), dim=-1)
    weights = values / values.sum(dim=-1, keepdim=True)
    x = (weights * (indices % width).to(weights.dtype)).sum(dim=-1)
    y = (weights * (indices // width).to(weights.dtype)).sum(dim=-1)
    coords = torch.stack((x, y), dim=-1)
    empty = flat.sum(dim=-1) == 0
    coords = torch.where(empty[..., None], torch.full_like(coords, -1.0), coords)
    scores = torch.where(empty, torch.zeros_like(values[..., 0]), values[..., 0])
    return coords, scores
