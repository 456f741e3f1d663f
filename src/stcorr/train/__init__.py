"""Training of stcorr encoders: the losses of stage 1 (spatial, MoCo v2) and stage 2 (temporal).

The loss functions are pure tensor code in :mod:`stcorr.train.losses`, re-exported here, as are the
training entry points: ``python -m stcorr.train`` (:mod:`stcorr.train.cli`), or from Python
``run(stage, build, config, RunOptions(out=...))`` with ``build`` one of :func:`build_spatial`,
:func:`build_temporal`, :func:`build_joint` (bound to their data/weights arguments with ``functools.partial``)
and ``config`` from :func:`resolve_config`.
"""

from stcorr.train.loop import RunOptions, export_run, read_log, run
from stcorr.train.losses import (
    MomentumQueue,
    TemporalLossConfig,
    UncertaintyScore,
    correlation_scores,
    drop_chroma_channel,
    global_distillation_loss,
    info_nce_loss,
    local_affinity,
    local_distillation_loss,
    local_distillation_target,
    reconstruction_loss,
    temporal_loss,
    top_fraction_mask,
    uncertainty_mask,
    uncertainty_scores,
)
from stcorr.train.presets import PRESETS, TrainConfig, resolve_config
from stcorr.train.spatial import build_spatial
from stcorr.train.temporal import build_joint, build_temporal

__all__ = [
    "PRESETS",
    "RunOptions",
    "TrainConfig",
    "build_joint",
    "build_spatial",
    "build_temporal",
    "export_run",
    "read_log",
    "resolve_config",
    "run",
    "MomentumQueue",
    "TemporalLossConfig",
    "UncertaintyScore",
    "correlation_scores",
    "drop_chroma_channel",
    "global_distillation_loss",
    "info_nce_loss",
    "local_affinity",
    "local_distillation_loss",
    "local_distillation_target",
    "reconstruction_loss",
    "temporal_loss",
    "top_fraction_mask",
    "uncertainty_mask",
    "uncertainty_scores",
]
