"""stcorr: dense video correspondence with Spatial-then-Temporal encoders.

Frames -> features (:func:`extract_features`) -> windowed affinities -> labels (:func:`propagate_labels`).
"""

from stcorr._version import __version__
from stcorr.errors import (
    CheckpointError,
    ChecksumError,
    InputError,
    OutputWriteError,
    StcorrError,
    UnknownModelError,
    VideoReadError,
    WeightsUnavailableError,
)
from stcorr.loading import load_model
from stcorr.manifest import list_models
from stcorr.model import CorrespondenceModel

__all__ = [
    "__version__",
    "load_model",
    "list_models",
    "CorrespondenceModel",
    "StcorrError",
    "InputError",
    "UnknownModelError",
    "WeightsUnavailableError",
    "ChecksumError",
    "CheckpointError",
    "VideoReadError",
    "OutputWriteError",
]
