"""Benchmark metrics: DAVIS J&F, VIP mIoU, JHMDB PCK and TAP-Vid, computed like the reference tools.

The submodules are the reference: :mod:`stcorr.metrics.davis`, :mod:`stcorr.metrics.vip`,
:mod:`stcorr.metrics.jhmdb` and :mod:`stcorr.metrics.tapvid`. They take arrays only; reading datasets is
:mod:`stcorr.datasets`'s job and scoring result folders is :mod:`stcorr.eval`'s.
"""

from stcorr.metrics import davis, jhmdb, tapvid, vip
from stcorr.metrics.davis import boundary_f_measure, region_similarity
from stcorr.metrics.jhmdb import decode_heatmaps_topk, draw_gaussian_heatmaps, pck
from stcorr.metrics.tapvid import compute_tapvid_metrics
from stcorr.metrics.vip import confusion_matrix, mean_iou

__all__ = [
    "davis",
    "vip",
    "jhmdb",
    "tapvid",
    "compute_tapvid_metrics",
    "region_similarity",
    "boundary_f_measure",
    "confusion_matrix",
    "mean_iou",
    "pck",
    "draw_gaussian_heatmaps",
    "decode_heatmaps_topk",
]
