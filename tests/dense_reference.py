"""Deliberately simple dense label propagation, the reference the fast kernel is tested against.

For each target frame it builds the full (h*w) x (n*h*w) cosine affinity to all context cells,
sets every key outside the square window |dy| <= radius, |dx| <= radius to -inf, takes the top-k
jointly over all context frames, applies a softmax at the temperature and sums the picked labels.
In float64 (``dtype``, the tests' choice) the ranking is exact for all practical purposes, as the
kernel's is; in float32 (the speed baseline of the benchmark) a near-tie at the k-th place (two
cosines within float32 rounding) is broken arbitrarily.
Context of frame t: frame 0, the anchors active at t, and frames max(1, t - context) ... t - 1.
Used only by the tests and the benchmark; it shares no code with ``stcorr.propagation.kernel``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Anchor:
    """A frame with known labels that is fixed context for every target t >= ``from_frame``."""

    features: torch.Tensor  # (C, h, w)
    labels: torch.Tensor  # (K, h, w)
    from_frame: int = 1


def _unit(features: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(C, h, w) -> (h*w, C) rows of unit length (zero rows stay zero), then converted to ``dtype``.

    Normalised in float32 with ``F.normalize``, as the kernel's semantics prescribe, so that both rank
    cosines of the very same vectors (a float64 normalisation would move them by float32 rounding,
    enough to reorder a near-tie).
    """
    return F.normalize(features.float(), dim=0).flatten(1).t().to(dtype)


def _window(h: int, w: int, radius: int) -> torch.Tensor:
    """(h*w, h*w) bool: key cell inside the query cell's square window."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return ((ys[:, None] - ys[None, :]).abs() <= radius) & ((xs[:, None] - xs[None, :]).abs() <= radius)


def dense_propagate(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    context: int = 20,
    radius: int = 12,
    topk: int = 10,
    temperature: float = 0.07,
    anchors: Sequence[Anchor] = (),
    num_frames: int | None = None,
    query_chunk: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Propagate ``labels`` (K, h, w) of frame 0 through ``features`` (T, C, h, w).

    Only the first ``num_frames`` frames are produced if given. ``query_chunk`` splits the queries
    into chunks (same result, lower peak memory). ``dtype`` is the dtype of the affinities.
    Returns (labels (T, K, h, w), confidence (T, h, w)).
    """
    t_len, _, h, w = features.shape
    t_len = t_len if num_frames is None else min(num_frames, t_len)
    hw = h * w
    keys = [_unit(f, dtype) for f in features[:t_len]]
    soft = [labels.float().flatten(1).t()]  # per frame (h*w, K)
    conf = [torch.ones(hw, device=features.device)]
    window = _window(h, w, radius).to(features.device)
    chunk = query_chunk or hw
    for t in range(1, t_len):
        ctx_keys = [keys[0]] + [_unit(a.features, dtype) for a in anchors if a.from_frame <= t]
        ctx_labels = [soft[0]] + [a.labels.float().flatten(1).t() for a in anchors if a.from_frame <= t]
        for s in range(max(1, t - context), t):
            ctx_keys.append(keys[s])
            ctx_labels.append(soft[s])
        n = len(ctx_keys)
        all_keys, all_labels = torch.cat(ctx_keys), torch.cat(ctx_labels)
        k = min(topk, n * hw)
        pred, score = [], []
        for start in range(0, hw, chunk):
            stop = min(start + chunk, hw)
            affinity = keys[t][start:stop] @ all_keys.t()  # (q, n*h*w)
            affinity.masked_fill_(~window[start:stop].repeat(1, n), float("-inf"))
            top, idx = affinity.topk(k, dim=1)
            weight = torch.softmax(top / temperature, dim=1)
            pred.append((weight[:, :, None] * all_labels[idx]).sum(1).float())
            score.append((weight * torch.where(torch.isfinite(top), top, 0.0)).sum(1).float())
        soft.append(torch.cat(pred))
        conf.append(torch.cat(score))
    out_labels = torch.stack([s.t().reshape(-1, h, w) for s in soft])
    out_conf = torch.stack([c.reshape(h, w) for c in conf])
    return out_labels, out_conf


def random_video(t: int, c: int, h: int, w: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random features (T, C, h, w) and soft labels (K, h, w) whose channels sum to 1 per cell."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(t, c, h, w, generator=gen)
    labels = torch.rand(k, h, w, generator=gen) ** 3
    return features, labels / labels.sum(0, keepdim=True)
