"""An independent, minimal mask-propagation pipeline: the yardstick for ``stcorr.propagate_labels`` (issue 21).

It shares only the frozen network with the library (the block outputs of an EfficientNet-Lite, e.g. the
embedded model's own backbone, so both see identical weights); everything after the network is written here
from scratch, on purpose simply:

- **features**: ImageNet-normalised RGB -> the chosen blocks' outputs; each coarser map is brought to the
  stride-8 grid and the stages are fused (:data:`FUSIONS`; the reference is ``up-norm``: upsample the raw
  map bilinearly, then L2-normalise each stage, concatenate, normalise);
- **first mask to grid** (:data:`LABEL_METHODS`; the reference is ``area``: the fraction of each 8x8 cell
  each object covers, taken from the mask at its original size);
- **propagation**: dense cosine affinities of every target cell to the context (frame 0 plus the previous
  ``context`` frames), restricted to the square window ``|dy|, |dx| <= radius``, top-k jointly over the
  context, softmax at ``temperature``, soft labels fed back;
- **decoding**: soft labels upsampled bilinearly (cell centres at ``stride * (i + 0.5)``) to the working
  size, then to the original size, arg-max.

Frames may be processed at a smaller working size than the original (``working``): frames are resized
bilinearly (antialiased) and the mask is taken to the grid from its original size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

FUSIONS = ("norm-up", "up-norm", "up-concat-norm", "norm-up-renorm")
LABEL_METHODS = ("nearest", "bilinear-aa", "area", "bilinear")
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def frames_tensor(frames: np.ndarray, working: tuple[int, int] | None = None) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, h, w) float in [0, 1] at ``working`` size (bilinear, antialiased)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
    if working is not None and tuple(working) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=tuple(working), mode="bilinear", align_corners=False, antialias=True)
    return x


@torch.inference_mode()
def stage_maps(network: torch.nn.Module, blocks: Sequence[int], rgb: torch.Tensor,
               batch: int = 8) -> list[torch.Tensor]:
    """Raw outputs of ``blocks`` of an EfficientNet-Lite (its ``block_outputs``), float32, for all frames."""
    outs: list[list[torch.Tensor]] = [[] for _ in blocks]
    for i in range(0, len(rgb), batch):
        x = ((rgb[i : i + batch] - _MEAN) / _STD).to(next(network.parameters()).dtype)
        for k, y in enumerate(network.block_outputs(x, list(blocks))):
            outs[k].append(y.float())
    return [torch.cat(o) for o in outs]


def _to_grid(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A coarser map (stride 2^j x 8) upsampled bilinearly by the integer ratio, cropped to ``grid``."""
    factor = math.ceil(grid[0] / x.shape[-2])
    if factor > 1:
        x = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    return x[..., : grid[0], : grid[1]]


def fuse(maps: Sequence[torch.Tensor], grid: tuple[int, int], method: str = "up-norm",
         weights: Sequence[float] | None = None) -> torch.Tensor:
    """Stage maps -> one (T, C, h, w) unit feature map on the stride-8 ``grid``; ``weights`` scale each stage."""
    weights = list(weights) if weights is not None else [1.0] * len(maps)
    unit = lambda t: F.normalize(t, dim=1)  # noqa: E731
    if method == "norm-up":
        parts = [_to_grid(unit(m), grid) for m in maps]
    elif method == "up-norm":
        parts = [unit(_to_grid(m, grid)) for m in maps]
    elif method == "norm-up-renorm":
        parts = [unit(_to_grid(unit(m), grid)) for m in maps]
    elif method == "up-concat-norm":
        parts = [_to_grid(m, grid) for m in maps]
    else:
        raise ValueError(method)
    return unit(torch.cat([w * p for w, p in zip(weights, parts)], dim=1))


def onehot(mask: np.ndarray, ids: Sequence[int]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(mask == i) for i in ids]).float()


def labels_to_grid(mask: np.ndarray, ids: Sequence[int], working: tuple[int, int], grid: tuple[int, int],
                   method: str = "area", stride: int = 8, from_original: bool = True) -> torch.Tensor:
    """First mask (H, W) at the original size -> (K, h, w) soft labels on the grid of the ``working`` size.

    ``from_original``: the one-hot mask is averaged from the original pixels (area) to the working size;
    else the id map is first resized to the working size with PIL nearest (what the library did).
    """
    if tuple(mask.shape) == tuple(working):
        probs = onehot(mask, ids)
    elif from_original:
        probs = F.interpolate(onehot(mask, ids)[None], size=tuple(working), mode="area")[0]
    else:
        small = np.asarray(Image.fromarray(mask.astype(np.int32)).resize(working[::-1], Image.Resampling.NEAREST))
        probs = onehot(small, ids)
    h, w = grid
    height, width = working
    if method == "nearest":
        rows = (torch.arange(h) * stride + (stride - 1) / 2).round().long().clamp(0, height - 1)
        cols = (torch.arange(w) * stride + (stride - 1) / 2).round().long().clamp(0, width - 1)
        return probs[:, rows][:, :, cols]
    padded = F.pad(probs[None], (0, w * stride - width, 0, h * stride - height), mode="replicate")
    if method == "area":
        return F.avg_pool2d(padded, stride)[0]
    antialias = method == "bilinear-aa"
    return F.interpolate(padded, size=(h, w), mode="bilinear", align_corners=False, antialias=antialias)[0]


def affinities(features: torch.Tensor, *, context: int = 20, radius: int = 12, topk: int = 10,
               temperature: float = 0.07) -> list[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """For every target frame t >= 1 of unit features (T, C, h, w): its context frames (frame 0 and the
    previous ``context``), and per cell the top-k candidates within the window (flat indices into the
    context's cells) with their softmax weights. They depend on the features only, not on the labels."""
    t_len, c, h, w = features.shape
    keys = features.flatten(2).transpose(1, 2)  # (T, hw, C)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    outside = ((ys[:, None] - ys[None]).abs() > radius) | ((xs[:, None] - xs[None]).abs() > radius)  # (hw, hw)
    result = []
    for t in range(1, t_len):
        ctx = [0] + list(range(max(1, t - context), t))
        sims = torch.einsum("qc,nkc->qnk", keys[t], keys[ctx])
        sims = sims.masked_fill_(outside[:, None], -math.inf).reshape(h * w, -1)
        values, index = sims.topk(min(topk, sims.shape[1]), dim=1)
        result.append((ctx, index, torch.softmax(values / temperature, dim=1)))
    return result


def propagate(links: list[tuple[list[int], torch.Tensor, torch.Tensor]], first: torch.Tensor) -> torch.Tensor:
    """Frame 0's soft labels (K, h, w) through the :func:`affinities` -> soft labels (T, K, h, w), fed back soft."""
    k, h, w = first.shape
    labels = [first.flatten(1).t()]  # (hw, K) per frame
    for ctx, index, weights in links:
        bank = torch.cat([labels[s] for s in ctx])  # (n*hw, K)
        labels.append(torch.einsum("qk,qkl->ql", weights, bank[index]))
    return torch.stack([lab.t().reshape(k, h, w) for lab in labels])


def decode(soft: torch.Tensor, ids: Sequence[int], working: tuple[int, int], original: tuple[int, int],
           stride: int = 8) -> np.ndarray:
    """Soft labels (T, K, h, w) -> (T, H, W) uint8 ids at the original size."""
    h, w = soft.shape[-2:]
    full = F.interpolate(soft, size=(h * stride, w * stride), mode="bilinear", align_corners=False)
    full = full[..., : working[0], : working[1]]
    if tuple(working) != tuple(original):
        full = F.interpolate(full, size=tuple(original), mode="bilinear", align_corners=False)
    return np.asarray(ids, np.uint8)[full.argmax(dim=1).numpy()]
