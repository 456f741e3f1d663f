"""Windowed space-time label propagation: the core kernel.

Semantics (fixed; tests compare against a dense reference implementing exactly this):

- **Features** of every frame, shape (C, h, w), come from any encoder and are L2-normalised along C
  here in float32 (``torch.nn.functional.normalize``), so similarities are cosines of those float32
  vectors (normalising already-normalised features is harmless). A zero feature vector stays zero
  and has cosine 0 with everything.
- **Context** of target frame t: frame 0, the *anchors* (extra fixed frames added with
  :meth:`LabelPropagator.add_anchor`), and the previous frames max(1, t - context) ... t - 1. Every
  frame appears once: frame 0 is never duplicated (unlike the official code, which repeats it early
  in the video), and an anchor is not also put in the window of previous frames.
- **Candidates** of a query cell (y, x): in every context frame, frame 0 included, the cells of the
  square window |dy| <= radius, |dx| <= radius around (y, x), clipped at the borders of the grid.
- **Top-k jointly** over the candidates of all context frames, ranked by their exact cosine (see
  *Ranking*); weights = softmax(cosine / temperature) over those k; prediction = weighted sum of
  the candidates' soft labels. If fewer than k candidates exist (tiny grid, radius 0, a single
  context frame), all of them are used. There is always at least one (the same cell in frame 0),
  so the result is never NaN.
- **Feedback**: the soft prediction (never arg-maxed) becomes the label of frame t for later targets.
- **Confidence** of a query cell: the softmax-weighted mean cosine of its selected candidates, in
  [-1, 1]; high where the cell found close matches. Frames given with labels (frame 0, anchors) have
  confidence 1.
- **Ranking**: the top-k is the one exact arithmetic would give, whatever the compute dtype and
  block size, so results do not depend on them (nor on the order of floating-point sums). Cosines
  are computed in ``compute_dtype`` (:func:`default_compute_dtype`: bfloat16 on CPUs that multiply
  it natively, float32 elsewhere; float16 is an option on CUDA) and :func:`cosine_error_bound`
  bounds their error (input and output rounding, float32 sums). Each query keeps its 3k best
  candidates (:func:`_preselect_count`; in a reduced dtype their cosines are then recomputed in
  float32). If the bound puts every candidate left out below the k-th kept one, the top-k is among
  them; otherwise the query is selected again keeping ``_WIDE_PRESELECT`` x k, and if even that
  cannot be certified in a reduced dtype, in float32 over all its candidates. Where the k-th and
  (k+1)-th kept cosines are closer than float32 rounding can separate, the kept candidates are
  ranked again in float64. Left in arbitrary order: candidates with equal float64 cosines, and
  groups of more than ``_WIDE_PRESELECT`` x k candidates within float32 rounding of the k-th (both
  only with near-duplicate frames). Outputs are float32, on the device of the features.

Speed. The dense formulation compares every query with every context cell, (h·w) x (n·h·w) per
frame. Here the query grid is tiled into blocks of bh x bw cells (:func:`default_block_size`); a
block only needs the key rectangle of (bh + 2r) x (bw + 2r) cells its windows cover. Each context
frame is stored once as overlapping column bands of width bw + 2r (zero-padded at the borders), and
up to 8 frames share a chunk in which their band rows are interleaved, so the key rectangles of a
row block in all frames of a chunk form one strided matrix: one batched matmul per (band, chunk)
covers every row block and frame with no copy. Out-of-window and padding cells get -inf; a top-k
per (band, chunk) then a top-k over their union gives the joint top-k exactly. Memory is bounded by
the context (its features in float32 for exact ranking, plus the bands: (bw + 2r) / bw times the
features in ``compute_dtype``, plus a similarity buffer of at most ``_SIMS_BUDGET`` bytes), not by
the video length.
"""

from __future__ import annotations

import logging
import numbers
from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from stcorr.errors import InputError
from stcorr.propagation._backend import resolve_backend
from stcorr.propagation._ranking import (
    CPU_BF16_ENV,
    _ieee_matmuls,
    _matmul,
    _Picks,
    _topk,
    _union,
    cosine_error_bound,
    cpu_has_native_bf16,
    default_compute_dtype,
    rounding_error,
)
from stcorr.propagation._store import _ContextStore, _Workspace
from stcorr.propagation._tiling import (
    _from_blocks,
    _key_rects,
    _make_tiling,
    _to_bands,
    _to_blocks,
    default_block_size,
)
from stcorr.propagation.options import PropagationOptions, resolve_options

__all__ = [
    "propagate",
    "propagate_stream",
    "LabelPropagator",
    "default_block_size",
    "default_compute_dtype",
    "cpu_has_native_bf16",
    "CPU_BF16_ENV",
    "cosine_error_bound",
]

_log = logging.getLogger(__name__)

# Upper bound on the similarity buffer of one chunk of row blocks (bytes); bounds the peak memory
# independently of grid size and radius.
_SIMS_BUDGET = 96 * 2**20


def _preselect_count(topk: int) -> int:
    """Candidates per query kept from the compute-dtype similarities before exact ranking.

    More makes the certificate fail less often (the block is then selected again, wider) but costs
    more top-k work and, in a reduced dtype, more float32 recomputation (measurements:
    ``benchmarks/tuning.md``).
    """
    return 3 * topk


# With an automatic compute dtype (None), switch from bfloat16 to float32 for the rest of the video once at
# least _SWITCH_AFTER frames are predicted and, on average over them, more than _SWITCH_TO_FLOAT32 of the query
# blocks had to be selected again: features so alike that most cosines lie within bfloat16 rounding of each
# other (measured shares: benchmarks/tuning.md).
_SWITCH_TO_FLOAT32 = 0.5
_SWITCH_AFTER = 3
# Candidates kept per query (x topk) when a query block is selected again because its first preselection
# could not be certified (see LabelPropagator._block_top_exact).
_WIDE_PRESELECT = 16


# --------------------------------------------------------------------------- validation


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


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


def _check_device(features: torch.Tensor, device: torch.device, what: str) -> None:
    if features.device != device:
        raise InputError(f"{what}: features are on {features.device}, expected {device} like frame 0")


def _check_labels(labels: object, what: str, hw: tuple[int, int], k: int | None, device: torch.device) -> torch.Tensor:
    """Validate a (K, h, w) soft label map; return it as float32 on ``device``."""
    if not isinstance(labels, torch.Tensor) or labels.dim() != 3:
        given = _shape(labels)
        if isinstance(labels, np.ndarray):
            given = f"a numpy array of shape {labels.shape}, dtype {labels.dtype}"
        raise InputError(
            f"{what}: expected soft labels on the feature grid, a float torch.Tensor of shape (K, h, w) = "
            f"(labels, {hw[0]}, {hw[1]}), got {given}. The kernel works on the feature grid: for an integer mask "
            "at image size use stcorr.propagate_labels(model, frames, mask), or convert it yourself with "
            "stcorr.propagation.labels.mask_to_onehot and to_grid"
        )
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


# --------------------------------------------------------------------------- the streaming propagator


class LabelPropagator:
    """Streaming label propagation: feed frames one by one with :meth:`step`.

    Holds only the context (frame 0, anchors and the last ``context`` frames), so memory does not
    grow with the video. See the module docstring for the exact semantics.

    A batch of B videos of one grid size is propagated at once when ``first_features`` is (B, C, h, w):
    ``first_labels`` is then a (B, K, h, w) tensor or a sequence of B (K_b, h, w) tensors (label counts may
    differ), every later frame (B, C, h, w), and outputs are per video: a (B, K, h, w) tensor if the labels
    were one tensor, else a list of (K_b, h, w) tensors; confidence (B, h, w). Each video's result equals
    its result alone.

    Args:
        first_features: (C, h, w) features of frame 0, any floating dtype, on any device; (B, C, h, w) for
            a batch.
        first_labels: (K, h, w) soft labels of frame 0 (moved to the features' device); per video for a batch.
        options: a :class:`~stcorr.propagation.options.PropagationOptions` (default values if None); the
            keywords below override its fields (only context, radius, topk, temperature, compute_dtype and
            backend matter here).
        context: number of previous frames kept besides frame 0 and the anchors.
        radius: half-size of the square search window, in feature cells.
        topk: number of candidates kept per query, jointly over all context frames.
        temperature: softmax temperature on the cosines.
        compute_dtype: dtype of the similarity matmuls; None = :func:`default_compute_dtype`. It
            changes only the speed, never the result (see *Ranking* in the module doc); float16 is
            very slow on most CPUs.
        block_size: (rows, columns) of a query block; None = :func:`default_block_size`; any value
            gives the same result, only speed and memory change.
        backend: None = the options' backend (default ``"auto"``); ``"auto"`` (the fused Triton kernel
            on CUDA when Triton is installed, else this module's torch kernel), ``"triton"`` or ``"torch"``; see :mod:`stcorr.propagation._backend`. The
            Triton kernel computes float32 similarities (TF32 off) whatever ``compute_dtype`` and
            ``block_size``, with the same exactness (see :mod:`stcorr.propagation._triton_kernel`).
    """

    @torch.no_grad()
    def __init__(
        self,
        first_features: torch.Tensor,
        first_labels: torch.Tensor,
        options: PropagationOptions | None = None,
        *,
        context: int | None = None,
        radius: int | None = None,
        topk: int | None = None,
        temperature: float | None = None,
        compute_dtype: torch.dtype | None = None,
        block_size: tuple[int, int] | None = None,
        backend: str | None = None,
    ) -> None:
        opts = resolve_options(
            options, context=context, radius=radius, topk=topk, temperature=temperature, compute_dtype=compute_dtype,
            backend=backend,
        )
        context, radius, topk, temperature, compute_dtype = (
            opts.context, opts.radius, opts.topk, opts.temperature, opts.compute_dtype
        )
        device = first_features.device if isinstance(first_features, torch.Tensor) else torch.device("cpu")
        self.backend = resolve_backend(opts.backend, device, topk)
        self._batch: _Batch | None = None
        if _is_batch(first_features) or self.backend == "triton":
            knobs = dict(context=context, radius=radius, topk=topk, temperature=temperature)
            self._batch = _Batch(first_features, first_labels, knobs, self.backend, compute_dtype, block_size)
            self.context, self.radius, self.topk, self.temperature = context, radius, topk, float(temperature)
            self.compute_dtype = self._batch.compute_dtype
            return
        first = _check_frame(first_features, "frame 0")
        self._chw = tuple(first.shape)
        self._device = first.device
        labels = _check_labels(first_labels, "frame 0", self._chw[1:], None, self._device)
        self._num_labels = labels.shape[0]
        self.context, self.radius, self.topk = int(context), int(radius), int(topk)
        self.temperature = float(temperature)
        self.compute_dtype = compute_dtype or default_compute_dtype(first.device)
        self._automatic_dtype = compute_dtype is None
        self._reselected_share = 0.0  # share of query blocks of the last frame selected again
        self._reselected_sum = 0.0  # sum of those shares over the frames predicted so far
        block = _check_block(block_size) if block_size is not None else default_block_size(self.radius)
        self._tiling = _make_tiling(*self._chw[1:], self.radius, block, self._device, self.compute_dtype)
        self._store = _ContextStore(capacity=1 + self.context)
        self._workspace = _Workspace(self._device)
        self._fixed: list[int] = [self._store.add(*self._frame(self._normalise(first), labels))]
        self._recent: deque[int] = deque()  # slots of the previous frames, oldest first
        self._frames_seen = 1

    # ----------------------------------------------------------------- public

    @property
    def num_context_frames(self) -> int:
        """Number of frames the next target will be compared with."""
        if self._batch is not None:
            return self._batch.num_context_frames
        return len(self._fixed) + len(self._recent)

    @property
    def frames_seen(self) -> int:
        """Frames given so far (frame 0 included, anchors excluded)."""
        if self._batch is not None:
            return self._batch.frames_seen
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

        For a batch: (B, C, h, w) features and per-video labels, as for frame 0.
        """
        if self._batch is not None:
            self._batch.add_anchor(features, labels)
            return
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
            (labels, confidence): (K, h, w) soft labels and (h, w) confidence, float32 (for a batch: per
            video, see the class doc).
        """
        if self._batch is not None:
            return self._batch.step(features)
        what = f"frame {self._frames_seen}"
        feats = _check_frame(features, what, self._chw)
        self._check_device(feats, what)
        normalised = self._normalise(feats)
        labels, confidence = self._predict(normalised)
        self._reselected_sum += self._reselected_share
        if self._automatic_dtype and self._reduced and self._frames_seen >= _SWITCH_AFTER:
            if self._reselected_sum / self._frames_seen > _SWITCH_TO_FLOAT32:
                self._switch_to_float32()
        self._remember(self._frame(normalised, labels))
        self._frames_seen += 1
        return labels, confidence

    @torch.no_grad()
    def remember(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Put a frame whose soft labels are already known into the window of previous frames, as
        :meth:`step` does after predicting it, without predicting it: resumes a pass from cached
        predictions (giving each skipped frame's features and the labels ``step`` returned for it, in order).

        Args:
            features: (C, h, w) features of the frame.
            labels: (K, h, w) its soft labels.

        For a batch (or the Triton backend): (B, C, h, w) features and per-video labels, as for frame 0.
        """
        if self._batch is not None:
            self._batch.remember(features, labels)
            return
        what = f"frame {self._frames_seen}"
        feats = _check_frame(features, what, self._chw)
        self._check_device(feats, what)
        labels = _check_labels(labels, what, self._chw[1:], self._num_labels, self._device)
        self._remember(self._frame(self._normalise(feats), labels))
        self._frames_seen += 1

    @property
    def precision_state(self) -> tuple[torch.dtype, float, int]:
        """(compute dtype, summed share of re-selected query blocks, frames seen): what the automatic
        bfloat16 -> float32 switch depends on. A pass resumed with :meth:`remember` starts from a fresh
        propagator; :meth:`resume_precision` gives it the state the original pass had at that frame."""
        if self._batch is not None:  # the batched / fused path keeps its compute dtype fixed
            return self.compute_dtype, 0.0, self._batch.frames_seen
        return self.compute_dtype, self._reselected_sum, self._frames_seen

    def resume_precision(self, state: tuple[torch.dtype, float, int]) -> None:
        """Take over a :attr:`precision_state` recorded at the frame a pass is resumed after, so the
        automatic dtype switch happens (or has happened) exactly as in the uninterrupted pass. A float32
        state switches a propagator still in a reduced dtype to float32; a fixed compute dtype stays."""
        if self._batch is not None:
            return
        dtype, reselected_sum, frames_seen = state
        self._reselected_sum, self._frames_seen = float(reselected_sum), int(frames_seen)
        if self._automatic_dtype and self._reduced and dtype == torch.float32:
            self._switch_to_float32()

    def first_frame_output(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame 0's (labels, confidence): its labels as float32 (K, h, w) and a confidence of 1."""
        if self._batch is not None:
            return self._batch.first_frame_output()
        h, w = self._chw[1:]
        first = self._store.labels[self._fixed[0]]
        return first.t().reshape(self._num_labels, h, w).clone(), torch.ones((h, w), device=self._device)

    # ----------------------------------------------------------------- internals

    def _check_device(self, features: torch.Tensor, what: str) -> None:
        _check_device(features, self._device, what)

    @staticmethod
    def _normalise(features: torch.Tensor) -> torch.Tensor:
        """(C, h, w) float32, unit length along C (zero vectors stay zero)."""
        return F.normalize(features, dim=0)

    @property
    def _reduced(self) -> bool:
        return self.compute_dtype != torch.float32

    def _frame(self, normalised: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One context frame in the layout of :meth:`_ContextStore.add`."""
        k = labels.shape[0]
        return (
            self._bands(normalised),
            labels.reshape(1, k, -1).transpose(1, 2).contiguous(),
            normalised.flatten(1).t().unsqueeze(0).contiguous(),
        )

    def _bands(self, normalised: torch.Tensor) -> torch.Tensor:
        """(C, h, w) float32 -> (nbx, C, padded_rows, 1, band_width) key bands in the compute dtype."""
        return _to_bands(normalised.to(self.compute_dtype), self._tiling).unsqueeze(3)

    def _switch_to_float32(self) -> None:
        """Use float32 similarities from now on (same results; see ``_SWITCH_TO_FLOAT32``)."""
        _log.debug(
            "%.0f %% of the query blocks needed a second selection in bfloat16: float32 from now on",
            100 * self._reselected_sum / self._frames_seen,
        )
        self.compute_dtype = torch.float32
        self._store.rebuild_bands(lambda features: self._bands(features.t().reshape(self._chw)))

    def _remember(self, frame: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
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
        queries = _to_blocks(normalised.permute(1, 2, 0), t)  # (nbx, nby, Q, C) float32
        with _ieee_matmuls(self._device):
            picks = self._top_exact(queries)
        valid = torch.isfinite(picks.cos)
        weights = torch.softmax(torch.where(valid, picks.cos / self.temperature, float("-inf")), dim=-1)
        picked = self._store.labels.flatten(0, 1)[picks.slot * (t.h * t.w) + picks.cell]  # (nbx, nby, Q, k, K)
        labels = (weights.unsqueeze(-1) * picked).sum(-2)
        confidence = (weights * torch.where(valid, picks.cos, 0.0)).sum(-1, keepdim=True)
        return _from_blocks(labels, t).contiguous(), _from_blocks(confidence, t)[0].contiguous()

    def _top_exact(self, queries: torch.Tensor) -> _Picks:
        """Each query's top-k candidates by exact cosine, best first (see "Ranking" in the module doc).

        Args:
            queries: (nbx, nby, Q, C) float32 unit query vectors, by block.
        """
        reduced = queries.to(self.compute_dtype)
        query_error = rounding_error(queries, self.compute_dtype) if self._reduced else None
        count = _preselect_count(self.topk)
        top, overflow = self._exact_among(queries, self._select(reduced, count + 1), count, query_error)
        reselect = overflow.any(-1)
        self._reselected_share = float(reselect.float().mean())
        for j, b in reselect.nonzero().tolist():
            need = overflow[j, b]
            error = None if query_error is None else query_error[j, b, need]
            redo = self._block_top_exact(queries[j, b, need], reduced[j, b, need], error, j, b, need)
            top.cos[j, b, need], top.slot[j, b, need], top.cell[j, b, need] = redo.cos, redo.slot, redo.cell
        return top

    def _block_top_exact(
        self,
        queries: torch.Tensor,
        reduced: torch.Tensor,
        query_error: torch.Tensor | None,
        j: int,
        b: int,
        need: torch.Tensor,
    ) -> _Picks:
        """Top-k by exact cosine of the queries ``need`` (a (Q,) mask; queries (n, C)) of block (band j, row
        block b), whose first preselection was too narrow: again with ``_WIDE_PRESELECT`` x topk candidates
        kept, then (reduced dtypes, still uncertified) in float32 over all candidates."""
        count = _WIDE_PRESELECT * self.topk
        selected = self._select_block(reduced, j, b, need, count + 1)
        top, overflow = self._exact_among(queries, selected, count, query_error)
        if self._reduced and bool(overflow.any()):
            top = self._block_top_float32(queries, j, b, need)
        return top

    def _exact_among(
        self, queries: torch.Tensor, selected: _Picks, count: int, query_error: torch.Tensor | None
    ) -> tuple[_Picks, torch.Tensor]:
        """:meth:`_rank` applied to the first ``count`` of the ``count + 1`` best compute-dtype candidates."""
        kept, left_out = self._split(
            selected, count, 0.0 if query_error is None else query_error, self._store.key_rounding,
            self.compute_dtype, queries.shape[-1],
        )
        if self._reduced:
            kept = self._rescore(queries, kept)
        return self._rank(queries, kept, left_out)

    def _select(self, reduced: torch.Tensor, k: int) -> _Picks:
        """The k best candidates of every query by compute-dtype cosine, best first (all if fewer).

        Per (band, chunk) top-k, then top-k of their union: the union of per-chunk top-k's contains
        the joint top-k, so this is exact (in the compute dtype).
        """
        parts, first_slot = [], 0
        for chunk in self._store.chunks:
            parts.append(self._select_chunk(reduced, chunk, first_slot, k))
            first_slot += chunk.shape[3]
        return _union(parts, k)

    def _select_chunk(self, reduced: torch.Tensor, chunk: torch.Tensor, first_slot: int, k: int) -> _Picks:
        """Top-k candidates among the slots of one chunk, band by band, best first."""
        t = self._tiling
        g = chunk.shape[3]
        k = min(k, g * t.keys)
        shape = (t.nbx, t.nby, t.queries, k)
        cos = torch.empty(shape, dtype=self.compute_dtype, device=self._device)
        flat_idx = torch.empty(shape, dtype=torch.int64, device=self._device)
        per_row_block = t.queries * g * t.keys * cos.element_size()
        step = max(1, min(t.nby, _SIMS_BUDGET // per_row_block))
        buffer = self._workspace.get("sims", (step, t.queries, g * t.keys), self.compute_dtype)
        for j in range(t.nbx):
            rects = _key_rects(chunk[j], t)
            for b0 in range(0, t.nby, step):
                rows = slice(b0, min(b0 + step, t.nby))
                sims = buffer[: rows.stop - b0]
                bias = t.window_bias + t.grid_bias[j, rows]
                cos[j, rows], flat_idx[j, rows] = self._score(reduced[j, rows], rects[rows], sims, bias, k)
        slot, cell = t.decode(flat_idx, g, t.key_cell[:, :, None, :])
        return _Picks(cos, slot + first_slot, cell)

    def _select_block(self, reduced: torch.Tensor, j: int, b: int, need: torch.Tensor, k: int) -> _Picks:
        """The k best candidates (best first) of the queries ``need`` ((Q,) mask; ``reduced`` (n, C)) of
        block (band j, row block b)."""
        t = self._tiling
        parts, first_slot = [], 0
        bias = t.window_bias[need] + t.grid_bias[j, b : b + 1]
        for chunk in self._store.chunks:
            g = chunk.shape[3]
            sims = self._workspace.get("sims", (1, reduced.shape[0], g * t.keys), self.compute_dtype)
            rects = _key_rects(chunk[j], t)[b : b + 1]
            cos, flat_idx = self._score(reduced[None], rects, sims, bias, min(k, g * t.keys))
            slot, cell = t.decode(flat_idx[0], g, t.key_cell[j, b][None])
            parts.append(_Picks(cos[0], slot + first_slot, cell))
            first_slot += g
        return _union(parts, k)

    def _score(
        self, reduced: torch.Tensor, rects: torch.Tensor, sims: torch.Tensor, bias: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k (values, flat indices) of B row blocks' queries against one chunk's key rectangles.

        ``reduced`` (B, n, C) queries, ``rects`` (B, C, N) keys, ``sims`` a (B, n, N) buffer, ``bias``
        (B or 1, n, rect_rows, 1, band_width): -inf for out-of-window or off-grid keys, else 0. The
        similarities are laid out (rect_row, slot, column).
        """
        t = self._tiling
        _matmul(reduced, rects, sims)
        b, n, g = sims.shape[0], sims.shape[1], sims.shape[-1] // t.keys
        sims.view(b, n, t.rect_rows, g, t.band_width).add_(bias)
        return _topk(sims.view(b, n, t.rect_rows * g, t.band_width), k)

    @staticmethod
    def _split(
        selected: _Picks,
        count: int,
        query_error: torch.Tensor | float,
        key_error: float,
        dtype: torch.dtype,
        channels: int,
    ) -> tuple[_Picks, torch.Tensor]:
        """(the first ``count`` picks, an upper bound on the exact cosine of every candidate not among them).

        ``selected`` holds count + 1 picks per query, best first (fewer: every candidate, bound -inf).
        """
        if selected.cos.shape[-1] <= count:
            return selected, torch.full(selected.cos.shape[:-1], float("-inf"), device=selected.cos.device)
        runner_up = selected.cos[..., count]
        bound = runner_up.float() + cosine_error_bound(runner_up, query_error, key_error, dtype, channels)
        return selected.first(count), torch.where(runner_up == float("-inf"), float("-inf"), bound)

    def _rescore(self, queries: torch.Tensor, picks: _Picks) -> _Picks:
        """The picks with their cosines recomputed in float32 (after a reduced-precision selection)."""
        hw, c = self._tiling.h * self._tiling.w, queries.shape[-1]
        index = (picks.slot * hw + picks.cell).flatten()
        keys = self._workspace.get("keys", (index.numel(), c), torch.float32)
        torch.index_select(self._store.features.reshape(-1, c), 0, index, out=keys)
        exact = torch.matmul(keys.view(*picks.cos.shape, c), queries.unsqueeze(-1)).squeeze(-1)
        return _Picks(torch.where(torch.isfinite(picks.cos), exact, float("-inf")), picks.slot, picks.cell)

    def _rank(self, queries: torch.Tensor, kept: _Picks, left_out: torch.Tensor) -> tuple[_Picks, torch.Tensor]:
        """Top-k by exact cosine among ``kept`` (float32 cosines), and where that may not be the true top-k.

        Args:
            queries: (..., C) float32 unit query vectors.
            kept: (..., n) candidates with float32 cosines.
            left_out: (...) upper bound on the exact cosine of every candidate not in ``kept``.

        Returns (top-k picks best first, overflow): overflow marks queries where a left-out candidate
        might beat the k-th kept one. Where the k-th and (k+1)-th kept cosines are closer than float32
        rounding can separate, the kept candidates are ranked again in float64.
        """
        count = kept.cos.shape[-1]
        k = min(self.topk, count)
        values, order = kept.cos.topk(min(k + 1, count), dim=-1)
        top = kept.take(order[..., :k])
        c = queries.shape[-1]

        def error(v: torch.Tensor) -> torch.Tensor:
            return cosine_error_bound(v, 0.0, 0.0, torch.float32, c)

        kth = values[..., k - 1]
        lowest_kth = kth - error(kth)
        ties_any = torch.linalg.vector_norm(queries, dim=-1) == 0  # a zero query: every cosine is 0
        overflow = (left_out >= lowest_kth) & (left_out > float("-inf")) & ~ties_any
        if values.shape[-1] > k:
            runner_up = values[..., k]
            near_tie = (runner_up + error(runner_up) >= lowest_kth) & ~overflow & ~ties_any
            if bool(near_tie.any()):
                self._rank_float64(queries, kept, near_tie, top)
        return top, overflow

    def _rank_float64(self, queries: torch.Tensor, kept: _Picks, where: torch.Tensor, top: _Picks) -> None:
        """Overwrite ``top`` at the queries ``where`` with the top-k of ``kept`` by float64 cosine."""
        hw, c = self._tiling.h * self._tiling.w, queries.shape[-1]
        at = where.nonzero(as_tuple=True)
        slots, cells, finite = kept.slot[at], kept.cell[at], torch.isfinite(kept.cos[at])
        keys = self._store.features.reshape(-1, c)[slots * hw + cells].double()  # (N, n, C)
        exact = (keys @ queries[at].double().unsqueeze(-1)).squeeze(-1)
        exact = torch.where(finite, exact, float("-inf"))
        best = exact.topk(top.cos.shape[-1], dim=-1).indices
        top.cos[at] = exact.gather(-1, best).float()
        top.slot[at], top.cell[at] = slots.gather(-1, best), cells.gather(-1, best)

    def _block_top_float32(self, queries: torch.Tensor, j: int, b: int, need: torch.Tensor) -> _Picks:
        """Top-k by exact cosine of the queries ``need`` of block (band j, row block b) from float32 similarities
        with all their candidates (features gathered from the float32 store), then :meth:`_rank`. If more than
        ``_WIDE_PRESELECT`` x topk candidates tie with the k-th within float32 rounding (only near-duplicate
        frames do that), which of them are kept is arbitrary.
        """
        t = self._tiling
        features = self._store.features
        slots, c = features.shape[0], features.shape[-1]
        key_cell = t.key_cell[j, b]
        # Keys laid out (rect_row, slot, column) like a chunk's rectangle, as one (1, C, N) matrix.
        keys = features[:, key_cell].view(slots, t.rect_rows, t.band_width, c).transpose(0, 1)
        rects = keys.reshape(-1, c).t()[None]
        sims = torch.empty((1, queries.shape[0], rects.shape[-1]), device=self._device)
        count = _WIDE_PRESELECT * self.topk
        bias = t.window_bias[need] + t.grid_bias[j, b : b + 1]
        cos, flat_idx = self._score(queries[None], rects, sims, bias, min(count + 1, sims.shape[-1]))
        slot, cell = t.decode(flat_idx[0], slots, key_cell[None])
        kept, left_out = self._split(_Picks(cos[0], slot, cell), count, 0.0, 0.0, torch.float32, c)
        return self._rank(queries, kept, left_out)[0]


# --------------------------------------------------------------------------- batches and the fused kernel


def _is_batch(features: object) -> bool:
    return isinstance(features, torch.Tensor) and features.dim() == 4


class _Batch:
    """The videos behind a batched or Triton-backed :class:`LabelPropagator`: one fused propagator for all
    (:mod:`._fused`), or one torch :class:`LabelPropagator` each. A single video (3-D features, Triton) is a
    batch of one whose outputs are unwrapped."""

    def __init__(
        self,
        first_features: torch.Tensor,
        first_labels: object,
        options: dict,
        backend: str,
        compute_dtype: torch.dtype | None,
        block_size: tuple[int, int] | None,
    ) -> None:
        self._single = not _is_batch(first_features)
        if not self._single and first_features.shape[0] == 0:
            raise InputError(f"first features: expected a batch (B, C, h, w) with B >= 1, got {_shape(first_features)}")
        self._size = 1 if self._single else first_features.shape[0]
        frames = [_check_frame(first_features, "frame 0")] if self._single else [
            _check_frame(f, f"video {b}, frame 0") for b, f in enumerate(first_features)
        ]
        self._chw = tuple(frames[0].shape)
        self._device = frames[0].device
        self._as_tensor, labels = self._labels(first_labels, "frame 0", None)
        self._counts = [lab.shape[0] for lab in labels]
        self._seen, self._anchors = 1, 0
        if backend == "triton":
            from stcorr.propagation._fused import FusedPropagator  # imports Triton: only when it is used

            self.compute_dtype = torch.float32
            bound = cosine_error_bound(torch.tensor(1.0), 0.0, 0.0, torch.float32, self._chw[0])
            self._fused: FusedPropagator | None = FusedPropagator(
                self._normalise(frames), self._padded(labels), error_bound=float(bound), **options
            )
            self._videos: list[LabelPropagator] = []
        else:
            self._fused = None
            self._videos = [
                LabelPropagator(f, lab, compute_dtype=compute_dtype, block_size=block_size, backend="torch", **options)
                for f, lab in zip(frames, labels)
            ]
            self.compute_dtype = self._videos[0].compute_dtype
        self._first = labels

    @property
    def num_context_frames(self) -> int:
        return self._fused.num_context_frames if self._fused is not None else self._videos[0].num_context_frames

    @property
    def frames_seen(self) -> int:
        return self._seen

    def first_frame_output(self) -> tuple[object, torch.Tensor]:
        h, w = self._chw[1:]
        return self._output([lab.clone() for lab in self._first], torch.ones((self._size, h, w), device=self._device))

    def add_anchor(self, features: torch.Tensor, labels: object) -> None:
        self._anchors += 1
        what = f"anchor {self._anchors}"
        frames = self._frames(features, what)
        _, per_video = self._labels(labels, what, self._counts)
        if self._fused is not None:
            self._fused.add_anchor(self._normalise(frames), self._padded(per_video))
        else:
            for video, f, lab in zip(self._videos, frames, per_video):
                video.add_anchor(f, lab)

    def remember(self, features: torch.Tensor, labels: object) -> None:
        what = f"frame {self._seen}"
        frames = self._frames(features, what)
        _, per_video = self._labels(labels, what, self._counts)
        if self._fused is not None:
            self._fused.remember(self._normalise(frames), self._padded(per_video))
        else:
            for video, f, lab in zip(self._videos, frames, per_video):
                video.remember(f, lab)
        self._seen += 1

    def step(self, features: torch.Tensor) -> tuple[object, torch.Tensor]:
        frames = self._frames(features, f"frame {self._seen}")
        if self._fused is not None:
            labels, confidence = self._fused.step(self._normalise(frames))
            per_video = [labels[b, :k] for b, k in enumerate(self._counts)]
        else:
            outputs = [video.step(f) for video, f in zip(self._videos, frames)]
            per_video, confidence = [o[0] for o in outputs], torch.stack([o[1] for o in outputs])
        self._seen += 1
        return self._output(per_video, confidence)

    def _frames(self, features: object, what: str) -> list[torch.Tensor]:
        """Validated float32 (C, h, w) frames, one per video."""
        if self._single:
            frames = [_check_frame(features, what, self._chw)]
        else:
            expected = (self._size, *self._chw)
            if not isinstance(features, torch.Tensor) or tuple(features.shape) != expected:
                raise InputError(
                    f"{what}: expected features of shape (B, C, h, w) = {expected}, got {_shape(features)}"
                )
            frames = [_check_frame(f, f"video {b}, {what}", self._chw) for b, f in enumerate(features)]
        for b, f in enumerate(frames):
            _check_device(f, self._device, what if self._single else f"video {b}, {what}")
        return frames

    def _labels(self, labels: object, what: str, counts: list[int] | None) -> tuple[bool, list[torch.Tensor]]:
        """(given as one tensor, validated float32 (K_b, h, w) labels per video)."""
        if self._single:
            count = None if counts is None else counts[0]
            return False, [_check_labels(labels, what, self._chw[1:], count, self._device)]
        as_tensor = isinstance(labels, torch.Tensor)
        if as_tensor and labels.dim() != 4 or not isinstance(labels, (torch.Tensor, list, tuple)):
            raise InputError(
                f"{what}: expected labels as a (B, K, h, w) tensor or a sequence of B (K, h, w) tensors, "
                f"got {_shape(labels)}"
            )
        if len(labels) != self._size:
            raise InputError(f"{what}: expected labels for {self._size} videos, got {len(labels)}")
        return as_tensor, [
            _check_labels(lab, f"video {b}, {what}", self._chw[1:], None if counts is None else counts[b], self._device)
            for b, lab in enumerate(labels)
        ]

    def _output(self, per_video: list[torch.Tensor], confidence: torch.Tensor) -> tuple[object, torch.Tensor]:
        if self._single:
            return per_video[0], confidence[0]
        return (torch.stack(per_video) if self._as_tensor else per_video), confidence

    @staticmethod
    def _normalise(frames: list[torch.Tensor]) -> torch.Tensor:
        """(B, C, h, w) unit features, each frame normalised by :meth:`LabelPropagator._normalise`."""
        return torch.stack([LabelPropagator._normalise(f) for f in frames])

    def _padded(self, labels: list[torch.Tensor]) -> torch.Tensor:
        """(B, max K, h, w): each video's labels, zero channels after its own."""
        padded = labels[0].new_zeros((self._size, max(self._counts), *self._chw[1:]))
        for b, lab in enumerate(labels):
            padded[b, : lab.shape[0]] = lab
        return padded


# --------------------------------------------------------------------------- whole-video helpers


def propagate_stream(
    features: Iterable[torch.Tensor],
    labels: torch.Tensor,
    options: PropagationOptions | None = None,
    *,
    context: int | None = None,
    radius: int | None = None,
    topk: int | None = None,
    temperature: float | None = None,
    compute_dtype: torch.dtype | None = None,
    block_size: tuple[int, int] | None = None,
    backend: str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Stream label propagation over an iterable of (C, h, w) feature maps (frame 0 first).

    Yields (labels, confidence) per frame, (K, h, w) and (h, w) float32, frame 0 included (its labels
    as given, confidence 1). Only the context is held, so memory does not grow with the video.
    A batch of videos: (B, C, h, w) feature maps and per-video labels, outputs as in :class:`LabelPropagator`.
    """
    frames = iter(features)
    try:
        first = next(frames)
    except StopIteration:
        raise InputError("features: expected at least one frame, got none") from None
    propagator = LabelPropagator(
        first,
        labels,
        options,
        context=context,
        radius=radius,
        topk=topk,
        temperature=temperature,
        compute_dtype=compute_dtype,
        block_size=block_size,
        backend=backend,
    )
    yield propagator.first_frame_output()
    for feats in frames:
        yield propagator.step(feats)


def propagate(
    features: torch.Tensor,
    labels: torch.Tensor,
    options: PropagationOptions | None = None,
    *,
    context: int | None = None,
    radius: int | None = None,
    topk: int | None = None,
    temperature: float | None = None,
    compute_dtype: torch.dtype | None = None,
    block_size: tuple[int, int] | None = None,
    return_confidence: bool = False,
    backend: str | None = None,
) -> torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor | list[torch.Tensor], torch.Tensor]:
    """Propagate frame 0's soft labels through a video, or through B videos of one grid size at once.

    Args:
        features: (T, C, h, w) features of all frames; (B, T, C, h, w) for a batch.
        labels: (K, h, w) soft labels of frame 0; for a batch a (B, K, h, w) tensor or a sequence of B
            (K_b, h, w) tensors (label counts may differ).
        options, context, radius, topk, temperature, compute_dtype, block_size, backend: see
            :class:`LabelPropagator`.
        return_confidence: also return the (T, h, w) confidence maps ((B, T, h, w) for a batch).

    Returns:
        (T, K, h, w) float32 soft labels, frame 0 unchanged; with ``return_confidence`` a tuple
        (labels, confidence). For a batch: (B, T, K, h, w) if the labels were one tensor, else a list of
        B (T, K_b, h, w) tensors; each video's result equals its result alone.
    """
    if not isinstance(features, torch.Tensor) or features.dim() not in (4, 5):
        raise InputError(
            f"features: expected a tensor of shape (T, C, h, w), or (B, T, C, h, w) for a batch, got {_shape(features)}"
        )
    batched = features.dim() == 5
    frames = features.unbind(1) if batched else features.unbind(0)
    if len(frames) == 0:
        raise InputError(f"features: expected at least one frame, got shape {tuple(features.shape)}")
    if features.is_floating_point():
        bad = (~torch.isfinite(features).flatten(2 if batched else 1).all(-1)).nonzero()
        if bad.numel():
            where = f"video {int(bad[0, 0])}, frame {int(bad[0, 1])}" if batched else f"frame {int(bad[0, 0])}"
            raise InputError(f"{where}: features contain NaN or inf")
    stream = propagate_stream(
        frames,
        labels,
        options,
        context=context,
        radius=radius,
        topk=topk,
        temperature=temperature,
        compute_dtype=compute_dtype,
        block_size=block_size,
        backend=backend,
    )
    t_len = len(frames)
    # Outputs time-major per video: out[t] = labels of frame t (one (T, ...) tensor per video of a batch).
    out: list[torch.Tensor] = []
    confidence: torch.Tensor | None = None
    for t, (lab, conf) in enumerate(stream):
        per_video = [lab] if not batched else list(lab)
        if confidence is None:
            out = [x.new_empty((t_len, *x.shape)) for x in per_video]
            confidence = conf.new_empty((t_len, *conf.shape))
        for buffer, x in zip(out, per_video):
            buffer[t] = x
        confidence[t] = conf
    assert confidence is not None
    if batched:
        confidence = confidence.transpose(0, 1).contiguous()
    result = out if isinstance(lab, list) else torch.stack(out) if batched else out[0]
    return (result, confidence) if return_confidence else result
