"""Benchmark: windowed label-propagation kernel vs the dense reference.

Each variant runs in a fresh subprocess so that peak resident memory is measured per variant: the
dense reference in float32 (the speed baseline), the dense reference in float64 (the exactness
reference: its ranking of candidates is exact for all practical purposes, as the kernel's is), and
the kernel with float32 and bfloat16 similarities. All regenerate the same seeded random features
(T, C, h, w) and soft labels (K, h, w); outputs are compared with the float64 reference on the
frames it computed.

    python benchmarks/propagation.py                      # DAVIS scale, full dense run (~3-4 min)
    python benchmarks/propagation.py --dense-frames 3     # time dense on the first 3 targets only
    python benchmarks/propagation.py --json results.json
    python benchmarks/propagation.py --video data/opencv/vtest.avi   # real features (default model)
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
from typing import Any

import torch

VARIANTS = ("dense", "exact", "fp32", "bf16")
DENSE = ("dense", "exact")


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
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--video",
        type=Path,
        default=None,
        help="use the features of this video's first --frames frames (then --height/--width/--channels are "
        "the features' own) instead of random ones",
    )
    p.add_argument("--model", default=None, help="model for --video (default: stcorr's default model)")
    p.add_argument("--features-file", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this path")
    p.add_argument("--worker", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--output", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_inputs(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (T, C, h, w): seeded random, or a video's (--video); a random soft label map (K, h, w) summing to 1."""
    gen = torch.Generator().manual_seed(args.seed)
    if args.features_file is not None:
        features = torch.load(args.features_file)
    else:
        features = torch.randn(args.frames, args.channels, args.height, args.width, generator=gen)
    labels = torch.rand(args.labels, *features.shape[-2:], generator=gen) ** 4
    return features, labels / labels.sum(0, keepdim=True)


def video_features(args: argparse.Namespace) -> torch.Tensor:
    """Features of the first --frames frames of --video from --model, float32 on CPU."""
    from stcorr import extract_features, load_model
    from stcorr.frames import open_frames

    model = load_model(args.model, device="cpu")
    return extract_features(model, open_frames(args.video, max_frames=args.frames), max_side=0).cpu()


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
    if args.worker in DENSE:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from dense_reference import dense_propagate
    else:
        from stcorr.propagation import propagate_stream
    rss_before = proc_status_mb("VmRSS")
    was_reset = reset_peak_rss()
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.worker in DENSE:
        num = None if args.dense_frames is None else args.dense_frames + 1
        dtype = torch.float64 if args.worker == "exact" else torch.float32
        out, _ = dense_propagate(
            features, labels, num_frames=num, query_chunk=args.dense_chunk or None, dtype=dtype, **opts
        )
        frame_seconds = []
    else:
        dtype = torch.bfloat16 if args.worker == "bf16" else torch.float32
        block = tuple(args.block_size) if args.block_size else None
        stream = propagate_stream(features.unbind(0), labels, compute_dtype=dtype, block_size=block, **opts)
        out = torch.empty(features.shape[0], args.labels, *features.shape[-2:])
        frame_seconds, last = [], time.perf_counter()
        for t, (lab, _) in enumerate(stream):
            out[t] = lab
            now = time.perf_counter()
            if t > 0:  # frame 1 includes the setup (tiling, frame 0's bands)
                frame_seconds.append(now - last)
            last = now
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = peak_rss_mb(was_reset)
    torch.save(out, args.output)
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


def run_variant(variant: str, argv: list[str], workdir: Path) -> dict[str, Any]:
    out = workdir / f"{variant}.pt"
    cmd = [sys.executable, __file__, *argv, "--worker", variant, "--output", str(out)]
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
    """Add max abs difference vs the float64 dense reference, on the frames it computed."""
    if "exact" not in results:
        return
    exact = torch.load(results["exact"]["output"])
    for name, res in results.items():
        if name == "exact":
            continue
        out = torch.load(res["output"])[: exact.shape[0]]
        diff = (out - exact).abs().amax(1)  # (T, h, w): worst label channel per cell
        res["max_abs_diff"] = float(diff.max())
        res["cells_over_1e-4"] = int((diff > 1e-4).sum())
        res["frames_compared"] = int(min(out.shape[0], exact.shape[0]) - 1)


def speedup(dense: dict[str, Any] | None, res: dict[str, Any]) -> float | None:
    """Dense float32 time / this variant's time on the same target frames (the first ones dense computed)."""
    if dense is None:
        return None
    if res["variant"] in DENSE:
        return dense["seconds"] / res["seconds"] if res["targets"] == dense["targets"] else None
    return dense["seconds"] / sum(res["frame_seconds"][: dense["targets"]])


def markdown(results: dict[str, dict[str, Any]], args: argparse.Namespace, machine: dict[str, Any]) -> str:
    dense = results.get("dense")
    lines = [
        "Peak RSS is measured per variant in a fresh process, over the propagation only (VmHWM reset after "
        "the inputs are built); 'RSS before run' = interpreter + torch + inputs; extra = peak - before. "
        "Max abs diff: largest difference of any label of any cell from the float64 dense reference, over "
        "all target frames; cells > 1e-4 counts the (frame, cell) pairs above 1e-4.",
        f"Setting: T={args.frames}, C={args.channels}, grid {args.height}x{args.width}, K={args.labels}, "
        f"context {args.context}, radius {args.radius}, top-{args.topk}, temperature {args.temperature}, "
        f"seed {args.seed}",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, {machine['threads']} threads, "
        f"CUDA {'yes' if machine['cuda'] else 'no'} (runs on CPU)",
        "",
        "| variant | target frames | s/frame (wall) | CPU s/frame | speed-up vs dense fp32 (same frames) "
        "| peak RSS (MB) | RSS before run (MB) | extra (MB) | max abs diff vs dense fp64 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    names = {"dense": "dense reference fp32", "exact": "dense reference fp64", "fp32": "kernel fp32",
             "bf16": "kernel bf16"}
    for name, res in results.items():
        factor = speedup(dense, res)
        speed = "-" if factor is None else f"{factor:.1f}x"
        diff = (
            "-"
            if "max_abs_diff" not in res
            else f"{res['max_abs_diff']:.2e} ({res['cells_over_1e-4']} cells > 1e-4, {res['frames_compared']} frames)"
        )
        lines.append(
            f"| {names[name]} | {res['targets']} | {res['s_per_frame']:.3f} | {res['cpu_s_per_frame']:.3f} "
            f"| {speed} | {res['peak_rss_mb']:.0f} "
            f"| {res['rss_before_mb']:.0f} | {res['peak_rss_mb'] - res['rss_before_mb']:.0f} | {diff} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    passthrough = [a for a in argv if a != "--json" and (args.json is None or a != str(args.json))]
    with tempfile.TemporaryDirectory() as tmp:
        if args.video is not None:
            features = video_features(args)
            torch.save(features, Path(tmp) / "features.pt")
            passthrough += ["--features-file", str(Path(tmp) / "features.pt")]
            args.frames, args.channels, args.height, args.width = features.shape
        results = {v: run_variant(v, passthrough, Path(tmp)) for v in VARIANTS if v in args.variants}
        compare(results)
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
