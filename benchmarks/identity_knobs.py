"""Cheap test-time identity keeping with the existing knobs (issue 21, part 5): does a shorter context (old
frames down-weighted to zero) or a smaller search radius (candidates restricted to a neighbourhood) keep
identity through crossings and newcomers? Default model, DAVIS preset with one knob changed, identity
sequences of the offline benchmark, first pass only (no corrections).

    OMP_NUM_THREADS=1 python benchmarks/identity_knobs.py [--seeds 0 1] [--frames 24] [--synthetic 0 1 2 3 4 5 6 7]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stcorr import load_model
from stcorr.eval.identity import evaluate_identity, identity_videos
from stcorr.eval.presets import preset_for
from stcorr.eval.synthetic import make_video
from stcorr.features import feature_stride
from stcorr.metrics import davis
from stcorr.propagation.api import iter_propagate
from stcorr.propagation.session import PropagationSession

KNOBS = {"paper (context 20, radius 12)": {}, "context 5": {"context": 5}, "context 1": {"context": 1},
         "radius 6": {"radius": 6}}


def synthetic_jf(model, options, seeds, frames) -> float:
    """DAVIS J&F (frames 1..T-2, objects pooled) of the regular synthetic videos under ``options``."""
    scores = []
    for seed in seeds:
        video = make_video(seed, frames, size=(256, 320))
        predicted = [np.where(p.labels == 255, 0, p.labels)
                     for p in iter_propagate(model, video.frames, video.masks[0], options=options)]
        indices = davis.evaluated_frame_indices(frames)
        scores += davis.score_sequence([video.masks[i] for i in indices], [predicted[i] for i in indices],
                                       davis.count_objects(video.masks[0]))
    return round(davis.summarize(scores).jf_mean, 6)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--out", default="benchmarks/results/identity_knobs.json")
    parser.add_argument("--synthetic", type=int, nargs="*", default=[],
                        help="also the regular synthetic videos of these seeds (J&F, the cost of each knob)")
    args = parser.parse_args()
    model = load_model()
    videos = identity_videos(args.seeds, args.frames, (256, 320))
    base = preset_for("davis", feature_stride(model))
    rows = {}
    for name, knobs in KNOBS.items():
        options = base.with_overrides(**knobs).options
        report = evaluate_identity(lambda frames: PropagationSession(model, frames, options=options), videos, 0)
        rows[name] = {k: v for k, v in report.to_json().items() if k != "per_object"}
        if args.synthetic:
            rows[name]["synthetic_J&F"] = synthetic_jf(model, options, args.synthetic, args.frames)
        print(name, json.dumps({"J&F": rows[name]["J&F_after_corrections"], "identity": rows[name]["identity"],
                                "synthetic": rows[name].get("synthetic_J&F")}),
              flush=True)
    Path(args.out).write_text(json.dumps({"seeds": args.seeds, "synthetic_seeds": args.synthetic,
                                          "frames": args.frames, "size": [256, 320],
                                          "cpu": "AMD EPYC (AVX2), shared", "configs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
