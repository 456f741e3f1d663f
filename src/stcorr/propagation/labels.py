"""Labels between image resolution and the feature grid.

Encoding (image -> grid):

- an integer mask (H, W) becomes one channel per id present (void 255 excluded: void pixels carry no
  label), sorted by id;
- soft labels (K, H, W) are used as they are;
- a mask given at another size than the working size is brought there (:func:`mask_to_working`) by area
  averaging of its one-hot map (each working pixel gets the fraction of its original pixels each id covers,
  so no object is moved or dropped), or, for ``"nearest"``, by PIL nearest resampling of its ids (the
  official protocol);
- downsampling to the grid is ``"bilinear"`` (default: antialiased bilinear on the one-hot
  probabilities, so thin and small objects keep a soft presence on the grid) or ``"nearest"`` (the
  official protocol: PIL-style nearest sampling of the id map, which can drop objects smaller than a cell).

Decoding (grid -> image): soft labels are upsampled bilinearly to the encoder's padded size
(grid x stride, align_corners=False, matching the convolution geometry) and cropped to (H, W);
optionally each channel is min-max normalised over the image (the official DAVIS/VIP protocol); the
arg-max channel gives the id. A pixel that no label mass reached (all channels exactly 0) is 255 (void).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from stcorr.errors import InputError
from stcorr.propagation.options import DOWNSAMPLING

__all__ = [
    "VOID",
    "MAX_IDS",
    "LabelSet",
    "mask_to_onehot",
    "to_grid",
    "mask_to_working",
    "upsample",
    "channel_argmax",
    "decode_ids",
    "confidence_map",
    "resize_ids_nearest",
    "resize_soft",
]

VOID = 255
MAX_IDS = 255  # ids 0..254; 255 marks void


@dataclass(frozen=True)
class LabelSet:
    """The ids of a first-frame mask, in channel order."""

    ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def lookup_table(self) -> np.ndarray:
        """uint8 array mapping channel index -> id."""
        return np.asarray(self.ids, dtype=np.uint8)


def _as_int_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim != 2:
        raise InputError(f"expected an integer mask of shape (H, W), got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise InputError("a float mask must hold integer ids; pass soft labels as a (K, H, W) array instead")
    elif array.dtype.kind not in "iub":
        raise InputError(f"expected an integer mask, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() > VOID):
        raise InputError(
            f"mask ids must be in [0, 254] (255 = void), got values in [{array.min()}, {array.max()}]; "
            "relabel the objects with small integers"
        )
    return array.astype(np.int64)


def mask_to_onehot(mask: np.ndarray | torch.Tensor, ids: Sequence[int] | None = None) -> tuple[torch.Tensor, LabelSet]:
    """Integer mask (H, W) -> one-hot float32 (K, H, W) over ``ids`` (default: the ids present, void excluded)."""
    array = _as_int_mask(mask)
    present = sorted(int(v) for v in np.unique(array) if v != VOID)
    ids = present if ids is None else list(ids)
    if not ids:
        raise InputError("the mask holds no labels (empty, or only void 255); give at least one id")
    if len(ids) > MAX_IDS:
        raise InputError(f"at most {MAX_IDS} distinct ids are supported (255 = void), got {len(ids)}")
    unknown = sorted(set(present) - set(ids))
    if unknown:
        raise InputError(f"mask ids {unknown} are not among the first frame's ids {list(ids)}")
    tensor = torch.from_numpy(array)
    onehot = torch.stack([(tensor == i) for i in ids]).float()
    return onehot, LabelSet(tuple(ids))


def _nearest_exact_indices(size: int, grid: int, stride: int) -> torch.Tensor:
    """Pixel index sampled for each grid cell: the cell centre, clamped into the image (PIL-style nearest)."""
    centres = torch.arange(grid) * stride + (stride - 1) / 2
    return centres.round().long().clamp(0, size - 1)


def to_grid(probs: torch.Tensor, grid: tuple[int, int], stride: int, method: str = "bilinear") -> torch.Tensor:
    """Soft labels (K, H, W) -> (K, h, w) on the feature grid of an encoder with ``stride``.

    The image is treated as padded to (h*stride, w*stride), which is what the convolutions see.
    """
    if method not in DOWNSAMPLING:
        raise InputError(f"label downsampling must be one of {DOWNSAMPLING}, got {method!r}")
    h, w = grid
    _, height, width = probs.shape
    if method == "nearest":
        rows = _nearest_exact_indices(height, h, stride)
        cols = _nearest_exact_indices(width, w, stride)
        return probs[:, rows][:, :, cols].float()
    padded = F.pad(probs[None].float(), (0, w * stride - width, 0, h * stride - height), mode="replicate")
    return F.interpolate(padded, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]


def mask_to_working(
    mask: np.ndarray, onehot: torch.Tensor, labels: LabelSet, size: tuple[int, int], method: str
) -> torch.Tensor:
    """One-hot labels (K, H, W) of the integer ``mask`` brought to the working ``size``, ready for :func:`to_grid`.

    Area averaging of the one-hot map (the fraction of the original pixels under each working pixel that
    each id covers), except for ``method="nearest"``: PIL nearest resampling of the ids, the official protocol.
    """
    if tuple(onehot.shape[-2:]) == tuple(size):
        return onehot
    if method == "nearest":
        return mask_to_onehot(resize_ids_nearest(mask, size), labels.ids)[0]
    return F.interpolate(onehot[None].float(), size=tuple(size), mode="area")[0]


def upsample(grid_probs: torch.Tensor, size: tuple[int, int], stride: int) -> torch.Tensor:
    """Soft labels (K, h, w) -> (K, H, W): bilinear to (h*stride, w*stride), then cropped to ``size``."""
    h, w = grid_probs.shape[-2:]
    full = F.interpolate(grid_probs[None].float(), size=(h * stride, w * stride), mode="bilinear", align_corners=False)
    return full[0, :, : size[0], : size[1]]


def _minmax_per_channel(probs: torch.Tensor) -> torch.Tensor:
    flat = probs.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    high = flat.max(dim=1).values[:, None, None]
    scaled = (probs - low) / (high - low).clamp_min(1e-12)
    return torch.where(high > 0, scaled, probs)


def channel_argmax(scores: torch.Tensor) -> torch.Tensor:
    """``scores.argmax(dim=0)`` of (K, H, W) scores: the first channel wins ties and a NaN wins, as there.

    On CPU it is computed one channel at a time (K is small), several times faster than PyTorch's reduction
    over the outer dimension of an image-sized tensor, which dominated decoding each frame's labels
    (``benchmarks/profile_demo.py``); the index is uint8 when K <= 256.
    """
    if scores.device.type != "cpu" or scores.dim() != 3 or scores.shape[0] == 0:
        return scores.argmax(dim=0)
    best = scores[0].clone()
    index = torch.zeros(scores.shape[1:], dtype=torch.uint8 if scores.shape[0] <= 256 else torch.int64)
    for k in range(1, scores.shape[0]):
        index.masked_fill_(scores[k] > best, k)
        torch.maximum(best, scores[k], out=best)
    if torch.isnan(best).any():  # NaN is the maximum of torch.argmax: its own rules there
        return scores.argmax(dim=0)
    return index


def decode_ids(probs: torch.Tensor, labels: LabelSet, *, minmax: bool = False) -> np.ndarray:
    """Soft labels (K, H, W) at image size -> uint8 id map (H, W); 255 where no label mass arrived."""
    scores = _minmax_per_channel(probs) if minmax else probs
    index = channel_argmax(scores).cpu().numpy()
    ids = labels.lookup_table()[index]
    empty = (probs.amax(dim=0) <= 0).cpu().numpy()
    ids[empty] = VOID
    return ids


def confidence_map(probs: torch.Tensor) -> np.ndarray:
    """Per-pixel confidence in [0, 1]: the largest label probability after normalising the label vector."""
    total = probs.sum(dim=0).clamp_min(1e-12)
    return (probs.amax(dim=0) / total).clamp(0, 1).cpu().numpy().astype(np.float32)


def resize_ids_nearest(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An integer id map (h, w) resized to ``size = (H, W)`` with PIL nearest (the reference's resampling)."""
    array = np.asarray(ids)
    if array.shape == tuple(size):
        return array.astype(np.int64, copy=False)
    if array.size and (array.min() < 0 or array.max() > np.iinfo(np.int32).max):
        raise InputError("labels must be non-negative 32-bit integers to be resized")
    image = Image.fromarray(array.astype(np.int32))  # mode "I"
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.NEAREST), dtype=np.int64)


def resize_soft(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Soft labels (K, h, w) -> (K, H, W), bilinear (align_corners False); unchanged at the same size."""
    if tuple(probs.shape[-2:]) == tuple(size):
        return probs
    return F.interpolate(probs[None].float(), size=size, mode="bilinear", align_corners=False)[0]
