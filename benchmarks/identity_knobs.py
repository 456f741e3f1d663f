"""Cheap test-time identity keeping with the existing knobs (issue 21, part 5): does a shorter context (old
frames down-weighted to zero) or a smaller search radius (candidates restricted to a neighbourhood) keep
identity through crossings and newcomers? Default model, DAVIS preset with one knob changed, identity
sequences of the offline benchmark, first pass only (no corrections).

    OMP_NUM_THREADS=1 python benchmarks/identity_knobs.py [--seeds 0 1] [--frames 24]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stcorr import load_model
from stcorr.eval.identity import evaluate_identity, identity_videos
from stcorr.eval.presets import preset_for
from stcorr.features import feature_stride
from stcorr.propagation.session import PropagationSession

KNOBS = {"paper (context 20, radius 12)": {}, "context 5": {"context": 5}, "context 1": {"context": 1},
         "radius 6": {"radius": 6}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--out", default="benchmarks/results/identity_knobs.json")
    args = parser.parse_args()
    model = load_model()
    videos = identity_videos(args.seeds, args.frames, (256, 320))
    base = preset_for("davis", feature_stride(model))
    rows = {}
    for name, knobs in KNOBS.items():
        options = base.with_overrides(**knobs).options
        report = evaluate_identity(lambda frames: PropagationSession(model, frames, options=options), videos, 0)
        rows[name] = {k: v for k, v in report.to_json().items() if k != "per_object"}
        print(name, json.dumps({"J&F": rows[name]["J&F_after_corrections"], "identity": rows[name]["identity"]}),
              flush=True)
    Path(args.out).write_text(json.dumps({"seeds": args.seeds, "frames": args.frames, "size": [256, 320],
                                          "cpu": "AMD EPYC (AVX2), shared", "configs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
