"""An interactive propagation session: anchors added and corrected at any frame, results cached per frame.

Built on the streaming kernel (:class:`~stcorr.propagation.kernel.LabelPropagator`: ``add_anchor`` /
``step`` / ``remember``), there is no second propagation path. With the anchors a0 < a1 < ... < an:

- **Before a0** frames are predicted *backward* from a0 alone; **after an** *forward*: a0 starts the
  forward pass, every later anchor joins its fixed context where it is met (and is output as given).
- **Between two anchors** ak < t < ak+1 (``options.directions``): ``"both"`` (the default) predicts t
  forward (as above, anchors a0..ak) and backward from ak+1 alone, and fuses the two grid soft labels per
  cell, each direction weighted by its confidence (largest label share) over its distance to its anchor:
  ``w_fwd ∝ conf_fwd / (t - ak)``, ``w_bwd ∝ conf_bwd / (ak+1 - t)`` (the nearer, surer direction counts
  more; chosen against distance-only, confidence-only and winner-takes-all in ``benchmarks/session_fusion.py``);
  ``"forward"`` keeps the forward prediction only (the paper's one-way protocol). In ``"both"`` the forward
  pass's window of previous frames holds the *fused* labels of the frames before ak, so a correction at
  ak+1 also repairs the context that frames after it see.
- **Objects**: an anchor is authoritative for the objects it *owns* (``add_mask(t, mask, objects=...)``):
  their pixels there are as given (an owned id absent from the mask is erased at t). Every other object
  keeps its prediction at t: the anchor's soft labels are the owned objects as given, the rest of each
  pixel's mass (the mask's background) shared between background and the objects not owned in proportion
  to their forward prediction at t. Such an anchor *depends on* that prediction (the anchors before it)
  when an object it does not own is present in an earlier anchor; the first anchor never does (what it
  does not own is background there).
- **Staleness**: a cached frame is recomputed exactly when what it is a function of changes: its own
  anchor; for a forward prediction, the anchors before it; for a backward prediction, the anchor it
  starts from (and, if that anchor depends on its prediction, the anchors before that). So an anchor
  added or changed at t makes stale the frames back to the previous anchor (their backward part only:
  the forward parts stay cached and are fused again) and every later frame (forward). A pass resumes at
  its first stale frame from the cached features and soft labels of the frames before it
  (:meth:`~stcorr.propagation.kernel.LabelPropagator.remember`); forward and backward parts are cached
  separately, so each is recomputed only when it is stale.
- New object ids may appear at any anchor: the label channels are the union of the anchors' ids (a
  channel that no context frame carries stays exactly zero).
- Features are extracted once per session, lazily, at the working size (``max_side`` / ``size``); masks and
  points are given and results returned at the frames' original size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from stcorr.checks import to_numpy
from stcorr.errors import InputError
from stcorr.features import Encoder, check_batch_size, check_fusion_weights, encode_batch, feature_stride
from stcorr.propagation.kernel import LabelPropagator
from stcorr.propagation.labels import VOID, LabelSet, confidence_map, decode_ids, mask_to_onehot, resize_soft, upsample
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
    warn_thin_objects,
    working_source,
)
from stcorr.propagation.reliability import RECENT_FRAMES, ObjectShape, object_shapes
from stcorr.propagation.session_format import SESSION_FORMATS, check_session_dict

__all__ = ["PropagationSession", "FrameResult", "FUSION_RULES", "AnchorState"]

_SESSION_FORMAT = SESSION_FORMATS[-1]  # 2: anchors carry "objects", options "directions"; format 1 is still read
_READABLE_FORMATS = SESSION_FORMATS


@dataclass(frozen=True)
class _Anchor:
    labels: np.ndarray  # as given (for an anchor owning some objects only: their pixels, 0 elsewhere), original size
    kind: str  # "mask", "soft" or "points"
    version: int  # bumped by every change, so a cached frame can tell whether its anchors changed
    objects: frozenset[int] = frozenset()  # object ids the anchor is authoritative for (masks)
    ids: frozenset[int] = frozenset()  # ids present in ``labels`` (void excluded)


@dataclass(frozen=True)
class AnchorState:
    """The anchors of a session at one moment (from :meth:`PropagationSession.anchor_state`); opaque."""

    anchors: Mapping[int, _Anchor]

    def __repr__(self) -> str:
        return f"AnchorState(frames={sorted(self.anchors)})"


@dataclass(frozen=True)
class _Part:
    """One direction's prediction of a frame on the feature grid."""

    grid: torch.Tensor  # (K, h, w) soft labels, channels = ``ids``
    ids: tuple[int, ...]
    depends_on: tuple[Any, ...]
    precision: tuple[Any, ...] | None = None  # the propagator's precision_state just after this frame


@dataclass(frozen=True)
class _Cached:
    result: FrameResult | None  # None when the session does not keep results (keep=False)
    grid: torch.Tensor  # (K, h, w) final soft labels on the feature grid (what later context frames see)
    ids: tuple[int, ...]
    depends_on: tuple[Any, ...]  # what the result was computed from (see PropagationSession._final_key)
    precision: tuple[Any, ...] | None = None  # the propagator's precision_state just after this frame


def _by_distance(forward: torch.Tensor, backward: torch.Tensor, to_forward: int, to_backward: int) -> torch.Tensor:
    weight = to_backward / (to_forward + to_backward)
    return weight * forward + (1.0 - weight) * backward


def _confidence(grid: torch.Tensor) -> torch.Tensor:
    return grid.amax(0) / grid.sum(0).clamp_min(1e-12)


def _by_confidence(forward: torch.Tensor, backward: torch.Tensor, to_forward: int, to_backward: int) -> torch.Tensor:
    f, b = _confidence(forward), _confidence(backward)
    weight = torch.where(f + b > 0, f / (f + b).clamp_min(1e-12), 0.5)
    return weight * forward + (1.0 - weight) * backward


def _by_distance_and_confidence(forward: torch.Tensor, backward: torch.Tensor, to_forward: int,
                                to_backward: int) -> torch.Tensor:
    f, b = _confidence(forward) / to_forward, _confidence(backward) / to_backward
    weight = torch.where(f + b > 0, f / (f + b).clamp_min(1e-12), to_backward / (to_forward + to_backward))
    return weight * forward + (1.0 - weight) * backward


def _more_confident(forward: torch.Tensor, backward: torch.Tensor, to_forward: int, to_backward: int) -> torch.Tensor:
    return torch.where(_confidence(forward) >= _confidence(backward), forward, backward)


FUSION_RULES = {
    "distance": _by_distance,
    "confidence": _by_confidence,
    "distance-confidence": _by_distance_and_confidence,
    "max-confidence": _more_confident,
}
"""How a frame between two anchors fuses its forward and backward grid soft labels (``rule(forward,
backward, frames to the earlier anchor, frames to the later one)``). The session uses
``"distance-confidence"`` (:attr:`PropagationSession.fusion`); the others are kept for
``benchmarks/session_fusion.py``."""


def _mask_ids(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in np.unique(mask) if v != VOID)


def _check_objects(objects: Any) -> frozenset[int]:
    try:
        values = [int(v) for v in objects if not isinstance(v, bool) and int(v) == v]
        complete = len(values) == len(list(objects))
    except (TypeError, ValueError):
        values, complete = [], False
    if not complete or not all(1 <= v < VOID for v in values):
        raise InputError(f"objects must be a list of object ids in 1..254 (0 is background), got "
                         f"{objects!r:.80}; give None for an anchor that is the whole truth of its frame")
    return frozenset(values)


def _merge_partial(propagated: torch.Tensor, given: torch.Tensor, owned: torch.Tensor,
                   background: int | None) -> torch.Tensor:
    """Soft labels (K, ...) of an anchor owning the channels ``owned`` (bool (K,), never the background
    channel): owned channels as ``given``; each cell's other given mass (its background) shared between
    background and the channels not owned, in proportion to their ``propagated`` labels (all to the
    ``background`` channel where those are 0)."""
    shape = (-1,) + (1,) * (given.dim() - 1)
    others = propagated * (~owned).to(propagated.dtype).view(shape)
    total = others.sum(0, keepdim=True)
    fallback = torch.zeros_like(others)
    if background is not None:
        fallback[background] = 1.0
    share = torch.where(total > 0, others / total.clamp_min(1e-30), fallback)
    free = (given * (~owned).to(given.dtype).view(shape)).sum(0, keepdim=True)
    return torch.where(owned.view(shape), given, share * free)


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
            videos (memory independent of the length, but for the stretches between anchors that are
            predicted both ways; every :meth:`propagate` then recomputes all frames).
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
        self._shapes: dict[int, dict[int, ObjectShape]] = {}  # per frame, for reliability (tiny)
        self._anchor_shape_cache: dict[int, tuple[int, dict[int, ObjectShape]]] = {}
        self._parts: dict[str, dict[int, _Part]] = {"forward": {}, "backward": {}}  # per direction
        self._version = 0
        self.fusion = "distance-confidence"
        """The :data:`FUSION_RULES` entry fusing the two directions between anchors (for experiments)."""

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

    def add_mask(self, t: int, mask: np.ndarray | torch.Tensor, objects: Sequence[int] | None = None) -> None:
        """Make frame ``t`` an anchor with this (H, W) id map at the original size (0 = background, 255 = void).

        ``objects=None``: the mask is the whole truth of frame ``t`` for every object the session knows now
        (its own ids and those of the other anchors; one absent from the mask is erased at ``t``); it
        replaces an earlier anchor at ``t``. An object introduced later, at another frame, is not covered:
        it keeps its propagated labels at ``t``.

        ``objects=[ids]``: the anchor is authoritative for those objects only (the ones the user painted or
        erased at ``t``): their pixels are taken from the mask, an id of them absent from the mask is
        erased at ``t``, pixels of other ids (and void) are ignored, and every other object keeps its
        propagated labels at ``t`` and beyond. At a frame that already is an anchor, it updates those
        objects and keeps the earlier anchor's other objects.

        Ids not seen before become new objects, propagated both ways from ``t`` (see the module doc).
        """
        array = to_numpy(mask)
        if array.dtype.kind in "iu" and array.size and 0 <= array.min() and array.max() <= 255:
            array = array.astype(np.uint8)  # explicitly a mask, even where (H, 2) could read as keypoints
        if array.shape != self.frame_size:
            raise InputError(
                f"the mask of frame {t} has shape {array.shape}, the frames are {self.frame_size} (H, W); "
                "give masks at the frames' original size"
            )
        self.add_labels(t, array, objects=objects)

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

    def add_labels(self, t: int, labels: LabelsInput, *, ids: Sequence[int] | None = None,
                   objects: Sequence[int] | None = None) -> None:
        """Anchor of any kind :func:`stcorr.propagate_labels` accepts (mask, soft labels or keypoints).

        ``ids``, when given, are the only ids a mask may hold (:class:`InputError` otherwise). ``objects``:
        the objects a mask anchor is authoritative for (see :meth:`add_mask`; masks only).
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
        if objects is not None and kind != "mask":
            raise InputError(f"objects= applies to mask anchors; the labels of frame {t} are {kind}")
        # Validate now (ids, ranges, shapes), so that a bad anchor never enters the session.
        grid = (1, 1)
        prompt = make_prompt(array, t, self._geometry, grid, self.options, ids=ids, what=what)
        warn_thin_objects(array, self._geometry, self.options, what=f"frame {t}")
        if kind != "mask":
            self._check_same_channels(t, prompt)
            self._version += 1
            self._anchors[t] = _Anchor(array.copy(), kind, self._version)
            return
        owned = (self._known_objects() | set(_mask_ids(array))) - {0} if objects is None else _check_objects(objects)
        stored = array.astype(np.uint8)
        if objects is not None:
            stored = np.where(np.isin(stored, list(owned)), stored, 0).astype(np.uint8)
            earlier = self._anchors.get(t)
            if earlier is not None:  # update these objects, keep the earlier anchor's others
                kept = np.isin(earlier.labels, list(earlier.objects - owned)) & (stored == 0)
                stored = np.where(kept, earlier.labels, stored).astype(np.uint8)
                owned = owned | earlier.objects
        self._version += 1
        self._anchors[t] = _Anchor(stored, kind, self._version, frozenset(owned), frozenset(_mask_ids(stored)))

    def _known_objects(self) -> set[int]:
        return set().union(*(a.ids for a in self._anchors.values())) - {0}

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

    def anchor_state(self) -> AnchorState:
        """The anchors as they are now: an immutable value to give back to :meth:`restore_anchors` (undo)."""
        return AnchorState(dict(self._anchors))

    def restore_anchors(self, state: AnchorState) -> None:
        """Put back the anchors of an earlier :meth:`anchor_state`, replacing the current ones.

        Each anchor comes back with the version it had, so the frames still cached from exactly those
        anchors are up to date again (an undo right after a change recomputes nothing); the others are stale.
        """
        if not isinstance(state, AnchorState):
            raise InputError(f"restore_anchors takes a value of anchor_state(), got {type(state).__name__}")
        self._anchors = dict(state.anchors)

    def remove_anchor(self, t: int) -> None:
        """Remove the anchor at frame ``t`` (frames that depended on it become stale)."""
        if t not in self._anchors:
            raise InputError(f"frame {t} is not an anchor; anchors: {sorted(self._anchors)}")
        del self._anchors[t]

    @property
    def anchors(self) -> dict[int, np.ndarray]:
        """The current anchors, ``{frame: labels}`` (copies), sorted by frame. A mask anchor that owns some
        objects only holds their pixels (0 elsewhere); what the frame shows is :meth:`result`."""
        return {t: self._anchors[t].labels.copy() for t in sorted(self._anchors)}

    @property
    def anchor_objects(self) -> dict[int, tuple[int, ...]]:
        """``{frame: sorted object ids}`` each mask anchor is authoritative for (see :meth:`add_mask`)."""
        return {t: tuple(sorted(self._anchors[t].objects)) for t in sorted(self._anchors)
                if self._anchors[t].kind == "mask"}

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
        return tuple(sorted(set().union(*(a.ids for a in self._anchors.values()))))

    def _dependent(self, t: int) -> bool:
        """Whether the anchor at ``t`` is built on the forward prediction at ``t``: it does not own an object
        that an earlier anchor holds (never the first anchor)."""
        anchor = self._anchors[t]
        if anchor.kind != "mask" or t == min(self._anchors):
            return False
        earlier = set().union(*(a.ids for b, a in self._anchors.items() if b < t)) - {0}
        return bool(earlier - anchor.objects)

    # ------------------------------------------------------------------ cache

    def _entries(self, until: int, inclusive: bool = False) -> tuple[Any, ...]:
        return tuple((a, self._anchors[a].version, self._dependent(a)) for a in sorted(self._anchors)
                     if a < until or (inclusive and a == until))

    def _forward_key(self, t: int) -> tuple[Any, ...]:
        """A forward prediction at ``t`` is a function of the anchors before ``t``."""
        return ("forward", *self._entries(t))

    def _backward_key(self, t: int) -> tuple[Any, ...]:
        """A backward prediction at ``t`` is a function of the next anchor (and, if that anchor depends on its
        forward prediction, of the anchors before it)."""
        anchor = min(a for a in self._anchors if a > t)
        if self._dependent(anchor):
            return ("backward", *self._entries(anchor, inclusive=True))
        return ("backward", (anchor, self._anchors[anchor].version, False))

    def _anchor_key(self, t: int) -> tuple[Any, ...]:
        if self._dependent(t):
            return ("anchor", *self._entries(t, inclusive=True))
        return ("anchor", (t, self._anchors[t].version, False))

    def _fused(self, t: int) -> bool:
        """Whether frame ``t`` (not an anchor) fuses a forward and a backward prediction."""
        return self.options.directions == "both" and min(self._anchors) < t < max(self._anchors)

    def _final_key(self, t: int) -> tuple[Any, ...]:
        """What frame ``t``'s result is a function of (see the module doc)."""
        if t in self._anchors:
            return self._anchor_key(t)
        if t < min(self._anchors):
            return self._backward_key(t)
        if self._fused(t):
            return ("fused", self._forward_key(t), self._backward_key(t))
        return self._forward_key(t)

    def _valid(self, t: int) -> bool:
        cached = self._cache.get(t)
        return cached is not None and bool(self._anchors) and cached.depends_on == self._final_key(t)

    def _valid_part(self, direction: str, t: int) -> bool:
        part = self._parts[direction].get(t)
        if part is None:
            return False
        key = self._forward_key(t) if direction == "forward" else self._backward_key(t)
        return part.depends_on == key

    def stale_frames(self) -> list[int]:
        """Sorted frames whose result is missing or was invalidated by an anchor change."""
        if not self._anchors:
            return list(range(self.num_frames))
        return [t for t in range(self.num_frames) if not self._valid(t)]

    def result(self, t: int) -> FrameResult | None:
        """The cached, up-to-date result of frame ``t``, or None."""
        t = self._check_frame_index(t)
        return self._cache[t].result if self._valid(t) else None

    def direction_grids(self, t: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(forward, backward): the two grid soft labels (K, h, w), channels ``result(t).ids``, that were fused
        into frame ``t``'s up-to-date result; None for a direction that does not predict ``t`` (an anchor,
        a frame before the first or after the last anchor, ``directions="forward"``) or a stale frame."""
        t = self._check_frame_index(t)
        if not self._anchors or not self._valid(t) or t in self._anchors:
            return None, None
        ids = self._cache[t].ids
        grids = []
        for direction in ("forward", "backward"):
            wanted = self._fused(t) or (direction == "forward") == (t > min(self._anchors))
            grids.append(self._part_grid(direction, t, ids) if wanted and self._valid_part(direction, t) else None)
        return grids[0], grids[1]

    # ------------------------------------------------------------------ propagation

    def propagate(self, start: int | None = None, reverse: bool = False) -> Iterator[FrameResult]:
        """Bring stale frames up to date, yielding each recomputed frame's result as soon as it is known.

        Frames concerned: all (``start=None``), else those from ``start`` to the end (``reverse=False``) or
        from ``start`` back to frame 0 (``reverse=True``), plus the stale frames they need (between two
        anchors with ``directions="both"``: every stale frame of the stretch). Order: from the first
        anchor on (stretch by stretch, each one's frames yielded once fused, from its later anchor back),
        then the frames before the first anchor (``reverse=True``: those first). The caller may stop
        iterating at any time: every yielded frame is cached, the rest stays stale.
        """
        if not self._anchors:
            raise InputError("the session has no anchor: add a mask (add_mask) or points (add_points) first")
        if start is not None:
            start = self._check_frame_index(start)
        first = min(self._anchors)
        wanted = [t for t in self.stale_frames() if start is None or (t <= start if reverse else t >= start)]
        ahead = [t for t in wanted if t >= first]
        behind = [t for t in wanted if t < first]
        jobs = [(self._ahead, ahead), (self._behind, behind)]
        try:
            for job, frames in reversed(jobs) if reverse else jobs:
                if frames:
                    yield from job(frames)
        finally:
            if not self._keep:
                self._features.clear(), self._cache.clear(), self._parts["forward"].clear()
                self._parts["backward"].clear()

    def _prompts(self, grid: tuple[int, int]) -> dict[int, _Prompt]:
        ids = self._label_ids() or None
        return {
            t: make_prompt(a.labels, t, self._geometry, grid, self.options, self._return_probabilities, ids)
            for t, a in self._anchors.items()
        }

    def _labels(self, prompts: dict[int, _Prompt]) -> _Prompt:
        return prompts[min(self._anchors)]

    def _behind(self, frames: list[int]) -> Iterator[FrameResult]:
        """The frames before the first anchor: the backward pass from it."""
        yield from self._backward(min(self._anchors), min(frames), fused=False)

    def _ahead(self, frames: list[int]) -> Iterator[FrameResult]:
        """Frames from the first anchor up to ``max(frames)``: forward, and between anchors both ways."""
        end = max(frames)
        anchors = sorted(self._anchors)
        if self.options.directions == "forward" or len(anchors) == 1:
            yield from self._forward(self._first_stale_forward(anchors[0], end), end)
            return
        for earlier, later in zip(anchors, anchors[1:]):
            if earlier > end:
                return
            self._prune(earlier)
            begin = self._first_stale_forward(earlier, later)
            if begin is not None:
                yield from self._forward(begin, later)
            yield from self._backward(later, earlier + 1, fused=True)
        if anchors[-1] < end:
            self._prune(anchors[-1])
            yield from self._forward(self._first_stale_forward(anchors[-1], end), end)

    def _first_stale_forward(self, begin: int, end: int) -> int | None:
        """The first frame of ``begin..end`` whose forward work is stale: an anchor's output, a forward
        prediction, or the result of a frame predicted forward only whose forward part is cached but its
        result is not (it was fused, or an anchor, before an anchor was removed)."""
        for t in range(begin, end + 1):
            if t in self._anchors:
                done = self._valid(t)
            else:
                done = self._valid_part("forward", t) and (self._fused(t) or self._valid(t))
            if not done:
                return t
        return None

    def _forward(self, begin: int | None, end: int) -> Iterator[FrameResult]:
        """The forward pass over ``begin..end``, resumed from the cache at ``begin``."""
        if begin is None:
            return
        propagator: LabelPropagator | None = None
        prompts: dict[int, _Prompt] = {}
        for t, feats in self._pass_features(range(begin, end + 1)):
            if not prompts:
                prompts = self._prompts(tuple(feats.shape[-2:]))
            if not self._fused(t):
                self._prune(t)
            if t == min(self._anchors):  # the pass starts at the first anchor
                propagator = LabelPropagator(feats, prompts[t].grid.to(feats.device), self.options)
                if not self._valid(t):
                    yield self._store(t, prompts[t].grid, prompts[t].image, propagator.precision_state)
                continue
            if propagator is None:
                propagator = self._resume_forward(t, prompts, feats.device)
            if t in self._anchors:
                result, stepped = self._forward_anchor(t, feats, propagator, prompts)
                if result is not None:
                    yield result
                if stepped:
                    propagator = None  # its window now holds the prediction at t: resume without it
                continue
            grid = propagator.step(feats)[0]
            part = self._store_part("forward", t, grid, propagator.precision_state)
            if not self._fused(t):
                yield self._store(t, part.grid, self._decode(t, part.grid, prompts), part.precision)

    def _forward_anchor(self, t: int, feats: torch.Tensor, propagator: LabelPropagator,
                        prompts: dict[int, _Prompt]) -> tuple[FrameResult | None, bool]:
        """The anchor at ``t`` met by the forward pass: its output (None if up to date) and whether the
        propagator predicted frame ``t`` (its window then holds that prediction: the pass must resume)."""
        stale = not self._valid(t)
        if not self._dependent(t):
            advance(propagator, feats, prompts[t])
            result = self._store(t, prompts[t].grid, prompts[t].image, propagator.precision_state) if stale else None
            return result, False
        if not stale:
            propagator.add_anchor(feats, self._cached_grid(t, self._labels(prompts).labels.ids).to(feats.device))
            return None, False
        stepped = not self._valid_part("forward", t)
        if stepped:
            self._store_part("forward", t, propagator.step(feats)[0], propagator.precision_state)
        predicted = self._part_grid("forward", t, self._labels(prompts).labels.ids).to(feats.device)
        grid, image = self._partial_anchor(t, predicted, prompts)
        if not stepped:
            propagator.add_anchor(feats, grid)
        return self._store(t, grid, image, self._parts["forward"][t].precision), stepped

    def _partial_anchor(self, t: int, predicted: torch.Tensor,
                        prompts: dict[int, _Prompt]) -> tuple[torch.Tensor, FrameResult]:
        """Grid soft labels and output of an anchor that owns some objects only, on its forward prediction."""
        labels = self._labels(prompts).labels
        owned = torch.tensor([i in self._anchors[t].objects for i in labels.ids], device=predicted.device)
        background = labels.ids.index(0) if 0 in labels.ids else None
        grid = _merge_partial(predicted, prompts[t].grid.to(predicted.device), owned, background)
        full = resize_soft(upsample(predicted, self._geometry.working, self._geometry.stride), self.frame_size)
        given = mask_to_onehot(self._anchors[t].labels, labels.ids)[0].to(full.device)
        merged = _merge_partial(full, given, owned, background)
        image = FrameResult(t, labels.ids, labels=decode_ids(merged, labels), confidence=confidence_map(merged),
                            probabilities=merged.cpu().numpy() if self._return_probabilities else None)
        return grid, image

    def _backward(self, anchor: int, low: int, fused: bool) -> Iterator[FrameResult]:
        """The backward pass from ``anchor`` down to ``low``: the final results of the frames before the first
        anchor, or (``fused``) the backward parts of a stretch between two anchors, fused with their
        forward parts. Resumed from the cache at its first stale frame."""
        order = range(anchor - 1, low - 1, -1)
        begin = next((t for t in order if not self._valid_part("backward", t)), None)
        if fused:
            for t in order:
                if t == begin:
                    break
                if not self._valid(t):
                    yield self._fuse(t, anchor)
        if begin is None:
            return
        propagator: LabelPropagator | None = None
        prompts: dict[int, _Prompt] = {}
        for t, feats in self._pass_features(range(begin, low - 1, -1)):
            if propagator is None:
                prompts = self._prompts(tuple(feats.shape[-2:]))
                propagator = self._resume_backward(anchor, begin, prompts, feats.device)
            part = self._store_part("backward", t, propagator.step(feats)[0], propagator.precision_state)
            if not fused:
                self._forget(t + self.options.context + 1)
            if fused:
                yield self._fuse(t, anchor)
            else:
                yield self._store(t, part.grid, self._decode(t, part.grid, prompts), part.precision)

    def _fuse(self, t: int, later: int) -> FrameResult:
        earlier = max(a for a in self._anchors if a < t)
        ids = self._label_ids() or self._parts["forward"][t].ids
        forward, backward = self._part_grid("forward", t, ids), self._part_grid("backward", t, ids)
        grid = FUSION_RULES[self.fusion](forward, backward.to(forward.device), t - earlier, later - t)
        result = decode(t, grid, self._kind() or "mask", LabelSet(ids), self._geometry, self.options,
                        self._return_probabilities)
        return self._store(t, grid, result)

    def _decode(self, t: int, grid: torch.Tensor, prompts: dict[int, _Prompt]) -> FrameResult:
        first = self._labels(prompts)
        return decode(t, grid, first.kind, first.labels, self._geometry, self.options, self._return_probabilities)

    def _anchor_ids(self, t: int) -> tuple[np.ndarray, tuple[int, ...]]:
        """The anchor at ``t`` as an (H, W) id map and its channel ids (soft labels: arg-max channel)."""
        labels = self._anchors[t].labels
        if self._anchors[t].kind == "mask":
            return labels, self._label_ids()
        return labels.argmax(axis=0), tuple(range(len(labels)))

    def _rate(self, t: int, result: FrameResult) -> FrameResult:
        """``result`` with its per-object reliability (:mod:`stcorr.propagation.reliability`): 1 on an anchor
        frame; a predicted frame is measured against the nearest anchor (for each object, the nearest anchor
        holding it) and the up-to-date predicted frames between them, up to 5, as a one-way pass from that
        anchor would (both passes and the fused stretches alike; frames computed later are not used)."""
        tracker = new_tracker(self._kind() or "mask", self._geometry)
        if tracker is None or result.labels is None:
            return result
        if t in self._anchors:
            self._shapes[t] = object_shapes(result.labels, None, result.ids, tracker.cell)
            return replace(result, reliability={int(i): 1.0 for i in result.ids if i not in (0, VOID)})
        nearest_last = sorted(self._anchors, key=lambda a: (abs(a - t), a), reverse=True)
        for a in nearest_last:
            tracker.anchor_shapes(self._anchor_shapes(a, tracker.cell))
        nearest = nearest_last[-1]
        step = 1 if t > nearest else -1
        between = [u for u in range(nearest + step, t, step) if u in self._shapes and self._valid(u)]
        for u in between[-RECENT_FRAMES:]:
            tracker.remember(self._shapes[u])
        values = tracker.observe(result.labels, result.confidence, result.ids)
        self._shapes[t] = tracker.last_shapes
        return replace(result, reliability=values)

    def _anchor_shapes(self, a: int, cell: int) -> dict[int, ObjectShape]:
        """The object shapes of the anchor at ``a`` (objects it does not own excluded), measured once per
        version."""
        version = self._anchors[a].version
        cached = self._anchor_shape_cache.get(a)
        if cached is None or cached[0] != version:
            labels = self._anchors[a].labels
            if self._anchors[a].kind == "mask":
                ids: Sequence[int] = [i for i in self._label_ids() if i in self._anchors[a].objects]
            else:
                labels, ids = labels.argmax(axis=0), range(len(labels))
            cached = (version, object_shapes(labels, None, ids, cell))
            self._anchor_shape_cache[a] = cached
        return cached[1]

    def _store(self, t: int, grid: torch.Tensor, result: FrameResult,
               precision: tuple[Any, ...] | None = None) -> FrameResult:
        result = self._rate(t, result)
        self._cache[t] = _Cached(result if self._keep else None, grid.detach(), tuple(result.ids),
                                 self._final_key(t), precision)
        return result

    def _store_part(self, direction: str, t: int, grid: torch.Tensor, precision: tuple[Any, ...] | None) -> _Part:
        ids = self._label_ids() or tuple(range(grid.shape[0]))
        key = self._forward_key(t) if direction == "forward" else self._backward_key(t)
        part = _Part(grid.detach(), ids, key, precision)
        self._parts[direction][t] = part
        return part

    def _prune(self, position: int) -> None:
        """Without ``keep``: forget what no later forward step can need (frames well before ``position``)."""
        if not self._keep:
            low = position - self.options.context - len(self._anchors) - 1
            for t in [t for t in self._features if t < low]:
                self._forget(t)

    def _forget(self, t: int) -> None:
        """Without ``keep``: drop frame ``t``'s features and labels (not an anchor's)."""
        if not self._keep and t not in self._anchors:
            for store in (self._features, self._cache, self._parts["forward"], self._parts["backward"]):
                store.pop(t, None)

    def _resume_forward(self, begin: int, prompts: dict[int, _Prompt], device: torch.device) -> LabelPropagator:
        """A forward propagator in the state the pass has just before frame ``begin`` (after the first anchor),
        rebuilt from the cache: the first anchor, the anchors met, and the last ``context`` predicted frames
        (their final labels; within the stretch being predicted, its forward predictions)."""
        anchors = sorted(self._anchors)
        first = anchors[0]
        ids = self._labels(prompts).labels.ids
        propagator = LabelPropagator(self._feature(first), prompts[first].grid.to(device), self.options)
        for a in anchors[1:]:
            if a < begin:
                propagator.add_anchor(self._feature(a), self._anchor_grid(a, ids, prompts).to(device))
        stretch = max(a for a in anchors if a < begin)
        predicted = [t for t in range(first + 1, begin) if t not in self._anchors]
        for t in predicted[max(0, len(predicted) - self.options.context):] if self.options.context else []:
            grid = self._part_grid("forward", t, ids) if t > stretch else self._cached_grid(t, ids)
            propagator.remember(self._feature(t), grid.to(device))
        precision = self._precision(begin - 1)
        if precision is not None:  # the automatic bfloat16 -> float32 switch as the pass had it there
            propagator.resume_precision(precision)
        return propagator

    def _resume_backward(self, anchor: int, begin: int, prompts: dict[int, _Prompt],
                         device: torch.device) -> LabelPropagator:
        """A backward propagator from ``anchor`` in the state it has just before frame ``begin``."""
        ids = self._labels(prompts).labels.ids
        propagator = LabelPropagator(self._feature(anchor), self._anchor_grid(anchor, ids, prompts).to(device),
                                     self.options)
        before = range(anchor - 1, begin, -1)
        for t in before[max(0, len(before) - self.options.context):] if self.options.context else []:
            propagator.remember(self._feature(t), self._part_grid("backward", t, ids).to(device))
        precision = self._parts["backward"][before[-1]].precision if before else None
        if precision is not None:
            propagator.resume_precision(precision)
        return propagator

    def _precision(self, t: int) -> tuple[Any, ...] | None:
        part = self._parts["forward"].get(t)
        if part is not None and part.precision is not None:
            return part.precision
        cached = self._cache.get(t)
        return cached.precision if cached is not None else None

    def _anchor_grid(self, t: int, ids: tuple[int, ...], prompts: dict[int, _Prompt]) -> torch.Tensor:
        """The anchor's grid soft labels: as given, or (an anchor depending on its prediction) as cached."""
        return self._cached_grid(t, ids) if self._dependent(t) else prompts[t].grid

    def _cached_grid(self, t: int, ids: tuple[int, ...]) -> torch.Tensor:
        """Frame ``t``'s cached final grid soft labels on the channels ``ids`` (ids it did not have are zero)."""
        cached = self._cache[t]
        return _on_channels(cached.grid, cached.ids, ids)

    def _part_grid(self, direction: str, t: int, ids: tuple[int, ...]) -> torch.Tensor:
        part = self._parts[direction][t]
        return _on_channels(part.grid, part.ids, ids)

    # ------------------------------------------------------------------ features

    def _feature(self, t: int) -> torch.Tensor:
        if t in self._features:
            return self._features[t]
        frame = self._source[t][None]
        feats = encode_batch(self.model, frame, dtype=self._dtype, fusion_weights=self._fusion_weights)[0]
        self._features[t] = feats  # without keep, dropped once no step can need it (_prune, _forget)
        return feats

    def _pass_features(self, order: range) -> Iterator[tuple[int, torch.Tensor]]:
        if all(t in self._features for t in order):
            yield from ((t, self._features[t]) for t in order)
            return
        stream = features_in_order(self.model, self._source, order, self._batch_size, self._dtype,
                                   self._fusion_weights)
        for t, feats in zip(order, stream):
            self._features[t] = feats
            yield t, feats

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, Any]:
        """Anchors (masks run-length encoded, points as lists), options and working size: enough for a
        headless replay with :meth:`from_dict` giving identical results. JSON-serialisable."""
        anchors = []
        for t in sorted(self._anchors):
            anchor = self._anchors[t]
            if anchor.kind == "mask":
                data = {**_rle(anchor.labels), "objects": sorted(anchor.objects)}
            else:
                data = {"array": anchor.labels.tolist()}
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
        known to have the size ``data`` was saved for. Format 1 (before anchors owned objects and sessions
        predicted both ways) replays as it was made: every anchor owns every object of the session, and the
        options' ``directions`` is ``"forward"``.
        """
        cls.check_dict(data)
        size = tuple(data["size"]) if data.get("size") is not None else None
        options = PropagationOptions.from_dict(data["options"])
        if data["format"] == 1:
            options = options.replace(directions="forward")
        session = cls(model, frames, options=options,
                      max_side=data.get("max_side") or 0, size=size, resample=data.get("resample"), **kwargs)
        if list(session.frame_size) != list(data["frame_size"]) or session.num_frames != data["num_frames"]:
            raise InputError(
                f"the session was saved for {data['num_frames']} frames of {tuple(data['frame_size'])}, these frames "
                f"are {session.num_frames} of {session.frame_size}"
            )
        masks = {int(a["frame"]): _unrle(a) for a in data["anchors"] if a["kind"] == "mask"}
        everything = sorted(set().union(*(_mask_ids(m) for m in masks.values())) - {0}) if masks else []
        for anchor in data["anchors"]:
            t = int(anchor["frame"])
            labels = masks[t] if anchor["kind"] == "mask" else np.asarray(anchor["array"], np.float32)
            objects = anchor.get("objects", everything) if anchor["kind"] == "mask" else None
            session.add_labels(t, labels, objects=objects)
        return session

    @staticmethod
    def check_dict(data: Any) -> None:
        """Raise :class:`InputError` (naming the field and the fix) unless ``data`` is a complete, consistent
        session dictionary of a format this version reads; allocates nothing from the numbers it holds."""
        check_session_dict(data, formats=_READABLE_FORMATS)


def _on_channels(grid: torch.Tensor, have: tuple[int, ...], ids: tuple[int, ...]) -> torch.Tensor:
    """``grid`` (channels ``have``) on the channels ``ids`` (ids it does not have are zero)."""
    if have == ids:
        return grid
    out = grid.new_zeros((len(ids), *grid.shape[1:]))
    position = {i: c for c, i in enumerate(have)}
    for channel, i in enumerate(ids):
        if i in position:
            out[channel] = grid[position[i]]
    return out
