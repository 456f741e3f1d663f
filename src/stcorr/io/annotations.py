"""Annotation formats: stcorr's mask folders to and from COCO and YouTube-VIS JSON.

A mask folder holds one DAVIS-palette id PNG per frame (``OUT/masks/<frame>.png``: 0 background, 1..254
objects, 255 void). In JSON, every object of a frame is a COCO RLE (:mod:`stcorr.io.rle`):

- **COCO** instance segmentation: one ``images`` entry per frame (``file_name`` ``<frame>.jpg``, ``height``,
  ``width``), one ``annotations`` entry per object per frame where the object has pixels (``segmentation`` a
  compressed RLE, ``area`` and ``bbox`` as pycocotools computes them, ``iscrowd`` 0, ``category_id``, and
  ``track_id``, the stcorr object id), and ``categories``.
- **YouTube-VIS**: one ``videos`` entry (``file_names``, ``height``, ``width``, ``length``) and one
  ``annotations`` entry per object with per-frame ``segmentations``, ``areas`` and ``bboxes`` (``null`` on
  frames without the object), ``category_id``, ``iscrowd`` 0 and ``track_id``.

Void pixels (255) become annotations of a category named ``void`` with ``iscrowd`` 1: COCO's evaluation ignores
crowd regions, as DAVIS ignores void. Objects take category ``object`` unless named (``names={1: "person"}``);
objects with one name share a category. Reading back, the object id is ``track_id`` where present, else the
annotation's position in its image (COCO) or video (YouTube-VIS); where annotations overlap, the later one wins.
Polygon segmentations are not read.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from stcorr._atomic import write_atomic
from stcorr.errors import DataReadError, InputError, InputNotFoundError, OutputWriteError
from stcorr.io import rle
from stcorr.io.claims import check_apart, claim_png_folder, output_lock
from stcorr.io.masks import read_mask, write_mask_png

__all__ = ["AnnotationFrame", "Annotations", "Conversion", "mask_folder_frames", "encode_frame", "to_coco",
           "to_ytvis", "read_annotations", "frame_ids", "first_frame_ids", "frames_of", "detect_format", "load_json",
           "convert_annotations", "FORMATS", "VOID", "VOID_NAME", "DEFAULT_NAME"]

PathLike = str | os.PathLike[str]
Format = Literal["coco", "ytvis"]
FORMATS = ("png", "coco", "ytvis")
VOID = 255
VOID_NAME = "void"
DEFAULT_NAME = "object"
IMAGE_SUFFIX = ".jpg"
MAX_JSON_BYTES = 4 * 2**30


@dataclass(frozen=True)
class AnnotationFrame:
    """One frame of masks: its name (the PNG's stem) and its objects' RLEs ``{object id: rle}``. Void (255) is
    one RLE when encoded from a mask, a list of RLEs when read from a file."""

    name: str
    height: int
    width: int
    objects: dict[int, dict] = field(default_factory=dict)
    overlap: int = 0
    """Pixels where objects of the file this frame was read from overlapped (the later one won)."""


# ------------------------------------------------------------------------------------------------ reading PNGs


def mask_png_paths(folder: PathLike) -> list[Path]:
    """The mask PNGs of a folder in name order (hidden temporary files skipped); InputError if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputNotFoundError(f"mask folder {folder} does not exist or is not a folder; expected a folder of "
                                 "per-frame id PNGs such as OUT/masks from `stcorr propagate`")
    paths = sorted(path for path in folder.glob("*.png") if not path.name.startswith("."))
    if not paths:
        raise InputError(f"{folder} holds no .png masks; expected one id PNG per frame (OUT/masks)")
    return paths


def mask_folder_frames(folder: PathLike) -> Iterator[AnnotationFrame]:
    """The frames of a mask folder, encoded one PNG at a time (the folder is never held in memory at once)."""
    for path in mask_png_paths(folder):
        ids = read_mask(path)
        if ids.max(initial=0) > VOID:
            raise InputError(f"{path} holds value {ids.max()}; mask ids must be 0..254 (255 = void)")
        yield encode_frame(path.stem, ids)


def encode_frame(name: str, ids: np.ndarray) -> AnnotationFrame:
    """The frame of an (H, W) id map: one compressed RLE per id present but 0."""
    return AnnotationFrame(name, int(ids.shape[0]), int(ids.shape[1]),
                           {int(i): rle.encode(ids == i) for i in np.unique(ids) if i != 0})


# ------------------------------------------------------------------------------------------------ writing JSON


def _categories(ids: Sequence[int], names: Mapping[int, str]) -> tuple[list[dict], dict[int, int]]:
    """COCO ``categories`` and each object id's category id: one category per distinct name, void last."""
    unknown = sorted(set(names) - set(ids))
    if unknown:
        raise InputError(f"names were given for object ids {unknown}, which no mask holds; the masks hold "
                         f"{[i for i in ids if i != VOID]}")
    category_names: list[str] = []
    of_object: dict[int, int] = {}
    for object_id in sorted(ids):
        name = VOID_NAME if object_id == VOID else names.get(object_id, DEFAULT_NAME)
        if object_id != VOID and name == VOID_NAME:
            raise InputError(f"object {object_id} may not be named {VOID_NAME!r}: that name marks void pixels")
        if name not in category_names:
            category_names.append(name)
        of_object[object_id] = category_names.index(name) + 1
    return [{"id": index + 1, "name": name} for index, name in enumerate(category_names)], of_object


def _annotation_fields(segmentation: dict) -> dict[str, Any]:
    return {"segmentation": segmentation, "area": rle.area(segmentation), "bbox": rle.bbox(segmentation)}


def _checked_frames(frames: Sequence[AnnotationFrame]) -> None:
    if not frames:
        raise InputError("no frames to write; expected at least one mask")
    names = [frame.name for frame in frames]
    if len(set(names)) != len(names):
        raise InputError("two frames share a name; frame names must be unique")


def to_coco(frames: Sequence[AnnotationFrame], names: Mapping[int, str] = {}) -> dict:
    """A COCO instance-segmentation document of the frames (see the module docstring)."""
    _checked_frames(frames)
    ids = sorted({object_id for frame in frames for object_id in frame.objects})
    categories, category_of = _categories(ids, names)
    images, annotations = [], []
    for image_id, frame in enumerate(frames, start=1):
        images.append({"id": image_id, "file_name": frame.name + IMAGE_SUFFIX, "height": frame.height,
                       "width": frame.width, "frame_index": image_id - 1})
        for object_id, segmentation in sorted(frame.objects.items()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_of[object_id],
                                "iscrowd": int(object_id == VOID), "track_id": object_id,
                                **_annotation_fields(segmentation)})
    return {"info": {"description": "masks exported by stcorr"}, "images": images, "annotations": annotations,
            "categories": categories}


def to_ytvis(frames: Sequence[AnnotationFrame], names: Mapping[int, str] = {}, *, video: str = "video") -> dict:
    """A YouTube-VIS document of the frames as one video named ``video`` (see the module docstring)."""
    _checked_frames(frames)
    sizes = {(frame.height, frame.width) for frame in frames}
    if len(sizes) > 1:
        raise InputError(f"the frames have {len(sizes)} different sizes {sorted(sizes)}; a YouTube-VIS video has one")
    height, width = sizes.pop()
    ids = sorted({object_id for frame in frames for object_id in frame.objects})
    categories, category_of = _categories(ids, names)
    annotations = []
    for object_id in ids:
        per_frame = [frame.objects.get(object_id) for frame in frames]
        annotations.append({
            "id": len(annotations) + 1, "video_id": 1, "category_id": category_of[object_id],
            "iscrowd": int(object_id == VOID), "track_id": object_id, "height": height, "width": width,
            "length": 1, "segmentations": per_frame,
            "areas": [None if s is None else rle.area(s) for s in per_frame],
            "bboxes": [None if s is None else rle.bbox(s) for s in per_frame]})
    videos = [{"id": 1, "name": video, "height": height, "width": width, "length": len(frames),
               "file_names": [f"{video}/{frame.name}{IMAGE_SUFFIX}" for frame in frames]}]
    return {"info": {"description": "masks exported by stcorr"}, "videos": videos, "annotations": annotations,
            "categories": categories}


# ------------------------------------------------------------------------------------------------ reading JSON


def load_json(path: PathLike) -> dict:
    """A JSON annotation file as a dict; missing, oversized, malformed or too deeply nested files raise typed
    errors."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise InputError(f"{path} is {size / 2**30:.1f} GiB, more than the {MAX_JSON_BYTES / 2**30:.0f} GiB read")
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError as exc:
        raise InputNotFoundError(f"annotation file {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path} is a folder; expected a COCO or YouTube-VIS .json file") from exc
    except RecursionError as exc:
        raise InputError(f"{path} is nested too deeply to be an annotation file") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); expected a COCO or YouTube-VIS annotation file") from exc
    except OSError as exc:
        raise DataReadError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not isinstance(document, dict):
        raise InputError(f"{path} holds a JSON {type(document).__name__}; expected an object with \"images\" "
                         "(COCO) or \"videos\" (YouTube-VIS)")
    return document


def detect_format(document: Mapping) -> Format:
    """``"coco"`` for a document with ``images``, ``"ytvis"`` for one with ``videos``."""
    if "videos" in document:
        return "ytvis"
    if "images" in document:
        return "coco"
    raise InputError(f"expected a COCO (\"images\", \"annotations\") or YouTube-VIS (\"videos\", \"annotations\") "
                     f"document, got keys {sorted(document)[:10]}")


def _list(document: Mapping, key: str, where: str) -> list:
    value = document.get(key)
    if not isinstance(value, list):
        raise InputError(f"{where}: expected \"{key}\" to be a list, got {type(value).__name__}")
    return value


def _int(entry: Mapping, key: str, where: str) -> int:
    value = entry.get(key) if isinstance(entry, Mapping) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(f"{where}: expected an integer \"{key}\", got {value!r:.60}")
    return value


def _object_id(annotation: Mapping, position: int, void: bool, where: str) -> int:
    if void:
        return VOID
    object_id = annotation.get("track_id", position)
    if not isinstance(object_id, int) or isinstance(object_id, bool) or not 1 <= object_id <= 254:
        raise InputError(f"{where}: object id {object_id!r:.60} is outside 1..254, the ids a mask PNG holds")
    return object_id


def _category_names(document: Mapping, where: str) -> dict[int, str]:
    """``{category id: name}`` of the document's ``categories`` (absent: none)."""
    categories = _list(document, "categories", where) if "categories" in document else []
    return {_int(c, "id", f"{where} categories[{i}]"): str(c.get("name", "")) for i, c in enumerate(categories)}


def _note_name(names: dict[int, str], object_id: int, annotation: Mapping, categories: Mapping[int, str]) -> None:
    name = categories.get(annotation.get("category_id"))  # type: ignore[arg-type]
    if object_id != VOID and name:
        names.setdefault(object_id, name)


def _check_frame_size(height: int, width: int, where: str) -> None:
    """Frames are decoded into PNGs: their size is bounded as Pillow bounds images it decodes (a few bytes of
    RLE can claim billions of pixels)."""
    limit = 2 * Image.MAX_IMAGE_PIXELS
    if height < 1 or width < 1 or height * width > limit:
        raise InputError(f"{where}: frame size {height}x{width} is not usable; expected positive sides and at most "
                         f"{limit / 1e6:.0f} million pixels (the limit for images stcorr decodes)")


def _frame_name(file_name: object, where: str) -> str:
    if not isinstance(file_name, str) or not file_name:
        raise InputError(f"{where}: expected a \"file_name\" string, got {file_name!r:.60}")
    name = Path(file_name.replace("\\", "/")).stem
    if not name or name.startswith("."):
        raise InputError(f"{where}: file name {file_name!r:.60} gives no usable frame name")
    return name


def _checked_rle(segmentation: object, height: int, width: int, where: str) -> dict:
    got_height, got_width, _ = rle.counts_of(segmentation, where=where)
    if (got_height, got_width) != (height, width):
        raise InputError(f"{where}: segmentation size {got_height}x{got_width} differs from its frame's "
                         f"{height}x{width}")
    return segmentation  # type: ignore[return-value]


def _coco_frames(document: Mapping, names: dict[int, str]) -> list[AnnotationFrame]:
    images = _list(document, "images", "COCO")
    annotations = _list(document, "annotations", "COCO")
    categories = _category_names(document, "COCO")
    void = {key for key, name in categories.items() if name == VOID_NAME}
    frames: dict[int, AnnotationFrame] = {}
    for index, image in enumerate(images):
        where = f"COCO images[{index}]"
        image_id = _int(image, "id", where)
        if image_id in frames:
            raise InputError(f"{where}: image id {image_id} appears twice")
        height, width = _int(image, "height", where), _int(image, "width", where)
        _check_frame_size(height, width, where)
        frames[image_id] = AnnotationFrame(_frame_name(image.get("file_name"), where), height, width, {})
    positions: dict[int, int] = {}
    for index, annotation in enumerate(annotations):
        where = f"COCO annotations[{index}]"
        image_id = _int(annotation, "image_id", where)
        if image_id not in frames:
            raise InputError(f"{where}: image_id {image_id} is not in \"images\"")
        frame = frames[image_id]
        positions[image_id] = positions.get(image_id, 0) + 1
        is_void = annotation.get("category_id") in void
        object_id = _object_id(annotation, positions[image_id], is_void, where)
        _note_name(names, object_id, annotation, categories)
        if object_id in frame.objects and not is_void:
            raise InputError(f"{where}: object {object_id} appears twice on image {image_id}")
        segmentation = _checked_rle(annotation.get("segmentation"), frame.height, frame.width, where)
        if is_void:
            frame.objects.setdefault(VOID, []).append(segmentation)
        else:
            frame.objects[object_id] = segmentation
    return list(frames.values())


def _ytvis_video(document: Mapping, video: str | None) -> Mapping:
    videos = _list(document, "videos", "YouTube-VIS")
    if not videos:
        raise InputError("YouTube-VIS: \"videos\" is empty")
    labels = [str(v.get("name", v.get("id"))) if isinstance(v, Mapping) else "?" for v in videos]
    if video is None:
        if len(videos) > 1:
            raise InputError(f"the file holds {len(videos)} videos ({', '.join(labels[:10])}); choose one with "
                             "--video NAME (a name or an id)")
        return videos[0]
    for entry, label in zip(videos, labels):
        if video in (label, str(entry.get("id"))):
            return entry
    raise InputError(f"no video {video!r} in the file; it holds {', '.join(labels[:10])}")


def _ytvis_frames(document: Mapping, video: str | None, names: dict[int, str]) -> list[AnnotationFrame]:
    entry = _ytvis_video(document, video)
    where = "YouTube-VIS video"
    video_id = _int(entry, "id", where)
    height, width = _int(entry, "height", where), _int(entry, "width", where)
    _check_frame_size(height, width, where)
    file_names = _list(entry, "file_names", where)
    frames = [AnnotationFrame(_frame_name(name, f"{where} file_names[{t}]"), height, width, {})
              for t, name in enumerate(file_names)]
    categories = _category_names(document, "YouTube-VIS")
    void = {key for key, name in categories.items() if name == VOID_NAME}
    position = 0
    for index, annotation in enumerate(_list(document, "annotations", "YouTube-VIS")):
        where = f"YouTube-VIS annotations[{index}]"
        if _int(annotation, "video_id", where) != video_id:
            continue
        position += 1
        is_void = annotation.get("category_id") in void
        object_id = _object_id(annotation, position, is_void, where)
        _note_name(names, object_id, annotation, categories)
        segmentations = _list(annotation, "segmentations", where)
        if len(segmentations) != len(frames):
            raise InputError(f"{where}: {len(segmentations)} segmentations for a video of {len(frames)} frames")
        for t, segmentation in enumerate(segmentations):
            if segmentation is None:
                continue
            checked = _checked_rle(segmentation, height, width, f"{where} segmentations[{t}]")
            if is_void:
                frames[t].objects.setdefault(VOID, []).append(checked)
            elif object_id in frames[t].objects:
                raise InputError(f"{where}: object {object_id} appears twice on frame {t}")
            else:
                frames[t].objects[object_id] = checked
    return frames


@dataclass(frozen=True)
class Annotations:
    """The frames of an annotation file and its objects' category names ``{object id: name}``."""

    frames: list[AnnotationFrame]
    names: dict[int, str]


def read_annotations(path: PathLike, *, format: Format | None = None, video: str | None = None) -> Annotations:
    """The frames of a COCO or YouTube-VIS file (format detected unless given), every RLE validated, and the
    objects' category names; void RLEs are kept as a list under id 255. ``video`` picks one video of a
    YouTube-VIS file holding several."""
    document = load_json(path)
    kind = format or detect_format(document)
    names: dict[int, str] = {}
    frames = _coco_frames(document, names) if kind == "coco" else _ytvis_frames(document, video, names)
    if not frames:
        raise InputError(f"{path} holds no frames")
    frame_names = [frame.name for frame in frames]
    if len(set(frame_names)) != len(frame_names):
        repeated = sorted({name for name in frame_names if frame_names.count(name) > 1})[:5]
        raise InputError(f"{path}: several frames are named {repeated}; frame names must be unique")
    return Annotations(frames, names)


def frame_ids(frame: AnnotationFrame) -> tuple[np.ndarray, int]:
    """The (H, W) ``uint8`` id map of a frame (void first, objects over it in id order) and the number of pixels
    where two objects overlapped (the later one won)."""
    ids = np.zeros((frame.height, frame.width), dtype=np.uint8)
    voids = frame.objects.get(VOID, [])
    for segmentation in [voids] if isinstance(voids, Mapping) else voids:
        ids[rle.decode(segmentation)] = VOID
    covered = np.zeros(ids.shape, dtype=bool)
    overlap = 0
    for object_id, segmentation in frame.objects.items():
        if object_id == VOID:
            continue
        mask = rle.decode(segmentation)
        overlap += int(np.count_nonzero(covered & mask))
        covered |= mask
        ids[mask] = object_id
    return ids, overlap


def first_frame_ids(path: PathLike) -> np.ndarray:
    """The (H, W) ``uint8`` id map of the first frame of a COCO or YouTube-VIS file (a first mask for
    propagation); overlapping objects resolved as :func:`frame_ids` does."""
    return frame_ids(read_annotations(path).frames[0])[0]


def frames_of(annotations: Sequence[AnnotationFrame]) -> Iterator[tuple[str, np.ndarray, int]]:
    """``(name, ids, overlapping pixels)`` per frame, decoded one frame at a time."""
    for frame in annotations:
        ids, overlap = frame_ids(frame)
        yield frame.name, ids, overlap



# ------------------------------------------------------------------------------------------------ conversion


@dataclass(frozen=True)
class Conversion:
    """What :func:`convert_annotations` wrote: the output, its frames and objects, the objects' category names
    (those of an annotation input, overridden by the names given), and the pixels where objects of the input
    overlapped (the later one won; 0 for stcorr's own masks)."""

    path: Path
    frames: int
    objects: list[int]
    overlap: int
    names: dict[int, str] = field(default_factory=dict)


def _reencoded(annotations: Annotations) -> list[AnnotationFrame]:
    """An annotation file's frames re-encoded from their id maps, so that overlaps are resolved once, the same
    way for every output."""
    frames = []
    for frame in annotations.frames:
        ids, overlap = frame_ids(frame)
        frames.append(dataclasses.replace(encode_frame(frame.name, ids), overlap=overlap))
    return frames


def _video_name(source: Path) -> str:
    """OUT for OUT/masks, else the folder's (or file's) own name."""
    path = source.resolve()
    if path.is_file():
        return path.stem
    return path.parent.name if path.name == "masks" and path.parent.name else path.name or "video"


def convert_annotations(source: PathLike, out: PathLike, *, to: str, names: Mapping[int, str] = {},
                        video: str | None = None, overwrite: bool = False) -> Conversion:
    """Convert between a mask folder (``png``), COCO (``coco``) and YouTube-VIS (``ytvis``).

    ``source`` is a folder of id PNGs or a COCO / YouTube-VIS ``.json`` (detected from its keys); ``out`` the
    folder (``png``) or ``.json`` file to write. ``names`` maps object ids to category names (JSON outputs);
    ``video`` picks a video of a YouTube-VIS input, or names the video of a YouTube-VIS output. An existing output
    is refused unless ``overwrite`` (a folder's PNGs are then deleted first); an output that is or holds the input
    is refused. JSON is written atomically; PNGs one by one, each atomically.
    """
    source, out = Path(source), Path(out)
    if to not in FORMATS:
        raise InputError(f"expected an output format among {', '.join(FORMATS)}, got {to!r}")
    if not source.exists():
        raise InputNotFoundError(f"{source} does not exist; expected a mask folder or a COCO / YouTube-VIS .json")
    if to == "png" and names:
        raise InputError("object names have no place in PNG masks; drop --names when writing png")
    if to == "png":
        check_apart([source], folders={"OUT": out})
        annotations = None if source.is_dir() else read_annotations(source, video=video)  # checked before claiming
        with output_lock(out):
            claim_png_folder(out, overwrite)
            return _write_pngs(source if annotations is None else annotations, out)
    check_apart([source], files={"OUT": out})
    if out.exists() and not overwrite:
        raise OutputWriteError(f"{out} exists; pass --overwrite (overwrite=True) to replace it, or choose another "
                               "output file")
    if out.is_dir():
        raise OutputWriteError(f"{out} is a folder; expected a .json file path for {to} output")
    if source.is_dir():
        frames, read_names = list(mask_folder_frames(source)), {}
    else:
        annotations = read_annotations(source, video=video)
        frames, read_names = _reencoded(annotations), annotations.names
    objects = sorted({i for frame in frames for i in frame.objects if i != VOID})
    all_names = {**{i: name for i, name in read_names.items() if i in objects}, **names}
    document = (to_coco(frames, all_names) if to == "coco"
                else to_ytvis(frames, all_names, video=video or _video_name(source)))
    text = json.dumps(document, separators=(",", ":"))
    write_atomic(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return Conversion(out, len(frames), objects, sum(frame.overlap for frame in frames), all_names)


def _write_pngs(source: Path | Annotations, out: Path) -> Conversion:
    """Write the id PNGs of a mask folder (read one PNG at a time) or of read annotations."""
    count, overlap, objects, names = 0, 0, set(), {}
    if isinstance(source, Annotations):
        decoded, names = frames_of(source.frames), source.names
    else:
        decoded = ((frame.name, *frame_ids(frame)) for frame in mask_folder_frames(source))
    for name, ids, frame_overlap in decoded:
        write_mask_png(out / f"{name}.png", ids)
        count += 1
        overlap += frame_overlap
        objects.update(int(i) for i in np.unique(ids) if i not in (0, VOID))
    return Conversion(out, count, sorted(objects), overlap, {i: n for i, n in names.items() if i in objects})
