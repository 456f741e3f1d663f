"""Issue 21 part 4: the library pipeline against an independent reference, and the ablations that explain the gap.

On the offline benchmark's semi-synthetic videos (exact masks; seeds of the ``tune`` or ``heldout`` split of
:func:`stcorr.eval.offline.split_seeds`), frame 0's mask is propagated and scored with DAVIS J&F over frames
1..T-2 (per video, and objects pooled). Rows ("variants"):

- ``lib:<model>``: ``stcorr.propagate_labels(model, frames, mask)`` with the API's defaults (what a user gets);
- ``ref:<fusion>:<labels>[:w<weight>][:nn]``: :mod:`reference_pipeline` on the default model's own frozen
  network (stages 3 + 5 of its EfficientNet-Lite2), with fusion ``<fusion>``, first-mask-to-grid ``<labels>``,
  the stride-16 stage scaled by ``<weight>``, and ``nn``: the mask resized to the working size with PIL nearest
  first (else taken from the original size). Same context 20, radius 12, top-10, temperature 0.07.

``--scale s`` renders the videos s times larger than the working size 256x320 (the mask then goes through the
working-size path). Every row is scored on the same videos; the JSON holds per-video J&F for paired bootstraps.

    OMP_NUM_THREADS=1 python benchmarks/fusion_ablation.py --split tune --videos 32 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_pipeline as ref  # noqa: E402

import stcorr  # noqa: E402
from stcorr.eval.offline import split_seeds  # noqa: E402
from stcorr.eval.sources import photo_library  # noqa: E402
from stcorr.eval.synthetic import make_video  # noqa: E402
from stcorr.eval.uncertainty import paired_bootstrap, standard_error  # noqa: E402
from stcorr.loading import load_encoder  # noqa: E402
from stcorr.metrics import davis  # noqa: E402

WORKING = (256, 320)
DEFAULT_VARIANTS = (
    "lib:embedded-lite2-s8",
    "ref:norm-up:bilinear-aa", "ref:up-norm:bilinear-aa", "ref:up-concat-norm:bilinear-aa",
    "ref:norm-up-renorm:bilinear-aa", "ref:up-norm:bilinear-aa:w0.7", "ref:up-norm:bilinear-aa:w1.4",
    "ref:up-norm:area", "ref:up-norm:nearest", "ref:up-norm:bilinear", "ref:norm-up:area",
)


def _score(video, predicted: np.ndarray) -> tuple[list[davis.ObjectScores], float]:
    indices = davis.evaluated_frame_indices(len(video.frames))
    scores = davis.score_sequence((video.masks[i] for i in indices), (predicted[i] for i in indices),
                                  davis.count_objects(video.masks[0]), sequence=video.name)
    return scores, davis.summarize(scores).jf_mean


def _parse(variant: str) -> tuple[tuple[str, float], str, bool]:
    """``ref:<fusion>:<labels>[:w<weight>][:nn]`` -> ((fusion, weight), labels, from_original)."""
    parts = variant.split(":")[1:]
    weight = next((float(p[1:]) for p in parts[2:] if p.startswith("w")), 1.0)
    return (parts[0], weight), parts[1], "nn" not in parts[2:]


def _reference(variant: str, maps, links: dict, video, ids, working, original) -> np.ndarray:
    (fusion, weight), labels, from_original = _parse(variant)
    grid = tuple(maps[0].shape[-2:])
    if (fusion, weight) not in links:  # the affinities depend on the features only: shared by label variants
        links[(fusion, weight)] = ref.affinities(ref.fuse(maps, grid, fusion, weights=[1.0, weight]))
    first = ref.labels_to_grid(video.masks[0], ids, working, grid, labels, from_original=from_original)
    return ref.decode(ref.propagate(links[(fusion, weight)], first), ids, working, original)


def _network(name: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The frozen network of a Lite model (its fused stage blocks) or of the Lite0 baseline (its blocks)."""
    encoder = load_encoder(name, device="cpu").float()
    if hasattr(encoder, "stage_blocks"):
        return encoder, tuple(encoder.stage_blocks)
    return encoder.network, tuple(encoder.blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="tune", choices=("tune", "heldout"))
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--scale", type=float, default=1.0, help="original size = working size x scale")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--network", default="embedded-lite2-s8",
                        help="frozen network of the ref rows (a Lite model or efficientnet-lite0)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    original = (round(WORKING[0] * args.scale), round(WORKING[1] * args.scale))
    working = WORKING
    network, blocks = _network(args.network)
    models: dict[str, torch.nn.Module] = {}
    library = photo_library()
    per_video: dict[str, dict[str, float]] = {v: {} for v in args.variants}
    objects: dict[str, list] = {v: [] for v in args.variants}
    seconds = {v: 0.0 for v in args.variants}
    for count, seed in enumerate(split_seeds(args.split, args.videos)):
        video = make_video(seed, args.frames, size=original, photos=library)
        ids = sorted(int(i) for i in np.unique(video.masks[0]))
        maps, links = None, {}
        for variant in args.variants:
            start = time.perf_counter()
            if variant.startswith("lib:"):
                name = variant[4:]
                model = models.setdefault(name, load_encoder(name, device="cpu"))
                size = None if original == working else working
                predicted = stcorr.propagate_labels(model, video.frames, video.masks[0], size=size).labels
            else:
                if maps is None:
                    maps = ref.stage_maps(network, blocks, ref.frames_tensor(video.frames, working))
                predicted = _reference(variant, maps, links, video, ids, working, original)
            seconds[variant] += time.perf_counter() - start
            scores, jf = _score(video, predicted)
            objects[variant] += scores
            per_video[variant][video.name] = jf
        print(f"[{count + 1}/{args.videos}] {video.name}: " + "  ".join(
            f"{v}={100 * per_video[v][video.name]:.1f}" for v in args.variants), flush=True)
        _write(args, original, working, per_video, objects, seconds)


def _write(args, original, working, per_video, objects, seconds) -> None:
    base = args.variants[0]
    rows = {}
    for v in args.variants:
        summary = davis.summarize(objects[v])
        row = {"J&F": summary.jf_mean, "J": summary.j_mean, "F": summary.f_mean,
               "mean_per_video_J&F": float(np.mean(list(per_video[v].values()))),
               "per_video_SE": standard_error(list(per_video[v].values())), "seconds": round(seconds[v], 2),
               "per_video_J&F": per_video[v]}
        if v != base and len(per_video[v]) >= 2:
            diff = paired_bootstrap(per_video[v], per_video[base])
            row[f"minus {base}"] = {"mean": diff.mean, "ci95": [diff.low, diff.high]}
        rows[v] = row
    data = {"benchmark": "fusion-ablation (issue 21 part 4)", "split": args.split, "videos": len(per_video[base]),
            "frames": args.frames, "original_size": original, "working_size": working,
            "network": args.network,
            "options": "context 20, radius 12, top-10, temperature 0.07, API defaults for lib rows",
            "command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv), "torch": torch.__version__, "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(args.json)


if __name__ == "__main__":
    main()
