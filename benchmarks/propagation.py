"""Benchmark: windowed label-propagation kernel vs the dense reference.

Each variant (dense reference, kernel fp32, kernel bf16) runs in a fresh subprocess so that peak
resident memory is measured per variant. All of them regenerate the same seeded random features
(T, C, h, w) and soft labels (K, h, w); outputs are compared with the dense reference on the frames
it computed.

    python benchmarks/propagation.py                      # DAVIS scale, full dense run (~3-4 min)
    python benchmarks/propagation.py --dense-frames 3     # time dense on the first 3 targets only
    python benchmarks/propagation.py --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch

VARIANTS = ("dense", "fp32", "bf16")
KERNELS = ("fp32", "bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--frames", type=int, default=22, help="video length T (frame 0 included)")
    p.add_argument("--height", type=int, default=60, help="feature grid rows h")
    p.add_argument("--width", type=int, default=107, help="feature grid columns w")
    p.add_argument("--channels", type=int, default=256, help="feature channels C")
    p.add_argument("--labels", type=int, default=5, help="label channels K")
    p.add_argument("--context", type=int, default=20)
    p.add_argument("--radius", type=int, default=12)
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--temperature", type=float, default=0.07)
    p.add_argument(
        "--block-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("ROWS", "COLS"),
        help="kernel query block; default: the library's",
    )
    p.add_argument(
        "--dense-frames", type=int, default=None, help="run the dense reference on the first N target frames only"
    )
    p.add_argument(
        "--dense-chunk",
        type=int,
        default=1024,
        help="query chunk of the dense reference (bounds its memory; 0 = the full affinity at once)",
    )
    p.add_argument(
        "--tie-tol",
        type=float,
        default=1e-5,
        help="a query cell is a near-tie when its k-th and (k+1)-th cosines (dense, float32) differ by less",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this path")
    p.add_argument("--worker", choices=VARIANTS + tuple(f"forced-{k}" for k in KERNELS), default=None,
                   help=argparse.SUPPRESS)
    p.add_argument("--dense-output", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--output", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_inputs(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random features (T, C, h, w) and a random soft label map (K, h, w) summing to 1."""
    gen = torch.Generator().manual_seed(args.seed)
    features = torch.randn(args.frames, args.channels, args.height, args.width, generator=gen)
    labels = torch.rand(args.labels, args.height, args.width, generator=gen) ** 4
    return features, labels / labels.sum(0, keepdim=True)


def proc_status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) so the peak covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb(was_reset: bool) -> float:
    """Peak RSS since the reset, or since process start (getrusage) if it could not be reset."""
    if was_reset:
        return proc_status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_worker(args: argparse.Namespace) -> None:
    """Run one variant in this (fresh) process; print a JSON line and save the labels."""
    if args.threads:
        torch.set_num_threads(args.threads)
    features, labels = make_inputs(args)
    opts = dict(context=args.context, radius=args.radius, topk=args.topk, temperature=args.temperature)
    if args.worker == "dense":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from dense_reference import dense_propagate
    else:
        from stcorr.propagation import propagate_stream
    rss_before = proc_status_mb("VmRSS")
    was_reset = reset_peak_rss()
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.worker == "dense":
        num = None if args.dense_frames is None else args.dense_frames + 1
        margins: list[torch.Tensor] = []
        out, _ = dense_propagate(
            features, labels, num_frames=num, query_chunk=args.dense_chunk or None, margins=margins, **opts
        )
        frame_seconds = []
    else:
        dtype = torch.bfloat16 if args.worker == "bf16" else None
        block = tuple(args.block_size) if args.block_size else None
        stream = propagate_stream(features.unbind(0), labels, compute_dtype=dtype, block_size=block, **opts)
        out = torch.empty(args.frames, args.labels, args.height, args.width)
        frame_seconds, last = [], time.perf_counter()
        for t, (lab, _) in enumerate(stream):
            out[t] = lab
            now = time.perf_counter()
            if t > 0:  # frame 1 includes the setup (tiling, frame 0's bands)
                frame_seconds.append(now - last)
            last = now
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = peak_rss_mb(was_reset)
    torch.save({"labels": out, "margins": torch.stack(margins)} if args.worker == "dense" else out, args.output)
    targets = out.shape[0] - 1
    print(
        json.dumps(
            {
                "variant": args.worker,
                "targets": targets,
                "seconds": elapsed,
                "s_per_frame": elapsed / max(targets, 1),
                "cpu_s_per_frame": cpu / max(targets, 1),
                "frame_seconds": frame_seconds,
                "peak_rss_mb": peak,
                "rss_before_mb": rss_before,
            }
        )
    )


def run_forced_worker(args: argparse.Namespace) -> None:
    """One-step exactness: every target frame predicted by the kernel from the dense reference's own context.

    Frame t gets frame 0 and the dense labels of frames max(1, t - context) .. t - 1 as fixed context
    (anchors), so a near-tie swapped at an earlier frame cannot spread; the difference from dense at t is
    then split into near-tie cells (dense margin < --tie-tol) and all other cells.
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    from stcorr.propagation import LabelPropagator

    features, labels = make_inputs(args)
    dense = torch.load(args.dense_output)
    reference, margins = dense["labels"], dense["margins"]
    dtype = torch.bfloat16 if args.worker == "forced-bf16" else None
    block = tuple(args.block_size) if args.block_size else None
    opts = dict(context=args.context, radius=args.radius, topk=args.topk, temperature=args.temperature)
    clear_max, tie_max, ties, clear_over = 0.0, 0.0, 0, 0
    for t in range(1, reference.shape[0]):
        propagator = LabelPropagator(features[0], labels, compute_dtype=dtype, block_size=block, **opts)
        for s in range(max(1, t - args.context), t):
            propagator.add_anchor(features[s], reference[s])
        predicted, _ = propagator.step(features[t])
        diff = (predicted - reference[t]).abs().amax(0)
        tie = margins[t - 1] < args.tie_tol
        ties += int(tie.sum())
        clear_over += int((diff[~tie] > 1e-4).sum())
        clear_max = max(clear_max, float(diff[~tie].max()) if (~tie).any() else 0.0)
        tie_max = max(tie_max, float(diff[tie].max()) if tie.any() else 0.0)
    print(json.dumps({"variant": args.worker, "targets": reference.shape[0] - 1, "near_tie_cells": ties,
                      "max_abs_diff_clear": clear_max, "clear_cells_over_1e-4": clear_over,
                      "max_abs_diff_near_ties": tie_max}))


def run_variant(variant: str, argv: list[str], workdir: Path, extra: Sequence[str] = ()) -> dict[str, Any]:
    out = workdir / f"{variant}.pt"
    cmd = [sys.executable, __file__, *argv, "--worker", variant, "--output", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} run failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["output"] = out
    return result


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }


def compare(results: dict[str, dict[str, Any]]) -> None:
    """Add max abs difference vs the dense reference, on the frames dense computed."""
    if "dense" not in results:
        return
    dense = torch.load(results["dense"]["output"])["labels"]
    for name, res in results.items():
        if name == "dense":
            continue
        out = torch.load(res["output"])[: dense.shape[0]]
        diff = (out - dense).abs().amax(1)  # (T, h, w): worst label channel per cell
        res["max_abs_diff"] = float(diff.max())
        res["cells_over_1e-4"] = int((diff > 1e-4).sum())
        res["frames_compared"] = int(dense.shape[0] - 1)


def speedup(dense: dict[str, Any] | None, res: dict[str, Any]) -> float | None:
    """Dense time / kernel time on the same target frames (the first ones dense computed)."""
    if dense is None or not res.get("frame_seconds"):
        return None
    return dense["seconds"] / sum(res["frame_seconds"][: dense["targets"]])


def markdown(results: dict[str, dict[str, Any]], args: argparse.Namespace, machine: dict[str, Any]) -> str:
    dense = results.get("dense")
    lines = [
        "Peak RSS is measured per variant in a fresh process, over the propagation only (VmHWM reset after "
        "the inputs are built); 'RSS before run' = interpreter + torch + inputs; extra = peak - before. "
        "Cells > 1e-4: (frame, cell) pairs where some label differs from dense by more than 1e-4 (a near-tie "
        "at the k-th candidate, within float32 rounding, can swap candidates between any two implementations).",
        f"Setting: T={args.frames}, C={args.channels}, grid {args.height}x{args.width}, K={args.labels}, "
        f"context {args.context}, radius {args.radius}, top-{args.topk}, temperature {args.temperature}, "
        f"seed {args.seed}",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, {machine['threads']} threads, "
        f"CUDA {'yes' if machine['cuda'] else 'no'} (runs on CPU)",
        "",
        "| variant | target frames | s/frame (wall) | CPU s/frame | speed-up vs dense (same frames) "
        "| peak RSS (MB) | RSS before run (MB) | extra (MB) | max abs diff vs dense |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    names = {"dense": "dense reference", "fp32": "kernel fp32", "bf16": "kernel bf16"}
    for name, res in results.items():
        factor = 1.0 if name == "dense" else speedup(dense, res)
        speed = "-" if factor is None else f"{factor:.1f}x"
        diff = (
            "-"
            if name == "dense" or "max_abs_diff" not in res
            else f"{res['max_abs_diff']:.2e} ({res['cells_over_1e-4']} cells > 1e-4, {res['frames_compared']} frames)"
        )
        lines.append(
            f"| {names[name]} | {res['targets']} | {res['s_per_frame']:.3f} | {res['cpu_s_per_frame']:.3f} "
            f"| {speed} | {res['peak_rss_mb']:.0f} "
            f"| {res['rss_before_mb']:.0f} | {res['peak_rss_mb'] - res['rss_before_mb']:.0f} | {diff} |"
        )
    forced = {name: res["one_step"] for name, res in results.items() if "one_step" in res}
    if forced:
        lines += [
            "",
            "One-step exactness: each target frame predicted by the kernel from the dense reference's own context "
            f"(frame 0 + the dense labels of the previous frames), so that no earlier swap spreads. Near-tie cells: "
            f"the k-th and (k+1)-th cosines differ by less than {args.tie_tol:g} (dense, float32).",
            "",
            "| variant | near-tie cells | max abs diff, other cells | other cells > 1e-4 | max abs diff, near-tie cells |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, res in forced.items():
            lines.append(
                f"| {names[name]} | {res['near_tie_cells']} | {res['max_abs_diff_clear']:.2e} "
                f"| {res['clear_cells_over_1e-4']} | {res['max_abs_diff_near_ties']:.2e} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        (run_forced_worker if args.worker.startswith("forced-") else run_worker)(args)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    passthrough = [a for a in argv if a != "--json" and (args.json is None or a != str(args.json))]
    with tempfile.TemporaryDirectory() as tmp:
        results = {v: run_variant(v, passthrough, Path(tmp)) for v in VARIANTS if v in args.variants}
        compare(results)
        if "dense" in results:
            extra = ["--dense-output", str(results["dense"]["output"])]
            for name in (k for k in KERNELS if k in results):
                one_step = run_variant(f"forced-{name}", passthrough, Path(tmp), extra)
                one_step.pop("output")
                results[name]["one_step"] = one_step
    machine = machine_info()
    print(markdown(results, args, machine))
    if args.json:
        payload = {
            "args": {k: v for k, v in vars(args).items() if k not in ("json", "worker", "output")},
            "machine": machine,
            "results": {k: {kk: vv for kk, vv in v.items() if kk != "output"} for k, v in results.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))


if __name__ == "__main__":
    main()
