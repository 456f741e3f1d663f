"""stcorr: dense video correspondence with Spatial-then-Temporal encoders.

Frames -> features (:func:`extract_features`) -> windowed affinities -> labels (:func:`propagate_labels`).

The public names below are imported on first use (PEP 562), so ``import stcorr`` and the command line's
``--help`` / ``models`` do not pay for importing PyTorch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from stcorr._version import __version__
from stcorr.errors import (
    CheckpointError,
    ChecksumError,
    DataReadError,
    DeviceError,
    InputError,
    InputNotFoundError,
    OutputWriteError,
    StcorrError,
    UnknownModelError,
    VideoReadError,
    WeightsUnavailableError,
)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from stcorr.features import extract_features, iter_features
    from stcorr.loading import load_encoder, load_model
    from stcorr.manifest import list_models
    from stcorr.model import CorrespondenceModel
    from stcorr.onnx_encoder import OnnxEncoder
    from stcorr.propagation.api import FramePrediction, FrameResult, PropagationResult, iter_propagate, propagate_labels
    from stcorr.propagation.matching import PointMatches, match_points
    from stcorr.propagation.options import PropagationOptions
    from stcorr.propagation.session import PropagationSession

# public name -> the module that defines it
_LAZY = {
    "load_model": "stcorr.loading",
    "load_encoder": "stcorr.loading",
    "list_models": "stcorr.manifest",
    "CorrespondenceModel": "stcorr.model",
    "OnnxEncoder": "stcorr.onnx_encoder",
    "extract_features": "stcorr.features",
    "iter_features": "stcorr.features",
    "propagate_labels": "stcorr.propagation.api",
    "iter_propagate": "stcorr.propagation.api",
    "FramePrediction": "stcorr.propagation.api",
    "PropagationResult": "stcorr.propagation.api",
    "FrameResult": "stcorr.propagation.api",
    "PropagationOptions": "stcorr.propagation.options",
    "PropagationSession": "stcorr.propagation.session",
    "match_points": "stcorr.propagation.matching",
    "PointMatches": "stcorr.propagation.matching",
}

__all__ = [
    "__version__",
    "load_model",
    "load_encoder",
    "list_models",
    "CorrespondenceModel",
    "OnnxEncoder",
    "extract_features",
    "iter_features",
    "propagate_labels",
    "iter_propagate",
    "match_points",
    "PropagationOptions",
    "PropagationSession",
    "FrameResult",
    "PropagationResult",
    "FramePrediction",
    "PointMatches",
    "StcorrError",
    "InputError",
    "InputNotFoundError",
    "DeviceError",
    "UnknownModelError",
    "WeightsUnavailableError",
    "ChecksumError",
    "CheckpointError",
    "DataReadError",
    "VideoReadError",
    "OutputWriteError",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stcorr' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    """The public names only (``__all__``), not this module's own imports."""
    return sorted(__all__)
