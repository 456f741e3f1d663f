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
  on CUDA, float16 to go faster). With a reduced dtype it only selects the candidates: the cosines
  of the k selected ones are recomputed in float32 before the softmax. Outputs are always float32,
  on the device of the features.

Speed. The dense formulation compares every query with every context cell, (h·w) x (n·h·w) per
frame. Here the query grid is tiled into blocks of ``bh x bw`` cells; a block only needs the key
rectangle of (bh + 2r) x (bw + 2r) cells its windows cover. Each context frame is stored once as
overlapping column bands of width bw + 2r (zero-padded at the borders), so every block's key rectangle
is a contiguous slice and one batched matmul per (band, context frame) computes all row blocks of a
band with no copy. Out-of-window and padding cells get -inf, then one top-k per query runs over the
candidates of all context frames at once. Memory is bounded by the context, not the video length.
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

__all__ = ["propagate", "iter_propagate", "LabelPropagator", "default_block_size"]

_REDUCED_DTYPES = (torch.bfloat16, torch.float16)
# With a reduced compute dtype, this many times topk candidates are preselected, their cosines
# recomputed in float32, and the final top-k taken among them: rounding then rarely changes the set.
_OVERSAMPLE = 2
# Upper bound on the similarity buffer of one chunk of row blocks (bytes); bounds the peak memory
# independently of grid size and radius.
_SIMS_BUDGET = 96 * 2**20


def default_block_size(radius: int) -> tuple[int, int]:
    """Query block (rows, columns) used when ``block_size`` is not given.

    Measured at DAVIS scale (60x107 cells, C=256, radius 12, 21 context frames) on a 2-core AVX-512
    CPU, single-thread CPU time per frame, fp32: (4, 8) 0.90 s, (8, 8) 1.02 s, (4, 16) 1.04 s,
    (10, 12) 1.08 s, (6, 16) 1.11 s, (8, 16) 1.23 s; bf16: 0.44-0.46 s for (4, 16), (8, 8),
    (10, 12). Smaller blocks waste fewer similarities on window corners; narrower blocks duplicate
    more key columns in the cached bands ((bw + 2r) / bw). (4, 16) is within 15 % of the fastest with
    40 % less context memory than (4, 8). For large radii the block widens with the radius to keep
    that duplication near 3x. Not measured on a GPU.
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
    window_bias: torch.Tensor  # (Q, 1, R): 0 where the key is in the query's window, else -inf
    grid_bias: torch.Tensor  # (nbx, nby, 1, 1, R): 0 where the key is on the grid, -inf on padding
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
        h=h, w=w, bh=bh, bw=bw, ry=ry, rx=rx, nby=nby, nbx=nbx,
        window_bias=_bias(in_window, dtype, device).unsqueeze(1),
        grid_bias=_bias(on_grid, dtype, device)[:, :, None, None, :],
        key_cell=key_cell.to(device),
    )  # fmt: skip


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
    """One (C, padded_rows, band_width) band -> (nby, C, R) view: the key rectangle of each row block.

    A rectangle is a run of whole band rows, so it is a plain strided matrix (no copy).
    """
    c = band.shape[0]
    row = t.band_width
    return band.as_strided((t.nby, c, t.keys), (t.bh * row, t.padded_rows * row, 1))


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
        raise InputError(f"compute_dtype must be None, torch.float32, torch.bfloat16 or torch.float16, got {compute_dtype}")


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
        raise InputError(f"{what}: labels must cover the feature grid (h, w) = {hw}, got labels of shape {tuple(labels.shape)}")
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


@dataclass
class _ContextFrame:
    bands: torch.Tensor  # (nbx, C, padded_rows, band_width), compute dtype
    labels: torch.Tensor  # (h*w, K) float32
    features: torch.Tensor | None  # (h*w, C) float32, kept only to refine reduced-precision cosines


@dataclass
class _Query:
    blocks: torch.Tensor  # (nbx, nby, Q, C) compute dtype
    flat: torch.Tensor | None  # (nbx*nby*Q, C) float32, only for refinement


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
        self.radius, self.topk, self.temperature = int(radius), int(topk), float(temperature)
        self.compute_dtype = compute_dtype or torch.float32
        block = _check_block(block_size) if block_size is not None else default_block_size(self.radius)
        self._tiling = _make_tiling(*self._chw[1:], self.radius, block, self._device, self.compute_dtype)
        self._fixed: list[_ContextFrame] = [self._store(self._normalise(first), labels)]
        self._recent: deque[_ContextFrame] = deque(maxlen=int(context))
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
        self._fixed.append(self._store(self._normalise(feats), labels))

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
        self._recent.append(self._store(normalised, labels))
        self._frames_seen += 1
        return labels, confidence

    def first_frame_output(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame 0's (labels, confidence): its labels as float32 (K, h, w) and a confidence of 1."""
        h, w = self._chw[1:]
        labels = self._fixed[0].labels.t().reshape(self._num_labels, h, w).clone()
        return labels, torch.ones((h, w), device=self._device)

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

    def _store(self, normalised: torch.Tensor, labels: torch.Tensor) -> _ContextFrame:
        k = labels.shape[0]
        return _ContextFrame(
            bands=_to_bands(normalised.to(self.compute_dtype), self._tiling),
            labels=labels.reshape(k, -1).t().contiguous(),
            features=normalised.flatten(1).t().contiguous() if self._refine else None,
        )

    def _context(self) -> list[_ContextFrame]:
        return [*self._fixed, *self._recent]

    def _predict(self, normalised: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self._tiling
        ctx = self._context()
        blocks = _to_blocks(normalised.permute(1, 2, 0), t)
        query = _Query(
            blocks=blocks.to(self.compute_dtype),
            flat=blocks.reshape(-1, blocks.shape[-1]) if self._refine else None,
        )
        cos, frame, cell = self._select(query, ctx)
        if self._refine:
            cos = self._exact_cosines(query, ctx, cos, frame, cell)
            cos, best = cos.topk(min(self.topk, cos.shape[-1]), dim=-1)
            frame, cell = frame.gather(-1, best), cell.gather(-1, best)
        valid = torch.isfinite(cos)
        weights = torch.softmax(torch.where(valid, cos / self.temperature, float("-inf")), dim=-1)
        labels_ctx = torch.cat([c.labels for c in ctx])  # (n*h*w, K)
        picked = labels_ctx[frame * (t.h * t.w) + cell]  # (nbx, nby, Q, k, K)
        labels = (weights.unsqueeze(-1) * picked).sum(-2)
        confidence = (weights * torch.where(valid, cos, 0.0)).sum(-1, keepdim=True)
        return _from_blocks(labels, t).contiguous(), _from_blocks(confidence, t)[0].contiguous()

    def _select(
        self, query: _Query, ctx: list[_ContextFrame]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Joint top-k over all context frames, band by band.

        Returns cosines (nbx, nby, Q, k) in compute precision, -inf for padding picks, and the
        context-frame index and flat grid cell of each pick (int64, same shape). k is topk (times
        ``_OVERSAMPLE`` with a reduced dtype), at most the number of candidates.
        """
        t = self._tiling
        n = len(ctx)
        k = min(self.topk * (_OVERSAMPLE if self._refine else 1), n * t.keys)
        shape = (t.nbx, t.nby, t.queries, k)
        cos = torch.empty(shape, dtype=self.compute_dtype, device=self._device)
        pick = torch.empty(shape, dtype=torch.int64, device=self._device)
        # Similarities of a chunk of row blocks of one band: (rows, Q, n, R); each context frame
        # writes its (rows, Q, R) slice, so one top-k covers all context frames.
        per_row_block = t.queries * n * t.keys * cos.element_size()
        chunk = max(1, min(t.nby, _SIMS_BUDGET // per_row_block))
        buffer = torch.empty((chunk, t.queries, n, t.keys), dtype=self.compute_dtype, device=self._device)
        for j in range(t.nbx):
            rects = [_key_rects(frame.bands[j], t) for frame in ctx]
            for b0 in range(0, t.nby, chunk):
                b1 = min(b0 + chunk, t.nby)
                sims = buffer[: b1 - b0]
                for s, rect in enumerate(rects):
                    torch.bmm(query.blocks[j, b0:b1], rect[b0:b1], out=sims[:, :, s])
                sims.add_(t.window_bias + t.grid_bias[j, b0:b1])
                rows = sims.view(b1 - b0, t.queries, n * t.rect_rows, t.band_width)
                cos[j, b0:b1], pick[j, b0:b1] = _grouped_topk(rows, k)
        frame_idx = pick // t.keys
        rect_idx = pick % t.keys
        cell = torch.gather(t.key_cell[:, :, None, :].expand(-1, -1, t.queries, -1), 3, rect_idx)
        return cos, frame_idx, cell

    def _exact_cosines(
        self, query: _Query, ctx: list[_ContextFrame], cos: torch.Tensor, frame: torch.Tensor, cell: torch.Tensor
    ) -> torch.Tensor:
        """Recompute the selected cosines in float32 (reduced-precision path)."""
        assert query.flat is not None
        exact = cos.float()
        q_index = torch.arange(query.flat.shape[0], device=self._device).view(*cos.shape[:3], 1).expand_as(cos)
        valid = torch.isfinite(exact)
        for s, entry in enumerate(ctx):
            assert entry.features is not None
            sel = valid & (frame == s)
            exact[sel] = (query.flat[q_index[sel]] * entry.features[cell[sel]]).sum(-1)
        return exact


# --------------------------------------------------------------------------- whole-video helpers


def iter_propagate(
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
        first, labels, context=context, radius=radius, topk=topk, temperature=temperature,
        compute_dtype=compute_dtype, block_size=block_size,
    )  # fmt: skip
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
    stream = iter_propagate(
        features.unbind(0), labels, context=context, radius=radius, topk=topk, temperature=temperature,
        compute_dtype=compute_dtype, block_size=block_size,
    )  # fmt: skip
    for t, (lab, conf) in enumerate(stream):
        if out_labels is None:
            out_labels = torch.empty((t_len, *lab.shape), device=lab.device)
        out_labels[t] = lab
        out_conf[t] = conf
    assert out_labels is not None
    return (out_labels, out_conf) if return_confidence else out_labels
