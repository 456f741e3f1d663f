"""Propagating first-frame labels through a video: masks, soft labels and keypoints.

:func:`iter_propagate` streams one pass; :func:`propagate_labels` is a one-shot use of the session
(:mod:`stcorr.propagation.session`), both passes around the annotated frame.

Data flows one way: frames -> features (:mod:`stcorr.features`) -> windowed affinities and top-k
(:mod:`stcorr.propagation.kernel`) -> labels at image resolution (:mod:`stcorr.propagation.labels`).

Accepted labels (masks, soft labels, keypoints) and the working size: :mod:`stcorr.propagation.passes`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from stcorr.errors import InputError
from stcorr.features import (
    Encoder,
    check_batch_size,
    check_fusion_weights,
    default_batch_size,
    device_type_of,
    encode_batch,
)
from stcorr.io.frames import FrameSource, open_frames
from stcorr.propagation.kernel import LabelPropagator
from stcorr.propagation.options import PropagationOptions, resolve_options
from stcorr.propagation.passes import (
    FramePrediction,
    FrameResult,
    Geometry,
    LabelsInput,
    PropagationResult,
    _Prompt,
    advance,
    check_anchors,
    collect,
    decode,
    features_in_order,
    frame_order,
    make_prompt,
    new_tracker,
    prompt_kind,
    rate,
    warn_thin_objects,
    working_source,
)
from stcorr.propagation.session import PropagationSession
from stcorr.propagation.tracking import track_points

__all__ = [
    "FramePrediction", "FrameResult", "PropagationResult", "iter_propagate", "iter_propagate_batch",
    "propagate_labels",
]


def _checked_anchors(first_labels: LabelsInput, anchors: Any, start: int, count: int, geometry: Geometry,
                     opts: PropagationOptions, direction: str) -> dict[int, LabelsInput]:
    """Check the first labels and every anchor (indices on the pass, kind, size, ids) before any feature work."""
    checked = check_anchors(anchors, count, start, direction)
    first = make_prompt(first_labels, start, geometry, (1, 1), opts)
    for t, labels in checked.items():
        what = f"the anchor at frame {t}"
        kind = prompt_kind(labels, geometry.original, what)
        if kind != first.kind:
            raise InputError(f"{what} is {kind}, the first labels are {first.kind}; give anchors of the same kind")
        make_prompt(labels, t, geometry, (1, 1), opts, ids=first.labels.ids, what=what)
    return checked


def iter_propagate(
    model: Encoder,
    frames: Any,
    first_labels: LabelsInput,
    *,
    start: int = 0,
    direction: str = "forward",
    anchors: Mapping[int, LabelsInput] | None = None,
    options: PropagationOptions | None = None,
    max_side: int | None = None,
    size: tuple[int, int] | None = None,
    resample: str | None = None,
    context: int | None = None,
    radius: int | None = None,
    topk: int | None = None,
    temperature: float | None = None,
    label_downsampling: str | None = None,
    minmax_normalize: bool | None = None,
    sigma: float | None = None,
    return_probabilities: bool = False,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
    fusion_weights: Sequence[float] | None = None,
    backend: str | None = None,
) -> Iterator[FramePrediction]:
    """Yield a :class:`FramePrediction` per frame, from ``start`` towards the end (or the beginning): one pass.

    Streams: holds only the context (frame ``start``, anchors met so far and the last ``context`` frames'
    features and soft labels), so memory does not grow with the video's length. Frame ``start`` yields the
    given labels; ``anchors`` met on the way join the context (an anchor the pass never reaches, before
    ``start`` going forward or after it going backward, raises :class:`InputError`). Both directions,
    corrections and caching: :class:`~stcorr.propagation.session.PropagationSession`. See
    :func:`propagate_labels` for the arguments; all of them (labels, anchors, start, batch size, options) are
    checked before the first frame is encoded. Frame ``start`` is yielded before any frame is encoded;
    ``batch_size`` None encodes frame by frame on CPU (so each frame comes as soon as it is ready) and 8 frames
    at a time on accelerators.
    """
    opts = resolve_options(options, context=context, radius=radius, topk=topk, temperature=temperature,
                           label_downsampling=label_downsampling, minmax_normalize=minmax_normalize, sigma=sigma,
                           compute_dtype=compute_dtype, backend=backend)
    source = working_source(frames, model, max_side=max_side, size=size, resample=resample)
    order = frame_order(len(source), start, direction)
    batch_size = default_batch_size(device_type_of(model)) if batch_size is None else check_batch_size(batch_size)
    check_fusion_weights(model, fusion_weights)
    geometry = Geometry.of(source, model)
    anchors = _checked_anchors(first_labels, anchors, start, len(source), geometry, opts, direction)
    warn_thin_objects(first_labels, geometry, opts, what=f"frame {start}")
    for t, labels in anchors.items():
        warn_thin_objects(labels, geometry, opts, what=f"the anchor at frame {t}")
    first = make_prompt(first_labels, start, geometry, geometry.grid, opts, return_probabilities)
    tracker = new_tracker(first.kind, geometry)
    yield rate(first.image, tracker, anchor=True)  # the given labels: no need to wait for the encoder
    propagator: LabelPropagator | None = None
    for t, features in zip(order, features_in_order(model, source, order, batch_size, dtype, fusion_weights)):
        grid = tuple(features.shape[-2:])
        if propagator is None:
            if grid != first.grid.shape[-2:]:  # an encoder whose grid is not ceil(size / stride)
                first = make_prompt(first_labels, t, geometry, grid, opts, return_probabilities)
            propagator = LabelPropagator(features, first.grid.to(features.device), opts)
            continue
        anchor = None
        if t in anchors:
            anchor = make_prompt(anchors[t], t, geometry, grid, opts, return_probabilities, first.labels.ids)
        grid_probs = advance(propagator, features, anchor)
        if anchor is not None:
            yield rate(anchor.image, tracker, anchor=True)
        else:
            yield rate(decode(t, grid_probs, first.kind, first.labels, geometry, opts, return_probabilities), tracker)


def iter_propagate_batch(
    model: Encoder,
    videos: Sequence[Any],
    first_labels: Sequence[LabelsInput],
    *,
    options: PropagationOptions | None = None,
    max_side: int | None = None,
    size: tuple[int, int] | None = None,
    resample: str | None = None,
    context: int | None = None,
    radius: int | None = None,
    topk: int | None = None,
    temperature: float | None = None,
    label_downsampling: str | None = None,
    minmax_normalize: bool | None = None,
    sigma: float | None = None,
    return_probabilities: bool = False,
    dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
    fusion_weights: Sequence[float] | None = None,
    backend: str | None = None,
) -> Iterator[list[FramePrediction | None]]:
    """Propagate frame 0's labels through several videos of one working size at once, forwards.

    Frame t of every video is encoded in one forward pass and propagated in one batched
    :class:`~stcorr.propagation.LabelPropagator` step (videos may have different label counts, lengths and
    original sizes: a video that has ended repeats its last frame, whose outputs are dropped; propagation is
    causal, so this changes nothing). Yields, for t = 0, 1, ..., each video's :class:`FramePrediction` for
    frame t (at that video's original size), or None once that video has ended. Each video's predictions are
    those of :func:`iter_propagate` on it alone, up to the encoder's floating-point differences between
    batch sizes. Arguments as :func:`propagate_labels` (one first labels per video); all are checked before
    the first frame is encoded.
    """
    opts = resolve_options(options, context=context, radius=radius, topk=topk, temperature=temperature,
                           label_downsampling=label_downsampling, minmax_normalize=minmax_normalize, sigma=sigma,
                           compute_dtype=compute_dtype, backend=backend)
    check_fusion_weights(model, fusion_weights)
    sources = [working_source(v, model, max_side=max_side, size=size, resample=resample) for v in videos]
    if not sources or len(first_labels) != len(sources):
        raise InputError(f"expected first labels for each of {len(sources)} videos (at least one), "
                         f"got {len(first_labels)}")
    working = sorted({tuple(source.size) for source in sources})
    if len(working) != 1:
        raise InputError(f"videos of one batch must have one working size, got {working}; group them by size "
                         "or give size=(H, W)")
    geometries = [Geometry.of(source, model) for source in sources]
    for b, (labels, geometry) in enumerate(zip(first_labels, geometries)):
        make_prompt(labels, 0, geometry, (1, 1), opts, what=f"the first labels of video {b}")
        warn_thin_objects(labels, geometry, opts, what=f"frame 0 of video {b}")
    lengths = [len(source) for source in sources]
    if min(lengths) < 1:
        raise InputError(f"every video of a batch needs at least one frame, got lengths {lengths}")
    frames = [iter(source) for source in sources]
    last: list[torch.Tensor] = []
    prompts: list[_Prompt] = []
    trackers: list[Any] = []
    propagator: LabelPropagator | None = None
    for t in range(max(lengths)):
        batch = [next(it) if t < n else last[b] for b, (it, n) in enumerate(zip(frames, lengths))]
        last = batch
        features = encode_batch(model, torch.stack(batch), dtype=dtype, fusion_weights=fusion_weights)
        if propagator is None:
            grid = tuple(features.shape[-2:])
            prompts = [make_prompt(labels, 0, geometry, grid, opts, return_probabilities)
                       for labels, geometry in zip(first_labels, geometries)]
            propagator = LabelPropagator(features, [p.grid.to(features.device) for p in prompts], opts)
            trackers = [new_tracker(p.kind, geometry) for p, geometry in zip(prompts, geometries)]
            yield [rate(p.image, tracker, anchor=True) for p, tracker in zip(prompts, trackers)]
            continue
        grid_probs, _ = propagator.step(features)
        yield [rate(decode(t, probs, prompt.kind, prompt.labels, geometry, opts, return_probabilities), tracker)
               if t < n else None
               for probs, prompt, geometry, n, tracker in zip(grid_probs, prompts, geometries, lengths, trackers)]


def propagate_labels(
    model: Encoder,
    frames: Any,
    first_labels: LabelsInput,
    *,
    start: int = 0,
    anchors: Mapping[int, LabelsInput] | None = None,
    options: PropagationOptions | None = None,
    max_side: int | None = None,
    size: tuple[int, int] | None = None,
    resample: str | None = None,
    context: int | None = None,
    radius: int | None = None,
    topk: int | None = None,
    temperature: float | None = None,
    label_downsampling: str | None = None,
    minmax_normalize: bool | None = None,
    sigma: float | None = None,
    return_probabilities: bool = False,
    batch_size: int = 8,
    dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
    fusion_weights: Sequence[float] | None = None,
    backend: str | None = None,
) -> PropagationResult:
    """Propagate labels of frame ``start`` through the whole video (forwards, and backwards when start > 0).

    A one-shot use of :class:`~stcorr.propagation.session.PropagationSession` (features are not kept).

    Args:
        model: an encoder (e.g. from :func:`stcorr.load_model`), or a sequence of encoders fused late.
        frames: anything :func:`stcorr.io.frames.open_frames` accepts (array, tensor, folder, video, PIL list).
        first_labels: integer mask (H, W), soft labels (K, H, W) or keypoints (N, 2) at the frames' original
            size; see the module docstring.
        start: index of the annotated frame.
        anchors: corrected labels at other frames ({t: labels}, same kind and ids as ``first_labels``; every
            t an integer in [0, T) other than ``start``, else :class:`InputError`); each is output as given
            and joins frame ``start`` as a fixed context frame from then on; with ``directions="both"`` (the
            default) frames between two anchors are also predicted backward from the later one and fused
            (see :class:`~stcorr.propagation.session.PropagationSession`).
        options: a :class:`~stcorr.propagation.options.PropagationOptions`; the keywords below override its
            fields (context, radius, topk, temperature, label_downsampling, minmax_normalize, sigma,
            compute_dtype, backend: see there; ``backend="auto"`` uses the fused Triton kernel on CUDA when
            Triton is installed, else the torch kernel).
        max_side, size: propagate at a reduced working size (longest side in pixels, or an explicit (H, W));
            frames are decoded and results returned at the original size (probabilities upsampled before the
            arg-max). ``max_side`` None (default) is the command line's: 640 px on CPU, full size on
            accelerators; ``max_side=0`` is the full size. An object the working size leaves smaller than a
            few feature cells is logged as a warning, with the ``max_side`` that keeps it.
        resample: how frames are resized to the working size (:data:`stcorr.io.frames.RESAMPLING`).
        return_probabilities: also return the (T, K, H, W) probabilities (large: K x 4 bytes per pixel).
        batch_size: frames encoded per forward pass (:func:`iter_propagate`: default 1 on CPU, 8 on
            accelerators).
        dtype: autocast dtype of the encoder (``torch.bfloat16``/``torch.float16``).
        fusion_weights: per-model weights for late fusion.

    Returns:
        a :class:`PropagationResult`; frames hold uint8 ids (255 where no label reached a pixel).
        For long videos use :func:`iter_propagate`, which streams. Keypoints given at one frame (no
        ``anchors``, no ``return_probabilities``) are tracked by :func:`~stcorr.propagation.tracking.track_points`:
        ``points`` (T, N, 2), ``visible`` (T, N) bool and ``point_scores`` (T, N), the estimated probability
        that each point is visible (1 at frame ``start``). With anchors, keypoints carry no visibility
        (``visible`` is None) and ``point_scores`` are the decoded heatmaps' peaks.
    """
    opts = resolve_options(options, context=context, radius=radius, topk=topk, temperature=temperature,
                           label_downsampling=label_downsampling, minmax_normalize=minmax_normalize, sigma=sigma,
                           compute_dtype=compute_dtype, backend=backend)
    source = frames if isinstance(frames, FrameSource) else open_frames(frames)
    if anchors is None and not return_probabilities and prompt_kind(first_labels, source.original_size) == "points":
        if len(source) < 2:
            raise InputError(f"propagation needs at least 2 frames, got {len(source)}")
        frame_order(len(source), start, "forward")  # start is a frame index
        xy = make_prompt(first_labels, start, Geometry.of(source, model), (1, 1), opts).image.points
        queries = np.concatenate([np.full((len(xy), 1), start, np.float64), xy], axis=1)
        tracks = track_points(model, source, queries, options=opts, max_side=max_side, size=size, resample=resample,
                              batch_size=batch_size, dtype=dtype, fusion_weights=fusion_weights)
        return PropagationResult(labels=None, confidence=None, ids=tuple(range(len(xy))), points=tracks.points,
                                 point_scores=tracks.scores, visible=tracks.visible)
    session = PropagationSession(
        model, source, options=opts, max_side=max_side, size=size, resample=resample, batch_size=batch_size,
        dtype=dtype, fusion_weights=fusion_weights, return_probabilities=return_probabilities, keep=False,
    )
    if session.num_frames < 2:
        raise InputError(f"propagation needs at least 2 frames, got {session.num_frames}")
    session.add_labels(start, first_labels)
    for t, labels in check_anchors(anchors, session.num_frames, start).items():
        session.add_labels(t, labels, ids=session.object_ids_of(start) or None)
    predictions: list[FramePrediction | None] = [None] * session.num_frames
    for prediction in session.propagate():
        predictions[prediction.t] = prediction
    return collect(predictions)
