"""Benchmark on an AVX2-only CPU (emulated here): the kernel vs dense, and the demo job before/after.

Most CPUs have AVX2 but no AVX-512 BF16 / AMX, so the kernel's bfloat16 path does not apply and similarities
are float32. On a machine that has them, this script emulates such a CPU by re-running itself with

    ATEN_CPU_CAPABILITY=avx2      PyTorch's own kernels use AVX2 code
    ONEDNN_MAX_CPU_ISA=AVX2       oneDNN (convolutions) uses no AVX-512 / AMX
    MKL_ENABLE_INSTRUCTIONS=AVX2  MKL (float32 matmuls) uses no AVX-512
    STCORR_CPU_BF16=0             stcorr treats the CPU as having no native bfloat16 (float32 similarities)

It is an emulation: the instruction set is restricted, but caches, memory and clock are this machine's.
Everything is measured side by side in one run (the machine may be shared: compare rows, not runs).

1. Kernel vs dense reference (``benchmarks/propagation.py``, each variant in a fresh process) on seeded random
   features at DAVIS scale and on real features (the default model on vtest.avi).
2. The README's demo job (vtest.avi, the embedded mask, the CLI's settings) before and after this change, each
   in a fresh process: before = 8-frame feature batches and the overlay video rendered after the last mask;
   after = features frame by frame (the CLI's CPU default) and the overlay written as masks come. Reports
   frames/s, the longest wait between two progress updates, the time after the last mask, and minor page
   faults per frame (``resource.getrusage``).

    python benchmarks/avx2.py --json benchmarks/results/avx2.json          # about 15 min on 2 busy cores
    python benchmarks/avx2.py --demo-frames 200 --skip-kernel              # the whole demo only
    python benchmarks/avx2.py --native                                     # this CPU as it is
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EMULATION = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "STCORR_CPU_BF16": "0"}
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
VIDEO = ROOT / "data" / "opencv" / "vtest.avi"
MASK = ROOT / "examples" / "data" / "vtest_first_mask.png"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--native", action="store_true", help="do not emulate AVX2: measure this CPU as it is")
    p.add_argument("--video", type=Path, default=VIDEO, help="the demo clip (examples/fetch_opencv_data.sh)")
    p.add_argument("--demo-frames", type=int, default=40, help="frames of the demo job (the README's demo: 200)")
    p.add_argument("--max-side", type=int, default=640, help="demo working size (the CLI's CPU default)")
    p.add_argument("--kernel-frames", type=int, default=22, help="frames of the kernel benchmark (context 20)")
    p.add_argument("--dense-frames", type=int, default=None,
                   help="target frames the dense references compute (default: all, the DAVIS-scale comparison)")
    p.add_argument("--skip-kernel", action="store_true")
    p.add_argument("--skip-demo", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--demo-worker", choices=("before", "after"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def cpu_description() -> dict[str, Any]:
    """CPU model, the flags that matter here (from /proc/cpuinfo), PyTorch's capability and stcorr's dtype."""
    import torch

    from stcorr.propagation.kernel import default_compute_dtype

    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu": model, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "flags": {flag: flag in flags for flag in FLAGS},
        "emulation": {key: os.environ.get(key) for key in EMULATION},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "similarity_dtype": str(default_compute_dtype(torch.device("cpu"))),
    }


def flags_text(cpu: dict[str, Any]) -> str:
    present = ", ".join(flag for flag, on in cpu["flags"].items() if on) or "none of " + ", ".join(FLAGS)
    emulated = all(cpu["emulation"][key] == value for key, value in EMULATION.items())
    mode = (f"emulated AVX2-only (PyTorch capability {cpu['torch_cpu_capability']}, similarities "
            f"{cpu['similarity_dtype']})" if emulated else f"native (PyTorch capability {cpu['torch_cpu_capability']})")
    return f"{cpu['cpu']}, {cpu['cores']} cores, {cpu['threads']} threads; flags: {present}; {mode}"


# ----------------------------------------------------------------------------- kernel vs dense


def kernel_benchmark(args: argparse.Namespace, real: bool, workdir: Path) -> dict[str, Any]:
    out = workdir / ("kernel_real.json" if real else "kernel_random.json")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "propagation.py"), "--frames", str(args.kernel_frames),
           "--variants", "dense", "exact", "fp32", "--json", str(out)]
    if args.dense_frames is not None:
        cmd += ["--dense-frames", str(args.dense_frames)]
    if real:
        cmd += ["--video", str(args.video)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def kernel_rows(name: str, data: dict[str, Any]) -> list[str]:
    """Rows of one feature set; speed-ups on the same target frames (``propagation.speedup``)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from propagation import speedup

    results = data["results"]
    rows = []
    for variant, label in (("dense", "dense reference, fp32"), ("exact", "dense reference, fp64"),
                           ("fp32", "kernel, fp32 similarities")):
        res = results[variant]
        factor = speedup(results["dense"], res)
        speed = "-" if factor is None else f"{factor:.1f}x"
        if variant == "fp32":
            speed = f"**{speed}**"
        diff = ("-" if "max_abs_diff" not in res
                else f"{res['max_abs_diff']:.1e} ({res['cells_over_1e-4']} cells > 1e-4)")
        rows.append(f"| {name} | {label} | {res['s_per_frame']:.3f} | {speed} | {diff} |")
    return rows


# ----------------------------------------------------------------------------- demo job


def demo_worker(args: argparse.Namespace) -> None:
    """The demo job in this (fresh) process; prints one JSON line."""
    import numpy as np

    from stcorr import load_model
    from stcorr.frames import open_frames
    from stcorr.pipelines import load_first_mask, propagate_video_mask, render_overlay_video

    after = args.demo_worker == "after"
    model = load_model(device="cpu")
    source = open_frames(args.video, max_frames=args.demo_frames)
    mask = load_first_mask(MASK, source.original_size)
    stamps: list[tuple[float, int]] = []

    def usage() -> tuple[float, int, float]:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), r.ru_minflt, r.ru_stime

    def progress(_: int) -> None:
        now, faults, _ = usage()
        stamps.append((now, faults))

    overlay = args.out / "overlay.mp4"
    start, faults0, sys0 = usage()
    cpu0 = time.process_time()
    propagate_video_mask(model, args.video, mask, args.out, max_side=args.max_side, max_frames=args.demo_frames,
                         overlay_path=overlay if after else None, progress=progress, batch_size=1 if after else 8)
    if not after:
        render_overlay_video(args.video, args.out / "masks", overlay, max_frames=args.demo_frames)
    end, faults1, sys1 = usage()
    cpu = time.process_time() - cpu0
    times = np.diff([start] + [s[0] for s in stamps])
    faults = np.diff([faults0] + [s[1] for s in stamps])
    print(json.dumps({
        "variant": args.demo_worker, "frames": len(stamps), "seconds": end - start,
        "frames_per_s": len(stamps) / (end - start), "cpu_s_per_frame": cpu / len(stamps),
        "longest_wait_s": float(times.max()),
        "after_last_mask_s": end - stamps[-1][0],
        "faults_per_frame_median": float(np.median(faults[2:])), "faults_per_frame_mean": float(faults[2:].mean()),
        "faults_total": faults1 - faults0, "system_cpu_share": (sys1 - sys0) / max(cpu, 1e-9),
        "size": list(open_frames(args.video, max_side=args.max_side).size),
    }))


def demo_benchmark(args: argparse.Namespace, variant: str, workdir: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--demo-worker", variant, "--video", str(args.video),
           "--demo-frames", str(args.demo_frames), "--max-side", str(args.max_side), "--out", str(workdir / variant)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo {variant} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def demo_rows(results: dict[str, dict[str, Any]]) -> list[str]:
    labels = {"before": "before: 8-frame feature batches, overlay rendered afterwards",
              "after": "after: features frame by frame, overlay written as masks come"}
    return [f"| {labels[name]} | {r['frames']} | {r['frames_per_s']:.3f} | {r['cpu_s_per_frame']:.2f} "
            f"| {r['longest_wait_s']:.1f} "
            f"| {r['after_last_mask_s']:.1f} | {r['faults_per_frame_median']:,.0f} | {r['faults_per_frame_mean']:,.0f} "
            f"| {100 * r['system_cpu_share']:.0f} % |" for name, r in results.items()]


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not args.native and any(os.environ.get(k) != v for k, v in EMULATION.items()):
        os.execve(sys.executable, [sys.executable, __file__, *argv], {**os.environ, **EMULATION})
    if args.demo_worker:
        demo_worker(args)
        return
    if not args.video.is_file():
        raise SystemExit(f"{args.video} not found: run examples/fetch_opencv_data.sh first")
    cpu = cpu_description()
    report: dict[str, Any] = {"machine": cpu, "args": {k: str(v) for k, v in vars(args).items()}}
    lines = [f"Machine: {flags_text(cpu)}.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_kernel:
            kernel = {"random": kernel_benchmark(args, False, Path(tmp)),
                      "real": kernel_benchmark(args, True, Path(tmp))}
            report["kernel"] = kernel
            dense_on = "all" if args.dense_frames is None else f"the first {args.dense_frames}"
            lines += [f"Kernel vs dense ({args.kernel_frames} frames, context 20, radius 12, top-10; dense references "
                      f"on {dense_on} target frames, speed-up and max abs diff over those):", "",
                      "| features | variant | s/frame | speed-up vs dense fp32 | max abs diff vs dense fp64 |",
                      "| --- | --- | --- | --- | --- |"]
            random_args = kernel["random"]["args"]
            real_args = kernel["real"]["args"]
            lines += kernel_rows(f"random {random_args['height']}x{random_args['width']}x{random_args['channels']}",
                                 kernel["random"])
            lines += kernel_rows(f"vtest.avi, default model, {real_args['height']}x{real_args['width']}x"
                                 f"{real_args['channels']}", kernel["real"])
            lines.append("")
        if not args.skip_demo:
            demo = {variant: demo_benchmark(args, variant, Path(tmp)) for variant in ("before", "after")}
            report["demo"] = demo
            size = demo["after"]["size"]
            lines += [f"Demo job (vtest.avi, first {args.demo_frames} frames processed at {size[1]}x{size[0]}, "
                      "masks and overlay written at 768x576, default model; each in a fresh process):", "",
                      "| job | frames | frames/s (end to end) | CPU s/frame (all threads) | longest wait between "
                      "frames (s) | after the last mask (s) | page faults/frame (median) | (mean) | system CPU |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            lines += demo_rows(demo)
    text = "\n".join(lines)
    print(text)
    if args.json:
        report["markdown"] = text
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
