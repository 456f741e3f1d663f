"""Feature extraction overhead: stcorr.extract_features vs a raw torchvision forward.

Both run the same stride-8 ResNet (stem max-pool removed, output layer3) on the same frames. The raw
forward gets a ready, normalised float batch; extract_features starts from uint8 frames and includes
everything a user pays for: reading the array, uint8 -> float, RGB -> Lab, batching and L2 normalisation.

    python benchmarks/feature_extraction.py --frames 16 --height 480 --width 854 --arch resnet18
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
import torchvision

from stcorr import CorrespondenceModel
from stcorr.color import normalize_lab
from stcorr.features import extract_features


def raw_torchvision(arch: str) -> torch.nn.Module:
    net = getattr(torchvision.models, arch)(weights=None)
    net.maxpool = torch.nn.Identity()
    return torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3).eval()


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--arch", default="resnet18", choices=("resnet18", "resnet50"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    torch.manual_seed(0)
    frames = np.random.default_rng(0).integers(0, 256, (args.frames, args.height, args.width, 3), dtype=np.uint8)
    model = CorrespondenceModel(arch=args.arch, stride=8).eval()
    raw = raw_torchvision(args.arch)
    raw.load_state_dict(torch.nn.Sequential(
        model.conv1, model.bn1, model.relu, model.pool, model.layer1, model.layer2, model.layer3).state_dict())
    ready = [normalize_lab(torch.from_numpy(frames[i : i + args.batch_size]).permute(0, 3, 1, 2).float() / 255)
             for i in range(0, args.frames, args.batch_size)]

    def run_raw() -> None:
        with torch.inference_mode():
            for batch in ready:
                raw(batch)

    def run_stcorr() -> None:
        extract_features(model, frames, batch_size=args.batch_size, max_side=0)  # the size given

    run_raw(), run_stcorr()  # warm-up
    t_raw = best_time(run_raw, args.repeats)
    t_stcorr = best_time(run_stcorr, args.repeats)
    result = {
        "arch": args.arch, "frames": args.frames, "size": f"{args.height}x{args.width}", "batch_size": args.batch_size,
        "raw_torchvision_s_per_frame": t_raw / args.frames, "extract_features_s_per_frame": t_stcorr / args.frames,
        "ratio": t_stcorr / t_raw, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                    platform.processor()),
    }
    print("| arch | frames | size | raw torchvision s/frame | extract_features s/frame | ratio |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.arch} | {args.frames} | {result['size']} | {result['raw_torchvision_s_per_frame']:.3f} | "
          f"{result['extract_features_s_per_frame']:.3f} | {result['ratio']:.3f} |")
    print(f"machine: {result['cpu']}, {result['threads']} threads, torch {result['torch']}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
