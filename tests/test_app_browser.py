"""`stcorr app` in a real headless Chromium (Debian's chromium, driven by Playwright), in a 1400x1000 window.

On a generated 12-frame clip where a look-alike of the red square appears right below it at frame 3 (the label
leaks onto it): open the app, step frames with the keyboard (not while typing in a text box), paint the square
with mouse events on frame 0; in the object panel choose object 2 (the brush takes its colour), get the disc's
mask from a box prompt (two clicks on the overlay),
name it, hide it in the overlay, delete it, undo the deletion and then undo its anchor; Open asks before it
discards the changes. Propagate, export; the strip shows
object 1's reliability cells and "Go to first suspect frame" jumps to the frame where the leak starts (the
first suspect frame of the export's reliability.json). Step to frame 6 with the keys, erase the leak and paint a correction,
re-propagate (the frames back to the previous anchor are recomputed and their leak shrinks), jump to the first
suspect frame again, export again; then check the export against a headless replay (`stcorr propagate
--session`), the corrected frame against the painted strokes, and that frame 0 did not change. Finally undo
the correction and Open the clip again: the first press asks, the second discards and clears the export link
(before that, Space plays and pauses).
Screenshots go to $STCORR_APP_SCREENSHOTS (default: tmp).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app_helpers import write_shapes_folder

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytest.importorskip("gradio", reason="the app needs the app extra: pip install 'stcorr[app]'")
playwright_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs: pip install playwright")
if not Path(CHROMIUM).is_file():
    pytest.skip("no chromium binary (apt-get install chromium chromium-driver; .ci/run installs it)",
                allow_module_level=True)

from stcorr.cli import main as cli_main  # noqa: E402
from stcorr.io.masks import read_mask  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 120_000
H, W = 96, 128


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Canvas:
    """Maps frame pixels to page coordinates of the editor: the frame is drawn centred at the shown zoom."""

    def __init__(self, page) -> None:  # noqa: ANN001 - playwright Page
        box = page.locator("#editor canvas").first.bounding_box()
        zoom = int(re.search(r"(\d+)%", page.locator("#editor").inner_text()).group(1)) / 100
        self.zoom = zoom
        self.left = box["x"] + (box["width"] - W * zoom) / 2
        self.top = box["y"] + (box["height"] - H * zoom) / 2

    def at(self, x: float, y: float) -> tuple[float, float]:
        return self.left + (x + 0.5) * self.zoom, self.top + (y + 0.5) * self.zoom


STREAMS = ("queue/data", "heartbeat")  # long-lived event streams of the page, never "finished"


class Network:
    """Requests in flight (the queue's event stream aside): the editor fetches its frame and paint layer
    after the server answers, and strokes made before the layer arrives would be painted over."""

    def __init__(self, page) -> None:  # noqa: ANN001
        self.pending: set = set()
        self.events: list[str] = []  # the app's callbacks the page asked for, in order (for failure reports)
        page.on("request", self._start)
        page.on("requestfinished", self._end)
        page.on("requestfailed", self._end)

    def _start(self, request) -> None:  # noqa: ANN001
        if "queue/join" in request.url:
            try:
                body = json.loads(request.post_data or "{}")
            except ValueError:
                body = {}
            self.events.append(f"{time.strftime('%H:%M:%S')} fn {body.get('fn_index')} trigger {body.get('trigger_id')}")
        if not any(stream in request.url for stream in STREAMS):
            self.pending.add(request)

    def _end(self, request) -> None:  # noqa: ANN001
        self.pending.discard(request)


def _ready_canvas(page, network: Network) -> Canvas:  # noqa: ANN001
    """Wait until the editor shows a frame (zoom above 100%) and nothing has been loading for 1.5 s."""
    zooms: list[float] = []
    quiet = 0
    for _ in range(480):
        page.wait_for_timeout(250)
        zooms.append(Canvas(page).zoom)
        quiet = quiet + 1 if not network.pending else 0
        if quiet >= 6 and zooms[-1] > 1 and zooms[-1] == zooms[-2] == zooms[-3]:
            return Canvas(page)
    loading = sorted(r.url for r in network.pending)[:5]
    raise AssertionError(f"the editor never showed the frame (zoom {zooms[-5:]}, still loading {loading})")


def _stroke(page, canvas: Canvas, points: list[tuple[int, int]]) -> None:  # noqa: ANN001
    page.mouse.move(*canvas.at(*points[0]))
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(*canvas.at(x, y), steps=4)
    page.mouse.up()


def _settle(page) -> None:  # noqa: ANN001
    """The editor uploads its paint layer after a stroke; give it time before pressing a button."""
    page.wait_for_timeout(2000)


def _status(page) -> str:  # noqa: ANN001
    return page.locator("#status").inner_text()


def _wait_status(page, text: str) -> None:  # noqa: ANN001
    script = f"(e => e !== null && e.innerText.includes({text!r}))(document.querySelector('#status'))"
    try:
        page.wait_for_function(script, timeout=TIMEOUT_MS)
    except playwright_api.TimeoutError as exc:
        toasts = page.locator(".toast-body").all_inner_texts()
        raise AssertionError(f"the status never said {text!r}: it says {_status(page)!r}; messages {toasts}") from exc


def _export(page, folder: Path) -> Path:  # noqa: ANN001
    page.click("#export")
    _wait_status(page, "exported")
    link = page.locator("#exported a").first
    with page.expect_download(timeout=TIMEOUT_MS) as download:
        link.click()
    zip_path = folder / "export.zip"
    download.value.save_as(zip_path)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(folder)
    return folder


def _slider(page) -> int:  # noqa: ANN001
    return int(page.locator("#frame input[type=range]").input_value())


def _strip_runs(page, object_id: int) -> list[tuple[int, int, str]]:  # noqa: ANN001
    """The strip's cells of one object as (first frame, last frame, state) runs."""
    cells = page.locator(f'#strip rect[data-object="{object_id}"]')
    return [(int(c.get_attribute("data-first")), int(c.get_attribute("data-last")), c.get_attribute("data-state"))
            for c in cells.all()]


def _go_to_first_suspect(page, network: Network, expected: int | None, before: int) -> None:  # noqa: ANN001
    """Press "Go to first suspect frame": the editor moves to ``expected`` (None: it stays, and says why)."""
    page.click("#first_suspect")
    if expected is None:
        _wait_status(page, "no suspect frame")
        assert _slider(page) == before
    else:
        _wait_status(page, f"frame {expected}: first suspect frame {expected}: object 1 has reliability")
        page.wait_for_function(f"document.querySelector('#frame input[type=range]').value === '{expected}'",
                               timeout=TIMEOUT_MS)
    _ready_canvas(page, network)


def _reliability(folder: Path) -> dict:
    return json.loads((folder / "reliability.json").read_text())


def _leak(masks: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Pixels of object 1 on the look-alike (object 3 of the ground truth), per frame."""
    return ((masks == 1) & (truth == 3)).sum(axis=(1, 2))


def _masks(folder: Path) -> np.ndarray:
    return np.stack([read_mask(folder / "masks" / f"{t:05d}.png") for t in range(12)])


def _key(page, key: str, status: str) -> None:  # noqa: ANN001
    """Press a shortcut key (nothing focused) and wait until the status says ``status``."""
    page.keyboard.press(key)
    _wait_status(page, status)


def _choose_object(page, object_id: int, rgb: str) -> None:  # noqa: ANN001
    """Choose the object to paint in the panel: the status says so and the editor's brush takes its colour."""
    page.click(f"#object_select label:nth-of-type({object_id})")
    _wait_status(page, f"painting object {object_id}")
    page.wait_for_function(f"document.querySelector(\"#editor button[aria-label='Color']\").style.color === {rgb!r}",
                           timeout=TIMEOUT_MS)


def _shot(page, path: Path) -> None:  # noqa: ANN001
    """A screenshot of the window scrolled to the top (clicks scroll the page)."""
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(300)
    page.screenshot(path=str(path))


def _click_view(page, x: int, y: int) -> None:  # noqa: ANN001
    """Click frame pixel (x, y) on the overlay image (drawn centred, scaled to fit its box)."""
    image = page.locator("#view img")
    box = image.bounding_box()
    width, height = image.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    zoom = width / W  # the app sends a small frame's overlay enlarged, and the page never enlarges it more
    scale = min(box["width"] / width, box["height"] / height, 1.0)
    left, top = box["x"] + (box["width"] - width * scale) / 2, box["y"] + (box["height"] - height * scale) / 2
    page.mouse.click(left + (x + 0.5) * zoom * scale, top + (y + 0.5) * zoom * scale)


def _object_rows(page) -> dict[int, tuple[str, str, str]]:  # noqa: ANN001
    """The object panel: id -> (visible, selected, text)."""
    rows = page.locator("#objects .object-row").all()
    return {int(r.get_attribute("data-object")): (r.get_attribute("data-visible"), r.get_attribute("data-selected"),
                                                   r.inner_text()) for r in rows}


def _paint_and_save(page, network: Network, paint, anchors: str, shots: Path) -> None:  # noqa: ANN001
    """Paint (``paint(canvas)``), press "Save anchor" and check the status lists ``anchors``; paint again (at
    most 3 times, each retry printed) if the strokes did not reach the server. Gradio's editor can still
    replace its layer with the one the server sent for the frame just after the page looks idle, and strokes
    made then are lost (a user sees them vanish)."""
    for attempt in range(3):
        canvas = _ready_canvas(page, network)
        page.wait_for_timeout(1000)
        painted_at = time.strftime("%H:%M:%S")
        paint(canvas)
        _settle(page)
        page.click("#save_anchor")
        page.wait_for_function(
            "(() => { const s = document.querySelector('#status'); const t = s ? s.innerText : '';"
            f" return t.includes({anchors!r}) || document.body.innerText.includes('nothing to save'); }})()",
            timeout=TIMEOUT_MS)
        if anchors in _status(page):
            return
        lost = shots / f"app_lost_strokes_{anchors.count(',')}_{attempt + 1}.png"
        page.screenshot(path=str(lost))
        print(f"attempt {attempt + 1}: the strokes painted from {painted_at} did not reach the server ({_status(page)!r}; requests still"
              f" loading: {sorted(r.url for r in network.pending)[:5]}; last events: {network.events[-6:]}; page as it was: {lost}); painting again")
        page.wait_for_function("!document.body.innerText.includes('nothing to save')", timeout=TIMEOUT_MS)
    raise AssertionError(f"the painted strokes never reached the server: {_status(page)!r}")


@pytest.mark.slow
def test_paint_propagate_correct_export_in_chromium(tmp_path: Path) -> None:
    from stcorr.app import launch

    clip, truth = write_shapes_folder(tmp_path / "clip", twin_from=3)
    shots = Path(os.environ.get("STCORR_APP_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    server = launch(str(clip), port=port, block=False)  # the embedded default model
    try:
        with playwright_api.sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True,
                viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page = context.new_page()
            network = Network(page)
            page.goto(f"http://127.0.0.1:{port}/", timeout=TIMEOUT_MS)
            _wait_status(page, "12 frames 128x96")
            page.wait_for_selector("#editor canvas", timeout=TIMEOUT_MS)
            # bad input: a message in the page, and the open video stays usable
            page.fill("#video_path input", str(tmp_path / "missing.mp4"))
            page.click("#open")
            page.get_by_text("does not exist; give a video file").first.wait_for(timeout=TIMEOUT_MS)
            page.fill("#video_path input", str(clip))
            # the status line and the overlay (where the progress shows) are in view at 1400x1000
            for element in ("#status", "#view"):
                box = page.locator(element).bounding_box()
                assert box is not None and box["y"] + min(box["height"], 40) < 1000, (element, box)
            # keys typed into a text box stay there; outside it they step frames
            page.press("#video_path input", "End")
            page.keyboard.type(".")
            assert page.locator("#video_path input").input_value() == f"{clip}." and _slider(page) == 0
            page.fill("#video_path input", str(clip))
            page.click("#intro")
            _key(page, "ArrowRight", "frame 1: ")
            _key(page, ".", "frame 2: ")
            _key(page, ",", "frame 1: ")
            _key(page, "ArrowLeft", "frame 0: ")
            assert _slider(page) == 0

            # frame 0: paint the red square (x 12..35, y 20..43) with the brush, object 1
            def paint_square(canvas: Canvas) -> None:
                page.click("#editor button[aria-label='Brush']")
                for y in range(24, 42, 4):
                    _stroke(page, canvas, [(16, y), (31, y)])

            _paint_and_save(page, network, paint_square, "anchors at [0]", shots)
            _ready_canvas(page, network)
            _shot(page, shots / "app_paint.png")
            # the object panel: paint the disc (centre 90, 24, radius 11) as object 2, name it, hide it
            _choose_object(page, 2, "rgb(0, 128, 0)")

            # a box prompt on the overlay: two clicks around the disc give object 2's mask
            page.click("#box_mode input")
            _click_view(page, 76, 10)
            _wait_status(page, "box for object 2: first corner (76, 10)")
            _click_view(page, 104, 38)
            _wait_status(page, "object 2 has")
            assert "anchors at [0]; objects [1, 2];" in _status(page)
            pixels = int(re.search(r"object 2 has (\d+) px", _status(page)).group(1))
            assert abs(pixels - int((truth[0] == 2).sum())) < 0.1 * (truth[0] == 2).sum(), pixels
            page.click("#box_mode input")
            page.fill("#object_name input", "blue disc")
            page.click("#rename")
            _wait_status(page, "object 2 is 'blue disc'")
            rows = _object_rows(page)
            assert sorted(rows) == [1, 2] and rows[2][:2] == ("true", "true") and "blue disc" in rows[2][2]
            _shot(page, shots / "app_objects.png")
            page.locator("#object_visible label", has_text="2 green: blue disc").click()
            page.wait_for_function("document.querySelector('#objects .object-row[data-object=\"2\"]')"
                                   ".dataset.visible === 'false'", timeout=TIMEOUT_MS)
            assert _object_rows(page)[1][0] == "true"
            # delete it, undo the deletion (name back), then undo its anchor (keyboard): the square alone
            page.click("#delete_object")
            _wait_status(page, "deleted object 2")
            assert "objects [1];" in _status(page) and sorted(_object_rows(page)) == [1]
            page.click("#intro")
            _key(page, "u", "undid deleting object 2 (blue disc)")
            assert "objects [1, 2]" in _status(page) and "blue disc" in _object_rows(page)[2][2]
            _key(page, "u", "undid the box for object 2 at frame 0")
            assert "anchors at [0]; objects [1];" in _status(page)
            # Open with changes not exported asks first (and the session stays)
            page.click("#open")
            _wait_status(page, "press Open again to discard them")
            page.click("#intro")
            _key(page, ".", "frame 1: ")
            assert "anchors at [0]; objects [1];" in _status(page)
            # the brush keeps the chosen object's colour on another frame; the panel's names follow the undo
            assert page.locator("#editor button[aria-label='Color']").evaluate("b => b.style.color") == "rgb(0, 128, 0)"
            assert page.locator("#object_select label", has_text="2 green").inner_text().strip() == "2 green"
            _key(page, "ArrowLeft", "frame 0: ")
            _choose_object(page, 1, "rgb(128, 0, 0)")
            _ready_canvas(page, network)
            page.click("#propagate")
            _wait_status(page, "done:")
            assert "0 frame(s) to propagate" in _status(page)
            first = _export(page, tmp_path / "first")
            # the label leaks onto the look-alike from frame 3 on; the strip shows object 1's cells, all
            # computed, and flags the leak; the button jumps there
            leak_before = _leak(_masks(first), truth)
            assert leak_before[:3].sum() == 0 and (leak_before[3:] > 200).all()
            suspect = _reliability(first)["first_suspect_frame"]
            assert suspect == 3
            runs = _strip_runs(page, 1)
            assert runs[0][0] == 0 and runs[-1][1] == 11 and all(state != "none" for _, _, state in runs)
            assert next(first for first, _, state in runs if state == "suspect") == suspect
            _go_to_first_suspect(page, network, suspect, before=0)
            _shot(page, shots / "app_suspect.png")

            # frame 6: the square moved to x 30..53; paint it, erase the propagated mask elsewhere and the leak
            # onto the look-alike (x 30..53, y 48..71)
            page.click("#intro")
            for t in (4, 5, 6):
                _key(page, "ArrowRight" if t != 5 else ".", f"frame {t}: ")
            before_correction = _masks(first)[6]
            erase_rows = list(range(14, 52, 4))
            leak_rows = list(range(48, 73, 4))
            paint_rows = list(range(24, 42, 4))
            def correct(canvas: Canvas) -> None:
                page.click("#editor button[aria-label='Erase']")
                for y in erase_rows:
                    _stroke(page, canvas, [(2, y), (27, y)])
                for y in leak_rows:
                    _stroke(page, canvas, [(26, y), (57, y)])
                page.click("#editor button[aria-label='Brush']")
                for y in paint_rows:
                    _stroke(page, canvas, [(34, y), (49, y)])

            _paint_and_save(page, network, correct, "anchors at [0, 6]", shots)
            page.click("#propagate")
            _wait_status(page, "done:")
            assert "anchors at [0, 6]" in _status(page)
            assert "done: 11 frame(s)" in _status(page)  # 1-5 (back to the previous anchor) and 7-11
            _ready_canvas(page, network)
            _shot(page, shots / "app_corrected.png")
            page.click("#show_confidence input")
            assert page.locator("#show_confidence input").is_checked()
            page.locator("#frame input[type=range]").fill("9")
            _wait_status(page, "frame 9: ")
            _ready_canvas(page, network)
            _shot(page, shots / "app_confidence.png")
            page.click("#show_confidence input")
            assert not page.locator("#show_confidence input").is_checked()
            after_correction = _reliability(_export(page, tmp_path / "now"))
            runs = _strip_runs(page, 1)
            assert all(state != "none" for _, _, state in runs) and runs[-1][1] == 11
            _go_to_first_suspect(page, network, after_correction["first_suspect_frame"], before=9)
            final = _export(page, tmp_path / "final")
            assert page.locator("#exported a").count() == 1
            # Space plays from the current frame, Space pauses (or the play reaches the end): the editor is on
            # the frame the slider shows
            page.click("#intro")
            _key(page, " ", "playing: frame")
            page.keyboard.press(" ")
            page.wait_for_function("(s => s !== null && /: (paused|played to the end)/.test(s.innerText))"
                                   "(document.querySelector('#status'))", timeout=TIMEOUT_MS)
            assert _status(page).startswith(f"frame {_slider(page)}: "), (_status(page), _slider(page))
            # undo the correction (Ctrl+Z: the editor has no strokes to undo), then Open: asked, then discarded
            page.click("#intro")
            _key(page, "Control+z", "undid the anchor at frame 6 (object 1)")
            assert "anchors at [0];" in _status(page)
            page.click("#open")
            _wait_status(page, "press Open again")
            page.click("#open")
            _wait_status(page, "anchors at none yet")
            page.wait_for_function("document.querySelectorAll('#exported a').length === 0", timeout=TIMEOUT_MS)
            context.close()
    finally:
        server.close()

    exported = _masks(final)
    # the corrected frame is the painted one: stroke centres are object 1, erased centres background
    corrected = exported[6]
    assert not np.array_equal(corrected, before_correction)
    for y in paint_rows:
        assert (corrected[y, 34:50] == 1).all(), f"painted row {y} is not object 1"
    for y in erase_rows:
        assert (corrected[y, 2:21] == 0).all(), f"erased row {y} is not background"
    for y in leak_rows:
        assert (corrected[y, 28:56] == 0).all(), f"erased row {y} of the look-alike is not background"
    assert set(np.unique(corrected)) == {0, 1}
    # the frames before the correction are predicted again both ways (from the anchors at 0 and 6): frame 0
    # (an anchor) is unchanged
    assert np.array_equal(exported[0], _masks(first)[0])
    # ... and the frames before the correction are repaired: the leak at 3-5 shrinks (predicted back from 6)
    leak_after = _leak(exported, truth)
    assert leak_after[3:6].sum() < 0.5 * leak_before[3:6].sum(), (leak_before.tolist(), leak_after.tolist())
    # the anchors own the object the user edited there (format 2 sessions)
    saved = json.loads((final / "session.json").read_text())
    assert saved["format"] == 2 and [a["objects"] for a in saved["anchors"]] == [[1], [1]]
    # a headless replay of the exported session gives the same masks
    replay = tmp_path / "replay"
    assert cli_main(["propagate", "--session", str(final / "session.json"), "--video", str(clip),
                     "--out", str(replay)]) == 0
    assert np.array_equal(_masks(replay), exported)
    assert _reliability(final) == after_correction  # moving around and the button changed nothing
    assert _reliability(replay)["reliability"] == after_correction["reliability"]
    assert (final / "overlay.mp4").stat().st_size > 0
