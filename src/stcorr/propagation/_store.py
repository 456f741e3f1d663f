"""Context storage for the propagation kernel: key bands in chunks, labels and features, scratch buffers.

Private to :mod:`stcorr.propagation.kernel`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from stcorr.propagation._ranking import rounding_error

# Context frames per chunk: one matmul per (band, chunk) covers all frames of a chunk. Adding a
# frame to a partly filled chunk copies that chunk (only while the context fills up).
_SLOTS_PER_CHUNK = 8


class _ContextStore:
    """All context frames ("slots"): key bands in chunks, labels and float32 features in one tensor each.

    A chunk (nbx, C, padded_rows, slots, band_width) holds up to ``_SLOTS_PER_CHUNK`` frames
    interleaved along the band width: one band row holds that row of every slot of the chunk, so
    the key rectangles of all its slots form one strided matrix and one matmul per (band, chunk)
    covers them all. Slot i of the store is slot i - (slots of earlier chunks) of its chunk.
    Labels and features are kept in buffers with room for ``capacity`` slots (doubled if exceeded),
    so adding a frame copies only that frame there.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.slots = 0
        self.chunks: list[torch.Tensor] = []
        self._labels: torch.Tensor | None = None  # (capacity, h*w, K) float32
        self._features: torch.Tensor | None = None  # (capacity, h*w, C) float32, for exact re-ranking
        self.key_rounding = 0.0  # >= |k - k'| for every key k stored, k' its copy in the bands' dtype

    @property
    def labels(self) -> torch.Tensor:
        """(slots, h*w, K) labels of the stored frames."""
        assert self._labels is not None
        return self._labels[: self.slots]

    @property
    def features(self) -> torch.Tensor:
        """(slots, h*w, C) float32 features of the stored frames (reduced-precision stores only)."""
        assert self._features is not None
        return self._features[: self.slots]

    def add(self, bands: torch.Tensor, labels: torch.Tensor, features: torch.Tensor) -> int:
        """Store one frame ((nbx, C, rows, 1, width) bands, (1, h*w, K) labels, (1, h*w, C) features)
        in a new slot; return its index. Growing a chunk copies it (only while the context fills up; see
        ``benchmarks/tuning.md``).
        """
        index = self.slots
        if self.chunks and self.chunks[-1].shape[3] < _SLOTS_PER_CHUNK:
            self.chunks[-1] = torch.cat([self.chunks[-1], bands], dim=3)
        else:
            self.chunks.append(bands)
        if index == self.capacity:
            self.capacity *= 2
        self._labels = _with_room(self._labels, labels, self.capacity)
        self._features = _with_room(self._features, features, self.capacity)
        self.slots += 1
        self._write(index, labels, features)
        return index

    def replace(self, index: int, bands: torch.Tensor, labels: torch.Tensor, features: torch.Tensor) -> None:
        """Overwrite slot ``index`` in place with one frame (same layout as :meth:`add`)."""
        self._write(index, labels, features)
        for chunk in self.chunks:
            if index < chunk.shape[3]:
                chunk[:, :, :, index].copy_(bands[:, :, :, 0])
                return
            index -= chunk.shape[3]
        raise IndexError(index)

    def rebuild_bands(self, bands_of: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Recompute every chunk from the stored (h*w, C) features (e.g. in another dtype), slots unchanged."""
        first, chunks = 0, []
        for chunk in self.chunks:
            g = chunk.shape[3]
            chunks.append(torch.cat([bands_of(self.features[s]) for s in range(first, first + g)], dim=3))
            first += g
        self.chunks = chunks
        self.key_rounding = 0.0 if chunks[0].dtype == torch.float32 else self.key_rounding

    def _write(self, index: int, labels: torch.Tensor, features: torch.Tensor) -> None:
        """Labels and features of slot ``index``; widen ``key_rounding`` to cover the new keys."""
        assert self._labels is not None and self._features is not None
        self._labels[index].copy_(labels[0])
        self._features[index].copy_(features[0])
        if self.chunks[0].dtype != torch.float32:
            error = float(rounding_error(features[0], self.chunks[0].dtype).max())
            self.key_rounding = max(self.key_rounding, error)


class _Workspace:
    """Scratch buffers reused from frame to frame.

    Allocating large tensors anew for every frame costs more than filling them: the allocator
    returns big blocks to the OS, so each frame pays page faults again (``benchmarks/tuning.md``).
    """

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised tensor of this shape and dtype, sharing memory with earlier calls of this name."""
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < size:
            buffer = self._buffers[name] = torch.empty(size, dtype=dtype, device=self._device)
        return buffer[:size].view(shape)


def _with_room(buffer: torch.Tensor | None, row: torch.Tensor, capacity: int) -> torch.Tensor:
    """``buffer`` (or a new one shaped like ``row`` (1, ...)) with ``capacity`` rows, old rows kept."""
    if buffer is not None and buffer.shape[0] >= capacity:
        return buffer
    grown = row.new_empty((capacity, *row.shape[1:]))
    if buffer is not None:
        grown[: buffer.shape[0]] = buffer
    return grown
