"""Training of stcorr encoders: the losses of stage 1 (spatial, MoCo v2) and stage 2 (temporal).

The loss functions are pure tensor code in :mod:`stcorr.train.losses`, re-exported here.
"""

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

__all__ = [
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
