"""The offline benchmark (``python -m stcorr.eval offline``): real ground truth with no dataset download.

Two parts, every method run through the same code:

* **Real image pairs** (:mod:`stcorr.eval.pairs`: Middlebury Motorcycle and Aloe, Graffiti 1->3) at a
  working resolution (longest side ``pair_max_side``):

  - *point matching*: a regular grid of valid source points (``point_cells`` per longest side) is
    matched into the target with :func:`stcorr.match_points` (whole-frame search); PCK = % of points
    within 4 / 8 / 16 px (working pixels) of the ground truth;
  - *label transfer*: the source is cut into a grid of blocks (``grid_cells`` per longest side), the
    block ids are propagated through the 2-frame clip (source, target) with
    :func:`stcorr.eval.predict.propagate_mask` (DAVIS preset, window widened to the whole frame) and
    compared with the blocks pushed through the ground truth, with DAVIS J and F. Target pixels of
    unknown ground truth are void: zeroed in both masks, as davis2017-evaluation does with void pixels
    (so F also counts the void's edges, identically for every method). Blocks that keep under 25 %
    of their area in the target view are not scored.

* **Semi-synthetic videos** (:mod:`stcorr.eval.synthetic`, one per seed): frame 0's exact mask is
  propagated with the DAVIS preset of the model's stride and scored with DAVIS J&F over frames
  1 .. T-2, objects pooled over all videos (the DAVIS-2017 semi-supervised protocol).

  Seeds come in two disjoint splits (:func:`split_seeds`): ``tune`` (seeds 0, 1, 2, ...; the default
  run's 8 videos are its first 8) for choosing anything, and ``heldout`` (seeds 1000, 1001, ...) only to
  confirm a choice made on ``tune``. :meth:`OfflineConfig.enlarged` (CLI ``--videos N --split``) runs
  N videos of a split (or of both). The report gives each method's per-video standard error and, for
  every method against the last one, a paired bootstrap 95 % interval of the J&F difference
  (:mod:`stcorr.eval.uncertainty`), so a difference can be told from the choice of videos.
* **Identity sequences** (:mod:`stcorr.eval.identity`, seeds ``identity_seeds``, encoders only): look-alikes
  that cross, and an unannotated look-alike walking in next to an annotated object; identity switches and
  leak frames per object, J&F after 0 .. ``corrections`` ground-truth corrections at the worst frame (a
  :class:`~stcorr.propagation.session.PropagationSession` under the same preset), and the AUROC of the
  per-object reliability for "object IoU >= 0.5" on the first pass.

Methods: ``held-still`` (no model: frame 0's mask repeated, every point kept in place), the baselines
``lab-pixels``, ``random-r18`` and ``efficientnet-lite0`` (:mod:`stcorr.baselines`), then the models
asked for (default: the embedded model, when this build ships one). Seconds per method cover its
propagation and matching, not the data generation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from stcorr.errors import InputError, StcorrError
from stcorr.eval.identity import IdentityReport, IdentityVideo, evaluate_identity, identity_markdown, identity_videos
from stcorr.eval.pairs import PAIR_NAMES, ImagePair, load_pairs
from stcorr.eval.predict import propagate_mask
from stcorr.eval.presets import EvalPreset, preset_for
from stcorr.eval.sources import photo_library
from stcorr.eval.synthetic import SyntheticVideo, make_video
from stcorr.eval.uncertainty import paired_bootstrap, standard_error
from stcorr.features import Encoder, feature_stride
from stcorr.metrics import davis
from stcorr.propagation.matching import match_points
from stcorr.propagation.session import PropagationSession

__all__ = [
    "HELD_STILL",
    "BASELINE_METHODS",
    "SPLITS",
    "HELDOUT_SEED_BASE",
    "split_seeds",
    "seed_split",
    "OfflineConfig",
    "PairScores",
    "MethodScores",
    "OfflineReport",
    "block_segments",
    "grid_points",
    "default_models",
    "run_offline",
]

logger = logging.getLogger(__name__)

HELD_STILL = "held-still"
BASELINE_METHODS: tuple[str, ...] = (HELD_STILL, "lab-pixels", "random-r18", "efficientnet-lite0")
_MIN_KEPT_AREA = 0.25
SPLITS: tuple[str, ...] = ("tune", "heldout", "all")
HELDOUT_SEED_BASE = 1000
"""First seed of the ``heldout`` split; ``tune`` seeds count from 0 (far below it for any practical size)."""


def split_seeds(split: str, videos: int) -> tuple[int, ...]:
    """The seeds of ``videos`` synthetic videos of ``split``: ``tune`` 0..N-1, ``heldout`` 1000..1000+N-1,
    ``all`` both (2N videos). Decide on ``tune``; ``heldout`` only confirms."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if isinstance(videos, bool) or not isinstance(videos, int) or not 1 <= videos <= HELDOUT_SEED_BASE:
        raise InputError(f"videos must be an integer in 1..{HELDOUT_SEED_BASE}, got {videos!r}")
    tune = tuple(range(videos))
    heldout = tuple(range(HELDOUT_SEED_BASE, HELDOUT_SEED_BASE + videos))
    return {"tune": tune, "heldout": heldout, "all": tune + heldout}[split]


def seed_split(seed: int) -> str:
    """``"tune"`` or ``"heldout"``: the split a seed belongs to."""
    return "heldout" if seed >= HELDOUT_SEED_BASE else "tune"


@dataclass(frozen=True)
class OfflineConfig:
    """What the benchmark runs; :meth:`quick` is the reduced version used by the tests."""

    seeds: tuple[int, ...] = tuple(range(8))
    num_frames: int = 24
    size: tuple[int, int] = (256, 320)
    pair_max_side: int = 512
    pck_thresholds: tuple[float, ...] = (4.0, 8.0, 16.0)
    grid_cells: int = 8
    point_cells: int = 32
    pairs: tuple[str, ...] = PAIR_NAMES
    # identity sequences (stcorr.eval.identity); () skips them. Seeds 100+: not those the reliability weights were
    # fitted on (0-3, benchmarks/reliability_fit.py)
    identity_seeds: tuple[int, ...] = (100, 101, 102, 103)
    corrections: int = 3

    @classmethod
    def quick(cls) -> OfflineConfig:
        """3 videos of 8 frames at 200x160, pairs at 256 px, identity sequences of seed 0, 1 correction."""
        return cls(seeds=(0, 1, 2), num_frames=8, size=(160, 200), pair_max_side=256, identity_seeds=(0,),
                   corrections=1)

    @classmethod
    def enlarged(cls, videos: int = 40, split: str = "tune") -> OfflineConfig:
        """The full run's settings with ``videos`` synthetic videos of ``split`` (see :func:`split_seeds`)."""
        return cls(seeds=split_seeds(split, videos))


@dataclass(frozen=True)
class PairScores:
    """Scores of one method on one pair: PCK (%) per threshold (px), J and F (fractions) of the transfer."""

    pck: dict[float, float]
    j: float
    f: float
    points: int
    segments: int

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


@dataclass(frozen=True)
class MethodScores:
    """Everything measured for one method."""

    name: str
    synthetic: davis.DavisSummary
    per_video: dict[str, float]  # J&F per synthetic video
    pairs: dict[str, PairScores]
    seconds: float
    identity: IdentityReport | None = None  # encoders only (the corrections need a session)


@dataclass(frozen=True)
class OfflineReport:
    """The benchmark's results, printable as Markdown and serialisable as JSON."""

    config: OfflineConfig
    methods: tuple[MethodScores, ...]
    videos: dict[str, dict[str, Any]]  # name -> photos and object count
    pairs: dict[str, str]  # name -> description
    absent: dict[str, str]  # pair name -> why it is absent
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why it did not run
    data_seconds: float = 0.0

    def method(self, name: str) -> MethodScores:
        for scores in self.methods:
            if scores.name == name:
                return scores
        raise KeyError(name)

    def to_markdown(self) -> str:
        """A Markdown table (percent), one row per method, with a header line describing the run."""
        c = self.config
        thresholds = "/".join(f"{t:g}" for t in c.pck_thresholds)
        lines = [
            f"Offline benchmark: {len(self.videos)} semi-synthetic videos ({c.num_frames} frames, "
            f"{c.size[1]}x{c.size[0]}, seeds {_describe_seeds(c.seeds)}), DAVIS J&F over frames 1..T-2; "
            f"real pairs at longest side {c.pair_max_side} px: PCK@{thresholds} px of matched grid points, "
            "J&F of a transferred block grid. Percent.",
            "",
        ]
        header = ["Method", "Synthetic J&F", "J", "F"]
        for name in self.pairs:
            header += [f"{name.capitalize()} PCK@{thresholds}", f"{name.capitalize()} J&F"]
        header.append("Time (s)")
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        for m in self.methods:
            row = [m.name, _pct(m.synthetic.jf_mean), _pct(m.synthetic.j_mean), _pct(m.synthetic.f_mean)]
            for name in self.pairs:
                scores = m.pairs[name]
                row += [" / ".join(f"{scores.pck[t]:.1f}" for t in c.pck_thresholds), _pct(scores.jf)]
            row.append(f"{m.seconds:.1f}")
            lines.append("| " + " | ".join(row) + " |")
        lines += _uncertainty_lines(self)
        identity = identity_markdown({m.name: m.identity for m in self.methods if m.identity is not None})
        if identity:
            lines += ["", f"Identity sequences (seeds {', '.join(map(str, c.identity_seeds))}; crossing look-alikes "
                      "and unannotated newcomers): identity switches, J&F (percent) after 0..n corrections at the "
                      "worst frame, AUROC of the per-object reliability for object IoU >= 0.5.", "", identity]
        notes = [f"Absent pair {name}: {reason}" for name, reason in self.absent.items()]
        notes += [f"Skipped method {name}: {reason}" for name, reason in self.skipped.items()]
        return "\n".join(lines + ([""] + notes if notes else []))

    def to_json(self) -> dict[str, Any]:
        """Every number (fractions for J/F, percent for PCK), the configuration and the data used."""
        methods = {}
        for m in self.methods:
            synthetic = {k: _number(v) for k, v in m.synthetic.as_dict().items()}
            synthetic["num_objects"] = m.synthetic.num_objects
            synthetic["per_video_J&F"] = {k: _number(v) for k, v in m.per_video.items()}
            synthetic["per_video_J&F_SE"] = _number(standard_error(list(m.per_video.values())))
            pairs = {
                name: {
                    "PCK": {f"{t:g}px": _number(v) for t, v in s.pck.items()},
                    "J&F": _number(s.jf), "J": _number(s.j), "F": _number(s.f),
                    "points": s.points, "segments": s.segments,
                }
                for name, s in m.pairs.items()
            }  # fmt: skip
            methods[m.name] = {"seconds": round(m.seconds, 3), "synthetic": synthetic, "pairs": pairs}
            if m.identity is not None:
                methods[m.name]["identity"] = m.identity.to_json()
        return {
            "benchmark": "stcorr-offline",
            "config": asdict(self.config),
            "videos": self.videos,
            "pairs": self.pairs,
            "absent": self.absent,
            "skipped": self.skipped,
            "data_seconds": round(self.data_seconds, 3),
            "methods": methods,
            "paired_differences": _paired_differences(self),
        }


def _describe_seeds(seeds: Sequence[int]) -> str:
    """Seeds as runs (``0-39 (tune), 1000-1039 (heldout)``)."""
    runs: list[list[int]] = []
    for seed in seeds:
        if runs and seed == runs[-1][-1] + 1 and seed_split(seed) == seed_split(runs[-1][0]):
            runs[-1].append(seed)
        else:
            runs.append([seed])
    return ", ".join(
        (f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r))) + f" ({seed_split(r[0])})" for r in runs
    )


def _paired_differences(report: OfflineReport) -> dict[str, dict[str, Any]]:
    """Per-video J&F of every method minus the last method's, with a paired bootstrap 95 % interval."""
    if len(report.methods) < 2 or len(report.videos) < 2:
        return {}
    last = report.methods[-1]
    result = {}
    for m in report.methods[:-1]:
        diff = paired_bootstrap(m.per_video, last.per_video)
        result[m.name] = {"minus": last.name, "mean": _number(diff.mean),
                          "ci95": [_number(diff.low), _number(diff.high)], "videos": diff.videos}
    return result


def _uncertainty_lines(report: OfflineReport) -> list[str]:
    """Per-video standard errors and the paired differences with the last method, as Markdown notes."""
    if len(report.videos) < 2:
        return []
    errors = ", ".join(f"{m.name} {_pct(standard_error(list(m.per_video.values())))}" for m in report.methods)
    lines = ["", f"Per-video synthetic J&F standard error (points): {errors}."]
    for name, diff in _paired_differences(report).items():
        low, high = diff["ci95"]
        lines.append(f"Synthetic J&F {name} - {diff['minus']}: {100 * diff['mean']:+.1f} "
                     f"(paired bootstrap 95 % CI {100 * low:+.1f} .. {100 * high:+.1f}, {diff['videos']} videos).")
    return lines


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


# ------------------------------------------------------------------------------------------------
# Methods


class _Method(Protocol):
    def propagate(self, frames: np.ndarray, first_mask: np.ndarray, *, whole_frame: bool = False) -> list[np.ndarray]:
        """Id maps of every frame of a (T, H, W, 3) clip, frame 0 being ``first_mask``."""

    def match(self, source: np.ndarray, target: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Target (x, y) of (N, 2) source points."""


class _HeldStill:
    """No model: nothing moves."""

    def propagate(self, frames: np.ndarray, first_mask: np.ndarray, *, whole_frame: bool = False) -> list[np.ndarray]:
        return [np.asarray(first_mask)] * len(frames)

    def match(self, source: np.ndarray, target: np.ndarray, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, np.float64).copy()


class _EncoderMethod:
    """An encoder under the DAVIS preset of its stride."""

    def __init__(self, model: Encoder) -> None:
        self.model = model
        self.stride = feature_stride(model)
        self.preset: EvalPreset = preset_for("davis", self.stride)

    def propagate(self, frames: np.ndarray, first_mask: np.ndarray, *, whole_frame: bool = False) -> list[np.ndarray]:
        preset = self.preset
        if whole_frame:
            preset = preset.with_overrides(radius=math.ceil(max(frames.shape[1:3]) / self.stride))
        return list(propagate_mask(self.model, frames, first_mask, preset))

    def match(self, source: np.ndarray, target: np.ndarray, points: np.ndarray) -> np.ndarray:
        return match_points(self.model, source, target, points, max_side=0).points.astype(np.float64)

    def session(self, frames: np.ndarray) -> PropagationSession:
        """An interactive session under the same preset (for the corrections protocol)."""
        return PropagationSession(self.model, frames, options=self.preset.options)

    def two_way_session(self, frames: np.ndarray) -> PropagationSession:
        """The same, predicting frames between anchors from both (the session's default; the preset pins the
        paper's one-way protocol)."""
        return PropagationSession(self.model, frames, options=self.preset.options.replace(directions="both"))


# ------------------------------------------------------------------------------------------------
# Scoring


def block_segments(size: tuple[int, int], cells: int) -> np.ndarray:
    """(H, W) uint8 ids 1..K of a grid of square blocks, ``cells`` blocks along the longest side."""
    height, width = size
    block = math.ceil(max(size) / cells)
    columns = math.ceil(width / block)
    ys, xs = np.mgrid[0:height, 0:width]
    ids = (ys // block) * columns + xs // block + 1
    if ids.max() > 254:
        raise InputError(f"{int(ids.max())} blocks exceed the 254 ids of a mask; use fewer cells")
    return ids.astype(np.uint8)


def grid_points(valid: np.ndarray, cells: int) -> np.ndarray:
    """(N, 2) (x, y) integer points of a regular grid (``cells`` along the longest side) where ``valid``."""
    spacing = max(1, math.ceil(max(valid.shape) / cells))
    ys, xs = np.mgrid[spacing // 2 : valid.shape[0] : spacing, spacing // 2 : valid.shape[1] : spacing]
    keep = valid[ys, xs]
    return np.stack([xs[keep], ys[keep]], axis=1).astype(np.float64)


def _score_pair(method: _Method, pair: ImagePair, config: OfflineConfig) -> PairScores:
    points = grid_points(pair.valid, config.point_cells)
    truth = pair.flow[points[:, 1].astype(int), points[:, 0].astype(int)]
    errors = np.linalg.norm(method.match(pair.source, pair.target, points) - truth, axis=1)
    pck = {t: 100.0 * float(np.mean(errors <= t)) for t in config.pck_thresholds}

    if pair.source.shape != pair.target.shape:
        raise InputError(f"{pair.name}: label transfer needs images of one size")
    labels = block_segments(pair.source.shape[:2], config.grid_cells)
    truth_labels = pair.transfer(labels)
    source_area = np.bincount(labels.ravel(), minlength=256)
    target_area = np.bincount(truth_labels.ravel(), minlength=256)
    kept = np.flatnonzero((source_area > 0) & (target_area >= _MIN_KEPT_AREA * source_area))
    kept = kept[kept != 255]
    lookup = np.zeros(256, np.uint8)
    lookup[kept] = np.arange(1, len(kept) + 1)
    predicted = method.propagate(np.stack([pair.source, pair.target]), labels, whole_frame=True)[1]
    unknown = truth_labels == 255
    gt = lookup[truth_labels]
    pred = np.where(unknown, 0, lookup[predicted])
    summary = davis.summarize(davis.score_sequence([gt], [pred], len(kept), sequence=pair.name))
    return PairScores(pck, summary.j_mean, summary.f_mean, len(points), len(kept))


def _score_videos(
    method: _Method, videos: Sequence[SyntheticVideo]
) -> tuple[list[davis.ObjectScores], dict[str, float]]:
    objects: list[davis.ObjectScores] = []
    per_video = {}
    for video in videos:
        predicted = method.propagate(video.frames, video.masks[0])
        indices = davis.evaluated_frame_indices(len(video.frames))
        scores = davis.score_sequence(
            (video.masks[i] for i in indices),
            (predicted[i] for i in indices),
            davis.count_objects(video.masks[0]),
            sequence=video.name,
        )
        objects += scores
        per_video[video.name] = davis.summarize(scores).jf_mean
    return objects, per_video


def _evaluate(
    name: str, method: _Method, videos: Sequence[SyntheticVideo], pairs: Sequence[ImagePair], config: OfflineConfig,
    identity: Sequence[IdentityVideo] = (),
) -> MethodScores:
    start = time.perf_counter()
    pair_scores = {pair.name: _score_pair(method, pair, config) for pair in pairs}
    objects, per_video = _score_videos(method, videos)
    seconds = time.perf_counter() - start
    logger.info("offline %s: %.1f s", name, seconds)
    report = None
    if identity and isinstance(method, _EncoderMethod):
        report = evaluate_identity(method.session, identity, config.corrections, method.two_way_session)
    return MethodScores(name, davis.summarize(objects), per_video, pair_scores, seconds, report)


# ------------------------------------------------------------------------------------------------
# Running


def default_models() -> list[str]:
    """The embedded model's name when this build ships one that loads, else nothing."""
    from stcorr.loading import load_model
    from stcorr.manifest import default_model_name

    name = default_model_name()
    if name is None:
        return []
    try:
        load_model(name, device="cpu")
    except StcorrError as exc:
        logger.info("embedded model %s unavailable: %s", name, exc)
        return []
    return [name]


def _load_method(name: str, device: str | None) -> _Method:
    if name == HELD_STILL:
        return _HeldStill()
    from stcorr.loading import load_encoder

    return _EncoderMethod(load_encoder(name, device=device))


def run_offline(
    models: Sequence[str] | None = None,
    *,
    config: OfflineConfig = OfflineConfig(),
    device: str | None = None,
    progress: bool = False,
    baselines: Sequence[str] = BASELINE_METHODS,
) -> OfflineReport:
    """Run the benchmark for ``baselines`` (default: all of :data:`BASELINE_METHODS`) and ``models``
    (default: :func:`default_models`). Every method's scores are independent of the others run with it.

    A baseline that cannot load (e.g. EfficientNet-Lite0 without its package) is reported as skipped;
    a model given in ``models`` that cannot load raises its :class:`~stcorr.errors.StcorrError`.

    Raises:
        ImportError: scikit-image (the photos of the synthetic videos) is not installed.
    """
    unknown = [name for name in baselines if name not in BASELINE_METHODS]
    if unknown:
        raise InputError(f"unknown baselines {unknown}; expected some of {', '.join(BASELINE_METHODS)}")
    extra = list(default_models() if models is None else models)
    methods: dict[str, _Method] = {}
    skipped: dict[str, str] = {}
    for name in list(baselines) + [name for name in extra if name not in baselines]:
        try:
            methods[name] = _load_method(name, device)
        except StcorrError as exc:
            if name in extra:
                raise
            skipped[name] = str(exc)
            logger.warning("skipping %s: %s", name, exc)

    start = time.perf_counter()
    library = photo_library()
    videos = [make_video(seed, config.num_frames, size=config.size, photos=library) for seed in config.seeds]
    pairs, absent = load_pairs(config.pairs, max_side=config.pair_max_side)
    identity = identity_videos(config.identity_seeds, config.num_frames, config.size, library)
    data_seconds = time.perf_counter() - start
    logger.info("offline data: %d videos, %d pairs in %.1f s", len(videos), len(pairs), data_seconds)
    results = [
        _evaluate(name, method, videos, pairs, config, identity)
        for name, method in tqdm(methods.items(), desc="offline", unit="method", disable=None if progress else True)
    ]
    video_info = {
        v.name: {
            "seed": v.scene.seed,
            "split": seed_split(v.scene.seed),
            "background": v.scene.background_photo,
            "objects": [o.photo for o in v.scene.objects],
            "frames": len(v.frames),
        }
        for v in videos
    }
    return OfflineReport(
        config, tuple(results), video_info, {p.name: p.description for p in pairs}, absent, skipped, data_seconds
    )
