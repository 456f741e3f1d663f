"""The offline point benchmark: tracks with occlusion ground truth on semi-synthetic videos, scored like TAP-Vid.

Videos come from :mod:`stcorr.eval.synthetic` with three objects at 256x256 (their paths cross, later objects
occlude earlier ones). Points are a grid (every ``spacing`` px of object coordinates) on each object that a
later object passes in front of: an object's points are tracked when at least ``min_hidden`` of them (a quarter
by default) are hidden by a later object at some frame, so an object that is only grazed, or never covered,
adds no points. A point's track is exact (the object's pose), and it is visible at frame t when the pixel it
falls in shows that object (and lies inside the frame), else occluded. Scenes are taken in seed order, skipping
those with no such object, until ``videos`` of them are found.

Every method tracks the TAP-Vid queries (``first`` and ``strided``, :mod:`stcorr.eval.tapvid`) with
:func:`stcorr.propagation.tracking.track_points` at 256x256 and is scored with
:func:`stcorr.metrics.tapvid.compute_tapvid_metrics`. Rows: each model with its visibility, and the same
tracks with every point called visible ("all visible", what a tracker without visibility reports).

The visibility model's constants (:data:`stcorr.propagation.tracking.DEFAULT_VISIBILITY`) are fitted on other
scenes (from ``fit_seed`` on, disjoint from the scored ones) by
``python -m stcorr.eval offline --fit-visibility``, which also scores the fitted model and its ablations (one
term, or similarity + cycle).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from stcorr.eval.sources import photo_library
from stcorr.eval.synthetic import SyntheticVideo, make_video
from stcorr.eval.tapvid import Queries, TapVidVideo, predict_video, sample_queries, score_video
from stcorr.eval.uncertainty import PairedDifference, paired_bootstrap
from stcorr.features import Encoder
from stcorr.metrics.tapvid import evaluation_mask, mean_metrics
from stcorr.propagation.tracking import DEFAULT_VISIBILITY, VisibilityModel

__all__ = [
    "PointBenchmarkConfig",
    "PointBenchmarkReport",
    "point_video",
    "benchmark_videos",
    "fit_visibility",
    "fit_on_scenes",
    "fit_and_ablate",
    "Calibration",
    "calibration",
    "calibration_markdown",
    "TERMS",
    "ABLATIONS",
    "run_point_benchmark",
    "POINT_METHODS",
    "GAIN_METRICS",
]

logger = logging.getLogger(__name__)

POINT_METHODS: tuple[str, ...] = ("efficientnet-lite0",)
"""The baselines of the point benchmark: the ImageNet baseline (the others of the offline benchmark are far weaker
at tracking and would only add minutes)."""
_MAX_SEEDS = 200


@dataclass(frozen=True)
class PointBenchmarkConfig:
    """What the point benchmark runs; :meth:`quick` is the reduced version used by the tests."""

    videos: int = 40
    first_seed: int = 0
    fit_seed: int = 1000  # the visibility model is fitted on scenes from this seed on
    fit_videos: int = 20
    num_frames: int = 24
    size: tuple[int, int] = (256, 256)
    spacing: float = 12.0
    min_hidden: float = 0.25  # an object's points count when this fraction of them is hidden by a later object
    query_modes: tuple[str, ...] = ("first", "strided")
    refine: bool = True  # track_points' refinement of the propagated positions
    refine_scale: int = 1  # track_points' refine_scale: refine on frames upsampled this many times

    @classmethod
    def quick(cls) -> PointBenchmarkConfig:
        """2 videos of 12 frames at 128x128, queries from the first visible frame."""
        return cls(videos=2, fit_videos=2, num_frames=12, size=(128, 128), spacing=10.0, query_modes=("first",))


def point_video(video: SyntheticVideo, spacing: float, min_hidden: float = 0.0) -> TapVidVideo:
    """Exact tracks and visibility of grid points on the objects of ``video`` that later objects occlude: those
    with at least ``min_hidden`` of their points (that show at some frame) hidden by a later object at some
    frame."""
    scene, masks = video.scene, video.masks
    count, (height, width) = len(video.frames), scene.size
    tracks, occluded = [], []
    for k, obj in enumerate(scene.objects[:-1]):
        reach = obj.extent
        axis = np.arange(-reach, reach + 1e-9, spacing)
        local = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
        local = local[obj.contains(local)]
        if len(local) == 0:
            continue
        xy = np.stack([scene.track(k, local, t) for t in range(count)], axis=1)  # (n, T, 2)
        col, row = np.round(xy[..., 0]).astype(int), np.round(xy[..., 1]).astype(int)
        inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
        owner = np.zeros(inside.shape, np.int64)  # the object (id k + 1) or background (0) each point falls on
        frames = np.broadcast_to(np.arange(count), inside.shape)
        owner[inside] = masks[frames[inside], row[inside], col[inside]]
        shown = inside & (owner == k + 1)
        ever_shown = shown.any(axis=1)
        covered = (inside & (owner > k + 1)).any(axis=1)  # some later object passes in front of the point
        if not ever_shown.any() or (min_hidden > 0 and covered[ever_shown].mean() < min_hidden):
            continue
        tracks.append(xy)
        occluded.append(~shown)
    points = np.concatenate(tracks) if tracks else np.zeros((0, count, 2))
    hidden = np.concatenate(occluded) if occluded else np.zeros((0, count), bool)
    keep = (~hidden).any(axis=1)
    normalised = (points[keep] + 0.5) / np.array([width, height])
    return TapVidVideo(video.name, video.frames, normalised.astype(np.float32), hidden[keep])


def benchmark_videos(config: PointBenchmarkConfig, first_seed: int | None = None) -> list[TapVidVideo]:
    """Point videos with occlusions, in seed order: ``config.videos`` from ``config.first_seed`` on (the scored
    scenes), or ``config.fit_videos`` from ``first_seed`` on when it is given (the fitting scenes)."""
    library = photo_library()
    found: list[TapVidVideo] = []
    start = config.first_seed if first_seed is None else first_seed
    wanted = config.videos if first_seed is None else config.fit_videos
    for seed in range(start, start + _MAX_SEEDS):
        video = make_video(seed, config.num_frames, size=config.size, num_objects=3, photos=library)
        points = point_video(video, config.spacing, config.min_hidden)
        # an occlusion that starts after a visible frame: a point that goes behind another object
        visible_then_hidden = (~points.occluded[:, :-1] & points.occluded[:, 1:]).any()
        if len(points.points) and visible_then_hidden:
            found.append(points)
        if len(found) == wanted:
            return found
    raise RuntimeError(f"only {len(found)} scenes with occlusions among seeds {start}..{start + _MAX_SEEDS - 1}")


# ------------------------------------------------------------------------------------------------
# Visibility: fitting the logistic model


TERMS = ("similarity", "cycle", "best")
"""The measures a visibility model may use: appearance, cycle consistency, presence (see
:mod:`stcorr.propagation.tracking`)."""


def fit_visibility(similarity: np.ndarray, cycle: np.ndarray, best: np.ndarray, visible: np.ndarray,
                   use: Sequence[str] = TERMS, iterations: int = 50) -> VisibilityModel:
    """Logistic regression (Newton's method, a tiny ridge) of ``visible`` on the terms of ``use``: similarity,
    ``-log1p(cycle error)`` and best similarity; the weights of the other terms are 0."""
    unknown = set(use) - set(TERMS)
    if unknown:
        raise ValueError(f"unknown terms {sorted(unknown)}; expected some of {TERMS}")
    values = {"similarity": np.ravel(similarity), "cycle": -np.log1p(np.ravel(cycle)), "best": np.ravel(best)}
    x = np.stack([np.ones_like(values["similarity"])] + [values[t] for t in TERMS if t in use], axis=1)
    x = x.astype(np.float64)
    y = np.ravel(visible).astype(np.float64)
    w = np.zeros(x.shape[1])
    ridge = 1e-6 * len(y) * np.eye(len(w))
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        step = np.linalg.solve((x * (p * (1 - p))[:, None]).T @ x + ridge, x.T @ (p - y) + ridge @ w)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    fitted = dict(zip([t for t in TERMS if t in use], (float(v) for v in w[1:])))
    return VisibilityModel(float(w[0]), fitted.get("similarity", 0.0), fitted.get("cycle", 0.0),
                           fitted.get("best", 0.0))


# ------------------------------------------------------------------------------------------------
# Running


@dataclass
class _Tracked:
    """One method's tracks of one video and query mode, with what visibility is decided from."""

    name: str
    queries: Queries
    tracks: np.ndarray  # (n, T, 2) raster
    similarity: np.ndarray  # (n, T)
    cycle: np.ndarray  # (n, T)
    best: np.ndarray  # (n, T)


def _track_all(model: Encoder, videos: Sequence[TapVidVideo], mode: str, refine: bool = True,
               refine_scale: int = 1) -> list[_Tracked]:
    out = []
    for video in videos:
        queries = sample_queries(video, mode)
        tracks, _, raw = predict_video(model, video.video, queries.query_points, "256", refine=refine,
                                       refine_scale=refine_scale)
        out.append(_Tracked(video.name, queries, tracks, raw.similarity.T, raw.cycle_error.T, raw.best_similarity.T))
    return out


def _score_videos(tracked: Sequence[_Tracked], mode: str,
                  visibility: VisibilityModel | None) -> dict[str, dict[str, float]]:
    """Per-video TAP-Vid metrics (video name -> metrics) of tracks with ``visibility`` (None: all visible)."""
    per_video = {}
    for item in tracked:
        if visibility is None:
            occluded = np.zeros(item.tracks.shape[:2], bool)
        else:
            occluded = visibility.probability(item.similarity, item.cycle, item.best) < 0.5
            query_frames = item.queries.query_points[:, 0].astype(int)
            occluded[np.arange(len(occluded)), query_frames] = False
        per_video[item.name] = score_video(item.queries, item.tracks, occluded, mode)
    return per_video


def _mean(per_video: dict[str, dict[str, float]]) -> dict[str, float]:
    return mean_metrics([{k: np.array([v]) for k, v in metrics.items()} for metrics in per_video.values()])


def _score(tracked: Sequence[_Tracked], mode: str, visibility: VisibilityModel | None) -> dict[str, float]:
    return _mean(_score_videos(tracked, mode, visibility))


def _occluded_share(tracked: Sequence[_Tracked], mode: str) -> float:
    """The fraction of the scored (frame, point) pairs where the point is occluded, over all videos."""
    hidden = scored = 0
    for item in tracked:
        mask = evaluation_mask(item.queries.query_points[:, 0], item.tracks.shape[1], mode)
        hidden += int((item.queries.occluded & mask).sum())
        scored += int(mask.sum())
    return hidden / max(scored, 1)


GAIN_METRICS = ("average_jaccard", "occlusion_accuracy")
"""The metrics whose gain from visibility (over the same tracks called all visible) gets a bootstrap interval."""


def _gains(ours: dict[str, dict[str, float]], all_visible: dict[str, dict[str, float]]) -> dict[str, PairedDifference]:
    """Paired bootstrap (over videos) of visibility's gain in each of :data:`GAIN_METRICS`."""
    return {key: paired_bootstrap({n: m[key] for n, m in ours.items()}, {n: m[key] for n, m in all_visible.items()})
            for key in GAIN_METRICS}


@dataclass(frozen=True)
class PointBenchmarkReport:
    """Rows (method -> query mode -> TAP-Vid means over videos) and what was run."""

    config: PointBenchmarkConfig
    rows: dict[str, dict[str, dict[str, float]]]
    videos: dict[str, dict[str, Any]]
    seconds: dict[str, float] = field(default_factory=dict)
    gains: dict[str, dict[str, dict[str, PairedDifference]]] = field(default_factory=dict)
    """Method -> query mode -> metric -> the gain of its visibility over "all visible", paired over videos."""
    occluded: dict[str, float] = field(default_factory=dict)
    """Query mode -> the fraction of scored (frame, point) pairs where the point is occluded."""

    def to_markdown(self) -> str:
        modes = self.config.query_modes
        cells = " | ".join(f"{m}: AJ | {m}: <δavg | {m}: OA" for m in modes)
        tracks = sum(v["tracks"] for v in self.videos.values())
        lines = [
            f"Point tracking with occlusion (TAP-Vid metrics, %): {len(self.videos)} semi-synthetic videos of "
            f"{self.config.num_frames} frames at {self.config.size[1]}x{self.config.size[0]}, {tracks} tracks"
            + "".join(f"; {m}: {100 * share:.0f} % of the scored points occluded"
                      for m, share in self.occluded.items()),
            "",
            f"| method | {cells} |",
            "|---|" + "---:|" * (3 * len(modes)),
        ]
        for name, by_mode in self.rows.items():
            values = " | ".join(
                f"{100 * by_mode[m]['average_jaccard']:.1f} | {100 * by_mode[m]['average_pts_within_thresh']:.1f} | "
                f"{100 * by_mode[m]['occlusion_accuracy']:.1f}" for m in modes
            )
            lines.append(f"| {name} | {values} |")
        if self.gains:
            lines += ["", "Visibility minus all visible, same tracks (mean over videos, paired bootstrap 95 % "
                      "interval):"]
            for name, by_mode in self.gains.items():
                parts = [f"{m} {label} {100 * d.mean:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"
                         for m in modes for key, label in zip(GAIN_METRICS, ("AJ", "OA")) for d in [by_mode[m][key]]]
                lines.append(f"- {name}: " + "; ".join(parts))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        gains = {name: {mode: {key: asdict(d) for key, d in by_key.items()} for mode, by_key in by_mode.items()}
                 for name, by_mode in self.gains.items()}
        return {"config": asdict(self.config), "rows": self.rows, "videos": self.videos, "seconds": self.seconds,
                "gains": gains, "occluded": self.occluded}


def _video_info(videos: Sequence[TapVidVideo]) -> dict[str, dict[str, Any]]:
    return {
        v.name: {"tracks": int(len(v.points)), "occluded_fraction": float(v.occluded.mean())} for v in videos
    }


def run_point_benchmark(
    models: dict[str, Encoder],
    *,
    config: PointBenchmarkConfig = PointBenchmarkConfig(),
    visibility: VisibilityModel = DEFAULT_VISIBILITY,
) -> PointBenchmarkReport:
    """Score every model of ``models`` (name -> encoder) with its visibility and with every point visible."""
    videos = benchmark_videos(config)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    gains: dict[str, dict[str, dict[str, PairedDifference]]] = {}
    seconds = {}
    occluded: dict[str, float] = {}
    for name, model in models.items():
        start = time.perf_counter()
        tracked = {mode: _track_all(model, videos, mode, config.refine, config.refine_scale)
                   for mode in config.query_modes}
        seconds[name] = time.perf_counter() - start
        logger.info("point benchmark %s: %.1f s", name, seconds[name])
        occluded = {mode: _occluded_share(tracked[mode], mode) for mode in config.query_modes}
        ours = {mode: _score_videos(tracked[mode], mode, visibility) for mode in config.query_modes}
        all_visible = {mode: _score_videos(tracked[mode], mode, None) for mode in config.query_modes}
        rows[name] = {mode: _mean(ours[mode]) for mode in config.query_modes}
        rows[f"{name}, all visible"] = {mode: _mean(all_visible[mode]) for mode in config.query_modes}
        if len(videos) >= 2:
            gains[name] = {mode: _gains(ours[mode], all_visible[mode]) for mode in config.query_modes}
    return PointBenchmarkReport(config, rows, _video_info(videos), seconds, gains, occluded)


ABLATIONS: dict[str, tuple[str, ...]] = {
    "similarity only": ("similarity",),
    "cycle only": ("cycle",),
    "presence only": ("best",),
    "similarity + cycle": ("similarity", "cycle"),
}


def fit_on_scenes(model: Encoder, config: PointBenchmarkConfig) -> dict[str, VisibilityModel]:
    """Visibility models fitted on the fitting scenes (from ``config.fit_seed``, disjoint from the scored ones):
    ``"all terms"`` and the :data:`ABLATIONS`."""
    videos = benchmark_videos(config, first_seed=config.fit_seed)
    columns: dict[str, list[np.ndarray]] = {"similarity": [], "cycle": [], "best": [], "visible": []}
    for mode in config.query_modes:
        for item in _track_all(model, videos, mode, config.refine, config.refine_scale):
            scored = evaluation_mask(item.queries.query_points[:, 0], item.tracks.shape[1], mode)
            for key, values in (("similarity", item.similarity), ("cycle", item.cycle), ("best", item.best),
                                ("visible", ~item.queries.occluded)):
                columns[key].append(values[scored])
    sim, cycle, best, visible = (np.concatenate(columns[k]) for k in ("similarity", "cycle", "best", "visible"))
    fitted = {"all terms": fit_visibility(sim, cycle, best, visible)}
    fitted.update({name: fit_visibility(sim, cycle, best, visible, terms) for name, terms in ABLATIONS.items()})
    return fitted


@dataclass(frozen=True)
class Calibration:
    """How well ``scores`` match how often points are visible: per bin of predicted probability, the number of
    scored (frame, point) pairs, their mean score and the fraction actually visible; ``ece`` (the bins' absolute
    gaps weighted by their counts) and ``brier`` (mean squared error of the scores)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    predicted: tuple[float, ...]
    observed: tuple[float, ...]
    ece: float
    brier: float


def calibration(scores: np.ndarray, visible: np.ndarray, bins: int = 10) -> Calibration:
    """The :class:`Calibration` of probabilities ``scores`` against the booleans ``visible`` (same shape)."""
    scores, visible = np.ravel(scores).astype(np.float64), np.ravel(visible).astype(np.float64)
    if scores.shape != visible.shape or len(scores) == 0:
        raise ValueError(f"scores and visible must be non-empty and of one shape, got {scores.shape} and "
                         f"{visible.shape}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted = np.bincount(index, scores, bins) / counts
        observed = np.bincount(index, visible, bins) / counts
    gaps = np.where(counts > 0, np.abs(predicted - observed), 0.0)
    return Calibration(tuple(edges.tolist()), tuple(int(c) for c in counts), tuple(predicted.tolist()),
                       tuple(observed.tolist()), float((gaps * counts).sum() / counts.sum()),
                       float(np.mean((scores - visible) ** 2)))


def _scored_scores(tracked: Sequence[_Tracked], mode: str,
                   visibility: VisibilityModel) -> tuple[np.ndarray, np.ndarray]:
    """The scores of ``visibility`` and the ground-truth visibility of every scored (frame, point) pair."""
    scores, visible = [], []
    for item in tracked:
        mask = evaluation_mask(item.queries.query_points[:, 0], item.tracks.shape[1], mode)
        scores.append(visibility.probability(item.similarity, item.cycle, item.best)[mask])
        visible.append(~item.queries.occluded[mask])
    return np.concatenate(scores), np.concatenate(visible)


def calibration_markdown(by_mode: dict[str, Calibration]) -> str:
    """A table of :class:`Calibration` per query mode: each bin's count, mean score and fraction visible."""
    modes = list(by_mode)
    first = by_mode[modes[0]]
    lines = ["| score bin | " + " | ".join(f"{m}: pairs | {m}: mean score | {m}: visible" for m in modes) + " |",
             "|---|" + "---:|" * (3 * len(modes))]
    for b in range(len(first.counts)):
        cells = []
        for m in modes:
            c = by_mode[m]
            cells += [str(c.counts[b]), "-" if not c.counts[b] else f"{c.predicted[b]:.2f}",
                      "-" if not c.counts[b] else f"{c.observed[b]:.2f}"]
        lines.append(f"| {first.edges[b]:.1f}-{first.edges[b + 1]:.1f} | " + " | ".join(cells) + " |")
    lines += ["", "; ".join(f"{m}: ECE {by_mode[m].ece:.3f}, Brier {by_mode[m].brier:.3f}" for m in modes)]
    return "\n".join(lines)


def fit_and_ablate(model_name: str, config: PointBenchmarkConfig = PointBenchmarkConfig()) -> str:
    """Fit the visibility models on the fitting scenes (:func:`fit_on_scenes`) and score each on the scored
    scenes: the fitted constants, then the table (``python -m stcorr.eval offline --fit-visibility``)."""
    from stcorr.loading import load_encoder

    model = load_encoder(model_name, device="cpu")
    fitted = fit_on_scenes(model, config)
    videos = benchmark_videos(config)
    tracked = {mode: _track_all(model, videos, mode, config.refine, config.refine_scale)
               for mode in config.query_modes}
    scored = {label: {mode: _score_videos(tracked[mode], mode, visibility) for mode in config.query_modes}
              for label, visibility in fitted.items()}
    all_visible = {mode: _score_videos(tracked[mode], mode, None) for mode in config.query_modes}
    rows = {f"{model_name}, {label}": {mode: _mean(per_video) for mode, per_video in by_mode.items()}
            for label, by_mode in scored.items()}
    rows[f"{model_name}, all visible"] = {mode: _mean(per_video) for mode, per_video in all_visible.items()}
    gains = {}
    if len(videos) >= 2:
        gains[f"{model_name}, all terms"] = {mode: _gains(scored["all terms"][mode], all_visible[mode])
                                             for mode in config.query_modes}
    occluded = {mode: _occluded_share(tracked[mode], mode) for mode in config.query_modes}
    constants = "\n".join(f"{label}: {visibility}" for label, visibility in fitted.items())
    report = PointBenchmarkReport(config, rows, _video_info(videos), gains=gains, occluded=occluded)
    calibrated = {mode: calibration(*_scored_scores(tracked[mode], mode, fitted["all terms"]))
                  for mode in config.query_modes}
    return (constants + "\n\n" + report.to_markdown() + "\n\nCalibration of the fitted scores (all terms) on the "
            "scored scenes, every scored (frame, point) pair:\n\n" + calibration_markdown(calibrated))
