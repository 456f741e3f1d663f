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

from stcorr.app.painting import MAX_OBJECTS, SUSPECT_BELOW, object_color_hex  # noqa: E402
from stcorr.app.workbench import Workbench  # noqa: E402
from stcorr.errors import StcorrError  # noqa: E402

__all__ = ["build_app", "ModelCache"]

logger = logging.getLogger(__name__)
CSS = """
#view img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
"""
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


def build_app(models: ModelCache, *, video: str | None = None, model: str | None = None,
              max_side: int | None = None, max_frames: int | None = None) -> gr.Blocks:
    """The page. ``video``/``model``/``max_side`` pre-fill the open controls (and open ``video`` on load);
    ``max_frames`` limits every video opened to its first N frames."""
    brush = gr.Brush(colors=[object_color_hex(i) for i in range(1, MAX_OBJECTS + 1)], color_mode="fixed",
                     default_color=object_color_hex(1), default_size=8)

    # every export of this page goes to one temporary folder (a zip per browser tab, replaced by the next
    # export), removed when the page is garbage-collected or the process exits
    exports = tempfile.TemporaryDirectory(prefix="stcorr_app_")

    with gr.Blocks(title="stcorr app") as page:
        workbench = gr.State(None)
        shown = gr.State(0)  # the frame the editor holds
        no_upload = gr.State(None)
        gr.Markdown("## stcorr: paint a mask, propagate, correct, export\n"
                    "Brush colours are objects (1 dark red, 2 green, 3 olive, ...); the eraser paints background. "
                    "Moving to another frame or pressing Propagate keeps what you painted as an anchor.")
        with gr.Row():
            path = gr.Textbox(value=video or "", label="Video file or folder of frames on this machine",
                              elem_id="video_path", scale=3)
            upload = gr.UploadButton("Upload a video", file_types=["video"], elem_id="video_upload", scale=1)
            model_name = gr.Textbox(value=model or "", label="Model (empty: the embedded default)",
                                    elem_id="model_name", scale=1)
            side = gr.Number(value=max_side, label="Max side (px)", precision=0, elem_id="max_side", scale=1)
            open_button = gr.Button("Open", elem_id="open", scale=1)
        with gr.Row():
            editor = gr.ImageEditor(label="Paint (brush / eraser)", type="numpy", image_mode="RGBA", format="png",
                                    brush=brush, eraser=gr.Eraser(default_size=8), layers=False,
                                    transforms=(), sources=(), elem_id="editor", height=420)
            view = gr.Image(label="Overlay", type="numpy", interactive=False, elem_id="view", height=420,
                            format="png", buttons=["download"])
        with gr.Row():
            frame = gr.Slider(0, 1, value=0, step=1, label="Frame", elem_id="frame", scale=4)
            show_confidence = gr.Checkbox(label="Show confidence (red = unsure)", elem_id="show_confidence", scale=1)
            play = gr.Button("Play", elem_id="play", scale=1)
            suspect = gr.Button("Go to first suspect frame", elem_id="first_suspect", scale=1)
        gr.Markdown("Reliability per object and frame: a row per object (its brush colour on the left), green "
                    f"reliable, red suspect (below {SUSPECT_BELOW}), grey not computed; blue ticks are anchors, "
                    "the dark bar is the current frame.")
        strip = gr.HTML(elem_id="strip")
        with gr.Row():
            propagate = gr.Button("Propagate", variant="primary", elem_id="propagate")
            cancel = gr.Button("Cancel", elem_id="cancel")
            save = gr.Button("Save mask on this frame", elem_id="save_anchor")
            remove = gr.Button("Remove anchor here", elem_id="remove_anchor")
            delete_id = gr.Number(value=1, precision=0, label="Object id", elem_id="delete_id", min_width=80)
            delete = gr.Button("Delete object", elem_id="delete_object")
        with gr.Row():
            mask_upload = gr.UploadButton("Upload a PNG mask for this frame", file_types=[".png"],
                                          elem_id="mask_upload")
            export = gr.Button("Export zip", elem_id="export")
            exported = gr.File(label="Export (masks/, overlay.mp4, reliability.json, session.json)", elem_id="exported",
                               interactive=False, height=80)
        status = gr.Markdown("Open a video to start.", elem_id="status")

        screen = [editor, view, strip, status]

        def refresh(wb: Workbench, t: int, confidence: bool) -> tuple:
            return wb.editor_value(t), wb.view(t, confidence), wb.strip(t), f"frame {t}: {wb.status()}"

        @_friendly(7)
        def open_video(path_text: str, uploaded: str | None, name: str, max_px: float | None, confidence: bool):
            source = uploaded or (path_text or "").strip()
            if not source:
                raise gr.Error("give a video: a path on this machine, or upload an mp4")
            if uploaded is None and not Path(source).exists():
                raise gr.Error(f"{source} does not exist; give a video file or a folder of frames")
            wb = Workbench(models.get(name.strip() or None), name.strip() or None, source,
                           max_side=int(max_px) if max_px is not None else None, max_frames=max_frames)
            slider = gr.Slider(minimum=0, maximum=max(wb.session.num_frames - 1, 1), value=0, step=1)
            return (wb, 0, slider, *refresh(wb, 0, confidence))

        @_friendly(5, status_at=4)
        def go(wb: Workbench | None, editor_value: dict | None, previous: int, t: float, confidence: bool):
            wb = _need(wb)
            t = int(t)
            wb.set_layer(previous, _layer(editor_value))
            return (t, *refresh(wb, t, confidence))

        @_friendly(6, status_at=5)
        def go_to_suspect(wb: Workbench | None, editor_value: dict | None, previous: int, confidence: bool):
            wb = _need(wb)
            wb.set_layer(previous, _layer(editor_value))
            found = wb.first_suspect()
            if found is None:
                stale = len(wb.session.stale_frames())
                pending = f" ({stale} frame(s) not propagated yet)" if stale else ""
                note = f"no suspect frame: every computed object's reliability is at least {SUSPECT_BELOW}{pending}"
                editor_now, view_now, strip_now, _ = refresh(wb, previous, confidence)
                return previous, previous, editor_now, view_now, strip_now, f"frame {previous}: {note}. {wb.status()}"
            t, object_id, value = found
            editor_now, view_now, strip_now, _ = refresh(wb, t, confidence)
            note = f"first suspect frame {t}: object {object_id} has reliability {value:.2f} (below {SUSPECT_BELOW})"
            return t, t, editor_now, view_now, strip_now, f"frame {t}: {note}. {wb.status()}"

        @_friendly(1)
        def toggle(wb: Workbench | None, t: int, confidence: bool):
            return _need(wb).view(t, confidence)

        @_friendly(4, status_at=3)
        def run(wb: Workbench | None, editor_value: dict | None, t: int, confidence: bool,
                progress: gr.Progress = gr.Progress()):  # noqa: B008 - Gradio's progress injection
            wb = _need(wb)
            wb.set_layer(t, _layer(editor_value))
            last = 0.0
            started = time.perf_counter()
            done = 0
            for step in wb.propagate():
                done = step.done
                progress((step.done, step.total), desc="propagating", unit="frames")
                now = time.perf_counter()
                if now - last >= STREAM_INTERVAL_S:
                    last = now
                    yield (gr.skip(), wb.view(step.t, confidence), wb.strip(step.t),
                           f"propagating: frame {step.t} ({step.done}/{step.total})")
            elapsed = time.perf_counter() - started
            rate = f"{done / elapsed:.1f} frames/s" if done and elapsed > 0 else "nothing was stale"
            yield (*refresh(wb, t, confidence)[:3], f"done: {done} frame(s) in {elapsed:.1f} s ({rate}). {wb.status()}")

        @_friendly(4, status_at=3)
        def stopped(wb: Workbench | None, t: int, confidence: bool):
            if wb is None:
                return gr.skip(), gr.skip(), gr.skip(), "cancelled"
            return (*refresh(wb, t, confidence)[:3], f"cancelled; finished frames are kept. {wb.status()}")

        @_friendly(4, status_at=3)
        def save_anchor(wb: Workbench | None, editor_value: dict | None, t: int, confidence: bool):
            wb = _need(wb)
            if not wb.set_layer(t, _layer(editor_value)) and t not in wb.session.anchors:
                gr.Info("nothing to save: the mask on this frame is unchanged")
            return refresh(wb, t, confidence)

        @_friendly(4, status_at=3)
        def remove_anchor(wb: Workbench | None, t: int, confidence: bool):
            wb = _need(wb)
            wb.session.remove_anchor(t)
            return refresh(wb, t, confidence)

        @_friendly(4, status_at=3)
        def delete_object(wb: Workbench | None, editor_value: dict | None, t: int, object_id: float, confidence: bool):
            wb = _need(wb)
            wb.set_layer(t, _layer(editor_value))
            wb.delete_object(int(object_id))
            return refresh(wb, t, confidence)

        @_friendly(4, status_at=3)
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
            return str(target), f"exported {target.name}. {wb.status()}"

        @_friendly(3)
        def play_through(wb: Workbench | None, t: int, confidence: bool):
            wb = _need(wb)
            for index in range(wb.session.num_frames):
                yield index, wb.view(index, confidence), wb.strip(index)
                time.sleep(1.0 / min(wb.fps, 25.0))
            yield t, wb.view(t, confidence), wb.strip(t)

        open_inputs = [path, upload, model_name, side, show_confidence]
        open_outputs = [workbench, shown, frame, *screen]
        open_button.click(open_video, [path, no_upload, model_name, side, show_confidence], open_outputs)
        upload.upload(open_video, open_inputs, open_outputs)
        if video:
            page.load(open_video, [path, no_upload, model_name, side, show_confidence], open_outputs)
        frame.input(go, [workbench, editor, shown, frame, show_confidence], [shown, *screen])
        suspect.click(go_to_suspect, [workbench, editor, shown, show_confidence], [shown, frame, *screen])
        show_confidence.change(toggle, [workbench, shown, show_confidence], view)
        # the progress bar sits on the overlay only: on every output (the editor's canvas included) its
        # animation costs a browser without GPU compositing most of a CPU core while propagating
        running = propagate.click(run, [workbench, editor, shown, show_confidence], screen, concurrency_limit=1,
                                  show_progress_on=[view])
        cancel.click(stopped, [workbench, shown, show_confidence], screen, cancels=[running])
        save.click(save_anchor, [workbench, editor, shown, show_confidence], screen)
        remove.click(remove_anchor, [workbench, shown, show_confidence], screen)
        delete.click(delete_object, [workbench, editor, shown, delete_id, show_confidence], screen)
        mask_upload.upload(upload_mask, [workbench, mask_upload, shown, show_confidence], screen)
        export.click(do_export, [workbench, editor, shown], [exported, status])
        play.click(play_through, [workbench, shown, show_confidence], [frame, view, strip])
    page.stcorr_exports = exports  # the folder lives as long as the page
    return page
