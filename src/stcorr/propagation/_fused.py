"""Streaming propagation of B videos at once with the fused Triton kernel (:mod:`._triton_kernel`).

The context of every video (frame 0, anchors, the last ``context`` frames) lives in two device tensors,
features (B, S, h*w, C) and labels (B, S, h*w, L), with the same slots for all videos; each target frame
is one kernel launch over all videos (plus one over the tiles whose top-k needed a wider selection).
Inputs arrive validated and L2-normalised (:class:`stcorr.propagation.kernel.LabelPropagator` does that).
"""

from __future__ import annotations

import logging
from collections import deque

import torch

from stcorr.propagation import _triton_kernel

_log = logging.getLogger(__name__)


class FusedPropagator:
    """B videos of one grid size, stepped together.

    Args:
        first: (B, C, h, w) float32 unit features of frame 0.
        labels: (B, L, h, w) float32 labels of frame 0 (videos with fewer labels padded with zeros).
        context, radius, topk, temperature: see :class:`stcorr.propagation.kernel.LabelPropagator`.
        error_bound: bound on |float32 cosine - exact cosine| for C channels.
    """

    def __init__(
        self,
        first: torch.Tensor,
        labels: torch.Tensor,
        *,
        context: int,
        radius: int,
        topk: int,
        temperature: float,
        error_bound: float,
    ) -> None:
        b, c, self._h, self._w = first.shape
        self._options = dict(radius=radius, topk=topk, temperature=temperature, error_bound=error_bound)
        self.context = context
        hw = self._h * self._w
        self._features = first.new_empty((b, 1 + context, hw, c))
        self._labels = first.new_empty((b, 1 + context, hw, labels.shape[1]))
        self._used = 0
        self._fixed = [self._add(_rows(first), _rows(labels))]
        self._recent: deque[int] = deque()
        self.uncertified = 0  # queries of the last frame whose top-k is exact among the wide selection only

    @property
    def num_context_frames(self) -> int:
        return len(self._fixed) + len(self._recent)

    def add_anchor(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add fixed context: (B, C, h, w) unit features and (B, L, h, w) labels."""
        self._fixed.append(self._add(_rows(features), _rows(labels)))

    def remember(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Put a frame with known labels in the window of previous frames, as :meth:`step` does after
        predicting it: (B, C, h, w) unit features and (B, L, h, w) labels."""
        self._remember(_rows(features).contiguous(), _rows(labels))

    def step(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, h, w) unit features of the next frame -> (labels (B, L, h, w), confidence (B, h, w))."""
        slots = torch.tensor(self._fixed + list(self._recent), dtype=torch.int32, device=features.device)
        queries = _rows(features).contiguous()
        labels, confidence, uncertified = _triton_kernel.window_top_labels(
            queries, self._features, self._labels, slots, h=self._h, w=self._w, **self._options
        )
        self.uncertified = int(uncertified.sum())
        if self.uncertified:
            _log.debug("%d queries: top-k exact among the widest float32 selection only", self.uncertified)
        self._remember(queries, labels)
        return self._grid(labels), confidence.view(-1, self._h, self._w)

    def _grid(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, h*w, L) -> (B, L, h, w)."""
        return rows.transpose(1, 2).reshape(rows.shape[0], -1, self._h, self._w)

    def _add(self, feature_rows: torch.Tensor, label_rows: torch.Tensor) -> int:
        """Store a frame ((B, h*w, C) features, (B, h*w, L) labels) in a new slot; return the slot."""
        if self._used == self._features.shape[1]:
            self._features, self._labels = _grown(self._features), _grown(self._labels)
        slot = self._used
        self._used += 1
        self._write(slot, feature_rows, label_rows)
        return slot

    def _write(self, slot: int, feature_rows: torch.Tensor, label_rows: torch.Tensor) -> None:
        self._features[:, slot].copy_(feature_rows)
        self._labels[:, slot].copy_(label_rows)

    def _remember(self, feature_rows: torch.Tensor, label_rows: torch.Tensor) -> None:
        """Put a predicted frame ((B, h*w, C), (B, h*w, L)) in the window of previous frames."""
        if self.context == 0:
            return
        if len(self._recent) == self.context:
            slot = self._recent.popleft()
            self._write(slot, feature_rows, label_rows)
        else:
            slot = self._add(feature_rows, label_rows)
        self._recent.append(slot)


def _rows(grid: torch.Tensor) -> torch.Tensor:
    """(B, X, h, w) -> (B, h*w, X)."""
    return grid.flatten(2).transpose(1, 2)


def _grown(buffer: torch.Tensor) -> torch.Tensor:
    """``buffer`` (B, S, ...) with room for twice as many slots, old slots kept."""
    grown = buffer.new_empty((buffer.shape[0], 2 * buffer.shape[1], *buffer.shape[2:]))
    grown[:, : buffer.shape[1]] = buffer
    return grown
