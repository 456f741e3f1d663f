"""Writers for propagation results: masks, overlays, videos, point tracks and confidence maps.

Every writer is atomic (through :func:`stcorr._atomic.atomic_path`): it writes a hidden temporary
file in the destination folder (creating missing parent folders) and renames it onto the destination
only once the write succeeded, so an exception never leaves a half-written output behind. Files are
not fsync'ed: the rename is atomic for other processes, not a guarantee against power loss.

Image conventions: frames are ``uint8`` arrays (H, W, 3) or float tensors (3, H, W) in [0, 1] (what
:func:`stcorr.frames.open_frames` yields); id maps are integer arrays (H, W) with values in
[0, 255], 0 = background and 255 = void; points are (x, y) pixel coordinates, x along the width,
with pixel centres at integer coordinates (the centre of the top-left pixel is (0, 0)).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np
import torch
from PIL import Image

from stcorr._atomic import atomic_path
from stcorr.errors import InputError, OutputWriteError, StcorrError

__all__ = [
    "davis_palette",
    "write_atomic",
    "as_uint8_rgb",
    "write_image",
    "write_mask_png",
    "write_confidence_png",
    "overlay",
    "write_points_json",
    "write_points_csv",
    "VideoWriter",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
ArrayLike = np.ndarray | torch.Tensor

_VIDEO_EXTRA_HINT = 'install the optional video extra: pip install "stcorr[video]"'
_COORD_DECIMALS = 4  # point coordinates and scores are rounded to 1e-4 in JSON/CSV files


# --------------------------------------------------------------------------------------------------
# PyAV


def require_av() -> ModuleType:
    """Import and return PyAV (the optional ``video`` extra), or raise a clear error if missing."""
    try:
        import av
    except ImportError as exc:
        raise ImportError(f"reading or writing videos needs PyAV, which is not installed; {_VIDEO_EXTRA_HINT}") from exc
    return av


# --------------------------------------------------------------------------------------------------
# Atomic writes


_FOLDER_HINT = "check that its folder is a writable directory (not a file) and that the disk is not full"
_ENCODER_HINT = "check the codec, its options and that the container (file suffix, e.g. .mp4) supports it"


def _write_error(path: Path, exc: BaseException, hint: str = _FOLDER_HINT) -> OutputWriteError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return OutputWriteError(f"cannot write {path}: {reason}; {hint}")


def write_atomic(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_path)``, then rename the result onto ``path``; return ``path``.

    Built on the project's single temp-file helper, :func:`stcorr._atomic.atomic_path`: if ``write``
    raises, the temporary file is removed and ``path`` is untouched. Any ``OSError`` (from ``write``
    or from the final rename) becomes an :class:`OutputWriteError` naming ``path``.
    """
    final = Path(path)
    try:
        with atomic_path(final) as tmp:
            write(tmp)
    except OSError as exc:
        if isinstance(exc, StcorrError):
            raise
        raise _write_error(final, exc) from exc
    return final


# --------------------------------------------------------------------------------------------------
# Palette and array checks


@lru_cache(maxsize=1)
def _palette() -> np.ndarray:
    index = np.arange(256)
    palette = np.zeros((256, 3), dtype=np.int64)
    for bit in range(8):  # bit (7 - bit) of channel c is bit (3 * bit + c) of the index
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    palette = palette.astype(np.uint8)
    palette.flags.writeable = False
    return palette


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC palette, (256, 3) ``uint8``, built by the VOC bit-interleave rule.

    Entry 0 is black (background), 1 is (128, 0, 0), 2 is (0, 128, 0), ... Entry 255 (void) is the
    rule's own (224, 224, 192), a light beige that stays visible on dark frames. Returns a copy.
    """
    return _palette().copy()


def _to_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _describe(x: Any) -> str:
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def _as_ids(ids: ArrayLike) -> np.ndarray:
    """Validate an (H, W) id map with integer values in [0, 255] and return it as ``uint8``."""
    expected = "an (H, W) integer id map with values in [0, 255] (0 = background, 255 = void)"
    if not isinstance(ids, (np.ndarray, torch.Tensor)):
        raise InputError(f"expected {expected}, got {_describe(ids)}")
    array = _to_numpy(ids)
    if array.ndim != 2 or not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise InputError(f"expected {expected}, got {_describe(ids)}; cast with .astype(np.uint8) if needed")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise InputError(
            f"expected {expected}, got values in [{array.min()}, {array.max()}]; "
            "stcorr masks hold at most 254 objects"
        )
    return array.astype(np.uint8)


def _check_unit_range(array: np.ndarray, what: str) -> None:
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if not (0.0 <= low and high <= 1.0):  # also false for NaN
        raise InputError(f"expected {what} with values in [0, 1], got values in [{low}, {high}]; clip or rescale it")


def as_uint8_rgb(frame: ArrayLike) -> np.ndarray:
    """Return an RGB frame (array or tensor) as an (H, W, 3) ``uint8`` array.

    The layout follows the dtype, so no shape guessing is needed: ``uint8`` frames are
    channels-last (H, W, 3); float frames are channels-first (3, H, W) with values in [0, 1] (as
    yielded by :class:`stcorr.frames.FrameSource`) and are rounded to 8 bits.
    """
    if not isinstance(frame, (np.ndarray, torch.Tensor)):
        raise InputError(f"expected an RGB frame array or tensor, got {_describe(frame)}")
    array = _to_numpy(frame)
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating) and array.ndim == 3 and array.shape[0] == 3:
        _check_unit_range(array, "a float (3, H, W) frame")
        return np.ascontiguousarray((array.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8))
    raise InputError(
        f"expected an RGB frame as uint8 (H, W, 3) or float (3, H, W) in [0, 1], got {_describe(frame)}; "
        "permute the channel axis to match its dtype's layout"
    )


# --------------------------------------------------------------------------------------------------
# Images


def _save_png(image: Image.Image, path: PathLike) -> Path:
    return write_atomic(path, lambda tmp: image.save(tmp, format="PNG"))


def write_image(path: PathLike, image: ArrayLike, *, jpeg_quality: int = 95) -> Path:
    """Write an RGB frame (see :func:`as_uint8_rgb`) as PNG or JPEG, chosen by the suffix of ``path``."""
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
    image_format = formats.get(Path(path).suffix.lower())
    if image_format is None:
        raise InputError(f"expected a .png, .jpg or .jpeg path, got {str(path)!r}")
    pil = Image.fromarray(as_uint8_rgb(image))
    options = {"quality": jpeg_quality} if image_format == "JPEG" else {}
    return write_atomic(path, lambda tmp: pil.save(tmp, format=image_format, **options))


def write_mask_png(path: PathLike, ids: ArrayLike) -> Path:
    """Write an (H, W) id map as an indexed ('P') PNG with the DAVIS palette; return the path.

    Values must be integers in [0, 255] (255 = void), else :class:`InputError`. Read back exactly by
    :func:`stcorr.frames.read_mask`.
    """
    image = Image.fromarray(_as_ids(ids))  # 2-D uint8: mode "L"
    image.putpalette(_palette().tobytes())  # turns the 'L' image into a 'P' image
    return _save_png(image, path)


def write_confidence_png(path: PathLike, conf: ArrayLike) -> Path:
    """Write an (H, W) float confidence map in [0, 1] as an 8-bit grayscale PNG (value * 255, rounded)."""
    array = _to_numpy(conf) if isinstance(conf, (np.ndarray, torch.Tensor)) else None
    if array is None or array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"expected an (H, W) float confidence map in [0, 1], got {_describe(conf)}")
    _check_unit_range(array, "a confidence map")
    return _save_png(Image.fromarray((array * 255.0 + 0.5).astype(np.uint8)), path)


# --------------------------------------------------------------------------------------------------
# Overlays


def _contour_mask(ids: np.ndarray) -> np.ndarray:
    """Object pixels (id != 0) with a differently labelled pixel among their 8 neighbours.

    The contour is 1 px wide on the inside of each object (2 px where two objects touch); image
    borders are not contours.
    """
    padded = np.pad(ids, 1, mode="edge")
    height, width = ids.shape
    differs = np.zeros(ids.shape, dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if (dy, dx) != (1, 1):
                differs |= padded[dy : dy + height, dx : dx + width] != ids
    return differs & (ids != 0)


def _as_points(points: ArrayLike) -> np.ndarray:
    array = _to_numpy(points) if isinstance(points, (np.ndarray, torch.Tensor)) else np.asarray(points)
    if array.ndim != 2 or array.shape[1] != 2 or not np.issubdtype(array.dtype, np.number):
        raise InputError(f"expected points as an (N, 2) array of (x, y) pixel coordinates, got {_describe(array)}")
    return array.astype(np.float64)


def _point_colors(count: int, point_colors: ArrayLike | None) -> np.ndarray:
    if point_colors is None:
        return _palette()[np.arange(count) % 254 + 1]  # point i gets the colour of object id i + 1
    colors = _to_numpy(point_colors) if isinstance(point_colors, torch.Tensor) else np.asarray(point_colors)
    if colors.shape != (count, 3):
        raise InputError(f"expected point_colors of shape ({count}, 3) uint8, got shape {colors.shape}")
    return colors.astype(np.uint8)


def _draw_dots(image: np.ndarray, points: np.ndarray, colors: np.ndarray, radius: float) -> None:
    """Draw filled discs in place; points with a non-finite coordinate are skipped."""
    height, width = image.shape[:2]
    for (x, y), color in zip(points, colors):
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        top, bottom = max(math.ceil(y - radius), 0), min(math.floor(y + radius) + 1, height)
        left, right = max(math.ceil(x - radius), 0), min(math.floor(x + radius) + 1, width)
        if top >= bottom or left >= right:
            continue
        rows = np.arange(top, bottom)[:, None]
        cols = np.arange(left, right)[None, :]
        disc = (rows - y) ** 2 + (cols - x) ** 2 <= radius**2
        image[top:bottom, left:right][disc] = color


def overlay(
    frame_rgb_uint8: ArrayLike,
    ids: ArrayLike,
    *,
    alpha: float = 0.5,
    contours: bool = True,
    points: ArrayLike | None = None,
    point_colors: ArrayLike | None = None,
    point_radius: float | None = None,
) -> np.ndarray:
    """Blend coloured masks (and optional keypoints) on a frame; return (H, W, 3) ``uint8``.

    Every non-zero id (255 = void included) is tinted with its DAVIS palette colour:
    ``(1 - alpha) * frame + alpha * colour``. With ``contours``, each object's inner 1 px boundary
    is drawn in its opaque colour. ``points`` (N, 2) (x, y) are drawn as filled discs of radius
    ``point_radius`` (default ``max(2, max(H, W) / 160)``), coloured by ``point_colors`` (N, 3) or
    by the palette (point i gets the colour of id i + 1); non-finite points are skipped. ``frame``
    may also be a float (3, H, W) tensor in [0, 1] (see :func:`as_uint8_rgb`).
    """
    image = as_uint8_rgb(frame_rgb_uint8)
    labels = _as_ids(ids)
    if labels.shape != image.shape[:2]:
        raise InputError(f"ids of shape {labels.shape} do not match the frame's size {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"expected alpha in [0, 1], got {alpha}")
    colors = _palette()[labels]
    objects = labels != 0
    blended = image.astype(np.float32)
    blended[objects] = (1.0 - alpha) * blended[objects] + alpha * colors[objects]
    result = (blended + 0.5).astype(np.uint8)
    if contours:
        edge = _contour_mask(labels)
        result[edge] = colors[edge]
    if points is not None:
        xy = _as_points(points)
        radius = point_radius if point_radius is not None else max(2.0, max(image.shape[:2]) / 160.0)
        _draw_dots(result, xy, _point_colors(len(xy), point_colors), radius)
    return result


# --------------------------------------------------------------------------------------------------
# Point tracks


def _point_names(count: int, point_names: Sequence[str] | None) -> list[str]:
    names = [f"p{i}" for i in range(count)] if point_names is None else [str(n) for n in point_names]
    if len(names) != count:
        raise InputError(f"expected {count} point names (one per point), got {len(names)}")
    return names


def _as_tracks(
    points: ArrayLike, scores: ArrayLike, names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    xy = _to_numpy(points) if isinstance(points, torch.Tensor) else np.asarray(points)
    conf = _to_numpy(scores) if isinstance(scores, torch.Tensor) else np.asarray(scores)
    if xy.ndim != 3 or xy.shape[2] != 2 or not np.issubdtype(xy.dtype, np.number):
        raise InputError(f"expected points of shape (T, N, 2) holding (x, y), got {_describe(xy)}")
    if conf.shape != xy.shape[:2] or not np.issubdtype(conf.dtype, np.number):
        raise InputError(f"expected scores of shape {xy.shape[:2]} (T, N) matching the points, got {_describe(conf)}")
    frame_names = [str(name) for name in names]
    if len(frame_names) != xy.shape[0]:
        raise InputError(f"expected {xy.shape[0]} frame names (one per frame), got {len(frame_names)}")
    return xy.astype(np.float64), conf.astype(np.float64), frame_names


def _number(value: float) -> float | None:
    """A rounded float, or None for NaN/inf (an invisible or missing point)."""
    return round(float(value), _COORD_DECIMALS) if math.isfinite(value) else None


def write_points_json(
    path: PathLike, points: ArrayLike, scores: ArrayLike, names: Sequence[str], *,
    point_names: Sequence[str] | None = None,
) -> Path:
    """Write (T, N, 2) point tracks and (T, N) scores as JSON; return the path.

    Layout: ``{"frame_names": [T frame names], "point_names": [N names], "points": T x N x [x, y],
    "scores": T x N}`` (point names default to ``p0, p1, ...``; stcorr 0.1.0 called the frame names
    ``"names"``), values
    rounded to 4 decimals, non-finite values written as ``null``. ``np.array(data["points"],
    dtype=float)`` loads the tracks back (``null`` becomes NaN).
    """
    xy, conf, frame_names = _as_tracks(points, scores, names)
    data = {
        "frame_names": frame_names,
        "point_names": _point_names(xy.shape[1], point_names),
        "points": [[[_number(x), _number(y)] for x, y in frame] for frame in xy],
        "scores": [[_number(s) for s in frame] for frame in conf],
    }

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, separators=(",", ":"))
            handle.write("\n")

    return write_atomic(path, write)


def write_points_csv(
    path: PathLike, points: ArrayLike, scores: ArrayLike, names: Sequence[str], *,
    point_names: Sequence[str] | None = None,
) -> Path:
    """Write point tracks as CSV with columns ``frame,frame_name,point_id,x,y,score,point_name``, one row per
    point and frame (stcorr 0.1.0 called ``frame_name`` ``name``).

    Values are rounded to 4 decimals; non-finite values are left empty.
    """
    xy, conf, frame_names = _as_tracks(points, scores, names)
    labels = _point_names(xy.shape[1], point_names)

    def cell(value: float) -> float | str:
        number = _number(value)
        return "" if number is None else number

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["frame", "frame_name", "point_id", "x", "y", "score", "point_name"])
            for t, name in enumerate(frame_names):
                for n in range(xy.shape[1]):
                    writer.writerow([t, name, n, cell(xy[t, n, 0]), cell(xy[t, n, 1]), cell(conf[t, n]), labels[n]])

    return write_atomic(path, write)


# --------------------------------------------------------------------------------------------------
# Videos


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
        temp_path = self._stack.enter_context(atomic_path(self.path))
        self._closed = False
        try:
            self._container = self._av.open(str(temp_path), mode="w")
        except (self._av.FFmpegError, OSError) as exc:
            self._discard()
            raise _write_error(self.path, exc) from exc
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
        return _write_error(self.path, exc, _ENCODER_HINT if not isinstance(exc, OSError) else _FOLDER_HINT)

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
            raise _write_error(self.path, exc) from exc
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
