"""Optimiser and learning-rate schedule: Adam or SGD, linear warm-up times a cosine (MMCV ``CosineAnnealing``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from stcorr.train.presets import TrainConfig

__all__ = ["WarmupCosine", "build_optimizer", "build_scheduler"]


@dataclass
class WarmupCosine:
    """Learning-rate factor at step ``it``: cosine from 1 to ``min_ratio`` times a linear warm-up."""

    total: int
    warmup: int
    warmup_ratio: float
    min_ratio: float

    def __call__(self, it: int) -> float:
        progress = min(it, self.total) / max(self.total, 1)
        factor = self.min_ratio + 0.5 * (1.0 - self.min_ratio) * (1.0 + math.cos(math.pi * progress))
        if it < self.warmup:
            factor *= 1.0 - (1.0 - it / self.warmup) * (1.0 - self.warmup_ratio)
        return factor


def build_optimizer(parameters: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """Adam (betas 0.9/0.999) or SGD with momentum, as ``config.optimizer``."""
    params = [p for p in parameters if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.sgd_momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step LambdaLR of :class:`WarmupCosine` for ``config``."""
    factor = WarmupCosine(config.iters, config.warmup_iters, config.warmup_ratio, config.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
