"""Feature-extraction time per frame of every learned model, side by side in one run.

Each model runs :func:`stcorr.extract_features` on the same uint8 frames (what a user pays: uint8 -> float,
preprocessing, the network, L2 normalisation). The models take turns (round-robin over ``--repeats``
rounds, best time kept), so load from other processes hits them alike; the ratio column is relative to
``--reference``.

    python benchmarks/model_features.py --json benchmarks/results/model_features.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from stcorr import extract_features
from stcorr.loading import load_encoder

DEFAULT_MODELS = ("random-r18", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "embedded-r18-s8",
                  "embedded-lite2-s8")
_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_description() -> str:
    """CPU model name and the vector flags that decide the fast paths."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return f"{name} ({' '.join(flag for flag in _FLAGS if flag in flags) or 'no AVX2'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--reference", default="embedded-r18-s8")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    frames = np.random.default_rng(0).integers(0, 256, (args.frames, args.height, args.width, 3), dtype=np.uint8)
    models = {name: load_encoder(name, device="cpu") for name in args.models}
    best = {name: float("inf") for name in models}
    for name, model in models.items():  # warm-up
        extract_features(model, frames[:1], batch_size=1, max_side=0)
    for _ in range(args.repeats):
        for name, model in models.items():
            start = time.perf_counter()
            extract_features(model, frames, batch_size=args.batch_size, max_side=0)
            best[name] = min(best[name], (time.perf_counter() - start) / args.frames)
    reference = best.get(args.reference)
    rows = [
        {"model": name, "s_per_frame": seconds, "ratio": seconds / reference if reference else None,
         "params": sum(p.numel() for p in model.parameters()), "channels": int(getattr(model, "feature_dim", 0))}
        for (name, model), seconds in zip(models.items(), best.values())
    ]
    machine = f"{cpu_description()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"| model | channels | parameters | s/frame at {args.height}x{args.width} | vs {args.reference} |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
        print(f"| {row['model']} | {row['channels']} | {row['params'] / 1e6:.2f} M | {row['s_per_frame']:.3f} | {ratio} |")
    print(f"machine: {machine}; {args.frames} frames, batch {args.batch_size}, best of {args.repeats} round-robin rounds")
    if args.json:
        result = {"rows": rows, "machine": machine, "size": [args.height, args.width], "frames": args.frames,
                  "batch_size": args.batch_size, "repeats": args.repeats, "reference": args.reference}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
