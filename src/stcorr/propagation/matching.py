"""Matching points between two frames through their dense features.

For each query point (x, y) of frame A, its feature is sampled bilinearly from A's feature map and
compared (cosine) with frame B's cells: every cell (``radius=None``) or the square window of
``radius`` cells around the same pixel position (x, y) in B. Frames may differ in size: coordinates are
pixels of each frame, so a static point of two crops with a common origin keeps its (x, y). The match is
the soft-argmax of the ``topk`` (at most 9) most similar cells among the best cell and its 8 neighbours:
cell centres weighted by softmax(similarity / temperature), which gives sub-cell precision without
averaging distant look-alike cells.
The score is the best cosine similarity; ``mutual`` says whether B's best cell, matched back to A the
same way, lands within one cell of the query (a mutual-nearest-neighbour check).

Cell (i, j) of an encoder with stride s covers pixels [s*j, s*j + s) horizontally; its centre is at
x = s*j + (s - 1) / 2 (pixel centres at integers).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stcorr.errors import InputError
from stcorr.features import Encoder, device_type_of, encode_batch, feature_stride
from stcorr.io.frames import FrameSource, open_frames
from stcorr.working_size import working_max_side

__all__ = ["PointMatches", "match_points"]


@dataclass
class PointMatches:
    """Matches of N query points: ``points`` (N, 2) float32 (x, y) in frame B, ``scores`` (N,) cosine
    similarity of the best cell, ``mutual`` (N,) bool."""

    points: np.ndarray
    scores: np.ndarray
    mutual: np.ndarray


def _single_frame(frame: Any) -> torch.Tensor:
    if isinstance(frame, FrameSource):
        source = frame
    elif isinstance(frame, (np.ndarray, torch.Tensor)):
        source = open_frames(frame[None] if frame.ndim == 3 else frame)
    elif isinstance(frame, (str, os.PathLike)):
        source = open_frames(frame)
    else:
        source = open_frames([frame])  # a PIL image
    if len(source) != 1:
        raise InputError(f"expected one frame (an image), got {len(source)} frames")
    return source[0]


def _working(image: torch.Tensor, max_side: int | None, other: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``image`` scaled by the factor that brings the longest side of it and ``other`` to ``max_side`` (never up),
    and its (x, y) scale factors (None: not scaled)."""
    height, width = image.shape[-2:]
    longest = max(*image.shape[-2:], *other.shape[-2:])
    if max_side is None or longest <= max_side:
        return image, None
    size = (max(1, round(height * max_side / longest)), max(1, round(width * max_side / longest)))
    resized = open_frames(image[None]).resized(size=size)[0]
    return resized, torch.tensor([size[1] / width, size[0] / height])


def _cell_centres(length: int, stride: int, device: torch.device) -> torch.Tensor:
    return torch.arange(length, device=device, dtype=torch.float32) * stride + (stride - 1) / 2


def _to_cells(points: torch.Tensor, stride: int) -> torch.Tensor:
    """Pixel (x, y) -> continuous cell coordinates (u, v), cell centres at integers."""
    return (points - (stride - 1) / 2) / stride


def _sample(features: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample (C, h, w) features at (N, 2) cell coordinates -> (N, C), L2-normalised."""
    h, w = features.shape[-2:]
    scale = torch.tensor([max(w - 1, 1), max(h - 1, 1)], device=cells.device, dtype=torch.float32)
    grid = (cells / scale * 2 - 1)[None, :, None, :]
    sampled = F.grid_sample(features[None], grid, mode="bilinear", align_corners=True, padding_mode="border")
    return F.normalize(sampled[0, :, :, 0].T, dim=1)


def _window_mask(centres: torch.Tensor, shape: tuple[int, int], radius: int | None) -> torch.Tensor | None:
    """(N, h*w) bool: cells within ``radius`` (Chebyshev, in cells) of each continuous centre."""
    if radius is None:
        return None
    h, w = shape
    rows = torch.arange(h, device=centres.device).repeat_interleave(w)
    cols = torch.arange(w, device=centres.device).repeat(h)
    near = centres.round().long()
    return ((rows[None] - near[:, 1:2]).abs() <= radius) & ((cols[None] - near[:, :1]).abs() <= radius)


def _best_cells(queries: torch.Tensor, features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    similarity = queries @ features.flatten(1)
    if mask is not None:
        similarity = similarity.masked_fill(~mask, float("-inf"))
    return similarity


def _near_best(similarity: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Similarities with every cell farther than one cell (Chebyshev) from each row's best cell set to -inf."""
    w = shape[1]
    best = similarity.argmax(dim=1, keepdim=True)
    cells = torch.arange(similarity.shape[1], device=similarity.device)[None]
    near = ((cells // w - best // w).abs() <= 1) & ((cells % w - best % w).abs() <= 1)
    return similarity.masked_fill(~near, float("-inf"))


def match_points(
    model: Encoder,
    frame_a: Any,
    frame_b: Any,
    points_a: np.ndarray | torch.Tensor | Sequence[Sequence[float]],
    *,
    radius: int | None = None,
    topk: int = 5,
    temperature: float = 0.07,
    dtype: torch.dtype | None = None,
    fusion_weights: Sequence[float] | None = None,
    max_side: int | None = None,
) -> PointMatches:
    """Find each (x, y) pixel of ``frame_a`` in ``frame_b``.

    Args:
        model: an encoder, or a sequence fused late.
        frame_a, frame_b: images as (H, W, 3) / (3, H, W) arrays or tensors (uint8, or float in [0, 1]),
            PIL images or image paths; they may differ in size.
        points_a: (N, 2) (x, y) pixels inside ``frame_a``.
        radius: search only the square window of this many cells around the same (x, y) pixel position in
            ``frame_b``; ``None`` searches the whole frame. (To match a rescaled copy, resize it to
            ``frame_a``'s size first, or search the whole frame.)
        topk: cells in the soft-argmax, taken from the best cell's 3x3 neighbourhood (at most 9).
        temperature: softmax temperature of the soft-argmax weights.
        dtype: autocast dtype of the encoder (``torch.bfloat16``/``torch.float16``); default float32.
        fusion_weights: per-model weights when ``model`` is a sequence fused late (default: equal).
        max_side: encode both frames scaled by one factor so that the longest side of either is at most this
            many pixels (``radius`` counts cells of that working size); ``0`` = full size; default: 640 px on
            CPU and full size on accelerators, as everywhere in stcorr. Points are given and returned in the
            frames' own pixels.

    Returns:
        :class:`PointMatches` with sub-cell (x, y) in ``frame_b``, scores and the mutual-NN flag.
    """
    image_a, image_b = _single_frame(frame_a), _single_frame(frame_b)
    try:
        points = torch.as_tensor(np.asarray(points_a, dtype=np.float32))
    except (TypeError, ValueError) as exc:
        raise InputError(f"points_a must be (N, 2) numbers, (x, y) pixels; got {points_a!r:.80}") from exc
    height, width = image_a.shape[-2:]
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise InputError(f"points_a must be (N, 2) (x, y) pixels with N >= 1, got shape {tuple(points.shape)}")
    inside = (points[:, 0] >= 0) & (points[:, 0] <= width - 1) & (points[:, 1] >= 0) & (points[:, 1] <= height - 1)
    if not bool(inside.all()):
        raise InputError(
            f"points {torch.nonzero(~inside).flatten().tolist()} lie outside frame_a ({width}x{height}); "
            f"(x, y) must be within [0, {width - 1}] x [0, {height - 1}]"
        )
    if topk < 1 or temperature <= 0:
        raise InputError(f"topk must be >= 1 and temperature > 0, got topk={topk}, temperature={temperature}")
    if radius is not None and (isinstance(radius, bool) or not isinstance(radius, numbers.Integral) or radius < 0):
        raise InputError(f"radius must be None (search all of frame_b) or an integer >= 0 (cells), got {radius!r}")
    stride = feature_stride(model)
    side = working_max_side(max_side, device_type_of(model))
    (image_a, scale_a), (image_b, scale_b) = _working(image_a, side, image_b), _working(image_b, side, image_a)
    if scale_a is not None:
        points = (points + 0.5) * scale_a - 0.5  # pixel centres of frame A at the working size
    feats_a = encode_batch(model, image_a[None], dtype=dtype, fusion_weights=fusion_weights)[0]
    feats_b = encode_batch(model, image_b[None], dtype=dtype, fusion_weights=fusion_weights)[0].to(feats_a.device)
    shape_a, shape_b = tuple(feats_a.shape[-2:]), tuple(feats_b.shape[-2:])
    cells_a = _to_cells(points.to(feats_a.device), stride)

    similarity = _best_cells(_sample(feats_a, cells_a), feats_b, _window_mask(cells_a, shape_b, radius))
    k = min(topk, 9, similarity.shape[1])
    values, index = _near_best(similarity, shape_b).topk(k, dim=1)
    weights = torch.softmax(values / temperature, dim=1).nan_to_num(0.0)
    xs = _cell_centres(shape_b[1], stride, feats_a.device)[index % shape_b[1]]
    ys = _cell_centres(shape_b[0], stride, feats_a.device)[index // shape_b[1]]
    matched = torch.stack([(weights * xs).sum(1), (weights * ys).sum(1)], dim=1)
    if scale_b is not None:
        matched = (matched + 0.5) / scale_b.to(matched.device) - 0.5  # back to frame B's own pixels

    best = index[:, 0]
    best_cells = torch.stack([best % shape_b[1], best // shape_b[1]], dim=1).float()
    back = _best_cells(feats_b.flatten(1).T[best], feats_a, _window_mask(best_cells, shape_a, radius)).argmax(1)
    back_cells = torch.stack([back % shape_a[1], back // shape_a[1]], dim=1).float()
    mutual = (back_cells - cells_a.round()).abs().amax(dim=1) <= 1
    return PointMatches(
        points=matched.cpu().numpy().astype(np.float32),
        scores=values[:, 0].cpu().numpy().astype(np.float32),
        mutual=mutual.cpu().numpy(),
    )
