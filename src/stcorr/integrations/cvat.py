"""stcorr as a CVAT auto-annotation tracking function (masks), for ``cvat-cli function create-native`` and
``cvat-cli function run-agent`` (``pip install "stcorr[cvat]"``: cvat-sdk and cvat-cli).

CVAT's tracking protocol maps one to one onto a forward propagation pass
(:class:`~stcorr.propagation.online.OnlinePropagation`):

- ``preprocess_image(context, image)`` encodes the frame once at the working size
  (:func:`~stcorr.propagation.online.encode_frame`); the agent shares the result between the shapes of a request;
- ``init_tracking_state(context, pp_image, shape)`` decodes the CVAT mask (``shape.points``: run lengths of the
  mask inside its box, then the box ``x1, y1, x2, y2``; :func:`cvat_sdk.masks.decode_mask`) and starts a pass from
  it, the frame's features as its reference;
- ``track(context, pp_image, state)`` predicts the next frame from the reference frame and the last
  ``context`` predicted frames (the state keeps them), and returns the object's mask encoded for CVAT
  (:func:`cvat_sdk.masks.encode_mask`), or None when the object has vanished.

Each shape is tracked on its own, as ``stcorr propagate`` tracks a first mask holding that one object; called
on a clip's frames in order, the masks are ``stcorr propagate``'s with the same model and options (the working
size too: 640 px longest side on CPU, full size on accelerators; on CPU exactly, as both encode frame by frame).

The module is a function factory: the agent calls :func:`create` with the ``-p NAME=TYPE:VALUE`` parameters of
``cvat-cli`` (``model``, ``device``, ``max_side``, ``context``, ``radius``, ``topk``, ``temperature``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import PIL.Image

try:
    import cvat_sdk.auto_annotation as cvataa
    from cvat_sdk.masks import decode_mask, encode_mask
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('stcorr.integrations.cvat needs cvat-sdk: pip install "stcorr[cvat]"') from exc

from stcorr.errors import InputError
from stcorr.propagation.online import EncodedFrame, OnlinePropagation, encode_frame
from stcorr.propagation.options import PropagationOptions, resolve_options

__all__ = ["StcorrTracker", "create", "OBJECT_ID", "mask_from_shape", "shape_from_mask"]

logger = logging.getLogger(__name__)

OBJECT_ID = 1  # the tracked object's id in the one-object mask each shape becomes (0: background)


def mask_from_shape(shape: cvataa.TrackableShape, size: tuple[int, int]) -> np.ndarray:
    """A CVAT mask shape as a bool (H, W) mask on an image of ``size`` (H, W) (:class:`InputError` if the shape
    is no mask, is malformed, or is empty)."""
    if shape.type != "mask":
        raise InputError(f"stcorr tracks mask shapes; got a {shape.type!r} shape. Draw the object as a mask "
                         "(brush) in CVAT, or convert the shape to a mask first")
    try:
        mask = decode_mask(shape.points, image_width=size[1], image_height=size[0])
    except ValueError as exc:
        raise InputError(f"the mask shape's points do not encode a mask of the {size[1]}x{size[0]} image ({exc}); "
                         "expected CVAT's mask encoding: run lengths, then the box x1, y1, x2, y2") from exc
    if not mask.any():
        raise InputError("the mask shape is empty; paint at least one pixel of the object")
    return mask


def shape_from_mask(mask: np.ndarray) -> cvataa.TrackableShape | None:
    """A bool (H, W) mask as a CVAT mask shape (encoded within its bounding box); None when it is empty."""
    if not mask.any():
        return None
    return cvataa.TrackableShape(type="mask", points=encode_mask(np.asarray(mask, bool)))


class StcorrTracker:
    """A CVAT tracking function (``cvat_sdk.auto_annotation.TrackingFunction``) that propagates masks with an
    stcorr encoder. Arguments as :func:`create`, with the encoder already loaded."""

    spec = cvataa.TrackingFunctionSpec(supported_shape_types=["mask"])

    def __init__(self, model: Any, *, max_side: int | None = None, options: PropagationOptions | None = None) -> None:
        self.model = model
        self.max_side = max_side
        self.options = resolve_options(options)

    def preprocess_image(self, context: cvataa.TrackingFunctionContext, image: PIL.Image.Image) -> EncodedFrame:
        """The frame's features at the working size (shared by every shape tracked on it)."""
        return encode_frame(self.model, image, max_side=self.max_side)

    def init_tracking_state(self, context: cvataa.TrackingFunctionShapeContext, pp_image: EncodedFrame,
                            shape: cvataa.TrackableShape) -> OnlinePropagation:
        """Start tracking ``shape`` (a CVAT mask) from the frame ``pp_image`` was made of. The state is the
        shape's propagation pass: the reference frame's features and labels, and the recent frames' features and
        soft labels."""
        mask = mask_from_shape(shape, pp_image.geometry.original)
        ids = np.where(mask, OBJECT_ID, 0).astype(np.uint8)
        return OnlinePropagation(pp_image, ids, options=self.options)

    def track(self, context: cvataa.TrackingFunctionShapeContext, pp_image: EncodedFrame,
              state: OnlinePropagation) -> cvataa.TrackableShape | None:
        """The shape on the next frame (``pp_image``), or None where the propagation lost the object."""
        prediction = state.step(pp_image)
        shape = shape_from_mask(prediction.labels == OBJECT_ID)
        if shape is None:
            logger.info("the tracked object vanished at step %d", prediction.t)
        return shape


def create(model: str | None = None, device: str | None = None, max_side: int | None = None,
           context: int | None = None, radius: int | None = None, topk: int | None = None,
           temperature: float | None = None) -> StcorrTracker:
    """The tracking function, as ``cvat-cli`` builds it from ``-p NAME=TYPE:VALUE`` parameters.

    Args:
        model: what ``stcorr propagate --model`` accepts (default: the embedded model).
        device: ``cpu``, ``cuda``, ``cuda:1`` ... (default: CUDA when available).
        max_side: the working size's longest side in pixels, 0 = full size (default: 640 on CPU, full size on
            accelerators, as ``stcorr propagate``).
        context, radius, topk, temperature: the propagation options (defaults: ``stcorr propagate``'s).
    """
    from stcorr.loading import load_encoder
    from stcorr.working_size import working_max_side

    # bad values are refused here, before the model is loaded, not at the first request
    working_max_side(max_side, "cpu", name="max_side")
    options = resolve_options(None, context=context, radius=radius, topk=topk, temperature=temperature)
    return StcorrTracker(load_encoder(model, device=device), max_side=max_side, options=options)
