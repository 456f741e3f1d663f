"""Label propagation.

The kernel (features -> soft labels): :func:`propagate` for a whole (T, C, h, w) feature tensor,
:func:`propagate_stream` for an iterable of per-frame features, :class:`LabelPropagator` for step-by-step
control (anchors). The frame-level API (frames -> labels at image resolution) is
:func:`stcorr.propagate_labels` / :func:`stcorr.iter_propagate`; corrections and caching:
:class:`~stcorr.propagation.session.PropagationSession`. Every knob: :class:`PropagationOptions`.
"""

from stcorr.propagation.kernel import (
    LabelPropagator,
    default_block_size,
    default_compute_dtype,
    propagate,
    propagate_stream,
)
from stcorr.propagation.options import PropagationOptions

__all__ = [
    "LabelPropagator",
    "PropagationOptions",
    "default_block_size",
    "default_compute_dtype",
    "propagate",
    "propagate_stream",
]
