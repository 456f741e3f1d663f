"""Windowed space-time label propagation: the core kernel.

Semantics (fixed; tests compare against a dense reference implementing exactly this):

- **Features** of every frame, shape (C, h, w), come from any encoder and are L2-normalised along C
  here, so similarities are cosines (normalising already-normalised features is harmless). A zero
  feature vector stays zero and has cosine 0 with everything.
- **Context** of target frame t: frame 0, the *anchors* (extra fixed frames added with
  :meth:`LabelPropagator.add_anchor`), and the previous frames max(1, t - context) ... t - 1. Every
  frame appears once: frame 0 is never duplicated (unlike the official code, which repeats it early
  in the video), and an anchor is not also put in the window of previous frames.
- **Candidates** of a query cell (y, x): in every context frame, frame 0 included, the cells of the
  square window |dy| <= radius, |dx| <= radius around (y, x), clipped at the borders of the grid.
- **Top-k jointly** over the candidates of all context frames; weights = softmax(cosine / temperature)
  over those k; prediction = weighted sum of the candidates' soft labels. If fewer than k candidates
  exist (tiny grid, radius 0, a single context frame), all of them are used. There is always at least
  one (the same cell in frame 0), so the result is never NaN.
- **Feedback**: the soft prediction (never arg-maxed) becomes the label of frame t for later targets.
- **Confidence** of a query cell: the softmax-weighted mean cosine of its selected candidates, in
  [-1, 1]; high where the cell found close matches. Frames given with labels (frame 0, anchors) have
  confidence 1.
- **Precision**: similarities are computed in ``compute_dtype`` (float32 by default; bfloat16 or,
  on CUDA, float16 to go faster). A reduced dtype only *selects* candidates: 2 x topk are
  preselected, their cosines recomputed in float32, and the top-k of those used, so results match
  float32 unless rounding pushes a true top-k candidate below rank 2k. Outputs are always float32,
  on the device of the features.
- **Ties**: if the k-th and (k+1)-th candidates have (nearly) equal cosines, which one is kept is
  arbitrary; two correct implementations may then differ at that cell (and, through feedback, at
  nearby later cells).

Speed. The dense formulation compares every query with every context cell, (h·w) x (n·h·w) per
frame. Here the query grid is tiled into blocks of bh x bw cells (:func:`default_block_size`); a
block only needs the key rectangle of (bh + 2r) x (bw + 2r) cells its windows cover. Each context
frame is stored once as overlapping column bands of width bw + 2r (zero-padded at the borders), and
up to 8 frames share a chunk in which their band rows are interleaved, so the key rectangles of a
row block in all frames of a chunk form one strided matrix: one batched matmul per (band, chunk)
covers every row block and frame with no copy. Out-of-window and padding cells get -inf; a top-k
per (band, chunk) then a top-k over their union gives the joint top-k exactly. Memory is bounded by
the context (about (bw + 2r) / bw times the context's features, plus a similarity buffer of at
most ``_SIMS_BUDGET`` bytes), not by the video length.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stcorr.errors import InputError

__all__ = ["propagate", "propagate_stream", "LabelPropagator", "default_block_size"]

_REDUCED_DTYPES = (torch.bfloat16, torch.float16)
# With a reduced compute dtype, this many times topk candidates are preselected, their cosines
# recomputed in float32, and the final top-k taken among them: rounding then rarely changes the set.
_OVERSAMPLE = 2
# Upper bound on the similarity buffer of one chunk of row blocks (bytes); bounds the peak memory
# independently of grid size and radius.
_SIMS_BUDGET = 96 * 2**20
# Context frames per chunk: one matmul per (band, chunk) covers all frames of a chunk. Adding a
# frame to a partly filled chunk copies that chunk (only while the context fills up).
_SLOTS_PER_CHUNK = 8


def default_block_size(radius: int) -> tuple[int, int]:
    """Query block (rows, columns) used when ``block_size`` is not given.

    Chosen by measurement at DAVIS scale (60x107 cells, C=256, radius 12, context 20, 22 frames) on
    a 2-core AVX-512 CPU, fp32, single-thread CPU seconds per frame: (4, 8) 0.51, (3, 12) 0.53,
    (4, 12) 0.53, (2, 12) 0.53, (2, 8) 0.53, (4, 16) 0.59 (one matmul per frame and band; grouping
    frames in chunks later cost ~10 % single-thread but needs ~8x fewer matmul calls, which holds up
    much better with 2 threads on a busy machine). Smaller blocks waste fewer
    similarities on window corners but make smaller matmuls; narrower blocks duplicate more key
    columns in the stored bands ((bw + 2r) / bw: 4x for (4, 8), 3x for (4, 12)). (4, 12) is within
    4 % of the fastest with 25 % less context memory. For radii above 12 the block widens with the
    radius to keep the duplication at most 3x. Not measured on a GPU.
    """
    return (4, max(12, radius))


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Tiling:
    """How an h x w grid is cut into query blocks and key rectangles, plus the masks that go with it."""

    h: int
    w: int
    bh: int  # query block rows
    bw: int  # query block columns
    ry: int  # window half-height actually needed (radius clipped to the grid)
    rx: int  # window half-width
    nby: int  # row blocks
    nbx: int  # column blocks = key bands
    window_bias: torch.Tensor  # (Q, rect_rows, 1, band_width): 0 where the key is in the query's window, else -inf
    grid_bias: torch.Tensor  # (nbx, nby, 1, rect_rows, 1, band_width): 0 where the key is on the grid, else -inf
    key_cell: torch.Tensor  # (nbx, nby, R) int64: flat grid index y * w + x of each key (clamped)

    @property
    def rect_rows(self) -> int:
        return self.bh + 2 * self.ry

    @property
    def band_width(self) -> int:
        return self.bw + 2 * self.rx

    @property
    def padded_rows(self) -> int:
        return self.nby * self.bh + 2 * self.ry

    @property
    def queries(self) -> int:
        return self.bh * self.bw

    @property
    def keys(self) -> int:
        return self.rect_rows * self.band_width


def _make_tiling(
    h: int, w: int, radius: int, block: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> _Tiling:
    bh, bw = min(block[0], h), min(block[1], w)
    ry, rx = min(radius, h - 1), min(radius, w - 1)
    nby, nbx = math.ceil(h / bh), math.ceil(w / bw)
    rows, cols = bh + 2 * ry, bw + 2 * rx
    # Offsets of query cells inside a block and of key cells inside a rectangle, relative to the
    # block's top-left cell.
    qy, qx = torch.meshgrid(torch.arange(bh), torch.arange(bw), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(rows) - ry, torch.arange(cols) - rx, indexing="ij")
    qy, qx, ky, kx = qy.flatten(), qx.flatten(), ky.flatten(), kx.flatten()
    in_window = ((ky[None] - qy[:, None]).abs() <= radius) & ((kx[None] - qx[:, None]).abs() <= radius)
    # Absolute key coordinates per block: (nbx, nby, R).
    abs_y = (torch.arange(nby) * bh)[None, :, None] + ky[None, None, :]
    abs_x = (torch.arange(nbx) * bw)[:, None, None] + kx[None, None, :]
    on_grid = (abs_y >= 0) & (abs_y < h) & (abs_x >= 0) & (abs_x < w)
    key_cell = abs_y.clamp(0, h - 1) * w + abs_x.clamp(0, w - 1)
    return _Tiling(
        h=h,
        w=w,
        bh=bh,
        bw=bw,
        ry=ry,
        rx=rx,
        nby=nby,
        nbx=nbx,
        window_bias=_bias(in_window, dtype, device).view(bh * bw, rows, 1, cols),
        grid_bias=_bias(on_grid, dtype, device).view(nbx, nby, 1, rows, 1, cols),
        key_cell=key_cell.to(device),
    )


def _bias(keep: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """0 where ``keep``, -inf elsewhere."""
    return torch.zeros(keep.shape, dtype=dtype).masked_fill_(~keep, float("-inf")).to(device)


def _to_blocks(grid: torch.Tensor, t: _Tiling) -> torch.Tensor:
    """(h, w, D) -> (nbx, nby, Q, D), zero-padding the grid up to whole blocks."""
    d = grid.shape[-1]
    padded = F.pad(grid, (0, 0, 0, t.nbx * t.bw - t.w, 0, t.nby * t.bh - t.h))
    blocks = padded.reshape(t.nby, t.bh, t.nbx, t.bw, d).permute(2, 0, 1, 3, 4)
    return blocks.reshape(t.nbx, t.nby, t.queries, d)


def _from_blocks(blocks: torch.Tensor, t: _Tiling) -> torch.Tensor:
    """(nbx, nby, Q, D) -> (D, h, w), dropping the padding cells."""
    d = blocks.shape[-1]
    grid = blocks.reshape(t.nbx, t.nby, t.bh, t.bw, d).permute(4, 1, 2, 0, 3)
    return grid.reshape(d, t.nby * t.bh, t.nbx * t.bw)[:, : t.h, : t.w]


def _to_bands(grid: torch.Tensor, t: _Tiling) -> torch.Tensor:
    """(C, h, w) -> (nbx, C, padded_rows, band_width): overlapping, zero-padded column bands."""
    padded = F.pad(grid, (t.rx, t.nbx * t.bw + t.rx - t.w, t.ry, t.padded_rows - t.ry - t.h))
    # unfold -> (C, padded_rows, nbx, band_width)
    return padded.unfold(2, t.band_width, t.bw).permute(2, 0, 1, 3).contiguous()


def _key_rects(band: torch.Tensor, t: _Tiling) -> torch.Tensor:
    """One band of a chunk, (C, padded_rows, slots, band_width) -> (nby, C, rect_rows * slots * band_width).

    The key rectangle of a row block is a run of whole band rows (each holding every slot), so it
    is a plain strided matrix: no copy.
    """
    c, _, slots, width = band.shape
    row = slots * width
    return band.as_strided((t.nby, c, t.rect_rows * row), (t.bh * row, t.padded_rows * row, 1))


def _grouped_topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over the last two dims of x (..., groups, G), as values and flat indices g * G + i.

    Exact and cheaper than one top-k over groups * G values: the k largest values lie in the k
    groups with the largest maxima (a group holding one of them has a maximum at least as large as
    the k-th value, and at most k groups can), so only those k * G values are searched.
    """
    groups, size = x.shape[-2:]
    kg = min(k, groups)
    _, top_groups = x.amax(-1).topk(kg, dim=-1)  # (..., kg)
    idx = top_groups.unsqueeze(-1).expand(*top_groups.shape, size)
    candidates = x.gather(-2, idx).flatten(-2)  # (..., kg * G)
    values, local = candidates.topk(k, dim=-1)
    return values, top_groups.gather(-1, local // size) * size + local % size


def _matmul(queries: torch.Tensor, rects: torch.Tensor, out: torch.Tensor) -> None:
    """out[b] = queries[b] @ rects[b] for every row block b.

    One batched matmul, except for reduced precision on CPU: there oneDNN's batched path copies
    the overlapping key rectangles first (measured 4x slower than a loop of 2-D matmuls).
    """
    if out.dtype == torch.float32 or out.device.type != "cpu":
        torch.bmm(queries, rects, out=out)
    else:
        for b in range(out.shape[0]):
            torch.mm(queries[b], rects[b], out=out[b])


def _topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over the last two dims of x (..., groups, G) as (values, flat indices)."""
    if x.dtype == torch.float32:
        return _grouped_topk(x, k)
    return x.flatten(-2).topk(k, dim=-1)  # grouping does not pay off with 16-bit values (slow amax)


# --------------------------------------------------------------------------- validation


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def _check_options(context: int, radius: int, topk: int, temperature: float, compute_dtype: torch.dtype | None) -> None:
    for name, value, low in (("context", context, 0), ("radius", radius, 0), ("topk", topk, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not 0 < temperature < math.inf:
        raise InputError(f"temperature must be a finite number > 0, got {temperature!r}")
    if compute_dtype not in (None, torch.float32, *_REDUCED_DTYPES):
        raise InputError(
            f"compute_dtype must be None, torch.float32, torch.bfloat16 or torch.float16, got {compute_dtype}"
        )


def _check_block(block_size: tuple[int, int]) -> tuple[int, int]:
    if (
        not isinstance(block_size, (tuple, list))
        or len(block_size) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in block_size)
    ):
        raise InputError(f"block_size must be two integers >= 1 (rows, columns), got {block_size!r}")
    return int(block_size[0]), int(block_size[1])


def _check_frame(features: object, what: str, expected_chw: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Validate one (C, h, w) feature map; return it as float32 (same device)."""
    if not isinstance(features, torch.Tensor) or features.dim() != 3:
        raise InputError(f"{what}: expected a feature tensor of shape (C, h, w), got {_shape(features)}")
    if not features.is_floating_point():
        raise InputError(f"{what}: expected floating-point features, got dtype {features.dtype}")
    if expected_chw is not None and tuple(features.shape) != expected_chw:
        raise InputError(f"{what}: expected features of shape (C, h, w) = {expected_chw}, got {tuple(features.shape)}")
    if min(features.shape) == 0:
        raise InputError(f"{what}: features must not be empty, got shape {tuple(features.shape)}")
    if not bool(torch.isfinite(features).all()):
        raise InputError(f"{what}: features contain NaN or inf")
    return features.float()


def _check_labels(labels: object, what: str, hw: tuple[int, int], k: int | None, device: torch.device) -> torch.Tensor:
    """Validate a (K, h, w) soft label map; return it as float32 on ``device``."""
    if not isinstance(labels, torch.Tensor) or labels.dim() != 3:
        raise InputError(f"{what}: expected soft labels of shape (K, h, w), got {_shape(labels)}")
    if tuple(labels.shape[1:]) != hw:
        raise InputError(
            f"{what}: labels must cover the feature grid (h, w) = {hw}, got labels of shape {tuple(labels.shape)}"
        )
    if labels.shape[0] == 0 or (k is not None and labels.shape[0] != k):
        expected = "at least one channel" if k is None else f"{k} channels"
        raise InputError(f"{what}: expected labels with {expected}, got shape {tuple(labels.shape)}")
    if labels.is_complex():
        raise InputError(f"{what}: expected real-valued labels, got dtype {labels.dtype}")
    labels = labels.to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(labels).all()):
        raise InputError(f"{what}: labels contain NaN or inf")
    return labels


# --------------------------------------------------------------------------- context storage


class _ContextStore:
    """All context frames ("slots"): key bands in chunks, labels and float32 features in one tensor each.

    A chunk (nbx, C, padded_rows, slots, band_width) holds up to ``_SLOTS_PER_CHUNK`` frames
    interleaved along the band width: one band row holds that row of every slot of the chunk, so
    the key rectangles of all its slots form one strided matrix and one matmul per (band, chunk)
    covers them all. Slot i of the store is slot i - (slots of earlier chunks) of its chunk.
    """

    def __init__(self) -> None:
        self.chunks: list[torch.Tensor] = []
        self.labels: torch.Tensor | None = None  # (slots, h*w, K) float32
        self.features: torch.Tensor | None = None  # (slots, h*w, C) float32, only to refine reduced precision

    @property
    def slots(self) -> int:
        return sum(c.shape[3] for c in self.chunks)

    def add(self, bands: torch.Tensor, labels: torch.Tensor, features: torch.Tensor | None) -> int:
        """Store one frame ((nbx, C, rows, 1, width) bands, (1, h*w, K) labels, (1, h*w, C) features
        or None) in a new slot; return its index. Growing a chunk copies it (only while filling up)."""
        index = self.slots
        if self.chunks and self.chunks[-1].shape[3] < _SLOTS_PER_CHUNK:
            self.chunks[-1] = torch.cat([self.chunks[-1], bands], dim=3)
        else:
            self.chunks.append(bands)
        self.labels = labels if self.labels is None else torch.cat([self.labels, labels])
        if features is not None:
            self.features = features if self.features is None else torch.cat([self.features, features])
        return index

    def replace(self, index: int, bands: torch.Tensor, labels: torch.Tensor, features: torch.Tensor | None) -> None:
        """Overwrite slot ``index`` in place with one frame (same layout as :meth:`add`)."""
        assert self.labels is not None
        self.labels[index].copy_(labels[0])
        if features is not None and self.features is not None:
            self.features[index].copy_(features[0])
        for chunk in self.chunks:
            if index < chunk.shape[3]:
                chunk[:, :, :, index].copy_(bands[:, :, :, 0])
                return
            index -= chunk.shape[3]
        raise IndexError(index)


@dataclass
class _Query:
    blocks: torch.Tensor  # (nbx, nby, Q, C) compute dtype
    flat: torch.Tensor | None  # (nbx*nby*Q, C) float32, only for refinement


@dataclass
class _Picks:
    """Selected candidates per query, (nbx, nby, Q, k) each."""

    cos: torch.Tensor  # similarity; -inf for a padding or out-of-window pick
    slot: torch.Tensor  # int64 context slot
    cell: torch.Tensor  # int64 flat grid cell y * w + x

    def take(self, index: torch.Tensor) -> _Picks:
        return _Picks(self.cos.gather(-1, index), self.slot.gather(-1, index), self.cell.gather(-1, index))

    def best(self, k: int) -> _Picks:
        """The k picks with the largest cosines."""
        if self.cos.shape[-1] <= k:
            return self
        return self.take(self.cos.topk(k, dim=-1).indices)


# --------------------------------------------------------------------------- the streaming propagator


class LabelPropagator:
    """Streaming label propagation: feed frames one by one with :meth:`step`.

    Holds only the context (frame 0, anchors and the last ``context`` frames), so memory does not
    grow with the video. See the module docstring for the exact semantics.

    Args:
        first_features: (C, h, w) features of frame 0, any floating dtype, on any device.
        first_labels: (K, h, w) soft labels of frame 0 (moved to the features' device).
        context: number of previous frames kept besides frame 0 and the anchors.
        radius: half-size of the square search window, in feature cells.
        topk: number of candidates kept per query, jointly over all context frames.
        temperature: softmax temperature on the cosines.
        compute_dtype: dtype of the similarity matmul (None = float32).
        block_size: (rows, columns) of a query block; None = :func:`default_block_size`; any value
            gives the same result, only speed and memory change.
    """

    @torch.no_grad()
    def __init__(
        self,
        first_features: torch.Tensor,
        first_labels: torch.Tensor,
        *,
        context: int = 20,
        radius: int = 12,
        topk: int = 10,
        temperature: float = 0.07,
        compute_dtype: torch.dtype | None = None,
        block_size: tuple[int, int] | None = None,
    ) -> None:
        _check_options(context, radius, topk, temperature, compute_dtype)
        first = _check_frame(first_features, "frame 0")
        self._chw = tuple(first.shape)
        self._device = first.device
        labels = _check_labels(first_labels, "frame 0", self._chw[1:], None, self._device)
        self._num_labels = labels.shape[0]
        self.context, self.radius, self.topk = int(context), int(radius), int(topk)
        self.temperature = float(temperature)
        self.compute_dtype = compute_dtype or torch.float32
        block = _check_block(block_size) if block_size is not None else default_block_size(self.radius)
        self._tiling = _make_tiling(*self._chw[1:], self.radius, block, self._device, self.compute_dtype)
        self._store = _ContextStore()
        self._fixed: list[int] = [self._store.add(*self._frame(self._normalise(first), labels))]
        self._recent: deque[int] = deque()  # slots of the previous frames, oldest first
        self._frames_seen = 1

    # ----------------------------------------------------------------- public

    @property
    def num_context_frames(self) -> int:
        """Number of frames the next target will be compared with."""
        return len(self._fixed) + len(self._recent)

    @property
    def frames_seen(self) -> int:
        """Frames given so far (frame 0 included, anchors excluded)."""
        return self._frames_seen

    @torch.no_grad()
    def add_anchor(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a frame with known labels as fixed context, like frame 0, for every later :meth:`step`.

        To re-anchor at frame t (e.g. a corrected mask), call ``add_anchor(features_t, labels_t)``
        *instead of* ``step(features_t)``: the frame is then in the context once, with the given
        labels. (Calling both would put the same features in the context twice, with the predicted
        and the given labels, and ties between the two copies would be broken arbitrarily.)

        Args:
            features: (C, h, w) features of the anchor frame (same C, h, w as frame 0).
            labels: (K, h, w) soft labels of that frame (same K as frame 0).
        """
        what = f"anchor {len(self._fixed)}"
        feats = _check_frame(features, what, self._chw)
        self._check_device(feats, what)
        labels = _check_labels(labels, what, self._chw[1:], self._num_labels, self._device)
        self._fixed.append(self._store.add(*self._frame(self._normalise(feats), labels)))

    @torch.no_grad()
    def step(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagate labels to the next frame and add it to the context.

        Args:
            features: (C, h, w) features of the next frame, on the device of frame 0.

        Returns:
            (labels, confidence): (K, h, w) soft labels and (h, w) confidence, float32.
        """
        what = f"frame {self._frames_seen}"
        feats = _check_frame(features, what, self._chw)
        self._check_device(feats, what)
        normalised = self._normalise(feats)
        labels, confidence = self._predict(normalised)
        self._remember(self._frame(normalised, labels))
        self._frames_seen += 1
        return labels, confidence

    def first_frame_output(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame 0's (labels, confidence): its labels as float32 (K, h, w) and a confidence of 1."""
        h, w = self._chw[1:]
        assert self._store.labels is not None
        first = self._store.labels[self._fixed[0]]
        return first.t().reshape(self._num_labels, h, w).clone(), torch.ones((h, w), device=self._device)

    # ----------------------------------------------------------------- internals

    def _check_device(self, features: torch.Tensor, what: str) -> None:
        if features.device != self._device:
            raise InputError(f"{what}: features are on {features.device}, expected {self._device} like frame 0")

    @staticmethod
    def _normalise(features: torch.Tensor) -> torch.Tensor:
        """(C, h, w) float32, unit length along C (zero vectors stay zero)."""
        return F.normalize(features, dim=0)

    @property
    def _refine(self) -> bool:
        return self.compute_dtype != torch.float32

    def _frame(
        self, normalised: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One context frame in the layout of :meth:`_ContextStore.add`."""
        k = labels.shape[0]
        return (
            _to_bands(normalised.to(self.compute_dtype), self._tiling).unsqueeze(3),
            labels.reshape(1, k, -1).transpose(1, 2).contiguous(),
            normalised.flatten(1).t().unsqueeze(0).contiguous() if self._refine else None,
        )

    def _remember(self, frame: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]) -> None:
        """Put a predicted frame in the window of previous frames, evicting the oldest if full."""
        if self.context == 0:
            return
        if len(self._recent) == self.context:
            slot = self._recent.popleft()
            self._store.replace(slot, *frame)
        else:
            slot = self._store.add(*frame)
        self._recent.append(slot)

    def _predict(self, normalised: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self._tiling
        blocks = _to_blocks(normalised.permute(1, 2, 0), t)
        query = _Query(
            blocks=blocks.to(self.compute_dtype),
            flat=blocks.reshape(-1, blocks.shape[-1]) if self._refine else None,
        )
        picks = self._select(query)
        if self._refine:
            picks = self._exact(query, picks).best(self.topk)
        valid = torch.isfinite(picks.cos)
        weights = torch.softmax(torch.where(valid, picks.cos / self.temperature, float("-inf")), dim=-1)
        assert self._store.labels is not None
        picked = self._store.labels.flatten(0, 1)[picks.slot * (t.h * t.w) + picks.cell]  # (nbx, nby, Q, k, K)
        labels = (weights.unsqueeze(-1) * picked).sum(-2)
        confidence = (weights * torch.where(valid, picks.cos, 0.0)).sum(-1, keepdim=True)
        return _from_blocks(labels, t).contiguous(), _from_blocks(confidence, t)[0].contiguous()

    def _select(self, query: _Query) -> _Picks:
        """Joint top-k over all context slots: per (band, chunk) top-k, then top-k of their union.

        The union of per-chunk top-k's contains the joint top-k, so this is exact. k is topk (times
        ``_OVERSAMPLE`` with a reduced dtype), at most the number of candidates.
        """
        t = self._tiling
        k = self.topk * (_OVERSAMPLE if self._refine else 1)
        parts, first_slot = [], 0
        for chunk in self._store.chunks:
            parts.append(self._select_chunk(query, chunk, first_slot, k))
            first_slot += chunk.shape[3]
        if len(parts) == 1:
            return parts[0]
        union = _Picks(*(torch.cat([getattr(p, f) for p in parts], dim=-1) for f in ("cos", "slot", "cell")))
        return union.best(min(k, self._store.slots * t.keys))

    def _select_chunk(self, query: _Query, chunk: torch.Tensor, first_slot: int, k: int) -> _Picks:
        """Top-k candidates among the slots of one chunk, band by band."""
        t = self._tiling
        g = chunk.shape[3]
        k = min(k, g * t.keys)
        shape = (t.nbx, t.nby, t.queries, k)
        cos = torch.empty(shape, dtype=self.compute_dtype, device=self._device)
        flat_idx = torch.empty(shape, dtype=torch.int64, device=self._device)
        # Similarities of a run of row blocks: (rows, Q, rect_rows, g, band_width).
        per_row_block = t.queries * g * t.keys * cos.element_size()
        step = max(1, min(t.nby, _SIMS_BUDGET // per_row_block))
        buffer = torch.empty((step, t.queries, g * t.keys), dtype=self.compute_dtype, device=self._device)
        for j in range(t.nbx):
            rects = _key_rects(chunk[j], t)
            for b0 in range(0, t.nby, step):
                b1 = min(b0 + step, t.nby)
                sims = buffer[: b1 - b0]
                _matmul(query.blocks[j, b0:b1], rects[b0:b1], sims)
                shaped = sims.view(b1 - b0, t.queries, t.rect_rows, g, t.band_width)
                shaped.add_(t.window_bias + t.grid_bias[j, b0:b1])
                groups = sims.view(b1 - b0, t.queries, t.rect_rows * g, t.band_width)
                cos[j, b0:b1], flat_idx[j, b0:b1] = _topk(groups, k)
        # flat index = (rect_row * g + slot) * band_width + column
        row, rem = flat_idx // (g * t.band_width), flat_idx % (g * t.band_width)
        slot, col = rem // t.band_width, rem % t.band_width
        rect_idx = row * t.band_width + col
        cell = torch.gather(t.key_cell[:, :, None, :].expand(-1, -1, t.queries, -1), 3, rect_idx)
        return _Picks(cos, slot + first_slot, cell)

    def _exact(self, query: _Query, picks: _Picks) -> _Picks:
        """Recompute the picked cosines in float32 (reduced-precision path)."""
        assert query.flat is not None and self._store.features is not None
        hw, c = self._tiling.h * self._tiling.w, query.flat.shape[-1]
        keys = self._store.features.view(-1, c)[picks.slot * hw + picks.cell]  # (nbx, nby, Q, k, C)
        exact = torch.matmul(keys, query.flat.view(*picks.cos.shape[:3], c, 1)).squeeze(-1)
        return _Picks(torch.where(torch.isfinite(picks.cos), exact, float("-inf")), picks.slot, picks.cell)


# --------------------------------------------------------------------------- whole-video helpers


def propagate_stream(
    features: Iterable[torch.Tensor],
    labels: torch.Tensor,
    *,
    context: int = 20,
    radius: int = 12,
    topk: int = 10,
    temperature: float = 0.07,
    compute_dtype: torch.dtype | None = None,
    block_size: tuple[int, int] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Stream label propagation over an iterable of (C, h, w) feature maps (frame 0 first).

    Yields (labels, confidence) per frame, (K, h, w) and (h, w) float32, frame 0 included (its labels
    as given, confidence 1). Only the context is held, so memory does not grow with the video.
    """
    frames = iter(features)
    try:
        first = next(frames)
    except StopIteration:
        raise InputError("features: expected at least one frame, got none") from None
    propagator = LabelPropagator(
        first,
        labels,
        context=context,
        radius=radius,
        topk=topk,
        temperature=temperature,
        compute_dtype=compute_dtype,
        block_size=block_size,
    )
    yield propagator.first_frame_output()
    for feats in frames:
        yield propagator.step(feats)


def propagate(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    context: int = 20,
    radius: int = 12,
    topk: int = 10,
    temperature: float = 0.07,
    compute_dtype: torch.dtype | None = None,
    block_size: tuple[int, int] | None = None,
    return_confidence: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Propagate frame 0's soft labels through a video.

    Args:
        features: (T, C, h, w) features of all frames.
        labels: (K, h, w) soft labels of frame 0.
        context, radius, topk, temperature, compute_dtype, block_size: see :class:`LabelPropagator`.
        return_confidence: also return the (T, h, w) confidence maps.

    Returns:
        (T, K, h, w) float32 soft labels, frame 0 unchanged; with ``return_confidence`` a tuple
        (labels, confidence).
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 4:
        raise InputError(f"features: expected a tensor of shape (T, C, h, w), got {_shape(features)}")
    if features.shape[0] == 0:
        raise InputError(f"features: expected at least one frame, got shape {tuple(features.shape)}")
    if features.is_floating_point():
        bad = (~torch.isfinite(features).flatten(1).all(1)).nonzero()
        if bad.numel():
            raise InputError(f"frame {int(bad[0])}: features contain NaN or inf")
    t_len, _, h, w = features.shape
    out_labels: torch.Tensor | None = None
    out_conf = torch.empty((t_len, h, w), device=features.device)
    stream = propagate_stream(
        features.unbind(0),
        labels,
        context=context,
        radius=radius,
        topk=topk,
        temperature=temperature,
        compute_dtype=compute_dtype,
        block_size=block_size,
    )
    for t, (lab, conf) in enumerate(stream):
        if out_labels is None:
            out_labels = torch.empty((t_len, *lab.shape), device=lab.device)
        out_labels[t] = lab
        out_conf[t] = conf
    assert out_labels is not None
    return (out_labels, out_conf) if return_confidence else out_labels
