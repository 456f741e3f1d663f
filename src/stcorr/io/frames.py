"""Frame sources: folders of images, video files, arrays and image lists behind one lazy interface.

:func:`open_frames` turns any supported source into a :class:`FrameSource`, which yields frames one
at a time as float32 RGB tensors (3, H, W) in [0, 1] on CPU. :func:`read_mask` reads a first-frame
annotation PNG into an integer id map.

Documented rules:

* Folders: files ending in ``.png``, ``.jpg`` or ``.jpeg`` (any case) are frames; other files,
  sub-folders and hidden files (``.name``) are ignored. Frames are in natural order
  (``frame2.png`` before ``frame10.png``) and named by their file stems.
* A path to a single image file is a one-frame source; any other file is opened as a video.
* Videos and arrays are named by zero-padded indices (``00000``, ``00001``, ...).
* Arrays/tensors (T, H, W, 3) or (T, 3, H, W): when both axis 1 and axis 3 have size 3, the array
  is read as channels-last (T, H, W, 3). ``uint8`` is divided by 255; floats must lie in [0, 1].
* RGBA and other alpha modes: alpha is dropped, the stored colours are kept (no compositing).
  Grayscale (``L``, ``1``, 2-D arrays) is repeated to RGB; 16-bit grayscale (``I;16``, ``I``) is
  divided by 65535 first. Pillow's RGB conversion handles the remaining modes (palette, CMYK, ...).
* Neither EXIF orientation nor video rotation metadata nor non-square pixels are applied: frames
  are returned as stored.
"""

from __future__ import annotations

import logging
import operator
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from stcorr.errors import InputError, VideoReadError
from stcorr.io.masks import SIXTEEN_BIT_MODES
from stcorr.io.video import require_av

__all__ = ["FrameSource", "open_frames", "IMAGE_SUFFIXES", "RESAMPLING"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})

FrameInput = str | os.PathLike[str] | np.ndarray | torch.Tensor | Sequence[Any]
Size = tuple[int, int]

_EXPECTED_SOURCE = (
    "a folder of JPEG/PNG frames, a video file, an image file, a (T, H, W, 3|4) or (T, 3, H, W) array or tensor "
    "(uint8 in [0, 255] or float in [0, 1]), or a list of PIL images or (H, W, 3) arrays"
)
_EXPECTED_VALUES = "uint8 values in [0, 255] or float values in [0, 1]"


# --------------------------------------------------------------------------------------------------
# Pixel conversion (one frame)


def _frame_to_tensor(pixels: np.ndarray | torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """One frame (H, W), (H, W, 3|4) or (3, H, W), uint8 or float in [0, 1] -> float32 (3, H, W), a copy.

    Converted with numpy, which stays single-threaded: torch's thread pool would compete with the
    video decoder's threads for tiny per-frame operations.
    """
    if isinstance(pixels, torch.Tensor):
        pixels = pixels.detach().cpu()
        pixels = (pixels.float() if pixels.dtype == torch.bfloat16 else pixels).numpy()
    if pixels.ndim == 2:
        pixels = np.broadcast_to(pixels, (3, *pixels.shape))
    elif channels_last:
        pixels = pixels[..., :3].transpose(2, 0, 1)  # drops alpha if any
    frame = pixels.astype(np.float32, order="C")  # always a fresh, contiguous copy
    if pixels.dtype == np.uint8:
        frame /= 255.0
    return torch.from_numpy(frame)


def _pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image of any mode -> float32 RGB (3, H, W) in [0, 1] (see the module's mode rules)."""
    if image.mode in SIXTEEN_BIT_MODES:
        gray = np.asarray(image).astype(np.float32).clip(0, 65535) / 65535.0
        return _frame_to_tensor(gray)
    return _frame_to_tensor(np.asarray(image.convert("RGB")))


def _check_values(array: np.ndarray | torch.Tensor, what: str) -> None:
    """Raise InputError unless ``array`` is uint8, or float with all values in [0, 1]."""
    if isinstance(array, torch.Tensor):
        if array.is_meta:
            raise InputError(f"{what} is a tensor on the meta device, which holds no data; pass frames with "
                             "values (e.g. a CPU or CUDA tensor, or materialise the meta tensor first)")
        is_uint8, is_float, count = array.dtype == torch.uint8, array.is_floating_point(), array.numel()
    else:
        is_uint8, is_float, count = array.dtype == np.uint8, np.issubdtype(array.dtype, np.floating), array.size
    if is_uint8:
        return
    if not is_float:
        raise InputError(
            f"expected {_EXPECTED_VALUES}, got dtype {array.dtype} for {what}; "
            "convert 8-bit data with .astype(np.uint8) / .to(torch.uint8), or scale to float in [0, 1]"
        )
    if count:
        low, high = float(array.min()), float(array.max())
        if not (0.0 <= low and high <= 1.0):  # also catches NaN
            hint = "divide by 255" if high <= 255.0 and low >= 0.0 else "rescale or clip to [0, 1]"
            raise InputError(f"expected {_EXPECTED_VALUES}, got float values in [{low}, {high}] for {what}; {hint}")


# --------------------------------------------------------------------------------------------------
# Readers: frames at their original size


class _SequenceReader:
    """Random-access frames: ``load(items[i])`` gives frame i as float32 (3, H, W)."""

    def __init__(self, items: Sequence[Any], load: Callable[[Any], torch.Tensor], names: Sequence[str], size: Size):
        self._items = items
        self._load = load
        self.names = tuple(names)
        self.size = size
        self.fps: float | None = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        for index in range(len(self.names)):
            yield self.frame(index)

    def frame(self, index: int) -> torch.Tensor:
        return self._load(self._items[index])


class _VideoReader:
    """Frames decoded with PyAV, one at a time, from a fresh container per pass."""

    def __init__(self, path: Path) -> None:
        self._av = require_av()
        self.path = path
        try:
            with self._av.open(str(path)) as container:
                stream = self._video_stream(container)
                self.fps = float(stream.average_rate or stream.guessed_rate or 0) or None
                # Count non-empty packets (demuxing reads the file, it does not decode): container headers can
                # be wrong (Debian's tree.avi announces 444 frames and holds 68).
                count = sum(1 for packet in container.demux(stream) if packet.size)
                if stream.frames and stream.frames != count:
                    logger.warning("%s announces %d frames but holds %d; using %d (truncated file?)",
                                   path, stream.frames, count, count)
            with closing(self._decode()) as frames:
                first = next(frames, None)
        except self._av.FFmpegError as exc:
            message = f"cannot read video {path}: {exc}. Check that the file is a complete, valid video"
            raise VideoReadError(message) from exc
        if first is None or count == 0:
            raise VideoReadError(f"video {path} has no decodable frame; the file is probably empty or corrupt")
        self.size: Size = (first.height, first.width)
        self.names = _index_names(count)

    def _video_stream(self, container: Any) -> Any:
        if not container.streams.video:
            raise VideoReadError(f"{self.path} holds no video stream; expected a video file (mp4, avi, mkv, ...)")
        return container.streams.video[0]

    def _decode(self) -> Iterator[Any]:
        """Yield PyAV frames of the first video stream; raises av errors unchanged."""
        with self._av.open(str(self.path)) as container:
            stream = self._video_stream(container)
            stream.thread_type = "AUTO"
            yield from container.decode(stream)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self._frames(start=0)

    def frame(self, index: int) -> torch.Tensor:
        frames = self._frames(start=index)
        try:
            return next(frames)
        finally:
            frames.close()

    def _frames(self, start: int) -> Iterator[torch.Tensor]:
        count, height, width = len(self.names), *self.size
        decoded = 0
        try:
            with closing(self._decode()) as frames:
                for frame in frames:
                    if decoded == count:
                        logger.warning("%s decodes to more than %d frames; extras ignored", self.path, count)
                        return
                    if decoded >= start:
                        yield _frame_to_tensor(frame.to_ndarray(format="rgb24", width=width, height=height))
                    decoded += 1
        except self._av.FFmpegError as exc:
            message = f"cannot decode frame {decoded} of {self.path}: {exc}. The file may be corrupt"
            raise VideoReadError(message) from exc
        if decoded < count:
            raise VideoReadError(
                f"{self.path} ended after {decoded} frames but holds {count} video packets; "
                "the file is probably truncated. Re-encode or re-download it"
            )


_Reader = _SequenceReader | _VideoReader


# --------------------------------------------------------------------------------------------------
# Source-specific constructors


def _index_names(count: int) -> tuple[str, ...]:
    width = max(5, len(str(count - 1)))
    return tuple(f"{index:0{width}d}" for index in range(count))


def _natural_key(name: str) -> tuple[Any, ...]:
    parts = re.split(r"(\d+)", name, flags=re.ASCII)  # digits at odd positions, so types align
    return (*(int(part) if index % 2 else part.lower() for index, part in enumerate(parts)), name)


def _too_large(path: Path, exc: Image.DecompressionBombError) -> VideoReadError:
    return VideoReadError(
        f"cannot read image {path}: {exc} Downscale the image, or, for a file you trust, raise Pillow's limit "
        "(PIL.Image.MAX_IMAGE_PIXELS) before opening it"
    )


def _image_size(path: Path) -> Size:
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise VideoReadError(f"cannot read image {path}: {exc}") from exc


def _load_image_file(path: Path, size: Size) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            frame = _pil_to_tensor(image)
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise VideoReadError(f"cannot read image {path}: {exc}. The file may be corrupt or truncated") from exc
    if tuple(frame.shape[1:]) != size:
        raise VideoReadError(f"{path} has size {tuple(frame.shape[1:])} (H, W) but the first frame has {size}")
    return frame


def _image_files_reader(paths: Sequence[Path]) -> _SequenceReader:
    """Frames from image files; every header is read once to check that all sizes match."""
    size = _image_size(paths[0])
    for path in paths[1:]:
        other = _image_size(path)
        if other != size:
            raise VideoReadError(
                f"{path} has size {other} (H, W) but {paths[0].name} has {size}; all frames of a video must "
                "have the same size. Resize them or remove the odd file"
            )
    return _SequenceReader(paths, lambda path: _load_image_file(path, size), [path.stem for path in paths], size)


def _folder_reader(folder: Path) -> _SequenceReader:
    entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    images = sorted(
        (entry for entry in entries if entry.suffix.lower() in IMAGE_SUFFIXES and entry.is_file()),
        key=lambda entry: _natural_key(entry.name),
    )
    if not images:
        sample = ", ".join(sorted(entry.name for entry in entries)[:5]) or "nothing"
        raise VideoReadError(f"folder {folder} holds no .png/.jpg/.jpeg image (found: {sample}); expected frame images")
    stems: dict[str, Path] = {}
    for image in images:
        if image.stem in stems:
            raise VideoReadError(
                f"{image.name} and {stems[image.stem].name} in {folder} share the name {image.stem!r}; "
                "frame names must be unique, remove one of them"
            )
        stems[image.stem] = image
    return _image_files_reader(images)


def _path_reader(path: Path) -> _Reader:
    if not path.exists():
        raise VideoReadError(f"{path} does not exist; expected {_EXPECTED_SOURCE}")
    if path.is_dir():
        return _folder_reader(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _image_files_reader([path])
    return _VideoReader(path)


def _stack_reader(stack: np.ndarray | torch.Tensor) -> _SequenceReader:
    """A 4-D array or tensor (T, H, W, 3), (T, H, W, 4) (alpha dropped, as for lists) or (T, 3, H, W)."""
    shape = tuple(stack.shape)
    if len(shape) != 4 or not (shape[1] == 3 or shape[3] in (3, 4)):
        hint = ""
        if len(shape) == 3:
            hint = "; for one image add a time axis (x[None]), for a grayscale (T, H, W) video repeat it to 3 channels"
        raise InputError(
            f"expected an array of shape (T, H, W, 3), (T, H, W, 4) or (T, 3, H, W), got shape {shape}{hint}"
        )
    if shape[0] == 0:
        raise InputError("expected at least one frame, got an array with T = 0")
    _check_values(stack, "the frame array")
    channels_last = shape[3] in (3, 4)
    if channels_last and shape[1] == 3:
        logger.debug("array of shape %s is ambiguous; reading it as (T, H, W, 3)", shape)
    size = (shape[1], shape[2]) if channels_last else (shape[2], shape[3])
    return _SequenceReader(stack, lambda frame: _frame_to_tensor(frame, channels_last), _index_names(shape[0]), size)


def _list_item_size(index: int, item: Any) -> Size:
    """Validate one element of a frame list and return its (H, W)."""
    if isinstance(item, Image.Image):
        return item.height, item.width
    if isinstance(item, (np.ndarray, torch.Tensor)):
        shape = tuple(item.shape)
        if len(shape) == 2 or (len(shape) == 3 and shape[2] in (3, 4)):
            _check_values(item, f"list item {index}")
            return shape[0], shape[1]
        raise InputError(f"list item {index} has shape {shape}; expected (H, W, 3), (H, W, 4) or (H, W)")
    raise InputError(f"list item {index} is a {type(item).__name__}; expected a PIL image or an (H, W, 3) array")


def _list_reader(items: Sequence[Any]) -> _SequenceReader:
    if len(items) == 0:
        raise InputError("expected at least one frame, got an empty list")
    sizes = [_list_item_size(index, item) for index, item in enumerate(items)]
    for index, size in enumerate(sizes):
        if size != sizes[0]:
            raise InputError(f"list item {index} has size {size} (H, W) but item 0 has {sizes[0]}; all frames must match")

    def load(item: Any) -> torch.Tensor:
        return _pil_to_tensor(item) if isinstance(item, Image.Image) else _frame_to_tensor(item)

    return _SequenceReader(list(items), load, _index_names(len(items)), sizes[0])


def _make_reader(source: FrameInput) -> _Reader:
    if isinstance(source, (str, os.PathLike)):
        return _path_reader(Path(source))
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return _stack_reader(source)
    if isinstance(source, (list, tuple)):
        return _list_reader(source)
    raise InputError(f"expected {_EXPECTED_SOURCE}; got a {type(source).__name__}")


# --------------------------------------------------------------------------------------------------
# Public API


RESAMPLING = ("antialias", "reference")
"""Frame resampling: ``"antialias"`` (bilinear with antialiasing on [0, 1] values, the default) or
``"reference"`` (bilinear without antialiasing on 8-bit values rounded back to 8 bits, as OpenCV's
``INTER_LINEAR`` on uint8 images: the benchmarks' reference protocol)."""


def _positive_size(value: Any) -> Size:
    ok = isinstance(value, (tuple, list)) and len(value) == 2
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise InputError(f"expected size to be (height, width) positive ints or None, got {value!r}")
    return int(value[0]), int(value[1])


MAX_UPSCALE = 4
"""A working size may enlarge each side of the frames at most this many times (or up to ``UPSCALE_FLOOR``
pixels): upscaling adds no detail, and a size such as (20000, 30000) on small frames would need gigabytes."""
UPSCALE_FLOOR = 1024


def _check_upscale(original: Size, target: Size, how: str) -> Size:
    limit = tuple(max(MAX_UPSCALE * side, UPSCALE_FLOOR) for side in original)
    if target[0] > limit[0] or target[1] > limit[1]:
        raise InputError(
            f"{how} asks for a working size of {target[0]}x{target[1]} (H x W) on frames of {original[0]}x"
            f"{original[1]}: at most {MAX_UPSCALE}x each side (or {UPSCALE_FLOOR} px) is allowed, here "
            f"{limit[0]}x{limit[1]}, since upscaling adds no detail and costs memory. Give a smaller size, or "
            "resize the frames yourself before passing them if you really want them this large"
        )
    return target


def _target_size(size: Size, max_side: int | None, short_side: int | None, explicit: Size | None = None) -> Size:
    for name, value in (("max_side", max_side), ("short_side", short_side)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise InputError(f"expected {name} to be a positive int or None, got {value!r}")
    if sum(value is not None for value in (max_side, short_side, explicit)) > 1:
        raise InputError("max_side, short_side and size are exclusive; give at most one of them")
    if explicit is not None:
        return _check_upscale(size, _positive_size(explicit), f"size={explicit!r}")
    height, width = size
    if max_side is not None and max(size) > max_side:
        scale = max_side / max(size)
    elif short_side is not None:
        scale = short_side / min(size)
    else:
        return size
    target = max(1, round(height * scale)), max(1, round(width * scale))
    return _check_upscale(size, target, f"short_side={short_side}")


class FrameSource:
    """The frames of one video, decoded lazily as float32 RGB tensors (3, H, W) in [0, 1] on CPU.

    Made by :func:`open_frames`. Attributes: ``names`` (one stem per frame, for naming outputs),
    ``original_size`` (H, W) as stored, ``size`` (H, W) as yielded, ``fps`` (videos only, else None).
    Iterating decodes one frame at a time; each pass starts again from the first frame.
    Indexing is cheap for folders, arrays and lists; for videos ``source[i]`` decodes frames 0..i
    (cost O(i)), so prefer iteration.
    """

    def __init__(
        self,
        reader: _Reader,
        *,
        max_side: int | None = None,
        short_side: int | None = None,
        max_frames: int | None = None,
        size: Size | None = None,
        resample: str = "antialias",
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise InputError(f"max_frames must be >= 1, got {max_frames}")
        if resample not in RESAMPLING:
            raise InputError(f"resample must be one of {RESAMPLING}, got {resample!r}")
        self._reader = reader
        self._max_frames = max_frames
        self.names: tuple[str, ...] = reader.names[:max_frames]
        self.original_size: Size = reader.size
        self.size: Size = _target_size(reader.size, max_side, short_side, size)
        self.resample = resample
        self.fps: float | None = reader.fps

    def resized(
        self, *, max_side: int | None = None, size: Size | None = None, resample: str | None = None
    ) -> FrameSource:
        """The same frames (same reader and frame count) yielded at another size; no argument: the original size."""
        return FrameSource(self._reader, max_side=max_side, size=size, max_frames=self._max_frames,
                           resample=resample or self.resample)

    @property
    def random_access(self) -> bool:
        """True when ``source[i]`` is cheap (folders, arrays, lists); False for videos (decoded from the start)."""
        return not isinstance(self._reader, _VideoReader)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for index, frame in enumerate(self._reader):
            if index == len(self):
                return
            yield self._resize(frame)

    def iter_backward(self, start: int) -> Iterator[torch.Tensor]:
        """Frames ``start``, ``start - 1``, ..., 0. Folders, arrays and lists are read by index; a video is
        decoded once up to ``start`` and its frames are held in memory (``start + 1`` frames)."""
        if isinstance(self._reader, _VideoReader):
            held = []
            for index, frame in enumerate(self):
                held.append(frame)
                if index == start:
                    break
            yield from reversed(held)
            return
        for index in range(start, -1, -1):
            yield self[index]

    def __getitem__(self, index: int) -> torch.Tensor:
        position = operator.index(index)
        if not -len(self) <= position < len(self):
            raise IndexError(f"frame index {index} out of range for {len(self)} frames")
        return self._resize(self._reader.frame(position % len(self)))

    def __repr__(self) -> str:
        return f"FrameSource(frames={len(self)}, size={self.size}, original_size={self.original_size}, fps={self.fps})"

    def _resize(self, frame: torch.Tensor) -> torch.Tensor:
        if self.size == self.original_size:
            return frame
        if self.resample == "reference":
            levels = (frame[None] * 255.0).round()
            resized = F.interpolate(levels, size=self.size, mode="bilinear", align_corners=False)
            return resized[0].round().clamp_(0.0, 255.0) / 255.0
        resized = F.interpolate(frame[None], size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return resized[0].clamp_(0.0, 1.0)


def open_frames(
    source: FrameInput,
    *,
    max_side: int | None = None,
    short_side: int | None = None,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
    resample: str = "antialias",
) -> FrameSource:
    """Open a folder, video, image file, array, tensor or image list as a lazy :class:`FrameSource`.

    Args:
        source: a folder of JPEG/PNG frames; a video file (PyAV, the ``video`` extra); a single image
            file; an array or tensor (T, H, W, 3) or (T, 3, H, W), ``uint8`` or float in [0, 1]; a
            list or tuple of PIL images or of (H, W, 3) / (H, W) arrays. See the module docstring
            for ordering, naming, layout and colour-mode rules.
        max_side: if given, frames whose longest side exceeds it are downscaled so that it equals it.
        short_side: if given, frames are rescaled (up or down) so that the shortest side equals it.
        max_frames: if given, only the first ``max_frames`` frames are used.
        size: if given, frames are resized to this (H, W), aspect not kept (exclusive with the sides).
        resample: ``"antialias"`` (default) or ``"reference"``, see :data:`RESAMPLING`.

    ``max_side`` and ``short_side`` keep the aspect ratio (sides rounded to integers).

    The frame count of a video is its number of non-empty packets, counted by demuxing the file once
    without decoding (container headers can be wrong); a header that announces another count is logged
    as a warning (a truncated file keeps the frames it holds). The first frame is decoded on opening to
    check the file and get its size. A video that decodes to fewer frames than it has packets raises
    :class:`VideoReadError` when iteration reaches its end.

    Folders read every image header once on opening, to check that all frames have the same size.

    Raises:
        InputError: wrong type, shape, dtype or value range, or bad resize arguments.
        VideoReadError: missing path, empty folder, unreadable or corrupt image or video, frames of
            different sizes in a folder.
        ImportError: a video was given but PyAV is missing (``pip install "stcorr[video]"``).
    """
    return FrameSource(_make_reader(source), max_side=max_side, short_side=short_side, max_frames=max_frames,
                       size=size, resample=resample)
