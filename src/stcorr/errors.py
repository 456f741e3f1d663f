"""Typed exceptions of stcorr.

Every error raised on purpose by the library derives from :class:`StcorrError`, and also from the
built-in exception a caller would naturally catch (``ValueError`` for bad arguments,
``FileNotFoundError`` for missing weights, ...). Messages say what was expected, what was given and
how to fix it.
"""

from __future__ import annotations

__all__ = [
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
    "ManifestError",
]


class StcorrError(Exception):
    """Base class of every error stcorr raises on purpose."""


class InputError(StcorrError, ValueError):
    """An argument has the wrong shape, dtype, range or type."""


class InputNotFoundError(StcorrError, FileNotFoundError):
    """An input file (a mask, a points file, ...) does not exist."""


class DeviceError(InputError):
    """The requested device does not exist on this machine (the message lists the ones that do)."""


class UnknownModelError(StcorrError, ValueError):
    """A model name is neither in the manifest, a Hub id, nor an existing path."""


class WeightsUnavailableError(StcorrError, FileNotFoundError):
    """Weights are not on disk and cannot be fetched (offline, or hosted outside the Hub)."""


class ChecksumError(StcorrError, OSError):
    """A weights file does not have the sha256 or size the manifest pins (corrupt or truncated)."""


class CheckpointError(StcorrError, ValueError):
    """A checkpoint cannot be read, or its keys do not match the architecture."""


class DataReadError(StcorrError, OSError):
    """Data cannot be read: a missing or malformed dataset folder, list file, MAT or XML file, result file."""


class VideoReadError(DataReadError):
    """Frames or masks cannot be read: unreadable or corrupt video, empty folder, missing frames."""


class OutputWriteError(StcorrError, OSError):
    """An output cannot be written (folder not writable, encoder unavailable, ...)."""


class ManifestError(InputError):
    """A row of a ``propagate-many`` manifest is malformed (the message names the line and the field)."""

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.field = field
