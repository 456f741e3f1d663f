"""How good the app's box prompt is: GrabCut from a box (``stcorr.app.prompts.box_mask``) against exact masks.

Objects and masks come from two sources with exact ground truth (no download):

- the test clip (``tests/app_helpers.py``: flat-coloured shapes over a smooth texture), frames 0 and 6;
- the offline benchmark's semi-synthetic videos (``stcorr.eval.synthetic``: objects cut from real photos
  moving over another photo, with noise and exposure drift; ``tune`` seeds 0..N-1), frames 0 and 20,
  every object with at least 200 visible pixels (objects may be partly occluded);
- its identity sequences (``stcorr.eval.identity``: look-alike walkers cut from one photo that cross or walk
  side by side; ``tune`` seeds 0..N/2-1, 40 frames): objects whose box holds at least 5 % of another object,
  up to 2 per video (the hard case: the same colours inside the box).

For each object the box is its mask's bounding box widened by a margin (0 %, 10 % and 25 % of the box's
side on each side, clipped to the frame: how loosely a user draws it). Per source and margin the table
gives the mean and median IoU with the exact mask, the share of objects with IoU >= 0.8, the worst IoU, how
many boxes GrabCut found nothing in, the IoU of the box itself (the filled rectangle: what the prompt improves on) and the time per box.

    python benchmarks/box_prompt.py --videos 16 --out benchmarks/results/box_prompt.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from app_helpers import shapes_frames  # noqa: E402

from stcorr.app.prompts import box_mask  # noqa: E402
from stcorr.eval.offline import split_seeds  # noqa: E402
from stcorr.eval.synthetic import make_video  # noqa: E402

MARGINS = (0.0, 0.10, 0.25)
MIN_PIXELS = 200


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def _box(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    dx, dy = round(margin * (x1 - x0)), round(margin * (y1 - y0))
    return max(0, x0 - dx), max(0, y0 - dy), min(width, x1 + dx), min(height, y1 + dy)


def _objects(videos: int) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """(frame, exact object mask) pairs per source."""
    sources: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"test clip (shapes)": [], "semi-synthetic videos": []}
    frames, ids = shapes_frames(12, twin_from=3)
    for t in (0, 6):
        for k in np.unique(ids[t])[1:]:
            sources["test clip (shapes)"].append((frames[t], ids[t] == k))
    for seed in split_seeds("tune", videos):
        video = make_video(int(seed), 21)
        for t in (0, 20):
            for k in np.unique(video.masks[t])[1:]:
                mask = video.masks[t] == k
                if mask.sum() >= MIN_PIXELS:
                    sources["semi-synthetic videos"].append((video.frames[t], mask))
    # look-alikes (the identity sequences: walkers cut from the same photo that cross or walk side by side):
    # frames where another object covers at least 5 % of the object's box, up to 2 per video
    from stcorr.eval.identity import identity_videos

    crowded = sources.setdefault("look-alike inside the box", [])
    for video in identity_videos(split_seeds("tune", max(1, videos // 2)), 40, (256, 320)):
        taken = 0
        for t in range(0, len(video.frames), 3):
            for k in np.unique(video.masks[t])[1:]:
                mask = video.masks[t] == k
                if mask.sum() < MIN_PIXELS or taken >= 2:
                    continue
                x0, y0, x1, y1 = _box(mask, 0.0)
                inside = video.masks[t][y0:y1, x0:x1]
                if ((inside != 0) & (inside != k)).mean() >= 0.05:
                    crowded.append((video.frames[t], mask))
                    taken += 1
    return sources




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=16, help="semi-synthetic videos (tune seeds 0..N-1)")
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = parser.parse_args()
    rows = []
    for source, objects in _objects(args.videos).items():
        for margin in MARGINS:
            ious, boxes, seconds, empty = [], [], [], 0
            for frame, mask in objects:
                box = _box(mask, margin)
                filled = np.zeros_like(mask)
                filled[box[1]:box[3], box[0]:box[2]] = True
                started = time.perf_counter()
                found = box_mask(frame, box)
                seconds.append(time.perf_counter() - started)
                ious.append(_iou(found, mask))
                empty += not found.any()
                boxes.append(_iou(filled, mask))
            ious_array = np.array(ious)
            rows.append({"source": source, "margin": margin, "objects": len(objects),
                         "mean_iou": float(ious_array.mean()), "median_iou": float(np.median(ious_array)),
                         "share_iou_0.8": float((ious_array >= 0.8).mean()), "worst_iou": float(ious_array.min()), "empty": empty,
                         "box_iou": float(np.mean(boxes)), "ms_per_box": 1000 * float(np.mean(seconds)),
                         "frame_size": list(objects[0][0].shape[:2])})
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print("| source | margin | objects | mean IoU | median IoU | IoU >= 0.8 | worst IoU | nothing found | box IoU | ms/box |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['source']} ({r['frame_size'][1]}x{r['frame_size'][0]}) | {r['margin']:.0%} | {r['objects']} | "
              f"{r['mean_iou']:.3f} | {r['median_iou']:.3f} | {r['share_iou_0.8']:.0%} | {r['worst_iou']:.3f} | "
              f"{r['empty']} | {r['box_iou']:.3f} | {r['ms_per_box']:.0f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"videos": args.videos, "rows": rows}, indent=1))
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
