"""Point tracking with visibility: queries ``(t, x, y)`` at any frame, tracked both ways (CoTracker-style API).

Each query point is propagated as a Gaussian heatmap (the keypoint path of :mod:`stcorr.propagation.passes`)
from its own query frame forwards to the last frame and backwards to frame 0. Queries of one frame share a
pass (their heatmaps are channels of one propagation, each channel independent of the others: the kernel's
affinities do not depend on the labels), and every frame is encoded once for all passes.

**Refinement.** A propagated heatmap's peak is only as precise as the feature grid (stride 8: 8 px cells at the
working size) and drifts as the label is carried from frame to frame. So at every frame the decoded position is
refined against the query itself: the query's feature (sampled at its query frame) is compared (cosine) with
frame t's features upsampled 2x bilinearly (half-stride cells), within :data:`REFINE_RADIUS` half-cells of the
propagated position; the refined point is the soft-argmax (temperature :data:`REFINE_TEMPERATURE`) over the best
half-cell and its 8 neighbours. ``propagated`` keeps the positions before refinement; ``refine=False`` returns
them as ``points``. On the offline point benchmark this raises <δavg by 10 to 13 points
(:mod:`stcorr.eval.point_benchmark`; the constants were chosen on its fitting scenes). ``refine_scale=2``
refines on features of the frames upsampled 2x (a feature grid twice as fine, the window the same in pixels).

Visibility is a three-part test at every frame t of a track (at the refined position), all against the query
frame tq:

- **appearance**: the cosine similarity between the feature at the tracked point (bilinear on the feature
  grid of frame t) and the query's feature at frame tq;
- **presence**: the query feature's best cosine similarity over every cell of frame t (low when nothing in
  frame t looks like the query any more, whatever the track did);
- **cycle consistency**: the tracked point's feature is matched back into the whole query frame (best cell,
  sub-cell soft-argmax over its 3x3 neighbourhood, as :func:`~stcorr.propagation.matching.match_points`);
  ``cycle_error`` is the distance from that return point to the query, in pixels of the frame rescaled to
  256x256 (the TAP-Vid raster), so a point gone behind another object, whose tracked position now shows the
  occluder, returns elsewhere.

``scores`` combine the three into the estimated probability that the point is visible, a logistic model fitted on
the offline point benchmark (:mod:`stcorr.eval.point_benchmark`; its fitting seeds are not its scoring seeds)
and ``visible = scores >= 0.5``. The query frame itself is visible with score 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stcorr.errors import InputError
from stcorr.features import Encoder, check_batch_size
from stcorr.io.frames import FrameSource
from stcorr.propagation.kernel import LabelPropagator
from stcorr.propagation.matching import _cell_centres, _near_best, _sample, _to_cells
from stcorr.propagation.options import PropagationOptions, resolve_options
from stcorr.propagation.passes import Geometry, decode, features_in_order, make_prompt, working_source

__all__ = ["PointTracks", "VisibilityModel", "DEFAULT_VISIBILITY", "track_points"]

CYCLE_RASTER = 256.0
"""``cycle_error`` is measured in pixels of the frame rescaled to this many pixels per side (TAP-Vid's 256x256)."""
REFINE_UPSAMPLE = 2
"""Refinement compares the query with frame features upsampled this many times (bilinear): half-stride cells."""
REFINE_RADIUS = 2
"""Refinement searches this many upsampled cells (Chebyshev) around the propagated position."""
REFINE_TEMPERATURE = 0.02
"""Softmax temperature of the refinement's soft-argmax over the best upsampled cell and its 8 neighbours."""


@dataclass(frozen=True)
class VisibilityModel:
    """``P(visible) = sigmoid(bias + w_sim * similarity + w_best * best_similarity - w_cycle * log1p(cycle_error))``.

    ``cycle_error`` in pixels at 256x256 (:data:`CYCLE_RASTER`).
    """

    bias: float
    w_sim: float
    w_cycle: float
    w_best: float = 0.0

    def probability(self, similarity: np.ndarray, cycle_error: np.ndarray,
                    best_similarity: np.ndarray | None = None) -> np.ndarray:
        logit = self.bias + self.w_sim * similarity - self.w_cycle * np.log1p(cycle_error)
        if self.w_best:
            logit = logit + self.w_best * best_similarity
        return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


DEFAULT_VISIBILITY = VisibilityModel(bias=-5.017981798540489, w_sim=5.223097707001983, w_cycle=0.5031910220563824,
                                     w_best=5.133895418697314)
"""Fitted by ``python -m stcorr.eval offline --fit-visibility`` on the embedded model (see
:mod:`stcorr.eval.point_benchmark`)."""


@dataclass
class PointTracks:
    """Tracks of N query points through T frames, at the frames' original size.

    ``points`` (T, N, 2) float32 (x, y) pixels (pixel centres at integers); ``visible`` (T, N) bool;
    ``scores`` (T, N) float32, the estimated probability that the point is visible there (1 at its query
    frame); ``similarity`` (T, N) the cosine similarity of the tracked feature to the query's;
    ``cycle_error`` (T, N) pixels at 256x256 of the return match to the query frame (0 at the query frame);
    ``best_similarity`` (T, N) the query feature's best cosine similarity over frame t;
    ``queries`` (N, 3) ``(t, x, y)`` as given; ``propagated`` (T, N, 2) the positions before refinement (equal
    to ``points`` with ``refine=False``).
    """

    points: np.ndarray
    visible: np.ndarray
    scores: np.ndarray
    similarity: np.ndarray
    cycle_error: np.ndarray
    best_similarity: np.ndarray
    queries: np.ndarray
    propagated: np.ndarray | None = None


def _check_queries(queries: Any, count: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    try:
        array = np.asarray(queries.detach().cpu().numpy() if isinstance(queries, torch.Tensor) else queries,
                           dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"queries must be (N, 3) numbers (t, x, y); got {queries!r:.80}") from exc
    if array.ndim != 2 or array.shape[1] != 3 or len(array) == 0:
        raise InputError(f"queries must have shape (N, 3) as (t, x, y) with N >= 1, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError("queries must be finite numbers (t, x, y)")
    frames = array[:, 0]
    if not np.all(frames == np.round(frames)) or frames.min() < 0 or frames.max() >= count:
        raise InputError(f"query frames must be integers in [0, {count - 1}] (the video has {count} frames), "
                         f"got {sorted(set(frames.tolist()))[:10]}")
    height, width = size
    xy = array[:, 1:].astype(np.float32)
    outside = (xy[:, 0] < 0) | (xy[:, 0] > width - 1) | (xy[:, 1] < 0) | (xy[:, 1] > height - 1)
    if outside.any():
        raise InputError(f"queries {np.flatnonzero(outside).tolist()[:10]} lie outside the {width}x{height} "
                         f"frames; (x, y) must be within [0, {width - 1}] x [0, {height - 1}] pixels")
    return frames.astype(np.int64), xy


def _to_working(points: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Original-size pixels (..., 2) -> working-size pixels (pixel centres at integers)."""
    scale = np.array([geometry.working[1] / geometry.original[1], geometry.working[0] / geometry.original[0]])
    return (points + 0.5) * scale - 0.5


def _to_original(points: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Working-size pixels (N, 2) -> original-size pixels (pixel centres at integers)."""
    scale = torch.tensor([geometry.original[1] / geometry.working[1], geometry.original[0] / geometry.working[0]],
                         dtype=points.dtype, device=points.device)
    return (points + 0.5) * scale - 0.5


class _QueryFrame:
    """The query frame's features and the queries' features, to test tracked points against."""

    def __init__(self, features: torch.Tensor, points: np.ndarray, geometry: Geometry, radius: int = 0) -> None:
        self.features, self.geometry, self.radius = features, geometry, radius or REFINE_RADIUS
        self.points = points  # (N, 2) original pixels
        cells = _to_cells(torch.from_numpy(_to_working(points, geometry)).float().to(features.device),
                          geometry.stride)
        self.queries = _sample(features, cells)  # (N, C)

    def refine(self, features: torch.Tensor, points: np.ndarray) -> np.ndarray:
        """``points`` (N, 2, original pixels) moved to the query features' sub-cell match in frame ``features``
        near them (see the module's docstring). Only the (2 r + 1)^2 upsampled cells of each point's window are
        computed (sampled bilinearly from the feature grid, equal to upsampling it), so memory does not grow with
        the frame."""
        up, radius = REFINE_UPSAMPLE, self.radius
        h, w = features.shape[-2:]
        stride = self.geometry.stride / up
        device = features.device
        centre = _to_cells(torch.from_numpy(_to_working(points, self.geometry)).float().to(device), stride)
        offsets = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
        dy, dx = (v.reshape(-1) for v in torch.meshgrid(offsets, offsets, indexing="ij"))  # (K,)
        cy = centre[:, 1:2].round() + dy[None]  # (N, K) upsampled cells of each window
        cx = centre[:, :1].round() + dx[None]
        inside = (cy >= 0) & (cy < h * up) & (cx >= 0) & (cx < w * up)
        # upsampled cell i (bilinear, align_corners=False) lies at (i + 0.5) / up - 0.5 on the feature grid
        native = torch.stack([(cx + 0.5) / up - 0.5, (cy + 0.5) / up - 0.5], dim=-1)
        scale = torch.tensor([max(w - 1, 1), max(h - 1, 1)], device=device, dtype=torch.float32)
        grid = (native / scale * 2 - 1)[None]  # (1, N, K, 2)
        sampled = F.grid_sample(features[None].float(), grid, mode="bilinear", align_corners=True,
                                padding_mode="border")[0]  # (C, N, K)
        sampled = F.normalize(sampled.permute(1, 2, 0), dim=-1)
        similarity = (sampled * self.queries.float()[:, None, :]).sum(-1).masked_fill(~inside, float("-inf"))
        best = similarity.argmax(dim=1)
        around = ((dy[None] - dy[best][:, None]).abs() <= 1) & ((dx[None] - dx[best][:, None]).abs() <= 1)
        weights = torch.softmax(similarity.masked_fill(~around, float("-inf")) / REFINE_TEMPERATURE, dim=1)
        weights = weights.nan_to_num(0.0)
        refined = torch.stack([(weights * (cx * stride + (stride - 1) / 2)).sum(1),
                               (weights * (cy * stride + (stride - 1) / 2)).sum(1)], dim=1)
        found = inside.any(dim=1)[:, None].cpu().numpy()  # a point far outside the grid keeps its position
        original = _to_original(refined.cpu(), self.geometry).numpy()
        return np.where(found, original, points).astype(np.float32)

    def measure(self, features: torch.Tensor, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(similarity, cycle_error at 256x256, best similarity) of tracked ``points`` (N, 2, original pixels) in
        frame ``features``."""
        cells = _to_cells(torch.from_numpy(_to_working(points, self.geometry)).float().to(features.device),
                          self.geometry.stride)
        tracked = _sample(features, cells)  # (N, C)
        similarity = (tracked * self.queries).sum(dim=1)
        original = _to_original(self._match_back(tracked), self.geometry)
        raster = torch.tensor([CYCLE_RASTER / self.geometry.original[1], CYCLE_RASTER / self.geometry.original[0]])
        error = ((original - torch.from_numpy(self.points).float()) * raster).norm(dim=1)
        best = (self.queries @ features.flatten(1)).amax(dim=1)
        return (similarity.cpu().numpy().astype(np.float32), error.numpy().astype(np.float32),
                best.cpu().numpy().astype(np.float32))

    def _match_back(self, tracked: torch.Tensor, topk: int = 5, temperature: float = 0.07) -> torch.Tensor:
        """Working pixels (N, 2) of each feature's sub-cell match in the query frame."""
        h, w = self.features.shape[-2:]
        similarity = tracked @ self.features.flatten(1)
        values, index = _near_best(similarity, (h, w)).topk(min(topk, 9, h * w), dim=1)
        weights = torch.softmax(values / temperature, dim=1).nan_to_num(0.0)
        xs = _cell_centres(w, self.geometry.stride, tracked.device)[index % w]
        ys = _cell_centres(h, self.geometry.stride, tracked.device)[index // w]
        return torch.stack([(weights * xs).sum(1), (weights * ys).sum(1)], dim=1).cpu()


class _Features:
    """Frame features at the working size: encoded once and kept when several passes need them, else streamed."""

    def __init__(self, model: Encoder, source: FrameSource, keep: bool, batch_size: int,
                 dtype: torch.dtype | None, fusion_weights: Sequence[float] | None) -> None:
        self._args = (model, source, batch_size, dtype, fusion_weights)
        self._kept: list[torch.Tensor] | None = None
        if keep:
            self._kept = list(features_in_order(model, source, range(len(source)), batch_size, dtype, fusion_weights))

    def in_order(self, order: range) -> Iterator[torch.Tensor]:
        if self._kept is not None:
            return (self._kept[t] for t in order)
        model, source, batch_size, dtype, fusion_weights = self._args
        return features_in_order(model, source, order, batch_size, dtype, fusion_weights)


def _track_from(
    features: _Features, t_query: int, points: np.ndarray, count: int, geometry: Geometry,
    options: PropagationOptions, refine: tuple[_Features, Geometry, int] | None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One query frame's points through every frame: (T, n, 2) refined and propagated points, (T, n) similarity,
    cycle error and best similarity. ``refine``: the features, geometry and radius refinement works on (None: no
    refinement)."""
    propagated = np.zeros((count, len(points), 2), np.float32)
    similarity = np.ones((count, len(points)), np.float32)
    cycle = np.zeros((count, len(points)), np.float32)
    best = np.ones((count, len(points)), np.float32)
    propagated[t_query] = points
    tracks = propagated.copy()
    if progress:
        progress(1)
    for order in (range(t_query, count), range(t_query, -1, -1)):
        if len(order) < 2:
            continue
        stream = features.in_order(order)
        first = next(stream)
        prompt = make_prompt(points, t_query, geometry, tuple(first.shape[-2:]), options)
        propagator = LabelPropagator(first, prompt.grid.to(first.device), options)
        query = _QueryFrame(first, points, geometry)
        # refinement on the same features (scale 1) or on its own stream of finer ones
        fine_stream = refine[0].in_order(order) if refine is not None and refine[0] is not features else None
        fine_query = query if refine is not None else None
        if fine_stream is not None and refine is not None:
            fine_query = _QueryFrame(next(fine_stream), points, refine[1], refine[2])
        for t, feats in zip(order[1:], stream):
            grid_probs = propagator.step(feats)[0]
            propagated[t] = decode(t, grid_probs, "points", prompt.labels, geometry, options).points
            if fine_query is None:
                tracks[t] = propagated[t]
            else:
                fine = next(fine_stream) if fine_stream is not None else feats
                tracks[t] = fine_query.refine(fine, propagated[t])
            similarity[t], cycle[t], best[t] = query.measure(feats, tracks[t])
            if progress:
                progress(1)
    height, width = geometry.original
    np.clip(tracks, 0, [width - 1, height - 1], out=tracks)
    return tracks, propagated, similarity, cycle, best


def track_points(
    model: Encoder,
    frames: Any,
    queries: np.ndarray | torch.Tensor | Sequence[Sequence[float]],
    *,
    options: PropagationOptions | None = None,
    max_side: int | None = None,
    size: tuple[int, int] | None = None,
    resample: str | None = None,
    batch_size: int = 8,
    dtype: torch.dtype | None = None,
    fusion_weights: Sequence[float] | None = None,
    visibility: VisibilityModel = DEFAULT_VISIBILITY,
    refine: bool = True,
    refine_scale: int = 1,
    progress: Callable[[int], None] | None = None,
    **option_keywords: Any,
) -> PointTracks:
    """Track query points ``(t, x, y)`` (pixels of the original frames) through the whole video, both ways.

    Args:
        model: an encoder (e.g. :func:`stcorr.load_model`), or a sequence of encoders fused late.
        frames: anything :func:`stcorr.io.frames.open_frames` accepts.
        queries: (N, 3) ``(t, x, y)``: each point's query frame (an integer) and position in it.
        options: :class:`~stcorr.propagation.options.PropagationOptions` (keywords such as ``context=`` or
            ``sigma=`` override its fields).
        max_side, size, resample: the working size (as :func:`stcorr.propagate_labels`: by default 640 px on
            the longest side on CPU, full size on accelerators; ``max_side=0`` full size); results come at the
            original size.
        batch_size, dtype, fusion_weights: feature extraction (see :func:`stcorr.extract_features`).
        visibility: the :class:`VisibilityModel` turning the three measures into ``scores``.
        refine: move each propagated position to the query feature's sub-cell match near it (see the module's
            docstring); False returns the propagated positions.
        refine_scale: refine on features of the working frames upsampled this many times (an integer >= 1; 2
            gives the feature grid twice the resolution, at about 4x the encoding cost); the search window keeps
            its size in pixels.
        progress: called with 1 for every frame tracked (T calls per query frame), e.g. a progress bar's update.

    Returns:
        :class:`PointTracks`. Each query's track is independent of the other queries. With queries at more than
        one frame, every frame's features are kept in memory (T x C x H/s x W/s float32) and reused by all
        passes; with one query frame they stream.
    """
    opts = resolve_options(options, **option_keywords)
    check_batch_size(batch_size)
    source = working_source(frames, model, max_side=max_side, size=size, resample=resample)
    count = len(source)
    if count < 1:
        raise InputError("the video has no frames")
    geometry = Geometry.of(source, model)
    query_frames, xy = _check_queries(queries, count, geometry.original)
    groups = sorted(set(query_frames.tolist()))
    features = _Features(model, source, len(groups) > 1, batch_size, dtype, fusion_weights)
    fine: tuple[_Features, Geometry, int] | None = None
    if refine:
        if isinstance(refine_scale, bool) or not isinstance(refine_scale, int) or refine_scale < 1:
            raise InputError(f"refine_scale must be an integer >= 1 (2: refine on frames upsampled 2x), "
                             f"got {refine_scale!r}")
        if refine_scale == 1:
            fine = (features, geometry, REFINE_RADIUS)
        else:
            size = (geometry.working[0] * refine_scale, geometry.working[1] * refine_scale)
            fine_source = working_source(frames, model, size=size, resample=resample)
            fine = (_Features(model, fine_source, len(groups) > 1, batch_size, dtype, fusion_weights),
                    Geometry.of(fine_source, model), REFINE_RADIUS * refine_scale)
    n = len(xy)
    points = np.zeros((count, n, 2), np.float32)
    propagated = np.zeros((count, n, 2), np.float32)
    similarity = np.ones((count, n), np.float32)
    cycle = np.zeros((count, n), np.float32)
    best = np.ones((count, n), np.float32)
    for t_query in groups:
        members = np.flatnonzero(query_frames == t_query)
        group = _track_from(features, t_query, xy[members], count, geometry, opts, fine, progress)
        (points[:, members], propagated[:, members], similarity[:, members], cycle[:, members],
         best[:, members]) = group
    scores = visibility.probability(similarity, cycle, best)
    at_query = np.arange(count)[:, None] == query_frames[None, :]
    scores[at_query] = 1.0
    return PointTracks(points, scores >= 0.5, scores, similarity, cycle, best,
                       np.concatenate([query_frames[:, None].astype(np.float32), xy], axis=1), propagated)
