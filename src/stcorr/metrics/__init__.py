"""Benchmark metrics: DAVIS J&F, VIP mIoU and JHMDB PCK, computed like the reference tools.

The submodules are the reference: :mod:`stcorr.metrics.davis`, :mod:`stcorr.metrics.vip` and
:mod:`stcorr.metrics.jhmdb`. They take arrays only; reading datasets is :mod:`stcorr.datasets`'s
job and scoring result folders is :mod:`stcorr.eval`'s.
"""

from stcorr.metrics import davis, jhmdb, vip
from stcorr.metrics.davis import boundary_f_measure, region_similarity
from stcorr.metrics.jhmdb import decode_heatmaps_topk, draw_gaussian_heatmaps, pck
from stcorr.metrics.vip import confusion_matrix, mean_iou

__all__ = [
    "davis",
    "vip",
    "jhmdb",
    "region_similarity",
    "boundary_f_measure",
    "confusion_matrix",
    "mean_iou",
    "pck",
    "draw_gaussian_heatmaps",
    "decode_heatmaps_topk",
]
