"""Per-object reliability of a propagated frame: how likely each object's mask is right, without ground truth.

Per-pixel confidence cannot see identity mistakes: when a label leaks onto a look-alike (a second person
walking in next to the annotated one), the new pixels match as well as the right ones, so their confidence
is as high (measured on the vtest clip: the olive walker's mean confidence stays at 0.64-0.69 while its
area triples). What does change is the object's *shape over time*: its area and extent grow or shrink
against the anchor it was propagated from, a second separated blob appears, its centre jumps.

:class:`ReliabilityTracker` follows one pass (from an anchor, frame after frame). For every object of a
predicted frame it measures, on the decoded id map sampled once per feature cell (so the cost does not
depend on the resolution):

- ``growth`` / ``shrink``: ``max(0, +-log((area + 1) / (anchor area + 1)))``, area vs the pass's anchor;
- ``recent``: ``|log((area + 1) / (median area of the last 5 frames + 1))|``;
- ``extent``: ``max(0, log(bbox diagonal / anchor bbox diagonal))``;
- ``fragments``: the share of the object's cells outside its largest 8-connected component;
- ``jump``: the move of the object's centroid since the previous frame, in anchor object diameters
  (``sqrt(anchor area)``);
- ``confidence``: the mean pixel confidence over the object (kept as a feature; alone it does not work);
- ``agreement`` (optional, the plug-in for a session that predicts a frame from both neighbouring anchors):
  ``1 - IoU`` of the object's masks from the two directions, given to :meth:`ReliabilityTracker.observe` as
  ``agreement={id: IoU}``; 0 when unknown. :data:`DEFAULT_MODEL` has no weight for it yet (no data to fit).

and maps them to [0, 1] with a logistic model (:class:`ReliabilityModel`). :data:`DEFAULT_MODEL` uses growth,
shrink, recent, extent and fragments, fitted on the *tune* seeds of the offline benchmark's identity and regular
synthetic sequences to predict "object IoU >= 0.5" (``benchmarks/reliability_fit.py``; held-out AUROC and the
measured alternatives, cycle consistency included, in the README). ``jump`` and ``confidence`` are computed for
measurement only: their scale does not transfer from the synthetic sequences to real footage. An object absent
from the anchor (nothing to compare with) gets reliability 1; so does an anchor frame.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stcorr.propagation.kernel import LabelPropagator
from stcorr.propagation.options import PropagationOptions

__all__ = [
    "FEATURES",
    "RECENT_FRAMES",
    "ObjectShape",
    "ReliabilityModel",
    "DEFAULT_MODEL",
    "ReliabilityTracker",
    "object_shapes",
    "components",
    "reliability_features",
    "cycle_consistency",
]

FEATURES: tuple[str, ...] = ("growth", "shrink", "recent", "extent", "fragments", "jump", "confidence", "agreement")
CYCLE = "cycle"  # 1 - forward-backward IoU (:func:`cycle_consistency`), measured by the benchmark only
RECENT_FRAMES = 5  # frames whose median area the current one is compared with


@dataclass(frozen=True)
class ObjectShape:
    """One object's footprint on a frame, measured on the id map sampled once per cell (``cells``)."""

    area: int  # cells
    diagonal: float  # of the bounding box, in cells (0 when absent)
    centroid: tuple[float, float]  # (y, x) in cells; (nan, nan) when absent
    largest: int  # cells of the largest 8-connected component
    confidence: float  # mean pixel confidence over the object (full resolution); nan when absent


def components(mask: np.ndarray) -> list[int]:
    """Sizes of the 8-connected components of a boolean (h, w) mask, largest first."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    sizes: list[int] = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        stack, size = [(int(y0), int(x0))], 0
        while stack:
            y, x = stack.pop()
            size += 1
            for ny in (y - 1, y, y + 1):
                if 0 <= ny < h:
                    for nx in (x - 1, x, x + 1):
                        if 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            stack.append((ny, nx))
        sizes.append(size)
    return sorted(sizes, reverse=True)


def object_shapes(labels: np.ndarray, confidence: np.ndarray | None, ids: Sequence[int],
                  cell: int) -> dict[int, ObjectShape]:
    """The shape of every object id of ``ids`` (0 and 255 skipped) on an (H, W) id map, sampled at the centre
    of every ``cell`` x ``cell`` block."""
    step = max(1, int(cell))
    grid = labels[step // 2::step, step // 2::step]
    shapes = {}
    for i in ids:
        if i in (0, 255):
            continue
        mask = grid == i
        area = int(mask.sum())
        if area == 0:
            shapes[int(i)] = ObjectShape(0, 0.0, (math.nan, math.nan), 0, math.nan)
            continue
        ys, xs = np.nonzero(mask)
        diagonal = math.hypot(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
        conf = float(confidence[labels == i].mean()) if confidence is not None else math.nan
        shapes[int(i)] = ObjectShape(area, diagonal, (float(ys.mean()), float(xs.mean())),
                                     components(mask)[0], conf)
    return shapes


def reliability_features(shape: ObjectShape, anchor: ObjectShape, recent: Sequence[ObjectShape],
                         agreement: float | None = None) -> dict[str, float]:
    """The features of :data:`FEATURES` for one object (``recent``: its shapes on the previous frames of the
    pass, most recent last; ``agreement``: IoU of two directions' masks, when known)."""
    ratio = math.log((shape.area + 1) / (anchor.area + 1))
    previous = [s.area for s in recent[-RECENT_FRAMES:]]
    median = float(np.median(previous)) if previous else float(anchor.area)
    extent = math.log(shape.diagonal / anchor.diagonal) if shape.area and anchor.diagonal else 0.0
    jump = 0.0
    last = recent[-1] if recent else anchor
    if shape.area and last.area:
        moved = math.hypot(shape.centroid[0] - last.centroid[0], shape.centroid[1] - last.centroid[1])
        jump = moved / max(1.0, math.sqrt(anchor.area))
    return {
        "growth": max(0.0, ratio),
        "shrink": max(0.0, -ratio),
        "recent": abs(math.log((shape.area + 1) / (median + 1))),
        "extent": max(0.0, extent),
        "fragments": 1.0 - shape.largest / shape.area if shape.area else 0.0,
        "jump": jump,
        "confidence": shape.confidence if shape.area and not math.isnan(shape.confidence) else 0.0,
        "agreement": 1.0 - agreement if agreement is not None else 0.0,  # disagreement: 0 when unknown
    }


@dataclass(frozen=True)
class ReliabilityModel:
    """``sigmoid(bias + sum(weights[f] * feature f))`` over :data:`FEATURES` (missing weights are 0)."""

    weights: Mapping[str, float]
    bias: float

    def __call__(self, features: Mapping[str, float]) -> float:
        z = self.bias + sum(w * features.get(name, 0.0) for name, w in self.weights.items())
        return float(1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z)))))


DEFAULT_MODEL = ReliabilityModel(
    weights={"growth": -3.4823, "shrink": -2.155, "extent": -4.8594, "fragments": -2.7604, "recent": -3.2251},
    bias=2.7126,
)
"""Fitted (logistic regression, L2 1.0 on standardised features) on the offline benchmark's tune seeds 0-3
(identity and regular synthetic sequences, 24 frames at 320x256, default model, DAVIS preset; 483 object-frames),
``benchmarks/reliability_fit.py``. Pixel confidence and the centroid jump are left out: fitted with them the
synthetic AUROC rises but clean frames of real footage (vtest) drop to 0.1-0.6, their scale does not transfer."""


def cycle_consistency(anchor_features: torch.Tensor, anchor_grid: torch.Tensor, features: torch.Tensor,
                      grid: torch.Tensor, options: PropagationOptions | None = None) -> list[float]:
    """Forward-backward check: frame t's grid labels (K, h, w) propagated back to the anchor with the kernel
    (frame t as the only context frame, ``options``' radius/top-k/temperature); per channel, the IoU of the
    arg-max maps with the anchor's (K, h, w) labels on the grid. Measured by the benchmark, not used by the
    tracker: a label that leaked onto a look-alike maps back onto the right object, so it does not see leaks
    (held-out AUROC 0.48, ``benchmarks/results/reliability.json``)."""
    back = LabelPropagator(features, grid, options, context=0).step(anchor_features)[0]
    predicted, truth = back.argmax(0), anchor_grid.argmax(0)
    out = []
    for channel in range(grid.shape[0]):
        p, g = predicted == channel, truth == channel
        union = int((p | g).sum())
        out.append(1.0 if union == 0 else int((p & g).sum()) / union)
    return out


class ReliabilityTracker:
    """Reliability of the frames of one pass. :meth:`anchor` at every anchor met (the first frame included),
    :meth:`observe` at every predicted frame, in pass order."""

    def __init__(self, cell: int, model: ReliabilityModel = DEFAULT_MODEL) -> None:
        self.cell = cell
        self.model = model
        self._anchor: dict[int, ObjectShape] = {}
        self._recent: dict[int, deque[ObjectShape]] = {}
        self.last_shapes: dict[int, ObjectShape] = {}  # of the frame last given to :meth:`features`

    def anchor(self, labels: np.ndarray, ids: Sequence[int]) -> dict[int, float]:
        """A frame given by the user: the reference of the frames after it; its reliability is 1."""
        return self.anchor_shapes(object_shapes(labels, None, ids, self.cell))

    def remember(self, shapes: Mapping[int, ObjectShape]) -> None:
        """A predicted frame measured before (:attr:`last_shapes`) joins the recent history."""
        for i, shape in shapes.items():
            anchor = self._anchor.get(i)
            if anchor is not None and anchor.area:
                self._recent.setdefault(i, deque(maxlen=RECENT_FRAMES)).append(shape)

    def anchor_shapes(self, shapes: Mapping[int, ObjectShape]) -> dict[int, float]:
        """:meth:`anchor` with the anchor's shapes already measured."""
        for i, shape in shapes.items():
            if shape.area or i not in self._anchor:  # an object the anchor does not hold keeps its reference
                self._anchor[i] = shape
            self._recent[i] = deque(maxlen=RECENT_FRAMES)
        return {i: 1.0 for i in shapes}

    def features(self, labels: np.ndarray, confidence: np.ndarray | None, ids: Sequence[int],
                 agreement: Mapping[int, float] | None = None) -> dict[int, dict[str, float]]:
        """The features of every object of a predicted frame (and the frame joins the recent history)."""
        shapes = object_shapes(labels, confidence, ids, self.cell)
        self.last_shapes = shapes
        out = {}
        for i, shape in shapes.items():
            anchor = self._anchor.get(i)
            if anchor is None or anchor.area == 0:  # nothing to compare with yet
                continue
            recent = self._recent.setdefault(i, deque(maxlen=RECENT_FRAMES))
            out[i] = reliability_features(shape, anchor, list(recent), (agreement or {}).get(i))
            recent.append(shape)
        return out

    def observe(self, labels: np.ndarray, confidence: np.ndarray | None, ids: Sequence[int],
                agreement: Mapping[int, float] | None = None) -> dict[int, float]:
        """Reliability in [0, 1] of every object (ids other than 0 and 255) of a predicted frame."""
        features = self.features(labels, confidence, ids, agreement)
        return {i: (self.model(features[i]) if i in features else 1.0)
                for i in ids if i not in (0, 255)}
