"""The fused Triton propagation kernel: windowed cosines, exact top-k, softmax and label average in one pass.

One program handles a tile of ``_TILE_H`` x ``_TILE_W`` query cells of one video. For every context frame
it walks the key rectangle the tile's windows cover (the tile grown by ``radius`` on each side, clipped to
the grid) in chunks of keys, computes float32 cosines with ``tl.dot`` (IEEE float32, no TF32), drops
out-of-window keys and keeps each query's ``keep`` best candidates in registers as packed 64-bit integers
(order-preserving float bits above, candidate id below). No affinity tensor is ever written: memory is the
context (features and labels) plus the outputs.

Exactness. The kept candidates' cosines are then recomputed in float64, their top-k by float64 value is
taken, and the selection is *certified*: every candidate left out has a float32 cosine at most the
``keep``-th kept one, so an exact cosine at most that plus ``error_bound`` (a bound on |float32 - exact| for
any summation order, :func:`stcorr.propagation.kernel.cosine_error_bound`). If the k-th float64 cosine is
above that, the top-k is the exact one; otherwise the query is flagged. :func:`window_top_labels` runs
flagged tiles again keeping ``wide`` candidates; queries still flagged after that (more than ``wide``
candidates within float32 rounding of the k-th: near-duplicate frames) keep a top-k that is exact among
the ``wide`` best float32 candidates only. Weights are softmax(float64 cosine / temperature) and the
label average is summed in float64, then rounded to float32.

Runs on CUDA tensors, or on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set before
this module is imported), which is how the tests check it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_TILE_H = 4
_TILE_W = 8
_KEYS = 64  # keys per tl.dot step
_CHANNELS = 32  # channels per tl.dot step
_EXACT_VALUES = 256  # keep x channels per float64 rescoring step (a (tile, keep, channels) block)
_MAX_LABEL_BLOCK = 16  # label channels per output step

_NONE = tl.constexpr(-(2**63))  # packed value of "no candidate": below every real candidate
# Reductions are written as tl.reduce with Triton's own combine functions: the same as tl.max / tl.min /
# tl.sum on these dtypes (float32/64, int32/64), and under the interpreter a plain numpy reduction instead of
# a nested jit call (which costs milliseconds there). For the same reason the kernel calls no helpers.
_MAX = tl.standard._elementwise_max
_MIN = tl.standard._elementwise_min
_SUM = tl.standard._sum_combine


@triton.jit
def _window_topk_kernel(
    tiles_ptr,  # (n,) int32 tiles to process: video * tiles_per_video + tile
    query_ptr,  # (B, HW, C) float32 unit queries
    feature_ptr,  # (B, S, HW, C) float32 unit context features
    label_ptr,  # (B, S, HW, L) float32 context labels
    slot_ptr,  # (n_slots,) int32 context slots of the target frame
    param_ptr,  # (2,) float64: temperature, error bound
    out_label_ptr,  # (B, HW, L) float32
    out_conf_ptr,  # (B, HW) float32
    uncertified_ptr,  # (B, HW) int8: 1 where the top-k could not be certified
    tile_flag_ptr,  # (B * tiles_per_video,) int32: 1 where any query of the tile is uncertified
    n_slots,
    slot_capacity,
    h,
    w,
    channels,
    num_labels,
    radius,
    tiles_x,
    tiles_per_video,
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
    KEYS: tl.constexpr,
    CHANNELS: tl.constexpr,
    EXACT_CHANNELS: tl.constexpr,
    KEEP: tl.constexpr,
    TOPK: tl.constexpr,
    LABELS: tl.constexpr,
):
    BQ: tl.constexpr = TILE_H * TILE_W
    entry = tl.load(tiles_ptr + tl.program_id(0))
    video = entry // tiles_per_video
    tile = entry % tiles_per_video
    ty = tile // tiles_x
    tx = tile % tiles_x
    hw = h * w

    qi = tl.arange(0, BQ)
    qy = ty * TILE_H + qi // TILE_W
    qx = tx * TILE_W + qi % TILE_W
    q_ok = (qy < h) & (qx < w)
    q_row = (video * hw + qy * w + qx).to(tl.int64)  # row of (B * HW, C)

    # Key rectangle covered by the tile's windows, clipped to the grid.
    y0 = tl.maximum(ty * TILE_H - radius, 0)
    y1 = tl.minimum(ty * TILE_H + TILE_H - 1 + radius, h - 1)
    x0 = tl.maximum(tx * TILE_W - radius, 0)
    x1 = tl.minimum(tx * TILE_W + TILE_W - 1 + radius, w - 1)
    rect_w = x1 - x0 + 1
    rect_n = (y1 - y0 + 1) * rect_w

    # Selection by float32 cosine. A candidate is packed into one int64: its cosine's bits made
    # order-preserving (sign-magnitude -> two's complement) above, its id (slot position * HW + cell)
    # below, so values are unique and order by cosine first.
    kk = tl.arange(0, KEYS)
    cc = tl.arange(0, CHANNELS)
    col = tl.arange(0, KEEP)[None, :]
    best = tl.full([BQ, KEEP], _NONE, tl.int64)  # each query's KEEP best so far, in no particular order
    floor = tl.reduce(best, 1, _MIN)  # smallest of them
    for s in range(n_slots):
        slot = tl.load(slot_ptr + s)
        frame_row = (video * slot_capacity + slot).to(tl.int64) * hw
        for k0 in range(0, rect_n, KEYS):
            kj = k0 + kk
            k_ok = kj < rect_n
            ky = y0 + kj // rect_w
            kx = x0 + kj % rect_w
            k_cell = ky * w + kx
            sims = tl.zeros([BQ, KEYS], dtype=tl.float32)
            for c0 in range(0, channels, CHANNELS):
                c = c0 + cc
                c_ok = c < channels
                q = tl.load(
                    query_ptr + q_row[:, None] * channels + c[None, :], mask=q_ok[:, None] & c_ok[None, :], other=0.0
                )
                k = tl.load(
                    feature_ptr + (frame_row + k_cell)[None, :] * channels + c[:, None],
                    mask=k_ok[None, :] & c_ok[:, None],
                    other=0.0,
                )
                sims = tl.dot(q, k, sims, input_precision="ieee")
            bits = sims.to(tl.int32, bitcast=True)
            packed = ((bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(tl.int64) << 32) | (s * hw + k_cell).to(tl.int64)[None, :]
            in_window = (
                q_ok[:, None]
                & k_ok[None, :]
                & (tl.abs(ky[None, :] - qy[:, None]) <= radius)
                & (tl.abs(kx[None, :] - qx[:, None]) <= radius)
            )
            # Merge: each turn moves every query's best remaining candidate into the place of its smallest
            # kept value (the first such column; only "no candidate" values repeat) if it is larger, then
            # drops the candidates that no longer beat the smallest kept value.
            packed = tl.where(in_window & (packed > floor[:, None]), packed, _NONE)
            top = tl.reduce(packed, 1, _MAX)
            while tl.reduce(top, 0, _MAX) > _NONE:
                place = tl.reduce(tl.where(best == floor[:, None], col, KEEP), 1, _MIN)
                best = tl.where(col == place[:, None], tl.maximum(best, top[:, None]), best)
                floor = tl.reduce(best, 1, _MIN)
                packed = tl.where((packed != top[:, None]) & (packed > floor[:, None]), packed, _NONE)
                top = tl.reduce(packed, 1, _MAX)

    # Float64 cosines of the kept candidates.
    kept = best != _NONE
    ident = (best & 0x7FFFFFFF).to(tl.int32)  # ids are below 2**31
    slot = tl.load(slot_ptr + ident // hw, mask=kept, other=0)
    key_row = (video * slot_capacity + slot).to(tl.int64) * hw + ident % hw  # (BQ, KEEP)
    exact = tl.zeros([BQ, KEEP], dtype=tl.float64)
    query_norm = tl.zeros([BQ], dtype=tl.float64)
    ce = tl.arange(0, EXACT_CHANNELS)
    for c0 in range(0, channels, EXACT_CHANNELS):
        c = c0 + ce
        c_ok = c < channels
        q = tl.load(
            query_ptr + q_row[:, None, None] * channels + c[None, None, :],
            mask=q_ok[:, None, None] & c_ok[None, None, :],
            other=0.0,
        ).to(tl.float64)
        k = tl.load(
            feature_ptr + key_row[:, :, None] * channels + c[None, None, :],
            mask=kept[:, :, None] & c_ok[None, None, :],
            other=0.0,
        ).to(tl.float64)
        exact += tl.reduce(q * k, 2, _SUM)
        query_norm += tl.reduce(tl.reshape(q * q, [BQ, EXACT_CHANNELS]), 1, _SUM)
    exact = tl.where(kept, exact, float("-inf"))

    # Top-k by float64 cosine among the kept: TOPK turns of "take the largest remaining" (first column on ties).
    chosen = tl.zeros([BQ, KEEP], dtype=tl.int32) != 0  # full shape: a loop-carried value keeps its type
    remaining = exact
    for _ in range(TOPK):
        largest = tl.reduce(remaining, 1, _MAX)
        first = tl.reduce(tl.where(remaining == largest[:, None], col, KEEP), 1, _MIN)
        chosen = chosen | (col == first[:, None])
        remaining = tl.where(col == first[:, None], float("-inf"), remaining)
    chosen = chosen & kept

    # Certificate: the k-th float64 cosine beats every candidate left out, whose float32 cosine is at most
    # the smallest kept one (floor) and exact cosine at most that plus the error bound.
    temperature = tl.load(param_ptr)
    error_bound = tl.load(param_ptr + 1)
    kth = tl.reduce(tl.where(chosen, exact, float("inf")), 1, _MIN)
    all_kept = floor == _NONE  # fewer candidates than KEEP: none left out
    floor_key = (floor >> 32).to(tl.int32)
    floor_cos = (floor_key ^ ((floor_key >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True).to(tl.float64)
    left_out = tl.where(all_kept, 0.0, floor_cos + error_bound)
    certified = all_kept | (kth > left_out) | (query_norm == 0)  # a zero query ties with everything

    # Softmax over the chosen (float64), confidence, label average.
    top_cos = tl.where(q_ok, tl.reduce(exact, 1, _MAX), 0.0)  # finite: the same cell of frame 0 is a candidate
    weight = tl.where(chosen, tl.exp((exact - top_cos[:, None]) / temperature), 0.0)
    total = tl.reduce(weight, 1, _SUM)
    weight = weight / tl.where(q_ok, total, 1.0)[:, None]  # queries off the grid have no candidates
    confidence = tl.reduce(weight * tl.where(chosen, exact, 0.0), 1, _SUM)
    tl.store(out_conf_ptr + q_row, confidence.to(tl.float32), mask=q_ok)
    lc = tl.arange(0, LABELS)
    for l0 in range(0, num_labels, LABELS):
        lab = l0 + lc
        l_ok = lab < num_labels
        picked = tl.load(
            label_ptr + key_row[:, :, None] * num_labels + lab[None, None, :],
            mask=chosen[:, :, None] & l_ok[None, None, :],
            other=0.0,
        ).to(tl.float64)
        out = tl.reduce(weight[:, :, None] * picked, 1, _SUM)
        tl.store(
            out_label_ptr + q_row[:, None] * num_labels + lab[None, :],
            out.to(tl.float32),
            mask=q_ok[:, None] & l_ok[None, :],
        )
    flagged = (q_ok & ~certified).to(tl.int32)
    tl.store(uncertified_ptr + q_row, flagged.to(tl.int8), mask=q_ok)
    tl.store(tile_flag_ptr + entry, tl.reduce(flagged, 0, _MAX))


def _power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


_MAX_WIDE = 256  # candidates kept per query in a wide pass, at most


def kept_candidates(topk: int) -> tuple[int, int]:
    """(keep, wide): candidates kept per query in the first pass (3k rounded up to a power of two) and in
    the pass over flagged tiles (16k rounded up, at most ``_MAX_WIDE`` but at least twice ``keep``)."""
    keep = max(8, _power_of_two(3 * topk))
    return keep, max(2 * keep, min(_MAX_WIDE, _power_of_two(16 * topk)))


def tile_count(h: int, w: int) -> tuple[int, int]:
    """(tiles per row, tiles per video) of an h x w grid."""
    tiles_x = triton.cdiv(w, _TILE_W)
    return tiles_x, tiles_x * triton.cdiv(h, _TILE_H)


def window_top_labels(
    queries: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    slots: torch.Tensor,
    *,
    h: int,
    w: int,
    radius: int,
    topk: int,
    temperature: float,
    error_bound: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft labels of one target frame per video from its context (see the module doc).

    Args:
        queries: (B, h*w, C) float32 unit query vectors (contiguous).
        features: (B, S, h*w, C) float32 unit features of the context slots (contiguous).
        labels: (B, S, h*w, L) float32 labels of those slots (contiguous).
        slots: (n,) int32 slots forming the context of the target frame, on the same device.
        radius, topk, temperature: propagation options; error_bound: float32 cosine error bound.

    Returns:
        (labels (B, h*w, L), confidence (B, h*w), uncertified (B, h*w) bool): uncertified marks queries whose
        top-k is exact among the ``wide`` best float32 candidates only (see the module doc).
    """
    b, hw, _ = queries.shape
    device = queries.device
    out = (
        torch.empty((b, hw, labels.shape[-1]), dtype=torch.float32, device=device),
        torch.empty((b, hw), dtype=torch.float32, device=device),
        torch.empty((b, hw), dtype=torch.int8, device=device),
    )
    tile_flags = torch.zeros(b * tile_count(h, w)[1], dtype=torch.int32, device=device)
    params = torch.tensor([temperature, error_bound], dtype=torch.float64, device=device)
    keep, wide = kept_candidates(topk)
    args = (queries, features, labels, slots, params, *out, tile_flags, h, w, radius, topk)
    _launch(torch.arange(tile_flags.numel(), dtype=torch.int32, device=device), keep, *args)
    flagged = tile_flags.nonzero().flatten().to(torch.int32)
    if flagged.numel():
        _launch(flagged, wide, *args)
    return out[0], out[1], out[2].bool()


def _launch(
    tiles: torch.Tensor,
    keep: int,
    queries: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    slots: torch.Tensor,
    params: torch.Tensor,
    out_labels: torch.Tensor,
    out_conf: torch.Tensor,
    uncertified: torch.Tensor,
    tile_flags: torch.Tensor,
    h: int,
    w: int,
    radius: int,
    topk: int,
) -> None:
    """One kernel launch over ``tiles``, keeping ``keep`` candidates per query."""
    tiles_x, per_video = tile_count(h, w)
    num_labels = labels.shape[-1]
    _window_topk_kernel[(tiles.numel(),)](
        tiles, queries, features, labels, slots, params, out_labels, out_conf, uncertified, tile_flags,
        slots.numel(), features.shape[1], h, w, queries.shape[-1], num_labels, radius, tiles_x, per_video,
        TILE_H=_TILE_H, TILE_W=_TILE_W, KEYS=_KEYS, CHANNELS=_CHANNELS, EXACT_CHANNELS=max(1, _EXACT_VALUES // keep),
        KEEP=keep, TOPK=topk, LABELS=min(_MAX_LABEL_BLOCK, _power_of_two(num_labels)),
    )
