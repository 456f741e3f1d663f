"""Write frozen ImageNet EfficientNet-Lite2 models with other fused stages, for the offline benchmark.

    python benchmarks/make_lite_variants.py runs        # -> runs/frozen-lite2-s3, -s5, -s345, -s35

Each folder is a ``save_pretrained`` model (``load_model(folder)``) with the packaged ImageNet weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stcorr.efficientnet import packaged_lite_weights
from stcorr.model import LiteCorrespondenceModel

VARIANTS = ((3,), (5,), (3, 4, 5), (3, 5))


def main(out: Path) -> None:
    weights = packaged_lite_weights("efficientnet-lite2")
    for stages in VARIANTS:
        model = LiteCorrespondenceModel("efficientnet-lite2", stages=stages)
        model.load_state_dict({key: weights[key] for key in model.state_dict()}, strict=True)
        folder = out / f"frozen-lite2-s{''.join(map(str, stages))}"
        model.save_pretrained(folder)
        print(folder)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs"))
