"""GPU check of label propagation: the CUDA tests, then one table of timings, memory and exactness.

Run through ``bash benchmarks/gpu_check.sh`` (it checks for CUDA first). Rows, all on the first CUDA device
with the same seeded random features at DAVIS scale (60x107 cells, C=256, 22 frames, context 20, radius 12,
top-10, 5 labels):

- dense reference (tests/dense_reference.py) in float32, the speed baseline, and in float64, the exactness
  reference every other row is compared with;
- the torch block kernel (``backend="torch"``) and the fused Triton kernel (``backend="triton"``);
- a batch of 4 videos: Triton in one batch, torch one video after another;
- ``propagate_labels`` end to end (encoder included) at 480x854 with the default model, both backends.

Times are seconds per target frame after a warm-up run (Triton compiles its kernel then; the compile time is
printed separately); memory is ``torch.cuda.max_memory_allocated`` during the timed run.

    python benchmarks/gpu_check.py [--json results.json] [--skip-tests]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CUDA_TESTS = ["tests/test_triton_cuda.py", "tests/test_kernel.py::test_cuda_matches_cpu"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=22)
    p.add_argument("--height", type=int, default=60)
    p.add_argument("--width", type=int, default=107)
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--labels", type=int, default=5)
    p.add_argument("--batch", type=int, default=4, help="videos in the batched rows")
    p.add_argument("--e2e-frames", type=int, default=30, help="frames for the end-to-end rows")
    p.add_argument("--e2e-size", type=int, nargs=2, default=(480, 854), metavar=("H", "W"))
    p.add_argument("--device", default="cuda", help="cpu only to dry-run this script (TRITON_INTERPRET=1, tiny sizes)")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def run_tests() -> str:
    """The CUDA test subset in a child process, compiled kernels; its pytest summary line."""
    env = {**os.environ, "TRITON_INTERPRET": "0"}  # compiled kernels (tests/conftest.py defaults to 1)
    env["PYTHONPATH"] = str(ROOT / "src") + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CUDA_TESTS],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    print(result.stdout[-3000:], result.stderr[-2000:], sep="\n", flush=True)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return (lines[-1].strip("= ") if lines else "no output") + f" (exit {result.returncode})"


def timed(fn: Callable[[], Any], targets: int) -> tuple[Any, float, float]:
    """(result, seconds per target frame, peak MiB; NaN off CUDA) of one run, synchronised."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fn()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return result, seconds / targets, torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import triton
    from dense_reference import dense_propagate

    from stcorr.propagation import propagate

    device = torch.device(args.device)
    rows: list[dict[str, Any]] = []
    tests = "skipped" if args.skip_tests else run_tests()

    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, args.frames, args.channels, args.height, args.width)
    features = torch.randn(shape, generator=gen).to(device)
    labels = torch.softmax(torch.randn(args.batch, args.labels, args.height, args.width, generator=gen), 1).to(device)
    opts = dict(context=20, radius=12, topk=10, temperature=0.07)
    targets = args.frames - 1
    dense = dict(query_chunk=512, **opts)

    exact, seconds, peak = timed(lambda: dense_propagate(features[0], labels[0], dtype=torch.float64, **dense)[0],
                                 targets)
    rows.append(dict(variant="dense reference, float64", seconds=seconds, peak_mib=peak, max_diff=0.0))
    out, seconds, peak = timed(lambda: dense_propagate(features[0], labels[0], dtype=torch.float32, **dense)[0],
                               targets)
    rows.append(dict(variant="dense reference, float32", seconds=seconds, peak_mib=peak,
                     max_diff=float((out - exact).abs().max())))

    start = time.perf_counter()
    propagate(features[0, :3], labels[0], backend="triton", **opts)  # compiles the kernel
    if device.type == "cuda":
        torch.cuda.synchronize()
    compile_seconds = time.perf_counter() - start
    propagate(features[0, :3], labels[0], backend="torch", **opts)
    for backend in ("torch", "triton"):
        out, seconds, peak = timed(lambda: propagate(features[0], labels[0], backend=backend, **opts), targets)
        rows.append(dict(variant=f"{backend} kernel, 1 video", seconds=seconds, peak_mib=peak,
                         max_diff=float((out - exact).abs().max())))

    batch_labels = list(labels)
    out, seconds, peak = timed(lambda: propagate(features, batch_labels, backend="triton", **opts), targets)
    rows.append(dict(variant=f"triton kernel, batch of {args.batch} (per video)", seconds=seconds / args.batch,
                     peak_mib=peak, max_diff=float((out[0] - exact).abs().max())))
    out, seconds, peak = timed(lambda: [propagate(f, lab, backend="torch", **opts) for f, lab in
                                        zip(features, batch_labels)], targets)
    rows.append(dict(variant=f"torch kernel, {args.batch} videos in turn (per video)", seconds=seconds / args.batch,
                     peak_mib=peak, max_diff=float((out[0] - exact).abs().max())))

    e2e = end_to_end(args.e2e_frames, tuple(args.e2e_size), device)
    report = dict(
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device} (dry run)",
        torch=torch.__version__,
        triton=triton.__version__,
        python=platform.python_version(),
        cuda_tests=tests,
        triton_compile_seconds=compile_seconds,
        davis_scale=dict(frames=args.frames, grid=[args.height, args.width], channels=args.channels, **opts),
        rows=rows,
        end_to_end=e2e,
    )
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def end_to_end(frames: int, size: tuple[int, int], device: torch.device) -> list[dict[str, Any]]:
    """``propagate_labels`` frames/s at ``size`` (shifted noise frames, a two-object mask), both backends."""
    from stcorr import load_model
    from stcorr.propagation.api import propagate_labels

    rng = np.random.default_rng(0)
    height, width = size
    base = rng.integers(0, 256, (height + 2 * frames, width + 3 * frames, 3), dtype=np.uint8)
    video = np.stack([base[2 * t : 2 * t + height, 3 * t : 3 * t + width] for t in range(frames)])
    mask = np.zeros(size, np.uint8)
    mask[height // 5 : height * 3 // 5, width // 4 : width * 3 // 5] = 1
    mask[height * 2 // 3 : height * 19 // 20, width * 7 // 10 : width * 19 // 20] = 2
    model = load_model(device=device)
    results = []
    for backend in ("torch", "triton"):
        propagate_labels(model, video[:4], mask, backend=backend)  # warm-up
        _, seconds, peak = timed(lambda: propagate_labels(model, video, mask, backend=backend), frames)
        results.append(dict(variant=f"propagate_labels {height}x{width}, {backend}", frames_per_second=1 / seconds,
                            peak_mib=peak))
    return results


def print_table(report: dict[str, Any]) -> None:
    print(f"\nGPU check: {report['gpu']}, torch {report['torch']}, Triton {report['triton']}")
    print(f"CUDA tests: {report['cuda_tests']}")
    scale = report["davis_scale"]
    print(f"DAVIS scale: {scale['frames']} frames, {scale['grid'][0]}x{scale['grid'][1]} cells, C={scale['channels']}, "
          f"context {scale['context']}, radius {scale['radius']}, top-{scale['topk']}; "
          f"Triton compile {report['triton_compile_seconds']:.1f} s")
    print(f"| {'variant':<48} | {'s / frame':>10} | {'peak MiB':>9} | {'max |diff| vs fp64':>18} |")
    print(f"|{'-' * 50}|{'-' * 12}|{'-' * 11}|{'-' * 20}|")
    for row in report["rows"]:
        print(f"| {row['variant']:<48} | {row['seconds']:>10.4f} | {row['peak_mib']:>9.0f} | "
              f"{row['max_diff']:>18.1e} |")
    for row in report["end_to_end"]:
        print(f"| {row['variant']:<48} | {1 / row['frames_per_second']:>10.4f} | {row['peak_mib']:>9.0f} | "
              f"{row['frames_per_second']:>12.1f} fps |")


if __name__ == "__main__":
    sys.exit(main())
