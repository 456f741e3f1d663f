"""Deliberately simple dense label propagation, the reference the fast kernel is tested against.

For each target frame it builds the full (h*w) x (n*h*w) cosine affinity to all context cells,
sets every key outside the square window |dy| <= radius, |dx| <= radius to -inf, takes the top-k
jointly over all context frames, applies a softmax at the temperature and sums the picked labels.
Context of frame t: frame 0, the anchors active at t, and frames max(1, t - context) ... t - 1.
Used only by the tests and the benchmark; it shares no code with ``stcorr.propagation.kernel``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Anchor:
    """A frame with known labels that is fixed context for every target t >= ``from_frame``."""

    features: torch.Tensor  # (C, h, w)
    labels: torch.Tensor  # (K, h, w)
    from_frame: int = 1


def _unit(features: torch.Tensor) -> torch.Tensor:
    """(C, h, w) -> (h*w, C) rows of unit length (zero rows stay zero)."""
    flat = features.double().flatten(1).t()
    norm = flat.norm(dim=1, keepdim=True)
    return (flat / norm.clamp_min(1e-12)).float()


def _window(h: int, w: int, radius: int) -> torch.Tensor:
    """(h*w, h*w) bool: key cell inside the query cell's square window."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return ((ys[:, None] - ys[None, :]).abs() <= radius) & ((xs[:, None] - xs[None, :]).abs() <= radius)


def _margin(top: torch.Tensor, k: int) -> torch.Tensor:
    """top[:, k-1] - top[:, k] where a (k+1)-th in-window candidate exists, else inf."""
    if top.shape[1] <= k:
        return torch.full(top.shape[:1], torch.inf)
    return torch.where(torch.isfinite(top[:, k]), top[:, k - 1] - top[:, k], torch.inf)


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
    margins: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Propagate ``labels`` (K, h, w) of frame 0 through ``features`` (T, C, h, w).

    Only the first ``num_frames`` frames are produced if given. ``query_chunk`` splits the queries
    into chunks (same result, lower peak memory). Returns (labels (T, K, h, w), confidence (T, h, w)).
    If ``margins`` is a list, the (h, w) gap between the k-th and (k+1)-th largest cosine of every
    target frame is appended to it (inf where there is no (k+1)-th candidate): where it is within
    float32 rounding, which candidate is kept is arbitrary (a near-tie).
    """
    t_len, _, h, w = features.shape
    t_len = t_len if num_frames is None else min(num_frames, t_len)
    hw = h * w
    keys = [_unit(f) for f in features[:t_len]]
    soft = [labels.float().flatten(1).t()]  # per frame (h*w, K)
    conf = [torch.ones(hw)]
    window = _window(h, w, radius)
    chunk = query_chunk or hw
    for t in range(1, t_len):
        ctx_keys = [keys[0]] + [_unit(a.features) for a in anchors if a.from_frame <= t]
        ctx_labels = [soft[0]] + [a.labels.float().flatten(1).t() for a in anchors if a.from_frame <= t]
        for s in range(max(1, t - context), t):
            ctx_keys.append(keys[s])
            ctx_labels.append(soft[s])
        n = len(ctx_keys)
        all_keys, all_labels = torch.cat(ctx_keys), torch.cat(ctx_labels)
        k = min(topk, n * hw)
        pred, score, gap = [], [], []
        for start in range(0, hw, chunk):
            stop = min(start + chunk, hw)
            affinity = keys[t][start:stop] @ all_keys.t()  # (q, n*h*w)
            affinity.masked_fill_(~window[start:stop].repeat(1, n), float("-inf"))
            top, idx = affinity.topk(min(k + 1, n * hw) if margins is not None else k, dim=1)
            if margins is not None:
                gap.append(_margin(top, k))
                top, idx = top[:, :k], idx[:, :k]
            weight = torch.softmax(top / temperature, dim=1)
            pred.append((weight[:, :, None] * all_labels[idx]).sum(1))
            score.append((weight * torch.where(torch.isfinite(top), top, 0.0)).sum(1))
        soft.append(torch.cat(pred))
        conf.append(torch.cat(score))
        if margins is not None:
            margins.append(torch.cat(gap).reshape(h, w))
    out_labels = torch.stack([s.t().reshape(-1, h, w) for s in soft])
    out_conf = torch.stack([c.reshape(h, w) for c in conf])
    return out_labels, out_conf
