"""stcorr: dense video correspondence with Spatial-then-Temporal encoders.

Frames -> features (:func:`extract_features`) -> windowed affinities -> labels (:func:`propagate_labels`).
"""

from stcorr._version import __version__
from stcorr.errors import (
    CheckpointError,
    ChecksumError,
    DataReadError,
    InputError,
    OutputWriteError,
    StcorrError,
    UnknownModelError,
    VideoReadError,
    WeightsUnavailableError,
)
from stcorr.features import extract_features, iter_features
from stcorr.loading import load_encoder, load_model
from stcorr.manifest import list_models
from stcorr.model import CorrespondenceModel
from stcorr.propagation.api import FramePrediction, FrameResult, PropagationResult, iter_propagate, propagate_labels
from stcorr.propagation.matching import PointMatches, match_points
from stcorr.propagation.options import PropagationOptions
from stcorr.propagation.session import PropagationSession

__all__ = [
    "__version__",
    "load_model",
    "load_encoder",
    "list_models",
    "CorrespondenceModel",
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
    "UnknownModelError",
    "WeightsUnavailableError",
    "ChecksumError",
    "CheckpointError",
    "DataReadError",
    "VideoReadError",
    "OutputWriteError",
]
