"""Readers for the standard layouts of the DAVIS-2017, VIP and JHMDB benchmarks.

Layouts (paths relative to ``root``):

* **DAVIS**: ``JPEGImages/480p/<seq>/*.jpg``, ``Annotations/480p/<seq>/*.png`` (indexed PNGs,
  255 = void), sequence list ``ImageSets/2017/<subset>.txt``.
* **VIP**: ``VIP_Fine/Images/<video>/*.jpg``, ``VIP_Fine/Annotations/Category_ids/<video>/*.png``
  (``Annotations/<video>`` is accepted too), list ``VIP_Fine/lists/<split>_videos.txt``. ``root`` may
  be the folder holding ``VIP_Fine`` or ``VIP_Fine`` itself.
* **JHMDB**: a list file with one video per line: a ``joint_positions.mat`` path and a frame folder
  (either column order, as UVC and CRW disagree). Paths that do not exist as written are re-rooted
  under ``root`` by their longest existing suffix, so lists written on another machine work.
  ``pos_img`` is read by a small built-in MATLAB v5 reader (no scipy).

Frames and annotations are listed lazily and sorted by file name. Missing folders or files raise
:class:`DataReadError`; malformed contents raise :class:`InputError`.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np
from PIL import Image

from stcorr.errors import DataReadError, InputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "list_images",
    "read_label_png",
    "read_rgb",
    "DavisSequence",
    "DavisDataset",
    "VipVideo",
    "VipDataset",
    "JhmdbVideo",
    "JhmdbDataset",
    "read_joint_positions",
    "read_mat_array",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")

PathLike = str | os.PathLike[str]


# ------------------------------------------------------------------------------------------------
# Files


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataReadError(f"{what} not found: {path} is not a folder")
    return path


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataReadError(f"{what} not found: {path}")
    return path


def list_images(folder: PathLike, extensions: tuple[str, ...] = IMAGE_EXTENSIONS, *, what: str = "frame folder") -> list[Path]:
    """Image files of ``folder`` with one of ``extensions``, sorted by name; never empty."""
    folder = _require_dir(Path(folder), what)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in extensions and p.is_file())
    if not files:
        raise DataReadError(f"{what} {folder} holds no {'/'.join(extensions)} files")
    return files


def _open_image(path: Path) -> Image.Image:
    _require_file(path, "image")
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError) as exc:
        raise DataReadError(f"cannot read image {path}: {exc}") from exc
    return image


def read_label_png(path: PathLike) -> np.ndarray:
    """A label map ``(H, W)`` from a PNG: palette indices, grey values, or equal RGB channels."""
    path = Path(path)
    array = np.asarray(_open_image(path))
    if array.ndim == 3 and array.shape[2] in (3, 4) and (array[..., :3] == array[..., :1]).all():
        array = array[..., 0]
    if array.ndim != 2:
        raise InputError(f"{path} is not a label map (shape {array.shape}); save single-channel indexed PNGs")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    return array


def read_rgb(path: PathLike) -> np.ndarray:
    """An RGB frame ``(H, W, 3)`` uint8."""
    return np.asarray(_open_image(Path(path)).convert("RGB"))


def _read_list(path: Path, what: str) -> list[str]:
    """Non-blank, stripped lines of a text list file."""
    _require_file(path, what)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataReadError(f"cannot read {what} {path}: {exc}") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------
# DAVIS


@dataclass(frozen=True)
class DavisSequence:
    """One DAVIS sequence: its frame and annotation folders."""

    name: str
    image_dir: Path
    annotation_dir: Path

    def frame_paths(self) -> list[Path]:
        """JPEG frames, sorted."""
        return list_images(self.image_dir, (".jpg", ".jpeg"), what=f"DAVIS frame folder of {self.name!r}")

    def annotation_paths(self) -> list[Path]:
        """Annotation PNGs, sorted."""
        return list_images(self.annotation_dir, (".png",), what=f"DAVIS annotation folder of {self.name!r}")


class DavisDataset:
    """DAVIS sequences listed in ``ImageSets/<year>/<subset>.txt``, in list order."""

    def __init__(self, root: PathLike, subset: str = "val", *, year: str = "2017", resolution: str = "480p") -> None:
        self.root = _require_dir(Path(root), "DAVIS root")
        self.subset = subset
        annotations = _require_dir(self.root / "Annotations" / resolution, "DAVIS annotation folder")
        names = _read_list(self.root / "ImageSets" / year / f"{subset}.txt", f"DAVIS {year} {subset!r} sequence list")
        self.sequences: tuple[DavisSequence, ...] = tuple(
            DavisSequence(name, self.root / "JPEGImages" / resolution / name, annotations / name) for name in names
        )

    def __len__(self) -> int:
        return len(self.sequences)

    def __iter__(self) -> Iterator[DavisSequence]:
        return iter(self.sequences)

    def __getitem__(self, key: int | str) -> DavisSequence:
        if isinstance(key, str):
            for sequence in self.sequences:
                if sequence.name == key:
                    return sequence
            raise KeyError(key)
        return self.sequences[key]


# ------------------------------------------------------------------------------------------------
# VIP


@dataclass(frozen=True)
class VipVideo:
    """One VIP video: its (sparse, annotated) frames and class-id annotations."""

    name: str
    image_dir: Path
    annotation_dir: Path

    def frame_paths(self) -> list[Path]:
        """Frames, sorted."""
        return list_images(self.image_dir, (".jpg", ".jpeg", ".png"), what=f"VIP frame folder of {self.name!r}")

    def annotation_paths(self) -> list[Path]:
        """Class-id PNGs, sorted."""
        return list_images(self.annotation_dir, (".png",), what=f"VIP annotation folder of {self.name!r}")


class VipDataset:
    """VIP videos listed in ``lists/<split>_videos.txt``, in list order."""

    def __init__(self, root: PathLike, split: str = "val") -> None:
        root = _require_dir(Path(root), "VIP root")
        self.root = root / "VIP_Fine" if (root / "VIP_Fine").is_dir() else root
        self.split = split
        names = _read_list(self.root / "lists" / f"{split}_videos.txt", f"VIP {split!r} video list")
        annotations = _require_dir(self.root / "Annotations", "VIP annotation folder")
        if (annotations / "Category_ids").is_dir():
            annotations = annotations / "Category_ids"
        self.videos: tuple[VipVideo, ...] = tuple(
            VipVideo(name, self.root / "Images" / name, annotations / name) for name in names
        )

    def __len__(self) -> int:
        return len(self.videos)

    def __iter__(self) -> Iterator[VipVideo]:
        return iter(self.videos)


# ------------------------------------------------------------------------------------------------
# JHMDB


def _reroot(raw: str, root: Path, what: str) -> Path:
    """An absolute ``raw`` if it exists, else ``root /`` the longest suffix of ``raw`` that exists (>= 2 parts)."""
    path = Path(raw)
    if path.is_absolute() and path.exists():
        return path
    parts = path.parts[1:] if path.is_absolute() else path.parts
    for start in range(len(parts) - 1):
        candidate = root.joinpath(*parts[start:])
        if candidate.exists():
            return candidate
    raise DataReadError(f"{what} {raw!r} not found, neither as written nor under {root}")


@dataclass(frozen=True)
class JhmdbVideo:
    """One JHMDB video of a split list; ``name`` is ``<class>/<video>`` from its frame folder."""

    name: str
    root: Path
    frames_entry: str
    mat_entry: str

    @property
    def frame_dir(self) -> Path:
        return _reroot(self.frames_entry, self.root, f"JHMDB frame folder of {self.name!r}")

    @property
    def mat_path(self) -> Path:
        return _reroot(self.mat_entry, self.root, f"JHMDB joint file of {self.name!r}")

    def frame_paths(self) -> list[Path]:
        """Frames, sorted."""
        return list_images(self.frame_dir, what=f"JHMDB frame folder of {self.name!r}")

    def keypoints(self) -> np.ndarray:
        """GT joints ``(T, 15, 2)``, 0-based pixel ``(x, y)`` (see :func:`read_joint_positions`)."""
        return read_joint_positions(self.mat_path)


class JhmdbDataset:
    """JHMDB videos of a split list file (e.g. UVC's ``testlist_split1.txt``), in list order."""

    def __init__(self, root: PathLike, list_file: PathLike | None = None) -> None:
        self.root = _require_dir(Path(root), "JHMDB root")
        list_path = Path(list_file) if list_file is not None else self.root / "testlist_split1.txt"
        self.videos: tuple[JhmdbVideo, ...] = tuple(
            self._parse_line(line, list_path, number) for number, line in enumerate(_read_list(list_path, "JHMDB list file"), 1)
        )

    def _parse_line(self, line: str, list_path: Path, number: int) -> JhmdbVideo:
        tokens = line.split()
        mats = [t for t in tokens if t.lower().endswith(".mat")]
        if len(tokens) != 2 or len(mats) != 1:
            raise InputError(f"{list_path}:{number}: expected a .mat path and a frame folder, got {line!r}")
        frames = tokens[1] if tokens[0] == mats[0] else tokens[0]
        name = "/".join(PurePath(frames.rstrip("/\\")).parts[-2:])
        return JhmdbVideo(name, self.root, frames, mats[0])

    def __len__(self) -> int:
        return len(self.videos)

    def __iter__(self) -> Iterator[JhmdbVideo]:
        return iter(self.videos)


def read_joint_positions(path: PathLike) -> np.ndarray:
    """``pos_img`` of a JHMDB ``joint_positions.mat`` as ``(T, J, 2)`` 0-based pixel ``(x, y)``.

    The file stores ``(2, J, T)`` 1-based MATLAB coordinates; 1 is subtracted, as every reference does.
    """
    array = read_mat_array(path, "pos_img")
    if array.ndim == 2:  # MATLAB drops a trailing singleton: a one-frame video is stored as (2, J)
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[0] != 2:
        raise InputError(f"{path}: pos_img must have shape (2, joints, frames), got {array.shape}")
    return np.ascontiguousarray(array.transpose(2, 1, 0), dtype=np.float64) - 1.0


# ------------------------------------------------------------------------------------------------
# Minimal MATLAB v5 reader (numeric arrays only)

_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MX_DTYPES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
_FLAG_COMPLEX, _FLAG_LOGICAL = 0x0800, 0x0200


class _Elements:
    """Iterator over the data elements of a MAT v5 byte stream: yields ``(type, payload)``."""

    def __init__(self, data: bytes, endian: str, *, padded: bool) -> None:
        self.data, self.endian, self.padded, self.pos = data, endian, padded, 0

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        while self.pos + 8 <= len(self.data):
            (first,) = struct.unpack_from(self.endian + "I", self.data, self.pos)
            if first >> 16:  # small element: size and type share the first word, data in the second
                mtype, size, start, self.pos = first & 0xFFFF, first >> 16, self.pos + 4, self.pos + 8
            else:
                mtype = first
                (size,) = struct.unpack_from(self.endian + "I", self.data, self.pos + 4)
                start = self.pos + 8
                self.pos = start + (size + 7) // 8 * 8 if self.padded else start + size
            if start + size > len(self.data):
                raise ValueError("truncated data element")
            yield mtype, self.data[start : start + size]


def _numeric(mtype: int, payload: bytes, endian: str) -> np.ndarray:
    if mtype not in _MI_DTYPES:
        raise ValueError(f"unsupported numeric data type {mtype}")
    return np.frombuffer(payload, dtype=np.dtype(_MI_DTYPES[mtype]).newbyteorder(endian))


def _parse_matrix(payload: bytes, endian: str, name: str) -> np.ndarray | None:
    """The array if this miMATRIX is the variable ``name``; None for another variable."""
    parts = iter(_Elements(payload, endian, padded=True))
    _, flags_bytes = next(parts)
    flags = int(_numeric(6, flags_bytes[:4], endian)[0])
    _, dims_bytes = next(parts)
    dims = tuple(int(d) for d in _numeric(5, dims_bytes, endian))
    _, name_bytes = next(parts)
    if name_bytes.decode("latin-1") != name:
        return None
    mx_class = flags & 0xFF
    if mx_class not in _MX_DTYPES:
        raise InputError(f"variable {name!r} is not a numeric array (MATLAB class {mx_class})")
    real_type, real = next(parts)
    values = _numeric(real_type, real, endian).astype(_MX_DTYPES[mx_class])
    if flags & _FLAG_COMPLEX:
        imag_type, imag = next(parts)
        values = values + 1j * _numeric(imag_type, imag, endian)
    if flags & _FLAG_LOGICAL:
        values = values.astype(bool)
    return values.reshape(dims, order="F")


def _find_variable(data: bytes, endian: str, name: str) -> np.ndarray | None:
    for mtype, payload in _Elements(data, endian, padded=False):
        if mtype == _MI_COMPRESSED:
            found = _find_variable(zlib.decompress(payload), endian, name)
        elif mtype == _MI_MATRIX:
            found = _parse_matrix(payload, endian, name)
        else:
            found = None
        if found is not None:
            return found
    return None


def read_mat_array(path: PathLike, name: str) -> np.ndarray:
    """The numeric variable ``name`` of a MATLAB v5/v6/v7 ``.mat`` file (v7.3/HDF5 is not supported)."""
    path = Path(path)
    data = _require_file(path, "MAT file").read_bytes()
    header = data[:128]
    if header.startswith(b"MATLAB 7.3"):
        raise InputError(f"{path} is a MATLAB v7.3 (HDF5) file; re-save it with save(..., '-v7')")
    if len(header) < 128 or not header.startswith(b"MATLAB 5.0 MAT-file") or header[126:128] not in (b"IM", b"MI"):
        raise DataReadError(f"{path} is not a MATLAB v5 MAT-file")
    endian = "<" if header[126:128] == b"IM" else ">"
    try:
        array = _find_variable(data[128:], endian, name)
    except (ValueError, StopIteration, struct.error, zlib.error) as exc:
        if isinstance(exc, InputError):
            raise
        raise DataReadError(f"{path} is a corrupt MAT-file: {exc}") from exc
    if array is None:
        raise InputError(f"{path} has no variable {name!r}")
    return array
