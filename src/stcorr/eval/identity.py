"""Identity in the offline benchmark: look-alike objects that cross, and unannotated look-alikes that walk in.

Sequences (:func:`make_identity_video`, exact masks, drawn from a seed like :mod:`stcorr.eval.synthetic`:
the same background photo and camera motion as :func:`~stcorr.eval.synthetic.make_scene`, objects replaced):

- ``crossing``: two look-alikes (upright ellipses cut from the same photo a few pixels apart, like two
  pedestrians in dark coats) walk towards each other, cross with the later one in front (it occludes the
  other completely for a few frames) and walk on. Both are annotated in frame 0.
- ``newcomer``: one annotated object walks slowly; a look-alike enters from the left or right edge of the
  frame and stops next to it (the vtest failure). The newcomer is not in frame 0, so it is not in the
  first mask: its pixels are ground-truth *background*. A distinct annotated object may be elsewhere.

Scores (:func:`identity_scores`, per annotated object, over frames 1 .. T-1):

- an **identity-switch frame** of object k: some other object j (annotated or not) has more of its true
  pixels labelled k than object k itself, ``|P_k & G_j| > |P_k & G_k|``, and at least
  :data:`MIN_SWITCH_SHARE` of object k's frame-0 area (so a few stray pixels are not a switch);
  ``switches`` counts the entries into that state (runs of switch frames), ``switch_frames`` the frames;
- a **leak frame**: at least :data:`LEAK_SHARE` of ``P_k`` lies on other objects' true pixels.

The interactive protocol (:func:`corrections_protocol`, as DAVIS-interactive): frame 0's mask is given to a
:class:`~stcorr.propagation.session.PropagationSession`; after every propagation the J&F of each frame is
computed (mean over annotated objects), and the ground-truth mask of the worst frame (lowest J&F, not yet an
anchor; newcomers as background) is given with ``add_mask``; the session re-propagates. Reported: the J&F
over frames 1 .. T-2 after 0, 1, 2, ... corrections.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from stcorr.errors import InputError
from stcorr.eval.reliability import auroc
from stcorr.eval.sources import Photo, photo_library
from stcorr.eval.synthetic import MovingObject, Scene, make_scene
from stcorr.metrics import davis
from stcorr.propagation.labels import VOID

__all__ = [
    "IDENTITY_KINDS",
    "MIN_SWITCH_SHARE",
    "LEAK_SHARE",
    "IdentityVideo",
    "ObjectIdentity",
    "make_identity_video",
    "identity_scores",
    "frame_jf",
    "corrections_protocol",
    "CorrectionRun",
    "IdentityReport",
    "evaluate_identity",
    "identity_videos",
    "identity_markdown",
]

IDENTITY_KINDS: tuple[str, ...] = ("crossing", "newcomer")
MIN_SWITCH_SHARE = 0.1
LEAK_SHARE = 0.2


@dataclass(frozen=True)
class IdentityVideo:
    """Frames (T, H, W, 3), exact masks of every object (T, H, W) (ids k + 1) and the annotated ids."""

    name: str
    kind: str
    scene: Scene = field(repr=False)
    frames: np.ndarray = field(repr=False)
    masks: np.ndarray = field(repr=False)  # every object, annotated or not
    annotated: tuple[int, ...]  # ids given in frame 0 (1..n, consecutive)

    @property
    def truth(self) -> np.ndarray:
        """(T, H, W) ground truth of the annotated objects: unannotated objects are background."""
        keep = np.zeros(256, np.uint8)
        keep[list(self.annotated)] = self.annotated
        return keep[self.masks]

    @property
    def num_objects(self) -> int:
        return len(self.annotated)


def _walker(photo: Photo, rng: np.random.Generator, radius: float, path: np.ndarray,
            texture_center: tuple[float, float] | None = None) -> MovingObject:
    """An upright ellipse (a pedestrian-like look-alike) textured from ``photo``, walking along ``path``."""
    outline = ("ellipse", np.array([0.5 * radius, radius]))
    height, width = photo.image.shape[:2]
    if texture_center is None:
        texture_center = (rng.uniform(radius + 2, width - radius - 3), rng.uniform(radius + 2, height - radius - 3))
    angle = float(rng.uniform(-0.1, 0.1))
    return MovingObject(photo.name, outline, photo.image, texture_center, path, (angle, angle), (1.0, 1.0))


def _line(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    return np.stack([start + (end - start) * f for f in (0.0, 1 / 3, 2 / 3, 1.0)])


def _look_alike_center(first: MovingObject, rng: np.random.Generator, radius: float) -> tuple[float, float]:
    """A texture centre a few pixels from ``first``'s, inside the photo."""
    height, width = first.texture.shape[:2]
    x, y = np.asarray(first.texture_center) + rng.uniform(-6, 6, 2)
    return (float(np.clip(x, radius + 2, width - radius - 3)), float(np.clip(y, radius + 2, height - radius - 3)))


def _crossing(scene: Scene, photos: Sequence[Photo], rng: np.random.Generator) -> tuple[MovingObject, ...]:
    height, width = scene.size
    radius = rng.uniform(0.16, 0.22) * min(height, width)
    photo = photos[int(rng.integers(len(photos)))]
    y = height * rng.uniform(0.4, 0.6)
    dy = rng.uniform(-0.08, 0.08) * height
    left = _line(np.array([0.2 * width, y - dy]), np.array([0.8 * width, y + dy]))
    right = _line(np.array([0.8 * width, y + dy * rng.uniform(-1, 1)]), np.array([0.2 * width, y - dy]))
    first = _walker(photo, rng, radius, left)
    second = _walker(photo, rng, radius, right, _look_alike_center(first, rng, radius))
    return (first, second)


def _newcomer(scene: Scene, photos: Sequence[Photo], rng: np.random.Generator) -> tuple[MovingObject, ...]:
    height, width = scene.size
    radius = rng.uniform(0.16, 0.22) * min(height, width)
    order = rng.permutation(len(photos))
    photo, other = photos[int(order[0])], photos[int(order[1])]
    side = 1 if rng.random() < 0.5 else -1  # the newcomer enters from the right (1) or the left (-1)
    x = width / 2 + side * width * rng.uniform(0.05, 0.15)
    y = height * rng.uniform(0.4, 0.6)
    walker = _walker(photo, rng, radius, _line(np.array([x, y]), np.array([x + side * 0.05 * width, y])))
    edge = width - 1 + 0.6 * radius if side == 1 else -0.6 * radius  # just out of frame 0
    stop = x + side * 1.25 * radius
    newcomer_path = np.stack([np.array([edge, y + 0.1 * radius]), np.array([stop, y]), np.array([stop, y]),
                              np.array([stop, y])])
    newcomer = _walker(photo, rng, radius, newcomer_path, _look_alike_center(walker, rng, radius))
    objects = [walker]
    if rng.random() < 0.5:  # a distinct annotated object on the other side
        far = np.array([width / 2 - side * 0.3 * width, height * rng.uniform(0.3, 0.7)])
        objects.append(_walker(other, rng, 0.7 * radius, _line(far, far + rng.uniform(-0.05, 0.05, 2) * width)))
    return (*objects, newcomer)  # the newcomer is drawn last (in front)


def make_identity_video(
    seed: int,
    kind: str,
    num_frames: int = 24,
    *,
    size: tuple[int, int] = (256, 320),
    noise: float = 2.0,
    photos: Sequence[Photo] | None = None,
) -> IdentityVideo:
    """The ``kind`` sequence (see the module doc) drawn from ``seed``; motions run over ``num_frames``."""
    if kind not in IDENTITY_KINDS:
        raise InputError(f"kind must be one of {IDENTITY_KINDS}, got {kind!r}")
    if num_frames < 3:
        raise InputError(f"an identity sequence needs at least 3 frames, got {num_frames}")
    photos = tuple(photos) if photos is not None else photo_library()
    base = make_scene(seed, size=size, horizon=num_frames, num_objects=1, noise=noise, photos=photos)
    rng = np.random.default_rng((seed, IDENTITY_KINDS.index(kind), 21))
    others = [p for p in photos if p.name != base.background_photo]
    objects = (_crossing if kind == "crossing" else _newcomer)(base, others, rng)
    scene = replace(base, objects=objects)
    rendered = [scene.render(t) for t in range(num_frames)]
    frames = np.stack([frame for frame, _ in rendered])
    masks = np.stack([mask for _, mask in rendered])
    annotated = tuple(int(i) for i in np.unique(masks[0]) if i != 0)
    expected = tuple(range(1, len(annotated) + 1))
    if annotated != expected:  # a drawing error, not a user error: every annotated object shows in frame 0
        raise InputError(f"seed {seed} {kind}: frame 0 shows objects {annotated}, expected {expected}")
    return IdentityVideo(f"{kind}-{seed:03d}", kind, scene, frames, masks, annotated)


# ------------------------------------------------------------------------------------------------
# Scoring


@dataclass(frozen=True)
class ObjectIdentity:
    """Identity scores of one annotated object of one sequence."""

    sequence: str
    object_id: int
    switches: int  # entries into the switched state
    switch_frames: int
    leak_frames: int
    first_switch: int | None  # frame index


def identity_scores(video: IdentityVideo, predicted: Sequence[np.ndarray]) -> list[ObjectIdentity]:
    """Identity switches and leaks of every annotated object (definitions in the module doc) over frames
    1 .. T-1 of ``predicted`` (id maps at the frames' size)."""
    if len(predicted) != len(video.masks):
        raise InputError(f"{video.name}: {len(predicted)} predicted frames for {len(video.masks)} frames")
    scores = []
    for k in video.annotated:
        floor = MIN_SWITCH_SHARE * np.count_nonzero(video.masks[0] == k)
        switched, switches, frames, leaks, first = False, 0, 0, 0, None
        for t in range(1, len(video.masks)):
            pred_k = np.asarray(predicted[t]) == k
            overlap = np.bincount(video.masks[t][pred_k], minlength=256)
            own = overlap[k]
            overlap[[0, k]] = 0
            other = int(overlap.max())
            now = other > own and other >= floor
            frames += now
            switches += now and not switched
            first = t if now and first is None else first
            switched = now
            leaks += bool(pred_k.any()) and overlap.sum() >= LEAK_SHARE * np.count_nonzero(pred_k)
        scores.append(ObjectIdentity(video.name, k, int(switches), int(frames), int(leaks), first))
    return scores


def frame_jf(truth: np.ndarray, predicted: Sequence[np.ndarray], num_objects: int) -> np.ndarray:
    """(T,) J&F of every frame (mean of J and F over objects 1 .. ``num_objects``)."""
    scores = davis.score_sequence(truth, predicted, num_objects)
    j = np.mean([s.j for s in scores], axis=0)
    f = np.mean([s.f for s in scores], axis=0)
    return (j + f) / 2


@dataclass(frozen=True)
class CorrectionRun:
    """The interactive protocol on one video: J&F after 0, 1, ... corrections, the corrected frames, and the
    predictions before any correction (frames 0 .. T-1, with their reliability)."""

    jf: list[float]
    corrected: list[int]
    first_pass: list[Any] = field(repr=False)


def corrections_protocol(session_factory: Callable[[np.ndarray], Any], video: IdentityVideo,
                         rounds: int = 3) -> CorrectionRun:
    """J&F over frames 1 .. T-2 after 0 .. ``rounds`` corrections (module doc).

    ``session_factory(frames)`` returns a fresh :class:`~stcorr.propagation.session.PropagationSession`
    (or anything with ``add_mask`` / ``propagate`` / ``result``).
    """
    truth = video.truth
    session = session_factory(video.frames)
    session.add_mask(0, truth[0])
    indices = list(davis.evaluated_frame_indices(len(truth)))
    results: list[float] = []
    corrected: list[int] = []
    first_pass: list[Any] = []
    for round_ in range(rounds + 1):
        for _ in session.propagate():
            pass
        if round_ == 0:
            first_pass = [session.result(t) for t in range(len(truth))]
        predicted = [_ids(session.result(t).labels) for t in indices]
        per_frame = frame_jf(truth[indices], predicted, video.num_objects)
        results.append(float(per_frame.mean()))
        if round_ == rounds:
            break
        candidates = [(value, t) for value, t in zip(per_frame, indices) if t not in corrected]
        if not candidates:
            break
        worst = min(candidates)[1]
        corrected.append(worst)
        session.add_mask(worst, truth[worst])
    return CorrectionRun(results, corrected, first_pass)


def _ids(labels: np.ndarray) -> np.ndarray:
    """Void (no label reached the pixel) scored as background."""
    return np.where(labels == VOID, 0, labels)


@dataclass(frozen=True)
class IdentityReport:
    """Identity and corrections of one method on the identity sequences."""

    objects: list[ObjectIdentity]
    jf_after: dict[str, list[float]]  # video name -> J&F after 0..rounds corrections
    corrected: dict[str, list[int]]
    reliability_auroc: float  # "object IoU >= 0.5" vs the library's reliability, frames 1 .. T-1
    samples: int  # (object, frame) pairs behind the AUROC
    bad: int  # of which IoU < 0.5
    jf_after_both: dict[str, list[float]] | None = None  # the same protocol, session predicting both ways

    def mean_jf_after(self, both: bool = False) -> list[float]:
        """Mean over videos of the J&F after 0, 1, ... corrections (``both``: the two-way session's)."""
        runs = self.jf_after_both if both else self.jf_after
        return [float(v) for v in np.mean(list(runs.values()), axis=0)] if runs else []

    def to_json(self) -> dict[str, Any]:
        by_kind: dict[str, dict[str, int]] = {}
        for o in self.objects:
            kind = o.sequence.split("-")[0]
            entry = by_kind.setdefault(kind, {"objects": 0, "switches": 0, "switch_frames": 0, "leak_frames": 0})
            entry["objects"] += 1
            entry["switches"] += o.switches
            entry["switch_frames"] += o.switch_frames
            entry["leak_frames"] += o.leak_frames
        return {
            "J&F_after_corrections": [round(v, 6) for v in self.mean_jf_after()],
            "per_video_J&F_after_corrections": {k: [round(x, 6) for x in v] for k, v in self.jf_after.items()},
            "corrected_frames": self.corrected,
            "J&F_after_corrections_both_directions": [round(v, 6) for v in self.mean_jf_after(both=True)] or None,
            "identity": by_kind,
            "per_object": [asdict(o) for o in self.objects],
            "reliability_AUROC": None if math.isnan(self.reliability_auroc) else round(self.reliability_auroc, 6),
            "reliability_samples": self.samples,
            "reliability_bad_samples": self.bad,
        }


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else np.count_nonzero(pred & gt) / union


def evaluate_identity(session_factory: Callable[[np.ndarray], Any], videos: Sequence[IdentityVideo],
                      rounds: int = 3, both_factory: Callable[[np.ndarray], Any] | None = None) -> IdentityReport:
    """Identity switches, J&F after 0 .. ``rounds`` corrections and the reliability AUROC of one method
    (``session_factory``: the paper's one-way session); ``both_factory`` also runs the corrections with a
    session that predicts frames between anchors from both."""
    objects: list[ObjectIdentity] = []
    jf_after, corrected = {}, {}
    scores, good = [], []
    for video in videos:
        run = corrections_protocol(session_factory, video, rounds)
        jf_after[video.name], corrected[video.name] = run.jf, run.corrected
        labels = [_ids(r.labels) for r in run.first_pass]
        objects += identity_scores(video, labels)
        truth = video.truth
        for result in run.first_pass[1:]:
            for k in video.annotated:
                scores.append((result.reliability or {}).get(k, 1.0))
                good.append(_iou(labels[result.t] == k, truth[result.t] == k) >= 0.5)
    both = {v.name: corrections_protocol(both_factory, v, rounds).jf for v in videos} if both_factory else None
    return IdentityReport(objects, jf_after, corrected, auroc(scores, good), len(good), int(len(good) - sum(good)),
                          both)


def identity_videos(seeds: Sequence[int], num_frames: int, size: tuple[int, int],
                    photos: Sequence[Photo] | None = None) -> list[IdentityVideo]:
    """Every kind of :data:`IDENTITY_KINDS` for every seed."""
    photos = tuple(photos) if photos is not None else photo_library()
    return [make_identity_video(seed, kind, num_frames, size=size, photos=photos)
            for seed in seeds for kind in IDENTITY_KINDS]


def identity_markdown(reports: dict[str, IdentityReport]) -> str:
    """One Markdown row per method: switches and leak frames per kind, J&F after 0..n corrections, AUROC."""
    if not reports:
        return ""
    rounds = len(next(iter(reports.values())).mean_jf_after())
    header = ["Method", "Crossing switches (frames)", "Newcomer switches (frames)", "Newcomer leak frames",
              *(f"J&F {n} corr." for n in range(rounds)), "J&F 0..n corr. (both directions)", "Reliability AUROC"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, report in reports.items():
        kinds = report.to_json()["identity"]
        crossing, newcomer = kinds.get("crossing", {}), kinds.get("newcomer", {})
        row = [name, f"{crossing.get('switches', 0)} ({crossing.get('switch_frames', 0)})",
               f"{newcomer.get('switches', 0)} ({newcomer.get('switch_frames', 0)})",
               str(newcomer.get("leak_frames", 0)), *(f"{100 * v:.1f}" for v in report.mean_jf_after()),
               " / ".join(f"{100 * v:.1f}" for v in report.mean_jf_after(both=True)) or "n/a",
               "n/a" if math.isnan(report.reliability_auroc) else f"{report.reliability_auroc:.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
