"""Training losses of Spatial-then-Temporal: stage 1 (MoCo v2 InfoNCE) and stage 2 (temporal).

Pure tensor functions: no data loading, no model building. Everything follows the devices of its inputs.

Conventions:

* features are raw ``(B, C, H, W)`` maps (no L2 normalisation, as in official training);
* an affinity is a dense ``(B, HW_t, HW_r)`` tensor whose row ``i`` (a target / query position, raster
  order) is a distribution over reference positions ``j``; ``t`` = target frame, ``r`` = reference frame.

Stage-2 total with the constants of the official ``configs/train/train.py`` (:class:`TemporalLossConfig`)::

    L = L_rec^0 + L_rec^1 + 1000 * L_local_distill + 50 * L_global_distill

Deviations from the official code (all deliberate, see each function):

* the uncertainty mask ranks positions *globally per sample* (the released code thresholds per row, a bug)
  and keeps exactly ``int(HW * keep_ratio)`` positions with deterministic tie breaking (the dev-repo
  rule ``score > sorted[int(HW * T) - 1]`` keeps one position fewer and can drop tied positions);
* the default ``"official"`` score keeps the most *peaked* (confident) positions although the paper's
  Figure 2 caption speaks of "high uncertainty" regions; Shannon entropy (keeps the most uncertain) is
  offered as ``score="shannon"``;
* the window mask of the local affinity is applied as two separable (row, column) masks instead of a
  dense ``HW x HW`` mask allocated up front; the mmcv correlation is replaced by pure PyTorch;
* the released ``T = -1`` soft weighting and the unused level-0 correlation are not ported.

Stage 1 has no official code: :func:`info_nce_loss` and :class:`MomentumQueue` follow MoCo v2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from stcorr.errors import InputError

__all__ = [
    "UncertaintyScore",
    "local_affinity",
    "reconstruction_loss",
    "drop_chroma_channel",
    "correlation_scores",
    "uncertainty_scores",
    "top_fraction_mask",
    "uncertainty_mask",
    "local_distillation_target",
    "local_distillation_loss",
    "global_distillation_loss",
    "cosine_kl_distillation_loss",
    "GLOBAL_LOSSES",
    "info_nce_loss",
    "MomentumQueue",
    "TemporalLossConfig",
    "temporal_loss",
]

UncertaintyScore = Literal["official", "shannon"]
GlobalLoss = Literal["mse", "cosine-kl"]
GLOBAL_LOSSES = ("mse", "cosine-kl")

DROPOUT_SCALE = 1.5  # 3 / (3 - 1): official ``dropout2d_lab`` rescales after zeroing 1 of 3 channels
_LOG_EPS = 1e-12  # official score: sum_d -log(q_d + 1e-12)
_MASKED_MEAN_EPS = 1e-12  # official ``mask_reduce_loss`` denominator guard


# --------------------------------------------------------------------------------------------- checks


def _check_features(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{name}: expected a float feature map of shape (B, C, H, W), got {got}")
    return x


def _check_pair(name_t: str, f_t: object, name_r: str, f_r: object) -> None:
    a, b = _check_features(name_t, f_t), _check_features(name_r, f_r)
    if a.shape != b.shape:
        raise InputError(f"{name_t} and {name_r} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _check_affinity(name: str, affinity: object, batch: int, rows: int, cols: int) -> torch.Tensor:
    expected = (batch, rows, cols)
    if not isinstance(affinity, torch.Tensor) or tuple(affinity.shape) != expected:
        got = tuple(affinity.shape) if isinstance(affinity, torch.Tensor) else type(affinity).__name__
        raise InputError(f"{name}: expected an affinity of shape {expected}, got {got}")
    return affinity


# ------------------------------------------------------------------------------------------ affinity


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Upcast half / bfloat16 to float32; keep float32 and float64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _dot_logits(f_t: torch.Tensor, f_r: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, C, H, W) x (B, C, H, W) -> (B, HW_t, HW_r) scaled dot products."""
    return torch.bmm(f_t.flatten(2).transpose(1, 2), f_r.flatten(2)) * scale


def _mask_outside_window_(logits: torch.Tensor, height: int, width: int, radius: int) -> torch.Tensor:
    """Set logits of reference positions outside the square window ``|dy|, |dx| <= radius`` to -inf.

    The window is separable, so two broadcast masks of shape (H, H) and (W, W) suffice; no dense
    HW x HW mask is ever materialised.
    """
    grid = logits.view(logits.shape[0], height, width, height, width)
    ys = torch.arange(height, device=logits.device)
    xs = torch.arange(width, device=logits.device)
    far_y = (ys[:, None] - ys[None, :]).abs() > radius
    far_x = (xs[:, None] - xs[None, :]).abs() > radius
    grid.masked_fill_(far_y[:, None, :, None], float("-inf"))
    grid.masked_fill_(far_x[None, :, None, :], float("-inf"))
    return logits


def local_affinity(f_t: torch.Tensor, f_r: torch.Tensor, radius: int, *, scale: float | None = None) -> torch.Tensor:
    """Windowed softmax affinity between target and reference features of one pyramid level.

    ``A[b, i, j] = softmax_j(<f_t(i), f_r(j)> * scale)`` over reference positions ``j`` inside the square
    window ``|y_j - y_i| <= radius and |x_j - x_i| <= radius``; entries outside the window are exactly 0.

    Args:
        f_t, f_r: raw features (B, C, H, W) of the target and reference frames (same shape).
        radius: window half-size in feature cells (official: 12 at stride 4, 6 at stride 8).
        scale: logit multiplier; default ``1 / sqrt(C)`` (official, temperature 1, no L2 norm).

    Returns:
        Dense affinity (B, HW, HW), rows sum to 1. The window masks are (H, H) and (W, W) broadcasts.
    """
    _check_pair("f_t", f_t, "f_r", f_r)
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise InputError(f"radius must be a non-negative int, got {radius!r}")
    height, width = f_t.shape[-2:]
    logits = _dot_logits(f_t, f_r, f_t.shape[1] ** -0.5 if scale is None else scale)
    return torch.softmax(_mask_outside_window_(logits, height, width, radius), dim=-1)


# ------------------------------------------------------------------------------------ reconstruction


def reconstruction_loss(
    affinity: torch.Tensor,
    ref_channel: torch.Tensor,
    target_channel: torch.Tensor,
    stride: int,
    *,
    weight: float = 20.0,
) -> torch.Tensor:
    """Smooth-L1 loss of reconstructing the target frame's channel(s) from the reference frame's.

    The reference (B, K, H, W) is subsampled by strided slicing ``[..., ::stride, ::stride]`` (the top-left
    pixel of each cell, as the official code; no pooling), mixed by the affinity rows, bilinearly upsampled
    (align_corners=False) to (H, W) and compared with the full-resolution target by Smooth-L1 (beta=1) on
    values multiplied by ``weight`` (official ``weight=20``), averaged over all elements.

    Args:
        affinity: (B, hw, hw) with (h, w) = the subsampled grid, e.g. from :func:`local_affinity`.
        ref_channel, target_channel: (B, K, H, W) normalised Lab channel(s); officially the dropped one.
        stride: feature stride of the affinity's level (4 or 8 officially).
        weight: value multiplier inside the Smooth-L1 (official ``Framework.weight = 20``).

    Returns:
        Scalar loss.
    """
    _check_pair("ref_channel", ref_channel, "target_channel", target_channel)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise InputError(f"stride must be a positive int, got {stride!r}")
    batch, channels, height, width = ref_channel.shape
    values = ref_channel[..., ::stride, ::stride]
    h, w = values.shape[-2:]
    _check_affinity(f"affinity for a {height}x{width} frame at stride {stride}", affinity, batch, h * w, h * w)
    mixed = torch.bmm(affinity, values.flatten(2).transpose(1, 2).to(affinity.dtype))
    prediction = mixed.transpose(1, 2).reshape(batch, channels, h, w)
    upsampled = F.interpolate(prediction, size=(height, width), mode="bilinear", align_corners=False)
    return F.smooth_l1_loss(upsampled * weight, target_channel.to(upsampled.dtype) * weight, beta=1.0)


def drop_chroma_channel(lab: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """Zero one chroma channel (a or b, never L) of normalised Lab input, then scale everything by 1.5.

    One draw per call: the same channel is dropped for every sample and frame of the batch, and the whole
    tensor (L and the kept chroma too) is multiplied by 3 / (3 - 1) = 1.5, as the official
    ``dropout2d_lab``. The input is not modified.

    Args:
        lab: normalised Lab, shape (..., 3, H, W).
        generator: optional RNG; its device is used for the draw.

    Returns:
        ``(dropped_input, dropped_index)`` with ``dropped_index`` in {1, 2}: the channel to reconstruct
        (take it from the un-dropped frames).
    """
    if not isinstance(lab, torch.Tensor) or lab.dim() < 3 or lab.shape[-3] != 3 or not lab.is_floating_point():
        got = f"{tuple(lab.shape)} {lab.dtype}" if isinstance(lab, torch.Tensor) else type(lab).__name__
        raise InputError(f"expected float normalised Lab of shape (..., 3, H, W), got {got}")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    index = int(torch.randint(1, 3, (1,), generator=generator, device=draw_device).item())
    keep = torch.full((3, 1, 1), DROPOUT_SCALE, dtype=lab.dtype, device=lab.device)
    keep[index] = 0
    return lab * keep, index


# -------------------------------------------------------------------------------- uncertainty mask


def _displacement_index(height: int, width: int, d: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat reference index (HW, (2d+1)^2) of each (query, displacement), dy-major, and its in-image mask."""
    shifts = torch.arange(-d, d + 1, device=device)
    ref_y = torch.arange(height, device=device).view(height, 1, 1, 1) + shifts.view(1, 1, -1, 1)
    ref_x = torch.arange(width, device=device).view(1, width, 1, 1) + shifts.view(1, 1, 1, -1)
    inside = (ref_y >= 0) & (ref_y < height) & (ref_x >= 0) & (ref_x < width)
    index = ref_y.clamp(0, height - 1) * width + ref_x.clamp(0, width - 1)
    return index.reshape(height * width, -1), inside.reshape(height * width, -1)


def correlation_scores(f_t: torch.Tensor, f_r: torch.Tensor, max_displacement: int = 6) -> torch.Tensor:
    """Raw local correlations, a pure-PyTorch equivalent of ``mmcv.ops.Correlation`` (kernel 1, stride 1).

    ``out[b, k, y, x] = sum_c f_t[b, c, y, x] * f_r[b, c, y + dy, x + dx]`` with
    ``k = (dy + d) * (2d + 1) + (dx + d)``, ``|dy|, |dx| <= d``; displacements that leave the image give 0
    (zero padding), and there is no normalisation by C, as in mmcv. Gathered from the dense (B, HW, HW)
    dot products: one matrix product, memory like :func:`local_affinity` at the same level.

    Returns:
        (B, (2d + 1)^2, H, W); 169 displacements for the official ``d = 6``.
    """
    _check_pair("f_t", f_t, "f_r", f_r)
    if isinstance(max_displacement, bool) or not isinstance(max_displacement, int) or max_displacement < 0:
        raise InputError(f"max_displacement must be a non-negative int, got {max_displacement!r}")
    batch, _, height, width = f_t.shape
    index, inside = _displacement_index(height, width, max_displacement, f_t.device)
    dots = _dot_logits(f_t, f_r, 1.0).gather(2, index.expand(batch, -1, -1))
    return dots.masked_fill(~inside, 0.0).transpose(1, 2).reshape(batch, -1, height, width)


def uncertainty_scores(correlation: torch.Tensor, score: UncertaintyScore = "official") -> torch.Tensor:
    """Per-position score of a (B, D, H, W) correlation volume from the softmax ``q`` over its D displacements.

    * ``"official"``: ``sum_d -log(q_d + 1e-12)`` (the official code; not an entropy). It is *smallest* for
      a uniform ``q`` (D log D) and grows as ``q`` becomes peaked, so a high score means a *confident*
      (low-uncertainty) position.
    * ``"shannon"``: ``-sum_d q_d log q_d``, the Shannon entropy; a high score means an *uncertain* position
      (the wording of the paper's Figure 2 caption).

    Computed in float32 at least. Returns (B, H, W).
    """
    if not isinstance(correlation, torch.Tensor) or correlation.dim() != 4:
        got = tuple(correlation.shape) if isinstance(correlation, torch.Tensor) else type(correlation).__name__
        raise InputError(f"correlation: expected shape (B, D, H, W), got {got}")
    # Displacements last and contiguous: every position is reduced in the same order, so positions with
    # identical distributions get bit-identical scores (exact ties, broken by top_fraction_mask).
    logits = _at_least_float32(correlation.movedim(1, -1).contiguous())
    if score == "official":
        return -(torch.softmax(logits, dim=-1) + _LOG_EPS).log().sum(-1)
    if score == "shannon":
        log_q = torch.log_softmax(logits, dim=-1)
        return -(log_q.exp() * log_q).sum(-1)
    raise InputError(f"score must be 'official' or 'shannon', got {score!r}")


def top_fraction_mask(scores: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """Boolean mask keeping the ``int(N * keep_ratio)`` highest scores of each sample (N = positions).

    Ranking is global per sample (all positions flattened). Ties are broken deterministically in favour of
    the earlier position in raster order (stable sort), so exactly ``int(N * keep_ratio)`` positions are
    kept. Without ties at the boundary this equals ``scores > sorted_desc[k]`` with ``k = int(N * ratio)``.
    Deviation: the dev repo thresholds at ``sorted_desc[k - 1]`` with strict ``>``, keeping ``k - 1``
    positions (715 of 1024) and dropping every tied position at the threshold (possibly all of them).

    Args:
        scores: (B, ...) scores; any trailing shape.
        keep_ratio: fraction in (0, 1] (official ``T = 0.7``).

    Returns:
        Bool tensor of the same shape as ``scores``.
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() < 2:
        raise InputError("scores: expected a tensor of shape (B, ...) with at least 2 dimensions")
    if not 0.0 < keep_ratio <= 1.0:
        raise InputError(f"keep_ratio must be in (0, 1], got {keep_ratio!r}")
    flat = scores.flatten(1)
    count = int(flat.shape[1] * keep_ratio)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :count]
    mask = torch.zeros(flat.shape, dtype=torch.bool, device=flat.device).scatter_(1, order, True)
    return mask.view(scores.shape)


def uncertainty_mask(
    f_t: torch.Tensor,
    f_r: torch.Tensor,
    *,
    max_displacement: int = 6,
    keep_ratio: float = 0.7,
    score: UncertaintyScore = "official",
) -> torch.Tensor:
    """Query positions selected for local distillation, from the coarse level's raw features.

    :func:`correlation_scores` (official ``d = 6``, 169 displacements) -> :func:`uncertainty_scores` ->
    :func:`top_fraction_mask` (official ratio 0.7). Both scores keep their *highest* values: with
    ``"official"`` (default, the official code's score) that is the 70% most peaked (confident)
    positions; with ``"shannon"`` the 70% most uncertain ones, as the paper's caption words it.
    Computed without gradient.

    Returns:
        Bool mask (B, H, W).
    """
    with torch.no_grad():
        return top_fraction_mask(uncertainty_scores(correlation_scores(f_t, f_r, max_displacement), score), keep_ratio)


# ---------------------------------------------------------------------------------- distillation


def local_distillation_target(
    fine_affinity: torch.Tensor,
    fine_hw: tuple[int, int],
    coarse_hw: tuple[int, int],
    *,
    normalize: bool = False,
) -> torch.Tensor:
    """Downsample a fine-level affinity to the next coarser level (2x2 average over query *and* reference).

    ``P[I, J] = (1/16) * sum_{i in blk(I)} sum_{j in blk(J)} A[i, j]`` with ``blk`` the 2x2 fine cells under
    a coarse cell. As in the official code, average (not sum) pooling over the reference axis leaves each
    row summing to **0.25** (``normalize=False``, default); ``normalize=True`` multiplies by 4 so rows sum
    to 1 like the student's affinity. With fine radius ``2R`` (12) the target is zero outside the coarse
    window ``R`` (6). Returned detached.

    Args:
        fine_affinity: (B, Hf*Wf, Hf*Wf).
        fine_hw: (Hf, Wf), must be exactly 2x ``coarse_hw``.
        coarse_hw: (Hc, Wc).

    Returns:
        (B, Hc*Wc, Hc*Wc).
    """
    (hf, wf), (hc, wc) = tuple(fine_hw), tuple(coarse_hw)
    if (hf, wf) != (2 * hc, 2 * wc):
        raise InputError(f"fine grid {hf}x{wf} must be exactly twice the coarse grid {hc}x{wc}")
    if not isinstance(fine_affinity, torch.Tensor) or fine_affinity.dim() != 3:
        raise InputError("fine_affinity: expected a (B, HW, HW) tensor")
    batch = fine_affinity.shape[0]
    _check_affinity("fine_affinity", fine_affinity, batch, hf * wf, hf * wf)
    blocks = fine_affinity.detach().reshape(batch, hc, 2, wc, 2, hc, 2, wc, 2)
    target = blocks.mean(dim=(2, 4, 6, 8)).reshape(batch, hc * wc, hc * wc)
    return target * 4.0 if normalize else target


def local_distillation_loss(
    coarse_affinity: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Masked MSE between the coarse affinity and the (detached) downsampled fine affinity.

    ``sum_{b,I,J} M[b,I] (A[b,I,J] - P[b,I,J])^2 / (sum_{b,I} M[b,I] * HW_r + 1e-12)``: the mean over the
    selected query rows x all reference columns (official ``mask_reduce_loss``; the official weight of
    this term is 1000). An empty mask gives 0.

    Args:
        coarse_affinity: (B, N, M) student affinity, e.g. :func:`local_affinity` at the coarse level.
        target: (B, N, M) from :func:`local_distillation_target`; gradients never flow into it.
        mask: (B, N) or (B, H, W) bool or float row weights, e.g. :func:`uncertainty_mask`; None = all rows.
    """
    if not isinstance(coarse_affinity, torch.Tensor) or coarse_affinity.dim() != 3:
        raise InputError("coarse_affinity: expected a (B, N, M) tensor")
    batch, rows, cols = coarse_affinity.shape
    _check_affinity("target", target, batch, rows, cols)
    student = _at_least_float32(coarse_affinity)
    squared = (student - target.detach().to(student.dtype)).pow(2).sum(-1)
    if mask is None:
        weights = torch.ones_like(squared)
    elif isinstance(mask, torch.Tensor) and mask.shape[0] == batch and mask[0].numel() == rows:
        weights = mask.detach().reshape(batch, rows).to(squared.dtype)
    else:
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise InputError(f"mask: expected {batch} x {rows} row weights, got {got}")
    return (squared * weights).sum() / (weights.sum() * cols + _MASKED_MEAN_EPS)


def _teacher_affinity(teacher_t: torch.Tensor, teacher_r: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(<g_t, g_r> / temperature) on raw features, at least float32, no gradient."""
    with torch.no_grad():
        g_t, g_r = _at_least_float32(teacher_t.detach()), _at_least_float32(teacher_r.detach())
        return torch.softmax(_dot_logits(g_t, g_r, 1.0 / temperature), -1)


def _check_global_inputs(
    student_t: torch.Tensor, student_r: torch.Tensor, teacher_t: torch.Tensor, teacher_r: torch.Tensor, temperature: float
) -> None:
    _check_pair("student_t", student_t, "student_r", student_r)
    _check_pair("teacher_t", teacher_t, "teacher_r", teacher_r)
    if student_t.shape[0] != teacher_t.shape[0] or student_t.shape[-2:] != teacher_t.shape[-2:]:
        raise InputError(
            f"student {tuple(student_t.shape)} and teacher {tuple(teacher_t.shape)} features need the same batch "
            "size and spatial grid; resize the teacher's features first, e.g. "
            "torch.nn.functional.interpolate(teacher, size=student.shape[-2:], mode='bilinear', align_corners=False)"
        )
    if temperature <= 0:
        raise InputError(f"temperature must be positive, got {temperature!r}")


def global_distillation_loss(
    student_t: torch.Tensor,
    student_r: torch.Tensor,
    teacher_t: torch.Tensor,
    teacher_r: torch.Tensor,
    *,
    teacher_temperature: float = 0.07,
) -> torch.Tensor:
    """MSE between the student's and the frozen teacher's full (unwindowed) affinities.

    Student: ``softmax_j(<f_t(i), f_r(j)> / sqrt(C_s))``; teacher: ``softmax_j(<g_t(i), g_r(j)> / 0.07)`` on
    raw, un-normalised features (official ``temperature_t``; near one-hot), computed in at least float32
    without gradient. Mean over B x HW x HW (official weight 50). Only affinities are compared, so channel
    counts may differ (e.g. R18 student, R50 teacher); spatial grids must match.

    Args:
        student_t, student_r: (B, C_s, H, W) student top-level features.
        teacher_t, teacher_r: (B, C_T, H, W) teacher features of the same frames.
        teacher_temperature: teacher softmax temperature.
    """
    _check_global_inputs(student_t, student_r, teacher_t, teacher_r, teacher_temperature)
    student = _at_least_float32(torch.softmax(_dot_logits(student_t, student_r, student_t.shape[1] ** -0.5), -1))
    teacher = _teacher_affinity(teacher_t, teacher_r, teacher_temperature)
    return F.mse_loss(student, teacher.to(student.dtype))


def cosine_kl_distillation_loss(
    student_t: torch.Tensor,
    student_r: torch.Tensor,
    teacher_t: torch.Tensor,
    teacher_r: torch.Tensor,
    *,
    temperature: float = 0.07,
) -> torch.Tensor:
    """KL(teacher || student) between the rows of both models' full cosine affinities (not in the paper).

    Both affinities are ``softmax_j(cos(f_t(i), f_r(j)) / temperature)`` on L2-normalised features: exactly
    the affinity label propagation uses at inference (temperature 0.07), so the student is trained on the
    quantity it is used for. Compared with the official MSE on near-one-hot rows
    (:func:`global_distillation_loss`), whose gradients vanish once rows disagree, the KL keeps a useful
    gradient everywhere. Mean over B x HW_t rows (nats). Channel counts may differ; grids must match.

    Args:
        student_t, student_r: (B, C_s, H, W) student features of the target and reference frames.
        teacher_t, teacher_r: (B, C_T, H, W) frozen teacher features of the same frames.
        temperature: softmax temperature of both affinities.
    """
    _check_global_inputs(student_t, student_r, teacher_t, teacher_r, temperature)
    s_t, s_r = (F.normalize(_at_least_float32(x), dim=1) for x in (student_t, student_r))
    log_student = torch.log_softmax(_dot_logits(s_t, s_r, 1.0 / temperature), -1)
    with torch.no_grad():
        g_t, g_r = (F.normalize(_at_least_float32(x.detach()), dim=1) for x in (teacher_t, teacher_r))
        teacher = _teacher_affinity(g_t, g_r, temperature)
    rows = log_student.shape[0] * log_student.shape[1]
    return F.kl_div(log_student, teacher.to(log_student.dtype), reduction="sum") / rows


# ------------------------------------------------------------------------------- stage 1 (MoCo v2)


def info_nce_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo v2 InfoNCE: cross-entropy of ``[q.k, q.queue_1, ..., q.queue_K] / temperature`` with label 0.

    ``q``, ``k`` and the queue entries are L2-normalised here (a no-op for the already-normalised embeddings
    MoCo produces), so logits are cosine similarities. Keys and queue are detached: gradients reach ``q``
    only. Temperature 0.2 is the MoCo v2 default (stage 1 has no official code; spec section 2).

    Args:
        q: (N, D) query embeddings.
        k: (N, D) positive key embeddings (momentum encoder).
        queue: (K, D) negative keys, one per row (note: MoCo's own buffer is stored as (D, K)).
    """
    if not (isinstance(q, torch.Tensor) and q.dim() == 2 and isinstance(k, torch.Tensor) and k.shape == q.shape):
        raise InputError("q and k must both be (N, D) tensors of the same shape")
    if not isinstance(queue, torch.Tensor) or queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise InputError(f"queue must be (K, {q.shape[1]}), got {getattr(queue, 'shape', type(queue).__name__)}")
    if temperature <= 0:
        raise InputError(f"temperature must be positive, got {temperature!r}")
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    negatives = F.normalize(queue.detach().to(q.dtype), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ negatives.T], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


class MomentumQueue(nn.Module):
    """Fixed-size FIFO of negative keys for :func:`info_nce_loss` (MoCo v2 uses 65536 x 128).

    Starts with random unit vectors (as MoCo). :meth:`enqueue` overwrites the oldest entries, so the size
    never changes. State lives in buffers (``keys``, ``pointer``): it moves with ``.to()`` and is saved in
    ``state_dict``.
    """

    keys: torch.Tensor
    pointer: torch.Tensor

    def __init__(self, size: int, dim: int, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise InputError(f"size and dim must be positive, got size={size}, dim={dim}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim, generator=generator), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, new_keys: torch.Tensor) -> None:
        """Write (N, D) keys (detached) in place of the N oldest entries, wrapping around the end."""
        size, dim = self.keys.shape
        if not isinstance(new_keys, torch.Tensor) or new_keys.dim() != 2 or new_keys.shape[1] != dim:
            raise InputError(f"keys must be (N, {dim}), got {getattr(new_keys, 'shape', type(new_keys).__name__)}")
        if new_keys.shape[0] > size:
            raise InputError(f"cannot enqueue {new_keys.shape[0]} keys into a queue of size {size}")
        slots = (self.pointer + torch.arange(new_keys.shape[0], device=self.keys.device)) % size
        self.keys[slots] = new_keys.detach().to(self.keys)
        self.pointer.copy_((self.pointer + new_keys.shape[0]) % size)


# --------------------------------------------------------------------------------- stage 2 total


@dataclass(frozen=True)
class TemporalLossConfig:
    """Constants of the stage-2 loss (official ``configs/train/train.py`` and ``Framework`` defaults).

    Attributes:
        radii: local window radius per local level, fine to coarse (12 at stride 4, 6 at stride 8).
        strides: feature stride per local level (4, 8).
        reconstruction_scale: value multiplier inside the Smooth-L1 (``weight=20``).
        reconstruction_weight: weight of each level's reconstruction term (1).
        local_distillation_weight: weight of the fine -> coarse affinity distillation (1000).
        global_distillation_weight: weight of the teacher -> student global distillation (50).
        keep_ratio: fraction of coarse query positions distilled (``T = 0.7``).
        max_displacement: correlation radius of the uncertainty score (6, i.e. 169 displacements).
        uncertainty: ``"official"`` score or ``"shannon"`` entropy (see :func:`uncertainty_scores`).
        teacher_temperature: teacher softmax temperature (``temperature_t = 0.07``); with ``"cosine-kl"``
            the temperature of both affinities.
        global_loss: ``"mse"`` (official, :func:`global_distillation_loss`) or ``"cosine-kl"``
            (:func:`cosine_kl_distillation_loss`).
        normalize_local_target: rescale the local target rows to sum 1 (official: False, rows sum 0.25).
        local_temperature: 0 (official): local affinities ``softmax(<f, g> / sqrt(C))`` on raw features;
            T > 0: ``softmax(cos(f, g) / T)`` on L2-normalised features, the affinity label propagation uses
            (for encoders whose output is already a concatenation of normalised parts, e.g. EfficientNet-Lite).
    """

    radii: tuple[int, ...] = (12, 6)
    strides: tuple[int, ...] = (4, 8)
    reconstruction_scale: float = 20.0
    reconstruction_weight: float = 1.0
    local_distillation_weight: float = 1000.0
    global_distillation_weight: float = 50.0
    keep_ratio: float = 0.7
    max_displacement: int = 6
    uncertainty: UncertaintyScore = "official"
    teacher_temperature: float = 0.07
    normalize_local_target: bool = False
    global_loss: GlobalLoss = "mse"
    local_temperature: float = 0.0

    def __post_init__(self) -> None:
        if self.local_temperature < 0:
            raise InputError(f"local_temperature must be >= 0, got {self.local_temperature!r}")
        if not self.radii or len(self.radii) != len(self.strides):
            raise InputError(f"radii {self.radii} and strides {self.strides} must be non-empty and of equal length")
        if not 0.0 < self.keep_ratio <= 1.0:
            raise InputError(f"keep_ratio must be in (0, 1], got {self.keep_ratio!r}")
        if self.uncertainty not in ("official", "shannon"):
            raise InputError(f"uncertainty must be 'official' or 'shannon', got {self.uncertainty!r}")
        if self.global_loss not in GLOBAL_LOSSES:
            raise InputError(f"global_loss must be one of {GLOBAL_LOSSES}, got {self.global_loss!r}")


def _local_affinity(f_t: torch.Tensor, f_r: torch.Tensor, radius: int, temperature: float) -> torch.Tensor:
    """:func:`local_affinity`, official (``temperature == 0``) or on cosines at ``temperature``."""
    if temperature == 0:
        return local_affinity(f_t, f_r, radius)
    return local_affinity(F.normalize(f_t, dim=1), F.normalize(f_r, dim=1), radius, scale=1.0 / temperature)


def _pair_or_none(name: str, pair: Sequence[torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    if pair is None:
        return None
    if len(pair) != 2:
        raise InputError(f"{name} must be a (target, reference) pair of feature maps")
    return pair[0], pair[1]


def temporal_loss(
    target_levels: Sequence[torch.Tensor],
    reference_levels: Sequence[torch.Tensor],
    *,
    target_channel: torch.Tensor | None = None,
    reference_channel: torch.Tensor | None = None,
    student_global: Sequence[torch.Tensor] | None = None,
    teacher_global: Sequence[torch.Tensor] | None = None,
    config: TemporalLossConfig | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted stage-2 loss; parts whose inputs are absent (or whose weight is 0) are skipped.

    Parts (already weighted; ``total`` is their sum):

    * ``reconstruction_<l>`` for each local level ``l``, when both channels are given;
    * ``local_distillation`` from level 0 to level 1 (grids must differ by 2x), masked by
      :func:`uncertainty_mask` on level 1, when there are at least two local levels;
    * ``global_distillation`` when both ``student_global`` and ``teacher_global`` are given.

    Args:
        target_levels, reference_levels: student features per local level, fine to coarse, one per
            ``config.radii`` entry (official: layer2 at 1/4 and layer3 at 1/8).
        target_channel, reference_channel: (B, K, H, W) un-dropped normalised Lab channel(s) to
            reconstruct (officially the channel :func:`drop_chroma_channel` dropped).
        student_global: (target, reference) student top-level features (official: layer4 at 1/32).
        teacher_global: (target, reference) frozen teacher features on the same grid.
        config: constants; default :class:`TemporalLossConfig`.

    Returns:
        ``(total, parts)``.
    """
    config = TemporalLossConfig() if config is None else config
    levels = len(config.radii)
    if len(target_levels) != levels or len(reference_levels) != levels:
        raise InputError(
            f"expected {levels} local levels (config.radii={config.radii}), got "
            f"{len(target_levels)} target and {len(reference_levels)} reference levels"
        )
    if (target_channel is None) != (reference_channel is None):
        raise InputError("give both target_channel and reference_channel, or neither")
    student_pair = _pair_or_none("student_global", student_global)
    teacher_pair = _pair_or_none("teacher_global", teacher_global)
    if (student_pair is None) != (teacher_pair is None):
        raise InputError("global distillation needs both student_global and teacher_global (or neither)")

    reconstruct = target_channel is not None and config.reconstruction_weight != 0
    distill_local = levels >= 2 and config.local_distillation_weight != 0
    needed = levels if reconstruct else (2 if distill_local else 0)
    affinities = [
        _local_affinity(f_t, f_r, radius, config.local_temperature)
        for f_t, f_r, radius in zip(target_levels[:needed], reference_levels[:needed], config.radii)
    ]
    parts: dict[str, torch.Tensor] = {}
    if reconstruct and target_channel is not None and reference_channel is not None:
        for level, (affinity, stride) in enumerate(zip(affinities, config.strides)):
            loss = reconstruction_loss(
                affinity, reference_channel, target_channel, stride, weight=config.reconstruction_scale
            )
            parts[f"reconstruction_{level}"] = config.reconstruction_weight * loss
    if distill_local:
        fine, coarse = target_levels[0], target_levels[1]
        mask = uncertainty_mask(
            coarse,
            reference_levels[1],
            max_displacement=config.max_displacement,
            keep_ratio=config.keep_ratio,
            score=config.uncertainty,
        )
        target = local_distillation_target(
            affinities[0],
            (fine.shape[-2], fine.shape[-1]),
            (coarse.shape[-2], coarse.shape[-1]),
            normalize=config.normalize_local_target,
        )
        parts["local_distillation"] = config.local_distillation_weight * local_distillation_loss(
            affinities[1], target, mask
        )
    if student_pair is not None and teacher_pair is not None and config.global_distillation_weight != 0:
        temperature = config.teacher_temperature
        if config.global_loss == "cosine-kl":
            loss = cosine_kl_distillation_loss(*student_pair, *teacher_pair, temperature=temperature)
        else:
            loss = global_distillation_loss(*student_pair, *teacher_pair, teacher_temperature=temperature)
        parts["global_distillation"] = config.global_distillation_weight * loss
    if not parts:
        raise InputError("no loss term has its inputs: give channels to reconstruct, two local levels or a teacher")
    return torch.stack([_at_least_float32(part) for part in parts.values()]).sum(), parts
