"""The reliability signal on the vtest clip (issue 21's newcomer trial): per frame and object.

    OMP_NUM_THREADS=1 python benchmarks/reliability_vtest.py [--frames 30] [--max-side 640]

Propagates examples/data/vtest_first_mask.png through the first frames of data/opencv/vtest.avi with the
default model in a session, and writes benchmarks/results/reliability_vtest.json: per frame and object the
reliability, its features, the area (original pixels), x-span and mean pixel confidence; plus the
share of the propagation time spent on reliability (timed around the session's ``_rate``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from stcorr import load_model
from stcorr.io.frames import open_frames
from stcorr.io.masks import read_mask
from stcorr.propagation.passes import new_tracker
from stcorr.propagation.session import PropagationSession


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--video", default="data/opencv/vtest.avi")
    parser.add_argument("--mask", default="examples/data/vtest_first_mask.png")
    parser.add_argument("--out", default="benchmarks/results/reliability_vtest.json")
    args = parser.parse_args()
    spent = [0.0]
    original_rate = PropagationSession._rate

    def timed_rate(self, *a, **k):
        start = time.perf_counter()
        try:
            return original_rate(self, *a, **k)
        finally:
            spent[0] += time.perf_counter() - start

    PropagationSession._rate = timed_rate
    model = load_model()
    frames = open_frames(args.video, max_frames=args.frames)
    mask = read_mask(args.mask)
    session = PropagationSession(model, frames, max_side=args.max_side)
    session.add_mask(0, mask)
    start = time.perf_counter()
    rows = []
    features_of = {}
    results = list(session.propagate())
    total = time.perf_counter() - start
    # Features: the same tracker replayed on the results (cheap), to show what drives each value.
    tracker = new_tracker("mask", session._geometry)
    tracker.anchor(results[0].labels, results[0].ids)
    for r in results[1:]:
        features_of[r.t] = tracker.features(r.labels, r.confidence, r.ids)
    for r in results:
        row = {"t": r.t, "objects": {}}
        for i in sorted(r.reliability):
            m = r.labels == i
            x = np.nonzero(m)[1]
            row["objects"][str(i)] = {
                "reliability": round(r.reliability[i], 4),
                "area": int(m.sum()),
                "mean_confidence": round(float(r.confidence[m].mean()), 4) if m.any() else None,
                "x_span": [int(x.min()), int(x.max())] if m.any() else None,
                "features": {k: round(v, 4) for k, v in features_of.get(r.t, {}).get(i, {}).items()},
            }
        rows.append(row)
    report = {"video": args.video, "mask": args.mask, "frames": args.frames, "max_side": args.max_side,
              "working_size": list(session.working_size), "propagation_seconds": round(total, 2),
              "reliability_seconds": round(spent[0], 3), "reliability_share": round(spent[0] / total, 4),
              "cpu": "AMD EPYC (AVX2), 1 thread, shared with other jobs", "per_frame": rows}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"reliability: {spent[0]:.2f} s of {total:.1f} s ({100 * spent[0] / total:.2f} %)")
    for row in rows:
        print(row["t"], {i: (o["reliability"], o["area"], o["mean_confidence"]) for i, o in row["objects"].items()})


if __name__ == "__main__":
    main()
