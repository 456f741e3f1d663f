"""Throughput of `stcorr propagate-many` (videos/min), against one `stcorr propagate` process per video.

Generates ``--videos`` mp4 clips (a textured background with a moving square; no footage) of ``--frames``
frames at ``--height`` x ``--width`` and one first mask, then times side by side, in one run:

- ``loop``: ``stcorr propagate`` once per clip (what users script today: imports and model load per video);
- ``many xN``: ``stcorr propagate-many`` with N processes (``torchrun --standalone --nproc_per_node N`` for
  N > 1); every process with ``OMP_NUM_THREADS`` = ``--threads`` (default 1).

    python benchmarks/propagate_many.py --videos 8 --frames 24 --height 240 --width 320 --nproc 1 2 \\
        --out benchmarks/results/propagate_many.json

The embedded model on CPU (``--device``), default propagation options and working size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stcorr.outputs import VideoWriter, write_mask_png


def _clip(path: Path, seed: int, frames: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (size[0] // 16 + 1, size[1] // 16 + 1, 3), dtype=np.uint8)
    background = np.asarray(Image.fromarray(coarse).resize((size[1], size[0]), Image.BILINEAR))
    side = size[0] // 3
    with VideoWriter(path, fps=10, crf=18) as writer:
        for t in range(frames):
            image = background.copy()
            image[side : 2 * side, side + 2 * t : 2 * side + 2 * t] = (250, 240, 30)
            writer.write(image)


def _timed(command: list[str], threads: int) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return time.perf_counter() - start


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    parser.add_argument("--out", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    root = Path(tempfile.mkdtemp(prefix="propagate_many_"))
    size = (args.height, args.width)
    mask = np.zeros(size, np.uint8)
    side = size[0] // 3
    mask[side : 2 * side, side : 2 * side] = 1
    write_mask_png(root / "mask.png", mask)
    rows = ["name,video,mask"]
    for i in range(args.videos):
        _clip(root / f"v{i}.mp4", i, args.frames, size)
        rows.append(f"v{i},v{i}.mp4,mask.png")
    (root / "videos.csv").write_text("\n".join(rows) + "\n")

    stcorr = [sys.executable, "-m", "stcorr"]
    seconds = {"loop": sum(_timed([*stcorr, "propagate", "--video", str(root / f"v{i}.mp4"), "--mask",
                                   str(root / "mask.png"), "--out", str(root / "loop" / f"v{i}"),
                                   "--device", args.device], args.threads) for i in range(args.videos))}
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    for n in args.nproc:
        many = ["propagate-many", "--manifest", str(root / "videos.csv"), "--out", str(root / f"many{n}"),
                "--device", args.device]
        launcher = stcorr if n == 1 else [torchrun, "--standalone", "--nproc_per_node", str(n), "-m", "stcorr"]
        seconds[f"many x{n}"] = _timed([*launcher, *many], args.threads)
    result = {"cpu": _cpu(), "cores": cores, "threads_per_process": args.threads,
              "load_average_1min": os.getloadavg()[0], "videos": args.videos, "frames": args.frames,
              "size": f"{args.width}x{args.height}", "seconds": seconds,
              "videos_per_min": {key: round(args.videos * 60 / value, 2) for key, value in seconds.items()}}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
