"""Where the demo's time goes: ``stcorr propagate`` on vtest.avi, timed per stage, per frame.

Runs the README's demo command (``examples/demo_vtest.sh``: the embedded mask of three pedestrians, the CLI's
settings, an overlay video) in this process through ``stcorr.cli.main`` and charges every moment of it to the
innermost stage running then (exclusive time: frames decoded while the features iterator pulls them count as
decoding, not as features):

- ``decode (working size)``: reading frames from the video for the encoder (PyAV decode, RGB conversion,
  resizing to the working size);
- ``decode (overlay)``: reading frames again at full size for the overlay video (when the pipeline does so);
- ``features``: the encoder (:func:`stcorr.features.encode_batch`);
- ``kernel``: label propagation (:class:`stcorr.propagation.kernel.LabelPropagator`);
- ``label decoding``: grid labels -> the frame's mask at full size (``propagation.passes.decode``);
- ``reliability``: the per-object reliability of each frame;
- ``PNG writing``: the mask PNGs;
- ``overlay drawing`` and ``video encoding``: the overlay video's frames and their encoding;
- ``model loading``: :func:`stcorr.load_encoder`;
- ``other``: everything else (argument checks, output claims, progress bar, reliability.json, ...).

The stages are found by name in the stcorr that is imported, so the same script measures another checkout
side by side (``PYTHONPATH=/path/to/other/src``)::

    OMP_NUM_THREADS=1 python benchmarks/profile_demo.py --frames 200 --json benchmarks/results/profile_demo.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class Stages:
    """Exclusive wall time per stage: the clock always runs for the innermost stage entered (or ``other``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.stack = ["other"]
        self.last = time.perf_counter()

    def _switch(self) -> None:
        now = time.perf_counter()
        self.seconds[self.stack[-1]] += now - self.last
        self.last = now

    def enter(self, name: str) -> None:
        self._switch()
        self.stack.append(name)

    def leave(self) -> None:
        self._switch()
        self.stack.pop()

    def function(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.enter(name)
            try:
                return fn(*args, **kwargs)
            finally:
                self.leave()
        return timed

    def iterator(self, name: str, make: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        """``make`` (a generator function) whose every step is charged to ``name``."""
        @functools.wraps(make)
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            self.enter(name)
            try:
                inner = make(*args, **kwargs)
            finally:
                self.leave()
            while True:
                self.enter(name)
                try:
                    item = next(inner)
                except StopIteration:
                    return
                finally:
                    self.leave()
                yield item
        return timed


def instrument(stages: Stages) -> list[str]:
    """Wrap the pipeline's stages in the stcorr that is imported; returns the names of what was wrapped."""
    import stcorr.io.frames as frames
    import stcorr.io.video as video
    import stcorr.loading as loading
    import stcorr.pipelines as pipelines
    import stcorr.propagation.kernel as kernel
    import stcorr.propagation.passes as passes
    import stcorr.propagation.session as session

    wrapped = []

    def patch(owner: Any, attribute: str, stage: str, *, iterator: bool = False) -> None:
        if not hasattr(owner, attribute):
            return
        original = getattr(owner, attribute)
        setattr(owner, attribute, (stages.iterator if iterator else stages.function)(stage, original))
        wrapped.append(f"{getattr(owner, '__name__', owner)}.{attribute} -> {stage}")

    source = frames.FrameSource
    original_iter = source.__iter__

    def frames_iter(self: Any) -> Iterator[Any]:
        name = "decode (working size)" if tuple(self.size) != tuple(self.original_size) else "decode (overlay)"
        return stages.iterator(name, original_iter)(self)

    source.__iter__ = frames_iter  # type: ignore[method-assign]
    wrapped.append("FrameSource.__iter__ -> decode (working size) / decode (overlay)")
    patch(source, "__getitem__", "decode (working size)")
    for module in (passes, session):
        patch(module, "encode_batch", "features")
    for method in ("__init__", "step", "add_anchor"):
        patch(kernel.LabelPropagator, method, "kernel")
    patch(session, "decode", "label decoding")
    patch(session.PropagationSession, "_rate", "reliability")
    for name in ("write_mask_png", "write_confidence_png"):
        patch(pipelines, name, "PNG writing")
    patch(pipelines, "overlay", "overlay drawing")
    patch(video.VideoWriter, "write", "video encoding")
    patch(loading, "load_encoder", "model loading")
    return wrapped


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=ROOT / "data" / "opencv" / "vtest.avi")
    parser.add_argument("--mask", type=Path, default=ROOT / "examples" / "data" / "vtest_first_mask.png")
    parser.add_argument("--frames", type=int, default=200, help="frames of the demo (the README's demo: 200)")
    parser.add_argument("--label", default="", help="a name for this run in the output (e.g. before / after)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if not args.video.is_file():
        sys.exit(f"{args.video} not found: run examples/fetch_opencv_data.sh data/opencv or pass --video")

    import torch

    import stcorr
    from stcorr.cli import main as cli

    stages = Stages()
    wrapped = instrument(stages)
    with tempfile.TemporaryDirectory() as out:
        command = ["propagate", "--video", str(args.video), "--mask", str(args.mask), "--max-frames",
                   str(args.frames), "--out", f"{out}/vtest", "--overlay", f"{out}/vtest_overlay.mp4"]
        stages.seconds.clear()
        start = stages.last = time.perf_counter()
        cli(command)
        stages._switch()
        total = time.perf_counter() - start
    frames = args.frames
    loading = stages.seconds.get("model loading", 0.0)
    per_frame = {name: 1000 * seconds / frames for name, seconds in stages.seconds.items() if name != "model loading"}
    pipeline = total - loading
    rows = sorted(per_frame.items(), key=lambda item: -item[1])
    print(f"\n{args.label + ': ' if args.label else ''}stcorr {stcorr.__version__} from {Path(stcorr.__file__).parent}")
    print(f"stcorr {' '.join(command[:1])} on {args.video.name}, {frames} frames; CPU: {cpu_name()}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print("| stage | ms/frame | % |")
    print("|---|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} | {100 * ms * frames / 1000 / pipeline:.1f} |")
    print(f"| total (model loading excluded) | {1000 * pipeline / frames:.1f} | 100 |")
    print(f"model loading: {loading:.2f} s; whole command: {total:.1f} s = {frames / total:.2f} frames/s; "
          f"without model loading: {frames / pipeline:.2f} frames/s")
    result = {"label": args.label, "stcorr": stcorr.__version__, "source": str(Path(stcorr.__file__).parent),
              "cpu": cpu_name(), "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0],
              "frames": frames, "ms_per_frame": per_frame, "model_loading_s": loading, "total_s": total,
              "frames_per_s": frames / total, "frames_per_s_without_loading": frames / pipeline, "wrapped": wrapped}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
