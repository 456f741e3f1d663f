"""How far a benchmark figure may move with the choice of videos: standard errors and paired bootstrap intervals.

Both work on per-video scores (e.g. J&F per synthetic video). A paired interval resamples videos with
replacement and recomputes the mean difference of two methods *on the same videos*, so it is much narrower than
the two methods' separate errors whenever they succeed and fail on the same videos.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stcorr.errors import InputError

__all__ = ["PairedDifference", "standard_error", "paired_bootstrap"]


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n)); NaN for fewer than 2 values."""
    array = np.asarray([v for v in values if not math.isnan(v)], np.float64)
    if len(array) < 2:
        return math.nan
    return float(array.std(ddof=1) / math.sqrt(len(array)))


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over the common videos, with a percentile bootstrap interval at ``level``."""

    mean: float
    low: float
    high: float
    videos: int
    level: float = 0.95


def paired_bootstrap(
    a: Mapping[str, float], b: Mapping[str, float], *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> PairedDifference:
    """Paired bootstrap of the mean difference ``a - b`` over the videos both score (keys in common).

    Raises:
        InputError: fewer than 2 common videos, or ``level`` outside (0, 1).
    """
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level!r}")
    common = [k for k in a if k in b and not (math.isnan(a[k]) or math.isnan(b[k]))]
    if len(common) < 2:
        raise InputError(f"a paired bootstrap needs at least 2 videos scored by both methods, got {len(common)}")
    diffs = np.asarray([a[k] - b[k] for k in common], np.float64)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), (resamples, len(diffs)))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return PairedDifference(float(diffs.mean()), float(low), float(high), len(common), level)
