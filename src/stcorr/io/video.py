"""Videos: the optional PyAV import and an atomic, constant-memory mp4 writer."""

from __future__ import annotations

import logging
import math
import numbers
import os
from collections.abc import Mapping
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np
import torch

from stcorr._atomic import FOLDER_HINT, atomic_path, remove_stale_temps, write_error
from stcorr.errors import InputError, OutputWriteError
from stcorr.io.render import as_uint8_rgb

__all__ = ["require_av", "VideoWriter"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
ArrayLike = np.ndarray | torch.Tensor

_VIDEO_EXTRA_HINT = 'install the optional video extra: pip install "stcorr[video]"'
_ENCODER_HINT = "check the codec, its options and that the container (file suffix, e.g. .mp4) supports it"


def require_av() -> ModuleType:
    """Import and return PyAV (the optional ``video`` extra), or raise a clear error if missing."""
    try:
        import av
    except ImportError as exc:
        raise ImportError(f"reading or writing videos needs PyAV, which is not installed; {_VIDEO_EXTRA_HINT}") from exc
    return av


# --------------------------------------------------------------------------------------------------
# Atomic writes


def _default_codec(av: ModuleType) -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _pad_even(image: np.ndarray) -> np.ndarray:
    """Replicate the last row/column so both sides are even, as yuv420p requires."""
    height, width = image.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return image
    return np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


class _Aborted(Exception):
    """Thrown into the temporary file's context to discard it."""


class VideoWriter:
    """Write RGB frames one at a time to an mp4 (H.264 with ``libx264`` if available, else ``mpeg4``).

    Memory stays constant: each frame is encoded as soon as it is written. Frames are uint8 (H, W, 3)
    or float (3, H, W) in [0, 1] (see :func:`as_uint8_rgb`) and must all have the first frame's
    size. yuv420p needs even sizes, so an odd height or width is padded by 1 px (the last row or
    column repeated): the video is (H + H % 2, W + W % 2), pixel coordinates are unchanged.

    The video goes to a hidden temporary file renamed onto ``path`` by a successful :meth:`close`;
    if the ``with`` block raises (or :meth:`abort` is called, or the writer is garbage-collected
    unclosed) the temporary file is removed: ``path`` is never half-written. Closing a writer that
    received no frame raises :class:`OutputWriteError` and writes nothing.

    Args:
        path: destination, e.g. ``"out.mp4"``; the container format follows the suffix.
        fps: frames per second.
        codec: encoder name; default ``libx264`` if PyAV has it, else ``mpeg4``.
        crf: libx264 constant rate factor (0 lossless ... 51 worst); ignored by other encoders.
        options: extra encoder options, e.g. ``{"preset": "slow"}``.
    """

    def __init__(
        self,
        path: PathLike,
        fps: float = 24.0,
        *,
        codec: str | None = None,
        crf: int = 18,
        options: Mapping[str, str] | None = None,
    ) -> None:
        if not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
            raise InputError(f"expected a positive, finite fps, got {fps!r}")
        self._av = require_av()
        self.path = Path(path)
        self.fps = Fraction(float(fps)).limit_denominator(1001)
        self.codec = codec or _default_codec(self._av)
        if self.codec not in self._av.codecs_available:
            raise OutputWriteError(f"cannot write {self.path}: encoder {self.codec!r} is not available in this PyAV build")
        self._options = {"crf": str(crf), "preset": "veryfast"} if self.codec == "libx264" else {}
        self._options.update(options or {})
        self.frames_written = 0
        self.frame_size: tuple[int, int] | None = None  # (H, W) of the frames given, before padding
        self._stream: Any = None
        # The temporary file lives as long as this stack: closing it renames, unwinding it with an
        # exception (or garbage-collecting it) removes the temporary file.
        self._stack = ExitStack()
        remove_stale_temps(self.path.parent, self.path.name)  # left by a killed run (kill -9 cannot clean up)
        temp_path = self._stack.enter_context(atomic_path(self.path))
        self._closed = False
        try:
            self._container = self._av.open(str(temp_path), mode="w")
        except (self._av.FFmpegError, OSError) as exc:
            self._discard()
            raise write_error(self.path, exc) from exc
        except ValueError as exc:  # PyAV cannot guess a container format from the suffix
            self._discard()
            raise InputError(f"cannot write a video to {self.path}: {exc}; use a video suffix such as .mp4") from exc

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open_stream(self, height: int, width: int) -> None:
        stream = self._container.add_stream(self.codec, rate=self.fps)
        stream.height, stream.width = height + height % 2, width + width % 2
        stream.pix_fmt = "yuv420p"
        stream.options = dict(self._options)
        if self.codec != "libx264":
            stream.bit_rate = max(1_000_000, int(stream.width * stream.height * float(self.fps) * 0.3))
        self._stream = stream
        self.frame_size = (height, width)

    def _discard(self) -> None:
        self._closed = True
        self._stack.__exit__(_Aborted, _Aborted(), None)

    def _fail(self, exc: BaseException) -> OutputWriteError:
        self.abort()
        return write_error(self.path, exc, _ENCODER_HINT if not isinstance(exc, OSError) else FOLDER_HINT)

    def write(self, frame: ArrayLike) -> None:
        """Encode one frame (uint8 (H, W, 3) or float (3, H, W) in [0, 1])."""
        if self._closed:
            raise OutputWriteError(f"cannot write to {self.path}: the VideoWriter is closed")
        image = as_uint8_rgb(frame)
        if self.frame_size is not None and image.shape[:2] != self.frame_size:
            raise InputError(f"expected frames of size {self.frame_size} like the first one, got {image.shape[:2]}")
        try:
            if self._stream is None:
                self._open_stream(*image.shape[:2])
            video_frame = self._av.VideoFrame.from_ndarray(_pad_even(image), format="rgb24")
            self._container.mux(self._stream.encode(video_frame))
        except (self._av.FFmpegError, OSError, ValueError) as exc:
            raise self._fail(exc) from exc
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and move the finished video onto ``path``. Idempotent."""
        if self._closed:
            return
        if self._stream is None:
            self.abort()
            raise OutputWriteError(f"cannot write {self.path}: no frame was written, so no video was created")
        try:
            self._container.mux(self._stream.encode(None))
            self._container.close()
        except (self._av.FFmpegError, OSError) as exc:
            raise self._fail(exc) from exc
        self._closed = True
        try:
            self._stack.close()
        except OSError as exc:
            raise write_error(self.path, exc) from exc
        logger.debug("wrote %d frames to %s", self.frames_written, self.path)

    def abort(self) -> None:
        """Stop writing and remove the temporary file; ``path`` is left untouched. Idempotent."""
        if self._closed:
            return
        try:
            self._container.close()
        except (self._av.FFmpegError, OSError):
            pass  # the file is discarded anyway
        self._discard()
