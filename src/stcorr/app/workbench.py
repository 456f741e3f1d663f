"""What the app does, without the browser: one video, one propagation session, its views and its export.

:class:`Workbench` is driven by the Gradio callbacks in :mod:`stcorr.app.ui` and tested directly. It holds
no propagation logic of its own: anchors, invalidation and propagation are the session's
(``stcorr.PropagationSession``); the workbench turns paint layers into anchors and results into pictures.
"""

from __future__ import annotations

import logging
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from stcorr._atomic import atomic_path
from stcorr.app.painting import (
    MAX_OBJECTS,
    SUSPECT_BELOW,
    confidence_view,
    ids_to_layer,
    layer_to_ids,
    object_color_hex,
    object_color_name,
    object_panel,
    reliability_strip,
)
from stcorr.app.prompts import box_mask, normalise_box
from stcorr.errors import InputError
from stcorr.features import default_batch_size
from stcorr.io.annotations import convert_annotations
from stcorr.io.frames import open_frames
from stcorr.io.masks import write_mask_png
from stcorr.io.reliability import RELIABILITY_FILE, write_reliability_json
from stcorr.io.render import overlay
from stcorr.io.video import VideoWriter
from stcorr.pipelines import load_first_mask
from stcorr.propagation.options import PropagationOptions
from stcorr.propagation.session import AnchorState, PropagationSession
from stcorr.session_files import complete, session_to_json, write_session_file
from stcorr.working_size import working_max_side

__all__ = ["Workbench", "Progress", "ObjectInfo", "MAX_PIXELS", "HISTORY_LENGTH"]

logger = logging.getLogger(__name__)

# Frames x height x width at the working size above which a video is refused (features alone take about
# 16 bytes per pixel for the ResNet-18 models): the message says which --max-side fits.
MAX_PIXELS = 200_000_000
HISTORY_LENGTH = 50  # changes the app can undo (each keeps references to the anchors of its time, not copies)
MAX_NAME = 40  # characters of an object's name


@dataclass(frozen=True)
class Progress:
    """One propagated frame: its index, how many of this run's frames are done, and the run's total."""

    t: int
    done: int
    total: int


@dataclass(frozen=True)
class ObjectInfo:
    """One object of the panel: its id, brush colour, optional name, whether the overlay shows it, and the
    anchor frames holding it."""

    id: int
    color: str
    color_name: str
    name: str
    visible: bool
    anchors: tuple[int, ...]

    @property
    def label(self) -> str:
        """``"2 green"`` or ``"2 green: walker"``."""
        return f"{self.id} {self.color_name}" + (f": {self.name}" if self.name else "")


@dataclass(frozen=True)
class _Change:
    """What an undo restores: the anchors and object names before a change, and the change's description."""

    what: str
    anchors: AnchorState
    names: dict[int, str]


def _fitting_side(frames: int, size: tuple[int, int], budget: int) -> int:
    height, width = size
    scale = (budget / (frames * height * width)) ** 0.5
    return max(16, int(max(height, width) * scale) // 16 * 16)


def check_video_size(video: Any, max_side: int | None, budget: int = MAX_PIXELS, max_frames: int | None = None) -> None:
    """Refuse a video whose working size would not fit the app's memory budget, saying what fits."""
    source = open_frames(video, max_side=max_side, max_frames=max_frames)
    height, width = source.size
    pixels = len(source) * height * width
    if pixels > budget:
        side = _fitting_side(len(source), source.size, budget)
        raise InputError(
            f"the video is too large for the app: {len(source)} frames of {width}x{height} "
            f"({pixels / 1e6:.0f} million pixels, the limit is {budget / 1e6:.0f} million); "
            f"open it with a smaller max side (e.g. --max-side {side}) or fewer frames (--max-frames)"
        )


class Workbench:
    """One video being annotated.

    Args:
        model: an encoder (from :func:`stcorr.loading.load_encoder`).
        model_name: the name or path it was loaded from (written into the exported session).
        video: a video file or a folder of frames.
        max_side: process frames downscaled to this longest side (results come back at the original size);
            None: the default (640 on CPU, full size on accelerators), 0: full size.
        max_frames: use only the first N frames.
        options: propagation options (context, radius, top-k, temperature).
    """

    def __init__(self, model: Any, model_name: str | None, video: str | Path, *, max_side: int | None = None,
                 max_frames: int | None = None, options: PropagationOptions | None = None) -> None:
        max_side = working_max_side(max_side, model.device.type) or 0  # the CLI's default; 0 = full size
        check_video_size(video, max_side or None, max_frames=max_frames)
        self.video = str(video)
        self.model_name = model_name
        self.max_frames = max_frames
        source = open_frames(video, max_frames=max_frames)
        self.fps = source.fps or 10.0
        self.session = PropagationSession(model, source, options=options or PropagationOptions(), max_side=max_side,
                                          batch_size=default_batch_size(model.device.type))
        self.names: dict[int, str] = {}  # object id -> the name the user gave it
        self.hidden: set[int] = set()  # objects the overlay leaves out (the editor always shows every object)
        self.selected = 1  # the object the brush paints
        self.unexported = False  # an anchor changed since the video was opened or last exported
        self.cancel_requested = False  # set from another thread: the running propagate() stops at its next frame
        self.pause_requested = False  # set from another thread: the page's running play-through stops
        self.discard_asked: str | None = None  # the page asked before discarding the changes to open this
        self._history: list[_Change] = []

    # -- what the browser shows ------------------------------------------------------------------
    def mask(self, t: int) -> np.ndarray:
        """The mask frame t shows: its up-to-date result (an anchor's objects as given, the others
        propagated), else its anchor, else empty."""
        result = self.session.result(t)
        if result is not None:
            return result.labels
        anchors = self.session.anchors
        return anchors[t] if t in anchors else np.zeros(self.session.frame_size, np.uint8)

    def editor_value(self, t: int) -> dict[str, Any]:
        """The ImageEditor value for frame t: the frame as background and its mask as the paint layer."""
        return {"background": self.session.frame(t), "layers": [ids_to_layer(self.mask(t))], "composite": None}

    def view(self, t: int, show_confidence: bool = False, layer: np.ndarray | None = None) -> np.ndarray:
        """The overlay of frame t (the objects not hidden), or its confidence map (red where the propagation
        was unsure). ``layer``: the editor's paint layer, shown instead of the saved mask (unsaved paint)."""
        frame = self.session.frame(t)
        if show_confidence:
            result = self.session.result(t)
            confidence = result.confidence if result is not None else np.ones(self.session.frame_size, np.float32)
            return confidence_view(frame, confidence)
        ids = self.mask(t) if layer is None else self._layer_ids(t, layer)
        if self.hidden:
            ids = np.where(np.isin(ids, sorted(self.hidden)), 0, ids).astype(np.uint8)
        return overlay(frame, ids)

    def _layer_ids(self, t: int, layer: np.ndarray) -> np.ndarray:
        """The ids the editor's layer at frame t holds: its colours among the brush colours and the ids the
        frame shows (see :func:`~stcorr.app.painting.layer_to_ids`)."""
        present = set(range(1, MAX_OBJECTS + 1)) | set(self.session.object_ids) | set(np.unique(self.mask(t)).tolist())
        ids = layer_to_ids(layer, present)
        if ids.shape != tuple(self.session.frame_size):
            raise InputError(f"the paint layer is {ids.shape[1]}x{ids.shape[0]} but the frames are "
                             f"{self.session.frame_size[1]}x{self.session.frame_size[0]}")
        return ids

    def reliability(self, t: int) -> dict[int, float] | None:
        """Frame t's per-object reliability (object id -> [0, 1], see ``FrameResult.reliability``), None while
        it is not computed (or stale)."""
        result = self.session.result(t)
        return None if result is None or result.reliability is None else dict(result.reliability)

    def strip_rows(self) -> dict[int, list[float | None]]:
        """Per object of the session, its reliability at every frame (None: not computed, or the object is not
        in that frame's result)."""
        frames = [self.reliability(t) or {} for t in range(self.session.num_frames)]
        return {i: [values.get(i) for values in frames] for i in self.session.object_ids}

    def first_suspect(self) -> tuple[int, int, float] | None:
        """The first frame where an object's reliability is below :data:`SUSPECT_BELOW`, as (frame, object,
        value) with that frame's least reliable object; None if no computed frame has one."""
        for t in range(self.session.num_frames):
            suspects = [(value, i) for i, value in (self.reliability(t) or {}).items() if value < SUSPECT_BELOW]
            if suspects:
                value, object_id = min(suspects)
                return t, object_id, value
        return None

    def strip(self, current: int) -> str:
        """The per-object reliability strip shown under the slider (HTML)."""
        return reliability_strip(self.strip_rows(), current, self.session.anchors, num_frames=self.session.num_frames)

    def status(self) -> str:
        """One line: anchors, objects and how many frames are still to propagate."""
        anchors = sorted(self.session.anchors)
        stale = len(self.session.stale_frames())
        ids = self.session.object_ids
        return (f"{self.session.num_frames} frames {self.session.frame_size[1]}x{self.session.frame_size[0]}; "
                f"anchors at {anchors or 'none yet'}; objects {ids or 'none'}; "
                f"{stale} frame(s) to propagate")

    # -- edits -----------------------------------------------------------------------------------
    def set_mask(self, t: int, ids: np.ndarray) -> bool:
        """Make ``ids`` the anchor of frame t for the objects the user edited there; True if changed.

        The edited objects are the ids whose pixels differ from what frame t shows (painted or erased): the
        anchor is authoritative for those only (``add_mask(..., objects=edited)``), every other object keeps
        its propagated labels at t, and the session re-predicts the frames on both sides of t. An empty
        mask on a frame that is not an anchor yet is no correction and is ignored; an empty anchor is
        removed (propagation then needs another one).
        """
        ids = np.asarray(ids, np.uint8)
        if ids.shape != tuple(self.session.frame_size):
            raise InputError(f"the mask is {ids.shape[1]}x{ids.shape[0]} but the frames are "
                             f"{self.session.frame_size[1]}x{self.session.frame_size[0]}")
        anchors = self.session.anchors
        if t in anchors and not ids.any():
            self._record(f"the paint that emptied frame {t} (its anchor was removed)")
            self.session.remove_anchor(t)
            return True
        shown = self.mask(t)
        changed = ids != shown
        edited = sorted((set(np.unique(ids[changed]).tolist()) | set(np.unique(shown[changed]).tolist())) - {0, 255})
        if not edited:
            return False
        kind = "correction" if t in anchors else "anchor"
        self._record(f"the {kind} at frame {t} (object{'s' if len(edited) > 1 else ''} "
                     f"{', '.join(map(str, edited))})")
        self.session.add_mask(t, ids, objects=edited)
        return True

    def set_layer(self, t: int, layer: np.ndarray | None) -> bool:
        """:meth:`set_mask` from the editor's RGBA paint layer."""
        if layer is None:
            return False
        return self.set_mask(t, self._layer_ids(t, layer))

    def apply_box(self, t: int, corner: tuple[float, float], other: tuple[float, float],
                  object_id: int | None = None) -> int:
        """A box prompt: the object inside the box with corners ``corner`` and ``other`` (x, y pixels, any
        order) becomes ``object_id`` (default: the selected object) on frame t, found by GrabCut
        (:func:`stcorr.app.prompts.box_mask`). The object's earlier pixels at t are replaced; the mask takes
        background pixels only (other objects keep theirs). Saved as an anchor like painted masks
        (undoable), to refine with the brush. Returns the object's pixel count (0: GrabCut found nothing,
        nothing changed)."""
        object_id = self.selected if object_id is None else self._check_id(object_id)
        box = normalise_box(corner, other, tuple(self.session.frame_size))
        found = box_mask(self.session.frame(t), box)
        if not found.any():
            return 0
        shown = self.mask(t)
        ids = np.where(shown == object_id, 0, shown).astype(np.uint8)
        ids[found & (ids == 0)] = object_id
        if self.set_mask(t, ids):
            self._history[-1] = replace(self._history[-1], what=f"the box for object {object_id} at frame {t}")
        return int((ids == object_id).sum())

    def load_mask_file(self, t: int, path: str | Path) -> bool:
        """Use an indexed (or colour) PNG mask as the anchor of frame t, resized (nearest) if needed."""
        return self.set_mask(t, load_first_mask(path, tuple(self.session.frame_size), resize=True))

    def remove_anchor(self, t: int) -> None:
        """Remove the anchor at frame t (undoable)."""
        if t not in self.session.anchors:
            raise InputError(f"frame {t} is not an anchor; the anchors are at {sorted(self.session.anchors) or 'none'}")
        self._record(f"removing the anchor at frame {t}")
        self.session.remove_anchor(t)

    def delete_object(self, object_id: int) -> list[int]:
        """Remove an object from the anchors that hold it, and return the frames this made stale.

        Only those anchors change (each keeps its other objects; one left empty is removed), so only the
        frames predicted from them are recomputed: an object that lives in later anchors only leaves the
        frames before them as they are. Frames that carried the object are recomputed for every object, as
        the objects share each pixel's soft labels in the propagation. Undoable (:meth:`undo`).
        """
        if object_id not in self.session.object_ids:
            raise InputError(f"there is no object {object_id}; the objects are {self.session.object_ids}")
        stale = set(self.session.stale_frames())
        self._record(f"deleting object {object_id}" + (f" ({self.names[object_id]})" if object_id in self.names else ""))
        self.names.pop(object_id, None)
        self.hidden.discard(object_id)
        for t, ids in self.session.anchors.items():
            if (ids == object_id).any():
                rest = np.where(ids == object_id, 0, ids).astype(np.uint8)
                if rest.any():
                    self.session.add_mask(t, rest, objects=[object_id])  # the anchor's other objects stay
                else:
                    self.session.remove_anchor(t)
        return sorted(set(self.session.stale_frames()) - stale)

    # -- objects ---------------------------------------------------------------------------------
    def objects(self) -> list[ObjectInfo]:
        """The object panel: every object of the anchors, with its colour, name, visibility and anchors."""
        anchors = self.session.anchors
        return [ObjectInfo(i, object_color_hex(i), object_color_name(i), self.names.get(i, ""), i not in self.hidden,
                           tuple(t for t, ids in anchors.items() if (ids == i).any()))
                for i in self.session.object_ids]

    def panel(self) -> str:
        """The object panel (HTML)."""
        return object_panel([(o.id, o.name, o.visible, o.anchors) for o in self.objects()], self.selected)

    def _check_id(self, object_id: Any, highest: int = 254) -> int:
        if isinstance(object_id, bool) or not isinstance(object_id, (int, np.integer)) or not 1 <= object_id <= highest:
            raise InputError(f"an object id is a whole number from 1 to {highest}, got {object_id!r}")
        return int(object_id)

    def select(self, object_id: int) -> None:
        """Choose the object the brush paints (one of the brush colours, 1..MAX_OBJECTS)."""
        self.selected = self._check_id(object_id, MAX_OBJECTS)

    def rename(self, object_id: int, name: str) -> None:
        """Name an object (shown in the panel; an empty name removes it). Any id 1..254, painted yet or not."""
        object_id = self._check_id(object_id)
        name = " ".join(str(name or "").split())
        if len(name) > MAX_NAME:
            raise InputError(f"an object's name has at most {MAX_NAME} characters, got {len(name)}: {name[:50]!r}")
        if name:
            self.names[object_id] = name
        else:
            self.names.pop(object_id, None)

    def set_visible(self, object_id: int, visible: bool) -> None:
        """Show or hide one object in the overlay (the editor and the export always hold every object)."""
        object_id = self._check_id(object_id)
        if visible:
            self.hidden.discard(object_id)
        else:
            self.hidden.add(object_id)

    # -- history ---------------------------------------------------------------------------------
    def _record(self, what: str) -> None:
        self._history.append(_Change(what, self.session.anchor_state(), dict(self.names)))
        del self._history[:-HISTORY_LENGTH]
        self.unexported = True
        self.discard_asked = None

    @property
    def can_undo(self) -> str | None:
        """What :meth:`undo` would undo, or None."""
        return self._history[-1].what if self._history else None

    def undo(self) -> str:
        """Undo the last change of the anchors (a saved anchor or correction, a removed anchor, an uploaded
        mask, a deleted object) and return what it was. The anchors come back as they were, so frames still
        cached from them are not recomputed; the rest become stale (Propagate recomputes them)."""
        if not self._history:
            raise InputError("nothing to undo: no anchor was saved, removed or changed and no object deleted yet")
        change = self._history.pop()
        self.session.restore_anchors(change.anchors)
        self.names = dict(change.names)
        self.unexported = True
        self.discard_asked = None
        return change.what

    # -- propagation and export ------------------------------------------------------------------
    def propagate(self) -> Iterator[Progress]:
        """Recompute the stale frames, yielding after each; stopping the iteration cancels (cache stays valid)."""
        if not self.session.anchors:
            raise InputError("nothing to propagate: paint a mask (or upload one) on some frame first")
        if not self.session.object_ids:
            raise InputError("the masks are empty: paint at least one object with the brush before propagating")
        total = len(self.session.stale_frames())
        self.cancel_requested = False
        for done, result in enumerate(self.session.propagate(), start=1):
            yield Progress(result.t, done, total)
            if self.cancel_requested:
                self.cancel_requested = False
                return

    def export(self, out_dir: str | Path | None = None,
               progress: Callable[[int], None] | None = None) -> Path:
        """Write ``<video>_stcorr.zip``: masks/<frame>.png (indexed), overlay.mp4, reliability.json (per frame
        and object, as ``stcorr propagate`` writes it), session.json, and the masks as coco.json and ytvis.json
        (COCO RLE per frame and object, one YouTube-VIS video named like the video: as ``stcorr propagate
        --format coco|ytvis`` writes them)."""
        for _ in complete(self.session):
            if progress:
                progress(1)
        folder = Path(out_dir or tempfile.mkdtemp(prefix="stcorr_app_"))
        target = folder / f"{self._video_name()}_stcorr.zip"
        # each export is built in its own fresh folder (removed afterwards) and replaces the zip atomically,
        # so exporting again never meets an earlier export's PNGs
        with tempfile.TemporaryDirectory(prefix="export_", dir=folder) as work_name:
            work = Path(work_name)
            names = self.session.frame_names
            with VideoWriter(work / "overlay.mp4", fps=self.fps) as writer:
                for t in range(self.session.num_frames):
                    labels = self.session.result(t).labels
                    write_mask_png(work / "masks" / f"{names[t]}.png", labels)
                    writer.write(overlay(self.session.frame(t), labels))
            write_reliability_json(work / RELIABILITY_FILE, names,
                                   [self.session.result(t).reliability for t in range(self.session.num_frames)])
            write_session_file(work / "session.json", session_to_json(
                self.session, model=self.model_name, video=self.video, max_frames=self.max_frames))
            for form in ("coco", "ytvis"):
                convert_annotations(work / "masks", work / f"{form}.json", to=form, video=self._video_name())
            with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
                for file in sorted(work.rglob("*")):
                    if file.is_file():
                        archive.write(file, file.relative_to(work).as_posix())
        logger.info("exported %s", target)
        return target

    def _video_name(self) -> str:
        """The video's name in exported annotations: the file's stem, or the frame folder's name."""
        return Path(self.video).stem or "video"
