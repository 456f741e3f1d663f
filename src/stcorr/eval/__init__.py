"""Scoring of result folders on DAVIS-2017, VIP and JHMDB (``python -m stcorr.eval --help``)."""

from stcorr.eval.cli import (
    DavisEvaluation,
    JhmdbEvaluation,
    VipEvaluation,
    build_parser,
    evaluate_davis,
    evaluate_jhmdb,
    evaluate_vip,
    main,
)

__all__ = [
    "DavisEvaluation",
    "VipEvaluation",
    "JhmdbEvaluation",
    "evaluate_davis",
    "evaluate_vip",
    "evaluate_jhmdb",
    "build_parser",
    "main",
]
