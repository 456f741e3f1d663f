"""`stcorr app` start-up and propagation speed, against `stcorr propagate` on the same clip and mask.

Measured side by side in one run, on a generated clip (coloured shapes over a texture; no footage):

- time to first frame: from starting `python -m stcorr app CLIP` until the editor in a headless Chromium shows
  frame 0 (server start + page load + first frame);
- app propagation: a mask is painted on frame 0 with mouse events, then Propagate is clicked; the time until
  the page says "done" gives frames/s as the user sees it (frames streamed into view included), and the
  CPU the headless browser used meanwhile (cores, from /proc: it shares the machine with the app);
- CLI propagation: `stcorr propagate --mask` with the same mask, timed for the whole clip and for 2 frames;
  the difference gives the per-frame time without start-up (model load, imports).

    python benchmarks/app_responsiveness.py --frames 32 --height 144 --width 192 --out benchmarks/results/app.json

Needs the app extra, Playwright and Debian's chromium (see tests/test_app_browser.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from app_helpers import write_shapes_folder  # noqa: E402

_STATUS_STARTS = "(e => e !== null && e.innerText.startsWith('{}'))(document.querySelector('#status'))"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu() -> str:
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    model = re.search(r"Model name:\s*(.+)", info)
    flags = re.search(r"Flags:\s*(.+)", info)
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flags and f in flags.group(1).split()]
    name = model.group(1).strip() if model else "unknown"
    return f"{name} ({', '.join(wanted) or 'no avx2'}), {os.cpu_count()} cores"


def _wait_http(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def _zoom(page) -> float:  # noqa: ANN001
    match = re.search(r"(\d+)%", page.locator("#editor").inner_text())
    return int(match.group(1)) / 100 if match else 0.0


def _wait_frame_shown(page, timeout: float = 300) -> None:  # noqa: ANN001
    """The editor shows the frame once its zoom (fit to the editor: above 100% for small clips, below for
    large ones) is above 10% and has not changed for 0.5 s."""
    deadline, last = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        if page.locator("#editor canvas").count():
            last.append(_zoom(page))
            if len(last) >= 10 and last[-1] > 0.1 and len(set(last[-10:])) == 1:
                return
        page.wait_for_timeout(50)
    raise TimeoutError("the editor never showed a frame")


def _cpu_seconds(command_prefix: str) -> float:
    """CPU seconds used so far by every process whose command name starts with ``command_prefix``."""
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if not Path(f"/proc/{pid}/comm").read_text().startswith(command_prefix):
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _paint_square(page, size: tuple[int, int], box: tuple[int, int, int, int]) -> None:  # noqa: ANN001
    height, width = size
    rect = page.locator("#editor canvas").first.bounding_box()
    zoom = _zoom(page)
    left = rect["x"] + (rect["width"] - width * zoom) / 2
    top = rect["y"] + (rect["height"] - height * zoom) / 2
    x0, y0, x1, y1 = box
    page.click("#editor button[aria-label='Brush']")
    for y in range(y0, y1, 4):
        page.mouse.move(left + x0 * zoom, top + y * zoom)
        page.mouse.down()
        page.mouse.move(left + x1 * zoom, top + y * zoom, steps=6)
        page.mouse.up()
    page.wait_for_timeout(2000)  # the editor uploads its layer after a stroke


def _status(page) -> str:  # noqa: ANN001
    return page.locator("#status").inner_text()


def measure_app(clip: Path, size: tuple[int, int], model: str | None, work: Path) -> dict:
    from playwright.sync_api import sync_playwright

    port = _free_port()
    command = [sys.executable, "-m", "stcorr", "app", str(clip), "--port", str(port)]
    command += ["--model", model] if model else []
    started = time.perf_counter()
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(f"http://127.0.0.1:{port}/")
        serving = time.perf_counter() - started
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(work / "profile"), executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS, headless=True,
                viewport={"width": 1280, "height": 1100}, accept_downloads=True)
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/", timeout=300_000)
            _wait_frame_shown(page)
            first_frame = time.perf_counter() - started
            height, width = size
            _paint_square(page, size, (width // 8, height // 4, width // 8 + width // 5, height // 4 + height // 5))
            browser_before = _cpu_seconds("chromium")
            clicked = time.perf_counter()
            page.click("#propagate")
            page.wait_for_function(_STATUS_STARTS.format("done:"), timeout=600_000, polling=250)
            seen = time.perf_counter() - clicked
            browser_cores = (_cpu_seconds("chromium") - browser_before) / seen
            done = _status(page)
            page.click("#export")
            page.wait_for_function(_STATUS_STARTS.format("exported"), timeout=600_000)
            with page.expect_download() as download:
                page.locator("#exported a").first.click()
            download.value.save_as(work / "export.zip")
            context.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    internal = re.search(r"done: (\d+) frame\(s\) in ([\d.]+) s", done)
    frames = int(internal.group(1))
    return {"server_answers_s": round(serving, 2), "first_frame_shown_s": round(first_frame, 2),
            "propagate_click_to_done_s": round(seen, 2), "frames_propagated": frames,
            "browser_cpu_cores_while_propagating": round(browser_cores, 2),
            "app_frames_per_s_seen": round(frames / seen, 2),
            "app_frames_per_s_internal": round(frames / float(internal.group(2)), 2)}


def _run_cli(clip: Path, mask: Path, model: str | None, out: Path, max_frames: int | None) -> float:
    command = [sys.executable, "-m", "stcorr", "propagate", "--video", str(clip), "--mask", str(mask),
               "--out", str(out)]
    command += (["--model", model] if model else []) + (["--max-frames", str(max_frames)] if max_frames else [])
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def measure_cli(clip: Path, frames: int, model: str | None, work: Path) -> dict:
    with zipfile.ZipFile(work / "export.zip") as archive:
        archive.extractall(work / "export")
    mask = work / "export" / "masks" / "00000.png"  # the anchor painted in the app
    short = _run_cli(clip, mask, model, work / "cli2", 2)
    full = _run_cli(clip, mask, model, work / "cli", None)
    per_frame = (full - short) / (frames - 2)
    from stcorr.io.masks import read_mask

    same = all(np.array_equal(read_mask(work / "cli" / "masks" / f"{t:05d}.png"),
                              read_mask(work / "export" / "masks" / f"{t:05d}.png")) for t in range(frames))
    return {"cli_total_s": round(full, 2), "cli_2_frames_s": round(short, 2),
            "cli_frames_per_s": round(1.0 / per_frame, 2), "cli_masks_equal_app_export": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--model", default=None, help="default: the embedded model")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip, _ = write_shapes_folder(work / "clip", args.frames, (args.height, args.width))
        result = {"clip": f"{args.frames} generated frames of {args.width}x{args.height}",
                  "model": args.model or "default (embedded)", "cpu": _cpu(),
                  "torch_threads": __import__("torch").get_num_threads(),
                  "load_average_at_start": [round(v, 1) for v in os.getloadavg()]}
        result.update(measure_app(clip, (args.height, args.width), args.model, work))
        result.update(measure_cli(clip, args.frames, args.model, work))
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
