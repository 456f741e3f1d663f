"""Forward propagation fed one frame at a time, for callers that receive frames one by one (a tracker asked
frame by frame, e.g. CVAT's tracking functions: :mod:`stcorr.integrations.cvat`).

:func:`encode_frame` brings one image to the working size and encodes it (shareable by several tracks of the
same frame); :class:`OnlinePropagation` starts from labels on an encoded frame and predicts each next frame
from the frames it was given before. It is one forward pass of :func:`~stcorr.propagation.api.iter_propagate`
(the same prompt, kernel, decoding and reliability, :mod:`stcorr.propagation.passes`), so feeding it a
video's frames in order from ``start`` gives that pass's predictions, and on CPU (where the command line
encodes frame by frame) ``stcorr propagate``'s masks for a mask on the video's first frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from stcorr.errors import InputError
from stcorr.features import Encoder, check_fusion_weights, encode_batch
from stcorr.io.frames import open_frames
from stcorr.propagation.kernel import LabelPropagator
from stcorr.propagation.options import PropagationOptions, resolve_options
from stcorr.propagation.passes import (
    FramePrediction,
    Geometry,
    LabelsInput,
    advance,
    decode,
    make_prompt,
    new_tracker,
    rate,
    warn_thin_objects,
    working_source,
)

__all__ = ["EncodedFrame", "OnlinePropagation", "encode_frame"]


@dataclass(frozen=True)
class EncodedFrame:
    """One frame's features at the working size and where they lie (:class:`~stcorr.propagation.passes.Geometry`:
    working and original size, stride)."""

    features: torch.Tensor  # (C, h, w) on the model's device
    geometry: Geometry


def encode_frame(model: Encoder, image: Any, *, max_side: int | None = None, size: tuple[int, int] | None = None,
                 resample: str | None = None, dtype: torch.dtype | None = None,
                 fusion_weights: Sequence[float] | None = None) -> EncodedFrame:
    """Encode one image (a PIL image, an (H, W, 3) uint8 array or a (3, H, W) tensor in [0, 1]) at the working
    size, exactly as a video's frame is encoded: ``max_side`` None is the device's default (640 px on CPU, full
    size on accelerators, as the command line), 0 the full size; ``size``, ``resample``, ``dtype`` and
    ``fusion_weights`` as in :func:`~stcorr.propagation.api.iter_propagate`."""
    check_fusion_weights(model, fusion_weights)
    source = working_source(open_frames([image]), model, max_side=max_side, size=size, resample=resample)
    frame = next(iter(source))
    features = encode_batch(model, frame[None], dtype=dtype, fusion_weights=fusion_weights)[0]
    return EncodedFrame(features, Geometry.of(source, model))


class OnlinePropagation:
    """A forward propagation pass whose frames are given one call at a time.

    Args:
        first: the annotated frame, from :func:`encode_frame`.
        labels: its labels at the frame's original size: an integer mask (H, W) or soft labels (K, H, W)
            (see :mod:`stcorr.propagation.passes`; keypoints: :func:`~stcorr.propagation.tracking.track_points`).
        options: a :class:`~stcorr.propagation.options.PropagationOptions` (defaults if None; context, radius,
            topk, temperature ... as the command line's ``--context`` ...).
        return_probabilities: also return each frame's (K, H, W) probabilities.

    :attr:`first` is the annotated frame's output (the labels as given, reliability 1). Each :meth:`step`
    predicts the next frame from the annotated frame and the last ``options.context`` predicted ones, and
    keeps only those (memory does not grow with the number of frames).
    """

    def __init__(self, first: EncodedFrame, labels: LabelsInput, *, options: PropagationOptions | None = None,
                 return_probabilities: bool = False) -> None:
        self.options = resolve_options(options)
        self.geometry = first.geometry
        self._return_probabilities = return_probabilities
        grid = tuple(first.features.shape[-2:])
        self._prompt = make_prompt(labels, 0, self.geometry, grid, self.options, return_probabilities)
        if self._prompt.kind == "points":
            raise InputError("OnlinePropagation propagates masks and soft labels; track keypoints with "
                             "stcorr.track_points")
        warn_thin_objects(labels, self.geometry, self.options, what="the first labels")
        self._tracker = new_tracker(self._prompt.kind, self.geometry)
        self._propagator = LabelPropagator(first.features, self._prompt.grid.to(first.features.device), self.options)
        self.first: FramePrediction = rate(self._prompt.image, self._tracker, anchor=True)
        self.t = 0  # frames given so far after the annotated one

    @property
    def ids(self) -> tuple[int, ...]:
        """The id of each label channel (a mask's ids, including 0)."""
        return self._prompt.labels.ids

    def step(self, frame: EncodedFrame) -> FramePrediction:
        """The prediction for the next frame (``t`` counts the frames given since the annotated one, which is 0).

        ``frame`` must come from :func:`encode_frame` with the annotated frame's model and options (same original
        and working size), else :class:`InputError`.
        """
        if frame.geometry != self.geometry or tuple(frame.features.shape[-2:]) != tuple(self._prompt.grid.shape[-2:]):
            raise InputError(
                f"this frame is {frame.geometry.original[1]}x{frame.geometry.original[0]} encoded at "
                f"{frame.geometry.working[1]}x{frame.geometry.working[0]}, the annotated frame "
                f"{self.geometry.original[1]}x{self.geometry.original[0]} at "
                f"{self.geometry.working[1]}x{self.geometry.working[0]}; encode every frame of a track with the "
                "same model and working size, from frames of one size"
            )
        grid_probs = advance(self._propagator, frame.features, None)
        self.t += 1
        prediction = decode(self.t, grid_probs, self._prompt.kind, self._prompt.labels, self.geometry, self.options,
                            self._return_probabilities)
        return rate(prediction, self._tracker)
