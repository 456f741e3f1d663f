"""Exact top-k ranking for the propagation kernel: error bounds of reduced-precision cosines, top-k helpers.

Private to :mod:`stcorr.propagation.kernel`, whose docstring states the ranking rule these implement.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from stcorr.errors import InputError

_REDUCED_DTYPES = (torch.bfloat16, torch.float16)


def cosine_error_bound(
    computed: torch.Tensor, query_error: torch.Tensor | float, key_error: float, dtype: torch.dtype, channels: int
) -> torch.Tensor:
    """Largest possible |exact cosine q.k - cosine computed by a ``dtype`` matmul|, as a function of the computed value.

    q and k are unit float32 vectors, q' and k' their roundings to ``dtype`` (themselves for
    float32); ``query_error`` is |q - q'| (per query, broadcast with ``computed``) and ``key_error``
    at least |k - k'| for every key. q.k = q'.k' + (q - q').k + q'.(k - k'), and by Cauchy-Schwarz
    the last two terms are at most query_error and |q'| key_error. A float32 dot product of C terms
    is within gamma = C 2^-24 / (1 - C 2^-24) of |q'| |k'| whatever the order of the sums (on CUDA
    :func:`_ieee_matmuls` guarantees it); rounding that sum x to ``dtype`` gives
    r with |x - r| <= u |x| + n (u = unit roundoff, n = smallest normal number), so
    |x - r| <= (u |r| + n) / (1 - u). Hardware that flushes tiny inputs to zero loses at most
    2 sqrt(C) n more. A 1 % margin covers float32 rounding of the bound itself. r + bound(r) grows
    with r, so it bounds the exact cosine of every candidate computed below r too.
    """
    info = torch.finfo(dtype)
    u, n = info.eps / 2, info.smallest_normal
    query_norm = 1 + query_error  # |q'| <= |q| + |q - q'|
    gamma = channels * 2.0**-24 / (1 - channels * 2.0**-24)  # float32 dot products, any summation order
    summed = query_error + query_norm * key_error + gamma * query_norm * (1 + key_error)
    flushed = 2 * math.sqrt(channels) * n
    r = computed.float().clamp(-2.0, 2.0)  # -inf (no candidate) stays far below any cosine
    return 1.01 * ((u * r.abs() + n) / (1 - u) + summed + flushed)


def rounding_error(features: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """|v - v'| of float32 vectors v (last dimension) and their roundings v' to ``dtype``."""
    return torch.linalg.vector_norm(features - features.to(dtype).float(), dim=-1)


def default_compute_dtype(device: torch.device) -> torch.dtype:
    """Similarity dtype used when ``compute_dtype`` is None: only the speed depends on it, never the result.

    bfloat16 on CPUs with native bfloat16 matmuls (AVX-512 BF16 or AMX; on the README's benchmark
    machine the kernel is then 11x instead of 6x faster than the dense reference), float32 elsewhere,
    CUDA included (no GPU was available to measure a reduced dtype there). A propagator that chose
    bfloat16 this way switches to float32 if bfloat16 turns out unable to certify most of the
    top-k (``_SWITCH_TO_FLOAT32``).
    """
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


CPU_BF16_ENV = "STCORR_CPU_BF16"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX), as PyTorch reports it.

    ``STCORR_CPU_BF16=0`` answers no whatever the CPU (``1``: yes): with ``ATEN_CPU_CAPABILITY=avx2``
    (plus ``ONEDNN_MAX_CPU_ISA=AVX2`` and ``MKL_ENABLE_INSTRUCTIONS=AVX2`` for the matmul libraries) it makes
    a bf16-capable machine behave like a common AVX2-only CPU, which is how ``benchmarks/avx2.py`` emulates one.
    """
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise InputError(f"{CPU_BF16_ENV} must be 0 (no native bfloat16), 1 (native) or unset, got {forced!r}")
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


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


@contextmanager
def _ieee_matmuls(device: torch.device) -> Iterator[None]:
    """On CUDA, matmuls as :func:`cosine_error_bound` assumes: no TF32, float32 sums of 16-bit products.

    PyTorch lets cuBLAS sum bfloat16/float16 products in reduced precision by default, and users
    may enable TF32; both are turned off here and restored afterwards. TF32 goes through the API the
    running PyTorch has (``fp32_precision`` from 2.9 on; reading the legacy setting raises once the
    new one has been used). Nothing to do on CPU.
    """
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    names = ["allow_bf16_reduced_precision_reduction", "allow_fp16_reduced_precision_reduction"]
    names.append("fp32_precision" if hasattr(matmul, "fp32_precision") else "allow_tf32")
    saved = {name: getattr(matmul, name) for name in names}
    try:
        for name in names:
            setattr(matmul, name, "ieee" if name == "fp32_precision" else False)
        yield
    finally:
        for name, value in saved.items():
            setattr(matmul, name, value)


def _topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over the last two dims of x (..., groups, G) as (values, flat indices)."""
    if x.dtype == torch.float32:
        return _grouped_topk(x, k)
    return x.flatten(-2).topk(k, dim=-1)  # grouping does not pay off with 16-bit values (slow amax)


@dataclass
class _Picks:
    """Selected candidates per query, (nbx, nby, Q, k) each."""

    cos: torch.Tensor  # similarity; -inf for a padding or out-of-window pick
    slot: torch.Tensor  # int64 context slot
    cell: torch.Tensor  # int64 flat grid cell y * w + x

    def take(self, index: torch.Tensor) -> _Picks:
        return _Picks(self.cos.gather(-1, index), self.slot.gather(-1, index), self.cell.gather(-1, index))

    def first(self, n: int) -> _Picks:
        return _Picks(self.cos[..., :n], self.slot[..., :n], self.cell[..., :n])

    def best(self, k: int) -> _Picks:
        """The k picks with the largest cosines, best first."""
        if self.cos.shape[-1] <= k:
            return self
        return self.take(self.cos.topk(k, dim=-1).indices)


def _union(parts: list[_Picks], k: int) -> _Picks:
    """The k best (best first) of several candidate lists of the same queries."""
    if len(parts) == 1:
        return parts[0]
    union = _Picks(*(torch.cat([getattr(p, f) for p in parts], dim=-1) for f in ("cos", "slot", "cell")))
    return union.best(min(k, union.cos.shape[-1]))
