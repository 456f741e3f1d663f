"""Per frame and object: pixel count, bounding box and reliability of a `stcorr propagate` output folder.

    python examples/describe_masks.py outputs/vtest --frames 0 9 12 18 24 60 100 199

Reads OUT/masks/*.png and OUT/reliability.json (written by `stcorr propagate`); prints one line per frame.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image


def describe(out: Path, frames: list[int]) -> list[str]:
    reliability = json.loads((out / "reliability.json").read_text(encoding="utf-8"))
    names = reliability["frame_names"]
    objects = reliability["objects"]
    lines = []
    for t in frames:
        labels = np.array(Image.open(out / "masks" / f"{names[t]}.png"))
        parts = []
        for i in objects:
            ys, xs = np.nonzero(labels == i)
            value = reliability["reliability"][t].get(str(i), "-")
            where = f" x {xs.min()}-{xs.max()} y {ys.min()}-{ys.max()}" if len(xs) else ""
            parts.append(f"id {i}: {len(xs)} px{where}, reliability {value}")
        lines.append(f"frame {t}: " + " | ".join(parts))
    lines.append(f"first suspect frame: {reliability['first_suspect_frame']}; first suspect frames per object: "
                 + ", ".join(f"{i}: {v[:3]}" for i, v in reliability["suspect_frames"].items()))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the --out folder of `stcorr propagate`")
    parser.add_argument("--frames", type=int, nargs="+", default=[0, 12, 24, 100, 199])
    args = parser.parse_args()
    print("\n".join(describe(args.out, args.frames)))


if __name__ == "__main__":
    main()
