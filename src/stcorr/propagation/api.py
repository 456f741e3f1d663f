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

import torch

from stcorr.errors import InputError
from stcorr.features import Encoder
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
    collect,
    decode,
    features_in_order,
    frame_order,
    make_prompt,
    working_source,
)
from stcorr.propagation.session import PropagationSession

__all__ = ["FramePrediction", "FrameResult", "PropagationResult", "iter_propagate", "propagate_labels"]


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
    batch_size: int = 8,
    dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
    fusion_weights: Sequence[float] | None = None,
) -> Iterator[FramePrediction]:
    """Yield a :class:`FramePrediction` per frame, from ``start`` towards the end (or the beginning): one pass.

    Streams: holds only the context (frame ``start``, anchors met so far and the last ``context`` frames'
    features and soft labels), so memory does not grow with the video's length. Frame ``start`` yields the
    given labels; ``anchors`` met on the way join the context. Both directions, corrections and caching:
    :class:`~stcorr.propagation.session.PropagationSession`. See :func:`propagate_labels` for the arguments.
    """
    opts = resolve_options(options, context=context, radius=radius, topk=topk, temperature=temperature,
                           label_downsampling=label_downsampling, minmax_normalize=minmax_normalize, sigma=sigma,
                           compute_dtype=compute_dtype)
    source = working_source(frames, max_side=max_side, size=size, resample=resample)
    order = frame_order(len(source), start, direction)
    geometry = Geometry.of(source, model)
    anchors = dict(anchors or {})
    propagator: LabelPropagator | None = None
    first: _Prompt | None = None
    for t, features in zip(order, features_in_order(model, source, order, batch_size, dtype, fusion_weights)):
        grid = tuple(features.shape[-2:])
        if first is None:
            first = make_prompt(first_labels, t, geometry, grid, opts, return_probabilities)
            propagator = LabelPropagator(features, first.grid.to(features.device), opts)
            yield first.image
            continue
        anchor = None
        if t in anchors:
            anchor = make_prompt(anchors[t], t, geometry, grid, opts, return_probabilities, first.labels.ids)
            if anchor.kind != first.kind:
                raise InputError(f"the anchor at frame {t} is {anchor.kind}, the first labels are {first.kind}")
        grid_probs = advance(propagator, features, anchor)
        if anchor is not None:
            yield anchor.image
        else:
            yield decode(t, grid_probs, first.kind, first.labels, geometry, opts, return_probabilities)


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
) -> PropagationResult:
    """Propagate labels of frame ``start`` through the whole video (forwards, and backwards when start > 0).

    A one-shot use of :class:`~stcorr.propagation.session.PropagationSession` (features are not kept).

    Args:
        model: an encoder (e.g. from :func:`stcorr.load_model`), or a sequence of encoders fused late.
        frames: anything :func:`stcorr.io.frames.open_frames` accepts (array, tensor, folder, video, PIL list).
        first_labels: integer mask (H, W), soft labels (K, H, W) or keypoints (N, 2) at the frames' original
            size; see the module docstring.
        start: index of the annotated frame.
        anchors: corrected labels at later frames ({t: labels}, same kind and ids as ``first_labels``);
            each is output as given and joins frame ``start`` as a fixed context frame from then on.
        options: a :class:`~stcorr.propagation.options.PropagationOptions`; the keywords below override its
            fields (context, radius, topk, temperature, label_downsampling, minmax_normalize, sigma,
            compute_dtype: see there).
        max_side, size: propagate at a reduced working size (longest side, or an explicit (H, W)); frames are
            decoded and results returned at the original size (probabilities upsampled before the arg-max).
        resample: how frames are resized to the working size (:data:`stcorr.io.frames.RESAMPLING`).
        return_probabilities: also return the (T, K, H, W) probabilities (large: K x 4 bytes per pixel).
        batch_size: frames encoded per forward pass.
        dtype: autocast dtype of the encoder (``torch.bfloat16``/``torch.float16``).
        fusion_weights: per-model weights for late fusion.

    Returns:
        a :class:`PropagationResult`; frames hold uint8 ids (255 where no label reached a pixel).
        For long videos use :func:`iter_propagate`, which streams.
    """
    opts = resolve_options(options, context=context, radius=radius, topk=topk, temperature=temperature,
                           label_downsampling=label_downsampling, minmax_normalize=minmax_normalize, sigma=sigma,
                           compute_dtype=compute_dtype)
    session = PropagationSession(
        model, frames, options=opts, max_side=max_side, size=size, resample=resample, batch_size=batch_size,
        dtype=dtype, fusion_weights=fusion_weights, return_probabilities=return_probabilities, keep=False,
    )
    if session.num_frames < 2:
        raise InputError(f"propagation needs at least 2 frames, got {session.num_frames}")
    session.add_labels(start, first_labels)
    for t, labels in (anchors or {}).items():
        session.add_labels(t, labels, ids=session.object_ids_of(start) or None)
    predictions: list[FramePrediction | None] = [None] * session.num_frames
    for prediction in session.propagate():
        predictions[prediction.t] = prediction
    return collect(predictions)
