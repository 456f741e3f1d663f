"""An interactive propagation session: anchors added and corrected at any frame, results cached per frame.

Built on the streaming kernel (:class:`~stcorr.propagation.kernel.LabelPropagator`: ``add_anchor`` /
``step``), there is no second propagation path. Semantics:

- The **anchors** are frames with given labels (masks, or keypoints, one kind per session). With a0 the
  first anchor, the *forward pass* runs from a0 to the last frame: a0 starts it, every later anchor joins
  the fixed context where it is met (and is output as given), every other frame is predicted. The
  *backward pass* runs from a0 down to frame 0 (anchors after a0 play no part in it).
- A frame's prediction therefore depends on the anchors at or before it (forward pass) or on a0 alone
  (backward pass). An anchor change at frame t invalidates exactly the cached frames whose set of
  anchors changes: later frames of the forward pass; if t is (or becomes, or stops being) the first
  anchor, also every frame before it. Nothing else is recomputed: a pass resumes at its first stale frame
  from the cached features and soft labels of the frames before it
  (:meth:`~stcorr.propagation.kernel.LabelPropagator.remember`).
- New object ids may appear at any anchor: the label channels are the union of the anchors' ids (a
  channel that no context frame carries stays exactly zero, so results before that anchor do not change).
- Features are extracted once per session, lazily, at the working size (``max_side`` / ``size``); masks and
  points are given and results returned at the frames' original size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stcorr.checks import to_numpy
from stcorr.errors import InputError
from stcorr.features import Encoder, check_batch_size, check_fusion_weights, encode_batch, feature_stride
from stcorr.propagation.kernel import LabelPropagator
from stcorr.propagation.labels import VOID
from stcorr.propagation.options import PropagationOptions, resolve_options
from stcorr.propagation.passes import (
    FrameResult,
    Geometry,
    LabelsInput,
    _Prompt,
    advance,
    decode,
    features_in_order,
    make_prompt,
    new_tracker,
    prompt_kind,
    rate,
    warn_thin_objects,
    working_source,
)
from stcorr.propagation.reliability import RECENT_FRAMES, ReliabilityTracker
from stcorr.propagation.session_format import check_session_dict

__all__ = ["PropagationSession", "FrameResult"]

_SESSION_FORMAT = 1


@dataclass(frozen=True)
class _Anchor:
    labels: np.ndarray  # as given, at the original size
    kind: str  # "mask", "soft" or "points"
    version: int  # bumped by every change, so a cached frame can tell whether its anchors changed


@dataclass(frozen=True)
class _Cached:
    result: FrameResult
    grid: torch.Tensor  # (K, h, w) soft labels on the feature grid, channels = ``ids``
    ids: tuple[int, ...]
    depends_on: tuple[Any, ...]  # the anchors (frame, version) and pass the result was computed from
    precision: tuple[Any, ...] | None = None  # the propagator's precision_state just after this frame


def _mask_ids(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in np.unique(mask) if v != VOID)


def _rle(mask: np.ndarray) -> dict[str, Any]:
    flat = mask.ravel()
    starts = np.flatnonzero(np.diff(flat, prepend=flat[:1].astype(np.int64) - 1))
    counts = np.diff(np.append(starts, flat.size))
    return {"shape": list(mask.shape), "values": flat[starts].tolist(), "counts": counts.tolist()}


def _unrle(data: Mapping[str, Any]) -> np.ndarray:
    """The uint8 mask of a run-length dict already checked by :func:`check_session_dict` (so never larger than
    its ``shape``, which ``from_dict`` compared with the frames)."""
    values = np.repeat(np.asarray(data["values"], np.uint8), np.asarray(data["counts"], np.int64))
    return values.reshape(data["shape"])


class PropagationSession:
    """Propagate masks (or keypoints) through one video, correcting them at any frame.

    Args:
        model: an encoder (e.g. from :func:`stcorr.load_model`), or a sequence of encoders fused late.
        frames: anything :func:`stcorr.io.frames.open_frames` accepts, or a :class:`FrameSource`.
        options: the :class:`~stcorr.propagation.options.PropagationOptions` (keywords override its fields,
            e.g. ``backend="torch"``; with the default ``backend="auto"`` a CUDA device with Triton uses the
            fused kernel, which supports everything a session needs: anchors and resuming from cached
            predictions with ``remember``).
        max_side, size: work at a reduced size (longest side, or an explicit (H, W)); results come at the
            original size, probabilities upsampled before the arg-max. ``max_side`` None (default): 640 px on
            CPU, full size on accelerators (:func:`stcorr.features.working_frames`); 0: full size.
        resample: frame resampling to the working size (see :data:`stcorr.io.frames.RESAMPLING`).
        batch_size, dtype, fusion_weights: feature extraction (see :func:`stcorr.extract_features`).
        return_probabilities: results also carry the (K, H, W) probabilities.
        keep: keep every frame's features and result (:meth:`result`, and recomputing only what a
            correction changes, without encoding again); ``False`` streams both, for one-shot use on long
            videos (memory independent of the length; every :meth:`propagate` then recomputes all frames).
    """

    def __init__(
        self,
        model: Encoder,
        frames: Any,
        *,
        options: PropagationOptions | None = None,
        max_side: int | None = None,
        size: tuple[int, int] | None = None,
        resample: str | None = None,
        batch_size: int = 8,
        dtype: torch.dtype | None = None,
        fusion_weights: Sequence[float] | None = None,
        return_probabilities: bool = False,
        keep: bool = True,
        **option_keywords: Any,
    ) -> None:
        feature_stride(model)  # an encoder module, or a sequence of them with one stride (else InputError)
        check_batch_size(batch_size)
        check_fusion_weights(model, fusion_weights)
        self.model = model
        self.options = resolve_options(options, **option_keywords)
        self._source = working_source(frames, model, max_side=max_side, size=size, resample=resample)
        if max_side is None and size is None:  # the device's default: record the size in effect (None = full)
            reduced = self._source.size != self._source.original_size
            max_side = max(self._source.size) if reduced else None
        # to_dict replays them on any device; max_side None there = full size (0 is not stored)
        self.max_side, self.size, self.resample = max_side or None, size, resample
        self._display = self._source.resized() if self._source.size != self._source.original_size else self._source
        self._geometry = Geometry.of(self._source, model)
        self._batch_size, self._dtype, self._fusion_weights = batch_size, dtype, fusion_weights
        self._return_probabilities = return_probabilities
        self._keep = keep
        self._features: dict[int, torch.Tensor] = {}
        self._frames: dict[int, np.ndarray] = {}
        self._anchors: dict[int, _Anchor] = {}
        self._cache: dict[int, _Cached] = {}
        self._version = 0

    # ------------------------------------------------------------------ frames

    @property
    def num_frames(self) -> int:
        """Number of frames."""
        return len(self._source)

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the original frames: masks are given and results returned at this size."""
        return tuple(self._source.original_size)

    @property
    def working_size(self) -> tuple[int, int]:
        """(H, W) the encoder sees."""
        return tuple(self._source.size)

    @property
    def frame_names(self) -> list[str]:
        """One name per frame: file stems for folders, 00000, 00001, ... for videos and arrays."""
        return list(self._source.names)

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` at the original size as (H, W, 3) uint8 RGB (for display; a video is decoded once)."""
        t = self._check_frame_index(t)
        if t not in self._frames:
            if self._display.random_access:
                self._frames[t] = self._to_uint8(self._display[t])
            else:
                self._frames.update((i, self._to_uint8(f)) for i, f in enumerate(self._display))
        return self._frames[t].copy()

    @staticmethod
    def _to_uint8(frame: torch.Tensor) -> np.ndarray:
        return (frame.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)

    def _check_frame_index(self, t: Any) -> int:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise InputError(f"a frame index must be an integer, got {t!r} ({type(t).__name__})")
        if not 0 <= t < self.num_frames:
            raise InputError(f"frame {t} is outside the video's {self.num_frames} frames (0 to {self.num_frames - 1})")
        return int(t)

    # ------------------------------------------------------------------ anchors

    def add_mask(self, t: int, mask: np.ndarray | torch.Tensor) -> None:
        """Make frame ``t`` an anchor with this (H, W) id map at the original size (0 = background, 255 = void).

        Replaces an earlier anchor at ``t``; ids not seen before become new objects from ``t`` on.
        """
        array = to_numpy(mask)
        if array.dtype.kind in "iu" and array.size and 0 <= array.min() and array.max() <= 255:
            array = array.astype(np.uint8)  # explicitly a mask, even where (H, 2) could read as keypoints
        if array.shape != self.frame_size:
            raise InputError(
                f"the mask of frame {t} has shape {array.shape}, the frames are {self.frame_size} (H, W); "
                "give masks at the frames' original size"
            )
        self.add_labels(t, array)

    def add_points(self, t: int, points: np.ndarray | Sequence[Sequence[float]]) -> None:
        """Make frame ``t`` an anchor with (N, 2) keypoints as (x, y) pixels of the original frame.

        Every point anchor of a session has the same N points, in the same order.
        """
        try:
            array = np.asarray(points, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InputError(f"points must be (N, 2) numbers, (x, y) pixels; got {points!r:.80}") from exc
        if array.ndim != 2 or array.shape[1] != 2:
            raise InputError(f"points must be an (N, 2) array of (x, y) pixels, got shape {array.shape}")
        self.add_labels(t, array)

    def add_labels(self, t: int, labels: LabelsInput, *, ids: Sequence[int] | None = None) -> None:
        """Anchor of any kind :func:`stcorr.propagate_labels` accepts (mask, soft labels or keypoints).

        ``ids``, when given, are the only ids a mask may hold (:class:`InputError` otherwise).
        """
        t = self._check_frame_index(t)
        array = np.array(to_numpy(labels))
        what = f"the labels of frame {t}"
        kind = prompt_kind(array, self.frame_size, what)
        others = {a.kind for frame, a in self._anchors.items() if frame != t}
        if others and kind not in others:
            raise InputError(
                f"the anchor at frame {t} is {kind}, the session's other anchors are {others.pop()}; "
                "give anchors of the same kind"
            )
        # Validate now (ids, ranges, shapes), so that a bad anchor never enters the session.
        grid = (1, 1)
        prompt = make_prompt(array, t, self._geometry, grid, self.options, ids=ids, what=what)
        warn_thin_objects(array, self._geometry, self.options, what=f"frame {t}")
        if kind != "mask":
            self._check_same_channels(t, prompt)
        self._version += 1
        self._anchors[t] = _Anchor(array.copy(), kind, self._version)

    def _check_same_channels(self, t: int, prompt: _Prompt) -> None:
        for frame, anchor in self._anchors.items():
            if frame != t:
                other = make_prompt(anchor.labels, frame, self._geometry, (1, 1), self.options)
                if len(other.labels) != len(prompt.labels):
                    raise InputError(
                        f"the anchor at frame {t} has {len(prompt.labels)} channels/points, the one at frame "
                        f"{frame} {len(other.labels)}; every anchor of a session needs the same number"
                    )
                return

    def remove_anchor(self, t: int) -> None:
        """Remove the anchor at frame ``t`` (frames that depended on it become stale)."""
        if t not in self._anchors:
            raise InputError(f"frame {t} is not an anchor; anchors: {sorted(self._anchors)}")
        del self._anchors[t]

    @property
    def anchors(self) -> dict[int, np.ndarray]:
        """The current anchors, ``{frame: labels}`` (copies), sorted by frame."""
        return {t: self._anchors[t].labels.copy() for t in sorted(self._anchors)}

    @property
    def object_ids(self) -> list[int]:
        """Sorted object ids present in the mask anchors (without background 0 and void 255)."""
        return [i for i in self._label_ids() if i != 0] if self._kind() == "mask" else []

    def object_ids_of(self, t: int) -> tuple[int, ...]:
        """The ids of the mask anchor at frame ``t`` (void excluded, background included)."""
        anchor = self._anchors.get(t)
        if anchor is None or anchor.kind != "mask":
            return ()
        return _mask_ids(anchor.labels)

    def _kind(self) -> str | None:
        return next(iter(self._anchors.values())).kind if self._anchors else None

    def _label_ids(self) -> tuple[int, ...]:
        """The label channels: the union of the mask anchors' ids (background included), else None-like ()."""
        if self._kind() != "mask":
            return ()
        return tuple(sorted(set().union(*(_mask_ids(a.labels) for a in self._anchors.values()))))

    # ------------------------------------------------------------------ cache

    def _depends_on(self, t: int) -> tuple[Any, ...]:
        """What frame ``t``'s result is a function of: an anchor frame outputs its own labels; a forward-pass
        frame depends on the anchors at or before it, a backward-pass frame on the first anchor."""
        if t in self._anchors:
            return ("anchor", self._anchors[t].version)
        first = min(self._anchors)
        if t >= first:
            return ("forward", *((a, self._anchors[a].version) for a in sorted(self._anchors) if a <= t))
        return ("backward", (first, self._anchors[first].version))

    def _valid(self, t: int) -> bool:
        cached = self._cache.get(t)
        return cached is not None and bool(self._anchors) and cached.depends_on == self._depends_on(t)

    def stale_frames(self) -> list[int]:
        """Sorted frames whose result is missing or was invalidated by an anchor change."""
        return [t for t in range(self.num_frames) if not self._valid(t)]

    def result(self, t: int) -> FrameResult | None:
        """The cached, up-to-date result of frame ``t``, or None."""
        t = self._check_frame_index(t)
        return self._cache[t].result if self._valid(t) else None

    # ------------------------------------------------------------------ propagation

    def propagate(self, start: int | None = None, reverse: bool = False) -> Iterator[FrameResult]:
        """Bring stale frames up to date, yielding each recomputed frame's result as soon as it is known.

        Frames concerned: all (``start=None``), else those from ``start`` to the end (``reverse=False``) or
        from ``start`` back to frame 0 (``reverse=True``), plus the stale frames they need. Order: the
        forward pass then the backward pass (``reverse=True``: the backward pass first). The caller may stop
        iterating at any time: every yielded frame is cached, the rest stays stale.
        """
        if not self._anchors:
            raise InputError("the session has no anchor: add a mask (add_mask) or points (add_points) first")
        if start is not None:
            start = self._check_frame_index(start)
        first = min(self._anchors)
        wanted = [t for t in self.stale_frames()
                  if start is None or (t <= start if reverse else t >= start)]
        forward = [t for t in wanted if t >= first]
        backward = [t for t in wanted if t < first]
        passes = [("forward", forward), ("backward", backward)]
        for direction, frames in reversed(passes) if reverse else passes:
            if frames:
                yield from self._run(direction, frames)

    def _prompts(self, grid: tuple[int, int]) -> dict[int, _Prompt]:
        ids = self._label_ids() or None
        return {
            t: make_prompt(a.labels, t, self._geometry, grid, self.options, self._return_probabilities, ids)
            for t, a in self._anchors.items()
        }

    def _run(self, direction: str, frames: list[int]) -> Iterator[FrameResult]:
        first = min(self._anchors)
        stale = set(self.stale_frames())
        if direction == "forward":
            begin, end = min(frames), max(frames)
            begin = min(t for t in stale if first <= t <= begin)
            order = range(begin, end + 1)
        else:
            begin, end = max(frames), min(frames)
            begin = max(t for t in stale if begin <= t < first)
            order = range(begin, end - 1, -1)
        features = self._pass_features(order)
        tracker = self._tracker(direction, order.start)
        grid_size: tuple[int, int] | None = None
        propagator: LabelPropagator | None = None
        prompts: dict[int, _Prompt] = {}
        for t, feats in features:
            if propagator is None:
                grid_size = tuple(feats.shape[-2:])
                prompts = self._prompts(grid_size)
                propagator = self._resume(direction, order.start, prompts, feats.device)
                if propagator is None:  # the pass starts at the first anchor itself
                    propagator = LabelPropagator(feats, prompts[t].grid.to(feats.device), self.options)
                    image = rate(prompts[t].image, tracker, anchor=True)
                    if t in stale:
                        yield self._store(t, prompts[t].grid, image)
                    continue
            anchor = prompts.get(t) if direction == "forward" else None
            grid = advance(propagator, feats, anchor)
            if t not in stale:  # an anchor whose own output is up to date: only joins the context
                self._follow(tracker, t, anchor is not None)
                continue
            if anchor is not None:
                result = rate(anchor.image, tracker, anchor=True)
            else:
                first_prompt = prompts[first]
                result = rate(decode(t, grid, first_prompt.kind, first_prompt.labels, self._geometry, self.options,
                                     self._return_probabilities), tracker)
            yield self._store(t, grid, result, propagator.precision_state)

    def _anchor_ids(self, t: int) -> tuple[np.ndarray, tuple[int, ...]]:
        """The anchor at ``t`` as an (H, W) id map and its channel ids (soft labels: arg-max channel)."""
        labels = self._anchors[t].labels
        if self._anchors[t].kind == "mask":
            return labels, self._label_ids()
        return labels.argmax(axis=0), tuple(range(len(labels)))

    def _follow(self, tracker: ReliabilityTracker | None, t: int, anchor: bool) -> None:
        """Tell ``tracker`` about frame ``t``, an anchor or a cached prediction, as if the pass had computed it."""
        if tracker is None:
            return
        if anchor:
            tracker.anchor(*self._anchor_ids(t))
        elif t in self._cache:
            result = self._cache[t].result
            tracker.features(result.labels, result.confidence, result.ids)

    def _tracker(self, direction: str, begin: int) -> ReliabilityTracker | None:
        """The reliability tracker of a pass resuming at ``begin``: it has seen the anchors met before
        ``begin`` and the last predicted frames since the last of them (from the cache)."""
        tracker = new_tracker(self._kind() or "mask", self._geometry)
        first = min(self._anchors)
        if tracker is None or begin == first:
            return tracker
        step = 1 if direction == "forward" else -1
        before = list(range(first, begin, step))
        met = [t for t in before if t == first or (direction == "forward" and t in self._anchors)]
        for t in met:
            self._follow(tracker, t, True)
        predicted = [t for t in before if (t - met[-1]) * step > 0]
        for t in predicted[-RECENT_FRAMES:]:
            self._follow(tracker, t, False)
        return tracker

    def _store(self, t: int, grid: torch.Tensor, result: FrameResult,
               precision: tuple[Any, ...] | None = None) -> FrameResult:
        if self._keep:
            self._cache[t] = _Cached(result, grid.detach(), tuple(result.ids), self._depends_on(t), precision)
        return result

    def _resume(self, direction: str, begin: int, prompts: dict[int, _Prompt],
                device: torch.device) -> LabelPropagator | None:
        """A propagator in the state the pass had just before frame ``begin``, rebuilt from the cache: the
        first anchor, the anchors met, and the last ``context`` predicted frames. None when ``begin`` is
        the first anchor (the pass starts there)."""
        first = min(self._anchors)
        if begin == first:
            return None
        step = 1 if direction == "forward" else -1
        before = range(first + step, begin, step)
        propagator = LabelPropagator(self._feature(first), prompts[first].grid.to(device), self.options)
        fixed = [t for t in before if t in prompts] if direction == "forward" else []
        for t in fixed:
            propagator.add_anchor(self._feature(t), prompts[t].grid.to(device))
        predicted = [t for t in before if t not in fixed]
        for t in predicted[max(0, len(predicted) - self.options.context):] if self.options.context else []:
            propagator.remember(self._feature(t), self._cached_grid(t, prompts[first].labels.ids).to(device))
        precision = self._cache[before[-1]].precision if before else None
        if precision is not None:  # the automatic bfloat16 -> float32 switch as the pass had it there
            propagator.resume_precision(precision)
        return propagator

    def _cached_grid(self, t: int, ids: tuple[int, ...]) -> torch.Tensor:
        """Frame ``t``'s cached grid soft labels on the channels ``ids`` (ids it did not have are zero)."""
        cached = self._cache[t]
        if cached.ids == ids:
            return cached.grid
        grid = cached.grid.new_zeros((len(ids), *cached.grid.shape[1:]))
        position = {i: c for c, i in enumerate(cached.ids)}
        for channel, i in enumerate(ids):
            if i in position:
                grid[channel] = cached.grid[position[i]]
        return grid

    # ------------------------------------------------------------------ features

    def _feature(self, t: int) -> torch.Tensor:
        if t in self._features:
            return self._features[t]
        frame = self._source[t][None]
        feats = encode_batch(self.model, frame, dtype=self._dtype, fusion_weights=self._fusion_weights)[0]
        if self._keep:
            self._features[t] = feats
        return feats

    def _pass_features(self, order: range) -> Iterator[tuple[int, torch.Tensor]]:
        if all(t in self._features for t in order):
            yield from ((t, self._features[t]) for t in order)
            return
        stream = features_in_order(self.model, self._source, order, self._batch_size, self._dtype,
                                   self._fusion_weights)
        for t, feats in zip(order, stream):
            if self._keep:
                self._features[t] = feats
            yield t, feats

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, Any]:
        """Anchors (masks run-length encoded, points as lists), options and working size: enough for a
        headless replay with :meth:`from_dict` giving identical results. JSON-serialisable."""
        anchors = []
        for t in sorted(self._anchors):
            anchor = self._anchors[t]
            data = _rle(anchor.labels) if anchor.kind == "mask" else {"array": anchor.labels.tolist()}
            anchors.append({"frame": t, "kind": anchor.kind, **data})
        config = getattr(self.model, "config", None)
        return {
            "format": _SESSION_FORMAT,
            "num_frames": self.num_frames,
            "frame_size": list(self.frame_size),
            "options": self.options.to_dict(),
            "max_side": self.max_side,
            "size": list(self.size) if self.size is not None else None,
            "resample": self.resample,
            "model": config if isinstance(config, dict) else {"class": type(self.model).__name__},
            "anchors": anchors,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], model: Encoder, frames: Any, **kwargs: Any) -> PropagationSession:
        """A session with the anchors, options and working size of ``data`` (from :meth:`to_dict`).

        ``data`` is checked completely first (:meth:`check_dict`); masks are decoded only once the frames are
        known to have the size ``data`` was saved for.
        """
        cls.check_dict(data)
        size = tuple(data["size"]) if data.get("size") is not None else None
        session = cls(model, frames, options=PropagationOptions.from_dict(data["options"]),
                      max_side=data.get("max_side") or 0, size=size, resample=data.get("resample"), **kwargs)
        if list(session.frame_size) != list(data["frame_size"]) or session.num_frames != data["num_frames"]:
            raise InputError(
                f"the session was saved for {data['num_frames']} frames of {tuple(data['frame_size'])}, these frames "
                f"are {session.num_frames} of {session.frame_size}"
            )
        for anchor in data["anchors"]:
            labels = _unrle(anchor) if anchor["kind"] == "mask" else np.asarray(anchor["array"], np.float32)
            session.add_labels(anchor["frame"], labels)
        return session

    @staticmethod
    def check_dict(data: Any) -> None:
        """Raise :class:`InputError` (naming the field and the fix) unless ``data`` is a complete, consistent
        session dictionary of a format this version reads; allocates nothing from the numbers it holds."""
        check_session_dict(data, formats=(_SESSION_FORMAT,))
