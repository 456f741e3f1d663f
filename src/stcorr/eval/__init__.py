"""Evaluation on DAVIS-2017, VIP and JHMDB, and the offline benchmark (``python -m stcorr.eval --help``).

* scoring of result folders: :func:`evaluate_davis`, :func:`evaluate_vip`, :func:`evaluate_jhmdb`;
* propagating a model with the paper's presets and writing result folders: :func:`predict_davis`,
  :func:`predict_vip`, :func:`predict_jhmdb` (one video: :func:`propagate_mask`,
  :func:`propagate_keypoints`; presets: :data:`PRESETS`, :func:`preset_for`);
* the benchmark that needs no download: :func:`run_offline`.
"""

from stcorr.eval.cli import build_parser, main
from stcorr.eval.offline import OfflineConfig, OfflineReport, run_offline
from stcorr.eval.predict import (
    model_preset,
    predict_davis,
    predict_jhmdb,
    predict_vip,
    propagate_keypoints,
    propagate_mask,
)
from stcorr.eval.presets import PRESETS, EvalPreset, preset_for
from stcorr.eval.scoring import (
    DavisEvaluation,
    JhmdbEvaluation,
    VipEvaluation,
    evaluate_davis,
    evaluate_jhmdb,
    evaluate_vip,
)
from stcorr.eval.sharding import Shard, shard_from_env

__all__ = [
    "DavisEvaluation",
    "VipEvaluation",
    "JhmdbEvaluation",
    "evaluate_davis",
    "evaluate_vip",
    "evaluate_jhmdb",
    "EvalPreset",
    "PRESETS",
    "preset_for",
    "model_preset",
    "propagate_mask",
    "propagate_keypoints",
    "predict_davis",
    "predict_vip",
    "predict_jhmdb",
    "Shard",
    "shard_from_env",
    "OfflineConfig",
    "OfflineReport",
    "run_offline",
    "build_parser",
    "main",
]
