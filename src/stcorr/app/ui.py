"""The Gradio page of ``stcorr app``: widgets and callbacks around one :class:`~stcorr.app.workbench.Workbench`.

Every callback turns errors into a message in the page (``gr.Error``); the server keeps running. The
page's state (one workbench per browser tab) lives in ``gr.State``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no phoning home

import gradio as gr  # noqa: E402

from stcorr.app.painting import (  # noqa: E402
    MAX_OBJECTS,
    SUSPECT_BELOW,
    brush_colors,
    object_color_hex,
    object_color_name,
)
from stcorr.app.workbench import Workbench  # noqa: E402
from stcorr.errors import StcorrError  # noqa: E402

__all__ = ["build_app", "ModelCache", "CSS", "HEAD", "SHORTCUTS"]

logger = logging.getLogger(__name__)
CSS = """
#view img { width: 100%; height: 100%; object-fit: scale-down; image-rendering: pixelated; cursor: crosshair; }
#status { min-height: 1.5em; font-weight: 500; }
#object_select label { padding: 2px 8px; }
""" + "".join(  # the object choices carry their brush colour
    f"#object_select label:nth-of-type({i}) {{ border-left: 14px solid {object_color_hex(i)}; }}\n"
    for i in range(1, MAX_OBJECTS + 1))

SHORTCUTS = (
    ("Left arrow or ,", "previous frame"), ("Right arrow or .", "next frame"), ("Space", "play / pause"),
    ("p", "propagate"), ("b", "brush"), ("e", "eraser"), ("x", "box mode on / off"),
    ("Ctrl+Z", "undo the last stroke (while the editor has strokes to undo), else the last anchor change"),
    ("u", "undo the last anchor change"),
)
"""Keyboard shortcuts of the page (ignored while typing in a text box)."""

# A document-level key handler (Gradio's ``head``): each key clicks a button of the page, so a shortcut does
# exactly what the button does. Keys typed into a text box, and the keys a focused slider, checkbox or
# radio button handles itself, are left alone.
HEAD = """<script>
(() => {
  const TEXT = ["text", "number", "search", "email", "password", "url", "tel"];
  const OWN = ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", " "];
  const click = (selector) => {
    const button = document.querySelector(selector);
    if (!button || button.disabled || button.offsetParent === null) return false;
    button.click();
    return true;
  };
  const strokeUndo = () => {
    const undo = document.querySelector("#editor button[aria-label='Undo'], #editor button[title='Undo']");
    return !!undo && !undo.disabled && click("#editor button[aria-label='Undo'], #editor button[title='Undo']");
  };
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (event.defaultPrevented || event.altKey || event.metaKey || !target) return;
    if (target.isContentEditable || target.tagName === "TEXTAREA" || target.tagName === "SELECT") return;
    if (target.tagName === "INPUT" && (TEXT.includes(target.type) || OWN.includes(event.key))) return;
    const key = event.key;
    let done = false;
    if (event.ctrlKey) {
      if ((key === "z" || key === "Z") && !event.shiftKey) done = strokeUndo() || click("#undo");
    } else if (key === "ArrowLeft" || key === ",") {
      done = click("#prev_frame");
    } else if (key === "ArrowRight" || key === ".") {
      done = click("#next_frame");
    } else if (key === " ") {
      const status = document.querySelector("#status");
      done = click(status && status.innerText.includes("playing") ? "#pause" : "#play");
    } else if (key === "p") {
      done = click("#propagate");
    } else if (key === "b") {
      done = click("#editor button[aria-label='Brush']");
    } else if (key === "e") {
      done = click("#editor button[aria-label='Erase']");
    } else if (key === "x") {
      done = click("#box_mode input");
    } else if (key === "u") {
      done = click("#undo");
    }
    if (done) event.preventDefault();
  }, true);
})();
</script>"""
STREAM_INTERVAL_S = 0.15  # at most this often a propagating run sends the newest frame to the page


class ModelCache:
    """Loads models by name on first use (a failure is reported in the page, not at start-up)."""

    def __init__(self, device: str | None = None) -> None:
        self.device = device
        self._models: dict[str, Any] = {}

    def get(self, name: str | None) -> Any:
        from stcorr.loading import load_encoder

        key = name or ""
        if key not in self._models:
            self._models[key] = load_encoder(name or None, device=self.device)
        return self._models[key]


def _message(exc: Exception) -> str:
    if isinstance(exc, gr.Error):
        return str(exc.message)
    if isinstance(exc, StcorrError):
        return str(exc)
    logger.exception("app callback failed")
    return f"unexpected error ({type(exc).__name__}): {exc}; the server is still running"


def _friendly(outputs: int, status_at: int | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turn any error of a callback (plain or generator) into a warning in the page, leaving its ``outputs``
    output components as they were (a raised gr.Error would blank them). With ``status_at`` (the index of the
    status line among the outputs) the message also stays in the status line, where a toast fades."""

    def unchanged(message: str) -> Any:
        kept = [gr.skip() for _ in range(outputs)]
        if status_at is not None:
            kept[status_at] = f"error: {message}"
        return kept[0] if outputs == 1 else tuple(kept)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def generator(*args: Any, **kwargs: Any) -> Any:
                try:
                    yield from fn(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - every failure becomes a message
                    message = _message(exc)
                    gr.Warning(message)
                    yield unchanged(message)
            return generator

        @functools.wraps(fn)
        def plain(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                message = _message(exc)
                gr.Warning(message)
                return unchanged(message)
        return plain
    return decorate


def _need(wb: Workbench | None) -> Workbench:
    if wb is None:
        raise gr.Error("open a video first (a path on this machine, or upload an mp4)")
    return wb


def _layer(editor: dict | None) -> Any:
    layers = (editor or {}).get("layers") or []
    return layers[0] if layers else None


# Selecting an object picks its colour in the editor's own colour menu (and the brush): the editor's brush
# cannot be changed from the server without reloading the editor, which would drop unsaved strokes.
PICK_COLOR = """async (id) => {
  const pause = (ms) => new Promise((done) => setTimeout(done, ms));
  const editor = document.querySelector("#editor");
  const color = editor && editor.querySelector("button[aria-label='Color']");
  if (!color || !id) return [id];
  editor.querySelector("button[aria-label='Brush']")?.click();
  await pause(30);
  if (!editor.querySelector(".swatch-container button.color")) color.click();
  for (let i = 0; i < 40 && !editor.querySelector(".swatch-container button.color"); i++) await pause(25);
  const swatches = editor.querySelectorAll(".swatch-container button.color");
  if (swatches[id - 1]) swatches[id - 1].click();
  await pause(30);
  if (editor.querySelector(".swatch-container")) color.click();
  return [id];
}"""


VIEW_PX = 384  # the overlay of a smaller frame is sent enlarged (whole pixels) to about this longest side


def _zoom(wb: Workbench) -> int:
    """How many times the overlay is enlarged: the page shows images at most at their own size (Gradio maps
    clicks on an image so), and a small frame would be a stamp."""
    return max(1, VIEW_PX // max(wb.session.frame_size))


def _picture(wb: Workbench, t: int, confidence: bool, layer: Any = None) -> Any:
    image = wb.view(t, confidence, layer=layer)
    zoom = _zoom(wb)
    return image if zoom == 1 else image.repeat(zoom, axis=0).repeat(zoom, axis=1)


def _label(wb: Workbench, object_id: int) -> str:
    named = wb.names.get(object_id)
    return f"{object_id} {object_color_name(object_id)}" + (f": {named}" if named else "")


def _object_choices() -> list[tuple[str, int]]:
    return [(f"{i} {object_color_name(i)}", i) for i in range(1, MAX_OBJECTS + 1)]


def _brush(object_id: int) -> gr.Brush:
    colors = brush_colors()
    return gr.Brush(colors=colors, color_mode="fixed", default_color=colors[object_id - 1], default_size=8)


def build_app(models: ModelCache, *, video: str | None = None, model: str | None = None,
              max_side: int | None = None, max_frames: int | None = None) -> gr.Blocks:
    """The page. ``video``/``model``/``max_side`` pre-fill the open controls (and open ``video`` on load);
    ``max_frames`` limits every video opened to its first N frames."""
    # every export of this page goes to one temporary folder (a zip per browser tab, replaced by the next
    # export), removed when the page is garbage-collected or the process exits
    exports = tempfile.TemporaryDirectory(prefix="stcorr_app_")
    keys = "; ".join(f"**{key}** {what}" for key, what in SHORTCUTS)

    with gr.Blocks(title="stcorr app") as page:
        workbench = gr.State(None)
        shown = gr.State(0)  # the frame the editor holds
        no_upload = gr.State(None)
        gr.Markdown("**stcorr**: choose an object, paint it (the paint is see-through), Propagate, correct, "
                    "export. Moving to another frame or pressing Propagate keeps what you painted as an anchor.  \n"
                    "Keys: " + keys + ".", elem_id="intro")
        with gr.Row(equal_height=True):
            path = gr.Textbox(value=video or "", label="Video file or folder of frames on this machine",
                              elem_id="video_path", scale=4, max_lines=1)
            model_name = gr.Textbox(value=model or "", label="Model (empty: the embedded default)",
                                    elem_id="model_name", scale=2, max_lines=1)
            side = gr.Number(value=max_side, label="Max side (px)", precision=0, elem_id="max_side", scale=1,
                             min_width=90)
            with gr.Column(scale=1, min_width=140):
                open_button = gr.Button("Open", elem_id="open", size="sm")
                upload = gr.UploadButton("Upload a video", file_types=["video"], elem_id="video_upload", size="sm")
        status = gr.Markdown("Open a video to start.", elem_id="status")
        with gr.Row():
            with gr.Column(scale=8):
                with gr.Row():
                    editor = gr.ImageEditor(label="Paint (brush / eraser)", type="numpy", image_mode="RGBA",
                                            format="png", brush=_brush(1), eraser=gr.Eraser(default_size=8),
                                            layers=False, transforms=(), sources=(), elem_id="editor", height=380)
                    view = gr.Image(label="Overlay (shows your unsaved paint too)", type="numpy", interactive=False,
                                    elem_id="view", height=380, format="png", buttons=["download"])
                with gr.Row(equal_height=True):
                    previous = gr.Button("◀ Prev", elem_id="prev_frame", scale=1, min_width=60, size="sm")
                    frame = gr.Slider(0, 1, value=0, step=1, label="Frame", elem_id="frame", scale=6)
                    following = gr.Button("Next ▶", elem_id="next_frame", scale=1, min_width=60, size="sm")
                    play = gr.Button("Play", elem_id="play", scale=1, min_width=60, size="sm")
                    pause = gr.Button("Pause", elem_id="pause", scale=1, min_width=60, size="sm")
                strip = gr.HTML(elem_id="strip")
                with gr.Row(equal_height=True):
                    show_confidence = gr.Checkbox(label="Show confidence (red = unsure)", elem_id="show_confidence",
                                                  scale=2)
                    suspect = gr.Button("Go to first suspect frame", elem_id="first_suspect", scale=2, size="sm")
                    box_mode = gr.Checkbox(label="Box mode: click two opposite corners of an object on the "
                                                 "overlay", elem_id="box_mode", scale=3)
            with gr.Column(scale=3, min_width=240):
                objects = gr.HTML(elem_id="objects", label="Objects")
                select = gr.Radio(_object_choices(), value=1, label="Paint object (brush colour)",
                                  elem_id="object_select")
                with gr.Row(equal_height=True):
                    name = gr.Textbox(label="Name of this object", elem_id="object_name", max_lines=1, scale=3)
                    rename = gr.Button("Rename", elem_id="rename", scale=1, min_width=60, size="sm")
                visible = gr.CheckboxGroup([], value=[], label="Show in the overlay", elem_id="object_visible")
                delete = gr.Button("Delete this object", elem_id="delete_object", size="sm")
        gr.Markdown("Reliability strip (under the slider): a row per object (its brush colour on the left), green "
                    f"reliable, red suspect (below {SUSPECT_BELOW}), grey not computed; blue ticks are anchors, "
                    "the dark bar is the current frame.")
        with gr.Row():
            propagate = gr.Button("Propagate", variant="primary", elem_id="propagate")
            cancel = gr.Button("Cancel", elem_id="cancel")
            save = gr.Button("Save mask on this frame", elem_id="save_anchor")
            remove = gr.Button("Remove anchor here", elem_id="remove_anchor")
            undo = gr.Button("Undo last change", elem_id="undo")
        with gr.Row():
            mask_upload = gr.UploadButton("Upload a PNG mask for this frame", file_types=[".png"],
                                          elem_id="mask_upload")
            export = gr.Button("Export zip", elem_id="export")
            exported = gr.File(label="Export (masks/, overlay.mp4, reliability.json, session.json)", elem_id="exported",
                               interactive=False, height=80)

        screen = [editor, view, strip, status, objects, visible, select]
        corner = gr.State(None)  # the box's first corner: (frame, x, y)

        def panel(wb: Workbench) -> tuple:
            shown_objects = wb.objects()
            choices = [(o.label, o.id) for o in shown_objects]
            return (wb.panel(), gr.CheckboxGroup(choices=choices, value=[o.id for o in shown_objects if o.visible]),
                    gr.Radio(choices=[(_label(wb, i), i) for i in range(1, MAX_OBJECTS + 1)], value=wb.selected))

        def refresh(wb: Workbench, t: int, confidence: bool, note: str = "") -> tuple:
            line = f"frame {t}: {note + '. ' if note else ''}{wb.status()}"
            return (wb.editor_value(t), _picture(wb, t, confidence), wb.strip(t), line, *panel(wb))

        @_friendly(11, status_at=6)
        def open_video(path_text: str, uploaded: str | None, name_text: str, max_px: float | None, confidence: bool,
                       current: Workbench | None):
            source = uploaded or (path_text or "").strip()
            if not source:
                raise gr.Error("give a video: a path on this machine, or upload an mp4")
            if uploaded is None and not Path(source).exists():
                raise gr.Error(f"{source} does not exist; give a video file or a folder of frames")
            if current is not None and current.unexported and current.discard_asked != source:
                current.discard_asked = source  # asked once per change: the next press opens
                anchors = sorted(current.session.anchors)
                note = (f"the open video has changes not exported (anchors at {anchors or 'none'}): press Open "
                        f"again to discard them and open {Path(source).name}, or Export zip first")
                skip = [gr.skip()] * 11
                skip[6] = note
                return tuple(skip)
            wb = Workbench(models.get(name_text.strip() or None), name_text.strip() or None, source,
                           max_side=int(max_px) if max_px is not None else None, max_frames=max_frames)
            if current is not None:
                wb.select(current.selected)  # the editor's brush keeps its colour
            slider = gr.Slider(minimum=0, maximum=max(wb.session.num_frames - 1, 1), value=0, step=1)
            return (wb, 0, slider, *refresh(wb, 0, confidence), None)

        def moved(wb: Workbench, t: int, confidence: bool, note: str = "") -> tuple:
            return (t, t, *refresh(wb, t, confidence, note))

        @_friendly(9, status_at=5)
        def go(wb: Workbench | None, editor_value: dict | None, before: int, t: float, confidence: bool):
            wb = _need(wb)
            wb.set_layer(before, _layer(editor_value))
            return moved(wb, int(t), confidence)

        @_friendly(9, status_at=5)
        def step(wb: Workbench | None, editor_value: dict | None, before: int, confidence: bool, delta: int):
            wb = _need(wb)
            wb.set_layer(before, _layer(editor_value))
            return moved(wb, min(max(before + delta, 0), wb.session.num_frames - 1), confidence)

        @_friendly(9, status_at=5)
        def go_to_suspect(wb: Workbench | None, editor_value: dict | None, before: int, confidence: bool):
            wb = _need(wb)
            wb.set_layer(before, _layer(editor_value))
            found = wb.first_suspect()
            if found is None:
                stale = len(wb.session.stale_frames())
                pending = f" ({stale} frame(s) not propagated yet)" if stale else ""
                note = f"no suspect frame: every computed object's reliability is at least {SUSPECT_BELOW}{pending}"
                return moved(wb, before, confidence, note)
            t, object_id, value = found
            note = f"first suspect frame {t}: object {object_id} has reliability {value:.2f} (below {SUSPECT_BELOW})"
            return moved(wb, t, confidence, note)

        @_friendly(1)
        def toggle(wb: Workbench | None, t: int, confidence: bool):
            return _picture(_need(wb), t, confidence)

        @_friendly(1)
        def preview(wb: Workbench | None, editor_value: dict | None, t: int, confidence: bool):
            wb = _need(wb)
            layer = _layer(editor_value)
            return _picture(wb, t, confidence, layer=None if confidence or layer is None else layer)

        @_friendly(7, status_at=3)
        def run(wb: Workbench | None, editor_value: dict | None, t: int, confidence: bool,
                progress: gr.Progress = gr.Progress()):  # noqa: B008 - Gradio's progress injection
            wb = _need(wb)
            wb.set_layer(t, _layer(editor_value))
            last = 0.0
            started = time.perf_counter()
            done = total = 0
            for step_now in wb.propagate():
                done, total = step_now.done, step_now.total
                progress((step_now.done, step_now.total), desc="propagating", unit="frames")
                now = time.perf_counter()
                if now - last >= STREAM_INTERVAL_S:
                    last = now
                    yield (gr.skip(), _picture(wb, step_now.t, confidence), wb.strip(step_now.t),
                           f"propagating: frame {step_now.t} ({step_now.done}/{step_now.total}); Cancel stops",
                           gr.skip(), gr.skip(), gr.skip())
            elapsed = time.perf_counter() - started
            rate = f"{done / elapsed:.1f} frames/s" if done and elapsed > 0 else "nothing was stale"
            if done < total:
                note = f"cancelled after {done} of {total} frame(s) in {elapsed:.1f} s; finished frames are kept"
            else:
                note = f"done: {done} frame(s) in {elapsed:.1f} s ({rate})"
            yield (*refresh(wb, t, confidence)[:3], f"{note}. {wb.status()}", *panel(wb))

        def stop(wb: Workbench | None) -> None:
            # the running propagation stops after its current frame and says "cancelled" itself (a status
            # written here could arrive after that and hide it)
            if wb is not None:
                wb.cancel_requested = True

        @_friendly(7, status_at=3)
        def save_anchor(wb: Workbench | None, editor_value: dict | None, t: int, confidence: bool):
            wb = _need(wb)
            if not wb.set_layer(t, _layer(editor_value)) and t not in wb.session.anchors:
                gr.Info("nothing to save: the mask on this frame is unchanged")
            return refresh(wb, t, confidence)

        @_friendly(7, status_at=3)
        def remove_anchor(wb: Workbench | None, t: int, confidence: bool):
            wb = _need(wb)
            wb.remove_anchor(t)
            return refresh(wb, t, confidence, f"removed the anchor at frame {t} (Undo brings it back)")

        @_friendly(7, status_at=3)
        def undo_change(wb: Workbench | None, t: int, confidence: bool):
            wb = _need(wb)
            what = wb.undo()
            return refresh(wb, t, confidence, f"undid {what}")

        @_friendly(7, status_at=3)
        def delete_object(wb: Workbench | None, editor_value: dict | None, t: int, confidence: bool):
            wb = _need(wb)
            wb.set_layer(t, _layer(editor_value))
            object_id = wb.selected
            stale = wb.delete_object(object_id)
            note = f"deleted object {object_id}; {len(stale)} frame(s) it reached are to recompute (Undo brings it back)"
            return refresh(wb, t, confidence, note)

        @_friendly(3, status_at=2)
        def choose_object(wb: Workbench | None, object_id: int):
            wb = _need(wb)
            wb.select(int(object_id))
            note = f"painting object {object_id} ({object_color_name(int(object_id))})"
            return wb.names.get(int(object_id), ""), wb.panel(), note

        @_friendly(4, status_at=3)
        def rename_object(wb: Workbench | None, text: str, t: int):
            wb = _need(wb)
            wb.rename(wb.selected, text)
            named = wb.names.get(wb.selected)
            note = f"object {wb.selected} is {named!r}" if named else f"object {wb.selected} has no name"
            return (*panel(wb), f"frame {t}: {note}. {wb.status()}")

        @_friendly(3)
        def show_objects(wb: Workbench | None, ids: list[int] | None, t: int, confidence: bool):
            wb = _need(wb)
            wanted = set(ids or [])
            for info in wb.objects():
                wb.set_visible(info.id, info.id in wanted)
            return _picture(wb, t, confidence), wb.panel(), f"frame {t}: {wb.status()}"

        @_friendly(8, status_at=4)
        def box_click(wb: Workbench | None, editor_value: dict | None, t: int, box_on: bool, confidence: bool,
                      first: tuple | None, evt: gr.SelectData):
            wb = _need(wb)
            if not box_on:
                return tuple(gr.skip() for _ in range(8))
            x, y = (int(v) // _zoom(wb) for v in evt.index[:2])  # the overlay's pixels -> the frame's
            if first is None or first[0] != t:
                note = (f"box for object {wb.selected}: first corner ({x}, {y}); click the opposite corner "
                        "(on the overlay)")
                return ((t, x, y), gr.skip(), gr.skip(), gr.skip(), f"frame {t}: {note}", gr.skip(), gr.skip(),
                        gr.skip())
            wb.set_layer(t, _layer(editor_value))
            pixels = wb.apply_box(t, first[1:], (x, y))
            if pixels:
                note = (f"box ({first[1]}, {first[2]})-({x}, {y}): object {wb.selected} has {pixels} px here; refine it "
                        "with the brush (Undo removes it)")
            else:
                note = f"box ({first[1]}, {first[2]})-({x}, {y}): no object found in it; draw it again or paint"
            return (None, *refresh(wb, t, confidence, note))

        @_friendly(7, status_at=3)
        def upload_mask(wb: Workbench | None, file: str | None, t: int, confidence: bool):
            wb = _need(wb)
            if file:
                wb.load_mask_file(t, file)
            return refresh(wb, t, confidence)

        @_friendly(2, status_at=1)
        def do_export(wb: Workbench | None, editor_value: dict | None, t: int,
                      progress: gr.Progress = gr.Progress()):  # noqa: B008 - Gradio's progress injection
            wb = _need(wb)
            wb.set_layer(t, _layer(editor_value))
            progress(0, desc="exporting")
            folder = Path(exports.name) / f"tab_{id(wb):x}"
            folder.mkdir(exist_ok=True)
            target = wb.export(folder)
            wb.unexported = False
            return str(target), f"exported {target.name}. {wb.status()}"

        @_friendly(9, status_at=5)
        def play_through(wb: Workbench | None, editor_value: dict | None, t: int, confidence: bool):
            wb = _need(wb)
            wb.set_layer(t, _layer(editor_value))
            last = wb.session.num_frames - 1
            wb.pause_requested = False
            for index in range(t if t < last else 0, last + 1):
                if wb.pause_requested:  # Pause: stop here, with the editor on this frame
                    wb.pause_requested = False
                    yield moved(wb, index, confidence, "paused")
                    return
                yield (gr.skip(), index, gr.skip(), _picture(wb, index, confidence), wb.strip(index),
                       f"playing: frame {index} (Pause or Space stops)", gr.skip(), gr.skip(), gr.skip())
                time.sleep(1.0 / min(wb.fps, 25.0))
            yield moved(wb, last, confidence, "played to the end")

        def pause_play(wb: Workbench | None) -> None:
            # the running play-through stops at its next frame and moves the editor there itself (an answer
            # from here could arrive before its last frame and be overwritten)
            if wb is not None:
                wb.pause_requested = True

        open_outputs = [workbench, shown, frame, *screen, exported]
        open_button.click(open_video, [path, no_upload, model_name, side, show_confidence, workbench],
                          open_outputs)
        upload.upload(open_video, [path, upload, model_name, side, show_confidence, workbench],
                      open_outputs)
        if video:
            page.load(open_video, [path, no_upload, model_name, side, show_confidence, workbench],
                      open_outputs)
        moves = [shown, frame, *screen]
        frame.input(go, [workbench, editor, shown, frame, show_confidence], moves)
        previous.click(functools.partial(step, delta=-1), [workbench, editor, shown, show_confidence], moves)
        following.click(functools.partial(step, delta=1), [workbench, editor, shown, show_confidence], moves)
        suspect.click(go_to_suspect, [workbench, editor, shown, show_confidence], moves)
        show_confidence.change(toggle, [workbench, shown, show_confidence], view)
        editor.input(preview, [workbench, editor, shown, show_confidence], view, show_progress="hidden")
        # the progress bar sits on the overlay only: on every output (the editor's canvas included) its
        # animation costs a browser without GPU compositing most of a CPU core while propagating
        propagate.click(run, [workbench, editor, shown, show_confidence], screen, concurrency_limit=1,
                        show_progress_on=[view])
        cancel.click(stop, [workbench], None, concurrency_limit=None)
        save.click(save_anchor, [workbench, editor, shown, show_confidence], screen)
        remove.click(remove_anchor, [workbench, shown, show_confidence], screen)
        undo.click(undo_change, [workbench, shown, show_confidence], screen)
        delete.click(delete_object, [workbench, editor, shown, show_confidence], screen)
        select.input(None, [select], None, js=PICK_COLOR)
        select.input(choose_object, [workbench, select], [name, objects, status])
        rename.click(rename_object, [workbench, name, shown], [objects, visible, select, status])
        name.submit(rename_object, [workbench, name, shown], [objects, visible, select, status])
        visible.input(show_objects, [workbench, visible, shown, show_confidence], [view, objects, status])
        view.select(box_click, [workbench, editor, shown, box_mode, show_confidence, corner], [corner, *screen])
        box_mode.change(lambda: None, None, corner)
        mask_upload.upload(upload_mask, [workbench, mask_upload, shown, show_confidence], screen)
        export.click(do_export, [workbench, editor, shown], [exported, status])
        play.click(play_through, [workbench, editor, shown, show_confidence], moves)
        pause.click(pause_play, [workbench], None, concurrency_limit=None)
    page.stcorr_exports = exports  # the folder lives as long as the page
    return page
