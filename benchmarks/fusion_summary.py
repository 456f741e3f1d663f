"""Summarise :mod:`fusion_ablation` results: J&F (objects pooled), per-video SE and paired bootstrap CIs vs a base row.

Rows of several JSON files of the same split are paired on the videos they have in common.

    python benchmarks/fusion_summary.py benchmarks/results/fusion_ablation_tune.json --base ref:norm-up:bilinear-aa
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stcorr.eval.uncertainty import paired_bootstrap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--base", required=True, help="the row the others are compared with")
    args = parser.parse_args()
    rows = {}
    for path in args.files:
        data = json.loads(path.read_text())
        for name, row in data["rows"].items():
            rows[f"{name} ({data['split']}, x{data['original_size'][0] / data['working_size'][0]:g})"
                 if "original_size" in data else name] = row
    base_key = next(k for k in rows if k.split(" (")[0] == args.base)
    base = rows[base_key]["per_video_J&F"]
    print(f"| Row | videos | J&F (pooled) | per-video mean ± SE | minus {args.base} [95 % CI] |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        per_video = row["per_video_J&F"]
        diff = ""
        if name != base_key and len(set(per_video) & set(base)) >= 2:
            d = paired_bootstrap(per_video, base)
            diff = f"{100 * d.mean:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}] ({d.videos})"
        print(f"| {name} | {len(per_video)} | {100 * row['J&F']:.1f} | {100 * row['mean_per_video_J&F']:.1f} ± "
              f"{100 * row['per_video_SE']:.1f} | {diff} |")


if __name__ == "__main__":
    main()
