"""Issue 21 part 4: stage-fusion variants of the default model's frozen network on the offline benchmark's real pairs.

Each variant is an encoder module (the embedded model's own EfficientNet-Lite2 blocks, fused as
:func:`reference_pipeline.fuse` says) run through the offline benchmark's pair scoring (PCK of matched grid
points, J&F of a transferred block grid; the DAVIS preset, window widened to the whole frame), so only the
fusion differs between rows.

    OMP_NUM_THREADS=1 python benchmarks/fusion_pairs.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_pipeline as ref  # noqa: E402

from stcorr.eval.offline import OfflineConfig, _EncoderMethod, _score_pair  # noqa: E402
from stcorr.eval.pairs import load_pairs  # noqa: E402
from stcorr.loading import load_encoder  # noqa: E402

VARIANTS = ("norm-up", "up-norm", "up-norm:w0.7", "up-norm:w0.5", "up-concat-norm", "norm-up-renorm")


class FusedStages(nn.Module):
    """An encoder: RGB in [0, 1] -> the fused stage maps of a frozen EfficientNet-Lite (stride 8)."""

    stride = 8

    def __init__(self, network: nn.Module, fusion: str, weight: float) -> None:
        super().__init__()
        self.network, self.fusion, self.weight = network, fusion, weight

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        maps = ref.stage_maps(self.network, self.network.stage_blocks, rgb.cpu())
        grid = (-(-rgb.shape[-2] // 8), -(-rgb.shape[-1] // 8))
        return ref.fuse(maps, grid, self.fusion, weights=[1.0, self.weight])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    network = load_encoder("embedded-lite2-s8", device="cpu")
    config = OfflineConfig()
    pairs, absent = load_pairs(config.pairs, max_side=config.pair_max_side)
    rows = {}
    for variant in args.variants:
        fusion, *rest = variant.split(":")
        weight = float(rest[0][1:]) if rest else 1.0
        method = _EncoderMethod(FusedStages(network, fusion, weight))
        scores = {pair.name: _score_pair(method, pair, config) for pair in pairs}
        rows[variant] = {name: {"PCK": {f"{t:g}px": s.pck[t] for t in config.pck_thresholds}, "J&F": s.jf}
                         for name, s in scores.items()}
        mean_jf = sum(s.jf for s in scores.values()) / len(scores)
        print(variant, {n: round(100 * s.jf, 1) for n, s in scores.items()}, f"mean {100 * mean_jf:.1f}",
              {n: round(s.pck[8.0], 1) for n, s in scores.items()}, flush=True)
    args.json.write_text(json.dumps({"benchmark": "fusion variants on the offline real pairs (issue 21)",
                                     "pair_max_side": config.pair_max_side, "absent": absent, "rows": rows,
                                     "command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv)}, indent=1))


if __name__ == "__main__":
    main()
