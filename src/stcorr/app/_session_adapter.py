"""TEMPORARY stand-in for ``stcorr.PropagationSession`` (issue 13), to be deleted once that exists.

It implements only the part of the session contract (/work/briefs/session_contract.md) the app uses, on the
existing streaming path :func:`stcorr.iter_propagate`. It re-encodes the frames on every pass (the real
session caches features) and recomputes a whole direction when any frame in it is stale, yielding only the
stale frames. Nothing outside :mod:`stcorr.app` may import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from stcorr.errors import InputError
from stcorr.frames import open_frames
from stcorr.outputs import as_uint8_rgb
from stcorr.pipelines import _resize_ids, _resize_map
from stcorr.propagation.api import iter_propagate

__all__ = ["PropagationOptions", "PropagationSession", "FrameResult"]


@dataclass(frozen=True)
class PropagationOptions:
    context: int = 20
    radius: int = 12
    topk: int = 10
    temperature: float = 0.07


@dataclass
class FrameResult:
    t: int
    labels: np.ndarray
    confidence: np.ndarray


class PropagationSession:
    def __init__(self, model: Any, frames: Any, *, options: PropagationOptions | None = None,
                 max_side: int | None = None) -> None:
        self.model = model
        self.options = options or PropagationOptions()
        self.max_side = max_side
        self._original = open_frames(frames)
        self._working = open_frames(frames, max_side=max_side)
        self._frames = [as_uint8_rgb(f) for f in self._original]
        self._anchors: dict[int, np.ndarray] = {}
        self._results: dict[int, FrameResult] = {}

    num_frames = property(lambda self: len(self._original))
    frame_size = property(lambda self: self._original.size)
    frame_names = property(lambda self: list(self._original.names))

    def frame(self, t: int) -> np.ndarray:
        return self._frames[t]

    @property
    def anchors(self) -> dict[int, np.ndarray]:
        return {t: m.copy() for t, m in sorted(self._anchors.items())}

    @property
    def object_ids(self) -> list[int]:
        ids = set()
        for mask in self._anchors.values():
            ids.update(int(i) for i in np.unique(mask))
        return sorted(ids - {0, 255})

    def _invalidate(self, t: int, old_first: int | None) -> None:
        """Frames at and after t depend on an anchor at t; so does everything when t is (or was) the first."""
        everything = old_first is None or t <= old_first
        self._results = {f: r for f, r in self._results.items() if f < t and not everything}

    def add_mask(self, t: int, mask: np.ndarray) -> None:
        mask = np.asarray(mask)
        if mask.shape != tuple(self.frame_size):
            raise InputError(f"mask of shape {mask.shape} does not match the frames' size {self.frame_size}")
        if not 0 <= t < self.num_frames:
            raise InputError(f"frame {t} is outside the video's {self.num_frames} frames")
        old_first = min(self._anchors, default=None)
        self._anchors[t] = mask.astype(np.uint8).copy()
        self._invalidate(t, old_first)

    def remove_anchor(self, t: int) -> None:
        if t in self._anchors:
            old_first = min(self._anchors)
            del self._anchors[t]
            self._invalidate(t, old_first)

    def stale_frames(self) -> list[int]:
        return [t for t in range(self.num_frames) if t not in self._results]

    def result(self, t: int) -> FrameResult | None:
        return self._results.get(t)

    def _soft(self, mask: np.ndarray, ids: list[int]) -> np.ndarray:
        """One channel per id of any anchor (so an object may first appear in a later anchor)."""
        small = _resize_ids(mask, self._working.size)
        return np.stack([(small == i).astype(np.float32) for i in ids])

    def _pass(self, direction: str) -> Iterator[FrameResult]:
        first = min(self._anchors)
        ids = [0, *self.object_ids]
        lookup = np.full(256, 255, np.uint8)
        lookup[: len(ids)] = ids
        others = {t: self._soft(m, ids) for t, m in self._anchors.items() if t != first}
        for p in iter_propagate(self.model, self._working, self._soft(self._anchors[first], ids), start=first,
                                direction=direction, anchors=others, **asdict(self.options)):
            if p.t in self._anchors:
                result = FrameResult(p.t, self._anchors[p.t].copy(), np.ones(self.frame_size, np.float32))
            else:
                result = FrameResult(p.t, _resize_ids(lookup[p.labels], self.frame_size),
                                     _resize_map(p.confidence, self.frame_size))
            if p.t not in self._results:
                self._results[p.t] = result
                yield result

    def propagate(self, start: int | None = None, reverse: bool = False) -> Iterator[FrameResult]:
        if not self._anchors:
            raise InputError("no anchor: add a mask on at least one frame before propagating")
        first = min(self._anchors)
        if any(t not in self._results for t in range(first, self.num_frames)):
            yield from self._pass("forward")
        if first > 0 and any(t not in self._results for t in range(first)):
            yield from self._pass("backward")

    def to_dict(self) -> dict[str, Any]:
        return {"anchors": {str(t): m.tolist() for t, m in self._anchors.items()},
                "options": asdict(self.options), "max_side": self.max_side}

    @classmethod
    def from_dict(cls, data: dict[str, Any], model: Any, frames: Any) -> PropagationSession:
        session = cls(model, frames, options=PropagationOptions(**data["options"]), max_side=data.get("max_side"))
        for t, mask in data["anchors"].items():
            session.add_mask(int(t), np.asarray(mask, np.uint8))
        return session
