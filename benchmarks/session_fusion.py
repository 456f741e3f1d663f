"""Benchmark: how a session fuses the two directions between anchors (issue 21).

Semi-synthetic clips (:mod:`stcorr.eval.synthetic`: real photos moved with known motion, exact masks). Each
clip is propagated from its ground-truth mask at frame 0, one way; then the user "corrects at the worst
frame": the ground-truth mask is given at the frame of lowest J&F (then, for a second round, again at the
worst frame of the corrected result). The frames *between* the anchors are scored (J&F, DAVIS
definitions) for the one-way protocol (``directions="forward"``) and for each fusion rule of the
two-way session (:data:`stcorr.propagation.session.FUSION_RULES`), plus all frames after frame 0.

    python benchmarks/session_fusion.py                   # 8 clips (seeds 0-7), 24 frames, 160x224, default model
    python benchmarks/session_fusion.py --first-seed 8 --clips 8 --rounds 1 --rules distance confidence  # held out
    python benchmarks/session_fusion.py --clips 4 --json results.json

Every variant reuses the clip's features (one encoding per clip).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from stcorr import PropagationSession, load_model
from stcorr.eval.sources import skimage_photos
from stcorr.eval.synthetic import make_video
from stcorr.metrics.davis import boundary_f_measure, region_similarity
from stcorr.propagation.session import FUSION_RULES


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def jf(pred: np.ndarray, gt: np.ndarray, objects: list[int]) -> float:
    scores = [(region_similarity(pred == k, gt == k) + boundary_f_measure(pred == k, gt == k)) / 2 for k in objects]
    return float(np.mean(scores))


def run_session(model, video, anchors: list[int], directions: str, fusion: str, features: dict) -> np.ndarray:
    session = PropagationSession(model, video.frames, directions=directions)
    session.fusion = fusion
    session._features.update(features)  # the clip's features, encoded once
    for t in anchors:
        session.add_mask(t, video.masks[t])
    list(session.propagate())
    features.update(session._features)
    return np.stack([session.result(t).labels for t in range(session.num_frames)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--first-seed", type=int, default=0, help="clips use seeds first-seed, first-seed + 1, ...")
    parser.add_argument("--rules", nargs="+", default=list(FUSION_RULES), choices=list(FUSION_RULES))
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, nargs=2, default=(160, 224), metavar=("H", "W"))
    parser.add_argument("--rounds", type=int, default=2, help="corrections, each at the worst frame")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = load_model(device="cpu")
    photos = skimage_photos()
    variants = [("forward", "distance")] + [("both", rule) for rule in args.rules]
    names = ["one-way"] + [f"both/{rule}" for rule in args.rules]
    between = {(r, n): [] for r in range(1, args.rounds + 1) for n in names}
    overall = {(r, n): [] for r in range(1, args.rounds + 1) for n in names}
    started = time.time()
    for seed in range(args.first_seed, args.first_seed + args.clips):
        video = make_video(seed, args.frames, size=tuple(args.size), photos=photos)
        objects = [int(i) for i in np.unique(video.masks[0]) if i not in (0, 255)]
        features: dict = {}
        anchors = [0]
        labels = run_session(model, video, anchors, "forward", "distance", features)
        for round_ in range(1, args.rounds + 1):
            scores = [jf(labels[t], video.masks[t], objects) if t not in anchors else np.inf
                      for t in range(args.frames)]
            anchors = sorted(anchors + [int(np.argmin(scores))])
            inside = [t for t in range(anchors[0] + 1, anchors[-1]) if t not in anchors]
            after = [t for t in range(1, args.frames) if t not in anchors]
            for name, (directions, rule) in zip(names, variants):
                result = run_session(model, video, anchors, directions, rule, features)
                between[round_, name].append(np.mean([jf(result[t], video.masks[t], objects) for t in inside]))
                overall[round_, name].append(np.mean([jf(result[t], video.masks[t], objects) for t in after]))
                if name == "one-way":
                    labels = result  # the next correction goes to the worst frame of the one-way result
            print(f"clip {seed} round {round_} anchors {anchors}: " + ", ".join(
                f"{n} {between[round_, n][-1]:.3f}" for n in names), flush=True)
    print(f"\n{args.clips} clips of {args.frames} frames at {args.size[1]}x{args.size[0]}, default model, "
          f"{time.time() - started:.0f} s; CPU: {cpu_name()}")
    print(f"{'variant':<28}" + "".join(f"round {r}: between / all   " for r in range(1, args.rounds + 1)))
    for name in names:
        print(f"{name:<28}" + "".join(f"{np.mean(between[r, name]):.3f} / {np.mean(overall[r, name]):.3f}        "
                                      for r in range(1, args.rounds + 1)))
    if args.json:
        with open(args.json, "w") as handle:
            table = {f"round {r} {n}": {"between": float(np.mean(between[r, n])), "all": float(np.mean(overall[r, n]))}
                     for (r, n) in between}
            json.dump(table, handle, indent=2)


if __name__ == "__main__":
    main()
