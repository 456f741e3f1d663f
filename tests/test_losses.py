"""Acceptance tests of the training losses (stcorr.train.losses); CPU, a few seconds."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from stcorr.errors import InputError
from stcorr.train.losses import (
    MomentumQueue,
    TemporalLossConfig,
    correlation_scores,
    drop_chroma_channel,
    cosine_kl_distillation_loss,
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


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def positional_features(height: int, width: int, magnitude: float = 100.0, batch: int = 1) -> torch.Tensor:
    """One-hot per position: every dot product is 0 except a position with itself (magnitude^2)."""
    eye = torch.eye(height * width) * magnitude
    return eye.reshape(height * width, height, width).unsqueeze(0).repeat(batch, 1, 1, 1)


def dense_window_reference(f_t: torch.Tensor, f_r: torch.Tensor, radius: int, scale: float) -> torch.Tensor:
    """Dense masked softmax built position by position."""
    _, _, height, width = f_t.shape
    coords = [(y, x) for y in range(height) for x in range(width)]
    allowed = torch.tensor(
        [[abs(yi - yj) <= radius and abs(xi - xj) <= radius for (yj, xj) in coords] for (yi, xi) in coords]
    )
    logits = torch.einsum("bci,bcj->bij", f_t.flatten(2), f_r.flatten(2)) * scale
    return torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)


# ------------------------------------------------------------------------------------ local affinity


@pytest.mark.parametrize(("height", "width", "radius"), [(7, 9, 2), (5, 5, 0), (4, 6, 10)])
def test_windowed_affinity_equals_dense_masked_softmax(height: int, width: int, radius: int) -> None:
    f_t, f_r = torch.randn(2, 8, height, width), torch.randn(2, 8, height, width)
    expected = dense_window_reference(f_t, f_r, radius, 8**-0.5)
    torch.testing.assert_close(local_affinity(f_t, f_r, radius), expected)
    expected_scaled = dense_window_reference(f_t, f_r, radius, 0.3)
    torch.testing.assert_close(local_affinity(f_t, f_r, radius, scale=0.3), expected_scaled)


def test_affinity_outside_window_is_exactly_zero_and_rows_sum_to_one() -> None:
    f_t, f_r = torch.randn(1, 4, 64, 64), torch.randn(1, 4, 64, 64)
    affinity = local_affinity(f_t, f_r, 12).view(64, 64, 64, 64)
    torch.testing.assert_close(affinity.sum((-2, -1)), torch.ones(64, 64))
    row = affinity[30, 40]  # window: y in [18, 42], x in [28, 52]
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[18:43, 28:53] = True
    assert row[~inside].abs().max() == 0 and (row[inside] > 0).all()


def test_affinity_rejects_mismatched_frames() -> None:
    with pytest.raises(InputError):
        local_affinity(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 6), 2)


# ------------------------------------------------------------------------------------ reconstruction


def test_reconstruction_is_exact_for_identity_pair() -> None:
    stride, grid = 4, 6
    identity = local_affinity(positional_features(grid, grid), positional_features(grid, grid), 3)
    assert torch.equal(identity[0], torch.eye(grid * grid))
    values = torch.tensor([0.3, -0.8]).view(2, 1, 1, 1).expand(2, 1, grid * stride, grid * stride).contiguous()
    loss = reconstruction_loss(identity.expand(2, -1, -1), values, values, stride)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_reconstruction_uses_rows_as_target_and_top_left_pixels_of_reference() -> None:
    stride, h, w = 4, 3, 5
    reference = torch.randn(1, 1, h * stride, w * stride)
    # Target cell (y, x) copies reference cell (y, x + 1 mod w): a permutation affinity.
    shift = torch.zeros(h * w, h * w)
    for y in range(h):
        for x in range(w):
            shift[y * w + x, y * w + (x + 1) % w] = 1.0
    cells = reference[..., ::stride, ::stride].roll(-1, dims=-1)
    target = F.interpolate(cells, size=reference.shape[-2:], mode="bilinear", align_corners=False)
    assert reconstruction_loss(shift[None], reference, target, stride).item() == 0.0
    # The transposed affinity reads the wrong way and is penalised.
    assert reconstruction_loss(shift.T[None], reference, target, stride).item() > 0.0


def test_reconstruction_equals_manual_smooth_l1() -> None:
    stride, h, w = 8, 2, 3
    affinity = torch.softmax(torch.randn(2, h * w, h * w), dim=-1)
    reference, target = torch.randn(2, 1, h * stride, w * stride), torch.randn(2, 1, h * stride, w * stride)
    values = reference[..., ::stride, ::stride].flatten(2).transpose(1, 2)
    prediction = (affinity @ values).transpose(1, 2).reshape(2, 1, h, w)
    diff = (F.interpolate(prediction, size=(h * stride, w * stride), mode="bilinear") - target).abs() * 20
    expected = torch.where(diff < 1, 0.5 * diff**2, diff - 0.5).mean()
    torch.testing.assert_close(reconstruction_loss(affinity, reference, target, stride), expected)


def test_reconstruction_rejects_wrong_grid() -> None:
    with pytest.raises(InputError, match="stride 4"):
        reconstruction_loss(torch.rand(1, 16, 16), torch.randn(1, 1, 32, 32), torch.randn(1, 1, 32, 32), 4)


# --------------------------------------------------------------------------------------- dropout


def test_drop_chroma_never_drops_lightness_and_scales_by_1_5() -> None:
    lab = torch.randn(4, 2, 3, 5, 5)
    original = lab.clone()
    seen = set()
    for seed in range(40):
        dropped, index = drop_chroma_channel(lab, torch.Generator().manual_seed(seed))
        seen.add(index)
        assert index in (1, 2)
        assert torch.all(dropped[..., index, :, :] == 0)  # same channel for every sample and frame
        kept = 3 - index
        torch.testing.assert_close(dropped[..., 0, :, :], 1.5 * lab[..., 0, :, :])
        torch.testing.assert_close(dropped[..., kept, :, :], 1.5 * lab[..., kept, :, :])
    assert seen == {1, 2}
    assert torch.equal(lab, original)


def test_drop_chroma_is_reproducible_and_checks_shape() -> None:
    lab = torch.randn(2, 3, 4, 4)
    first = drop_chroma_channel(lab, torch.Generator().manual_seed(7))
    second = drop_chroma_channel(lab, torch.Generator().manual_seed(7))
    assert first[1] == second[1] and torch.equal(first[0], second[0])
    with pytest.raises(InputError):
        drop_chroma_channel(torch.randn(2, 4, 4, 4))


# ------------------------------------------------------------------------------- uncertainty mask


def test_correlation_matches_zero_padded_shift_reference() -> None:
    f_t, f_r, d = torch.randn(2, 3, 5, 7), torch.randn(2, 3, 5, 7), 2
    padded = F.pad(f_r, (d, d, d, d))
    expected = torch.stack(
        [(f_t * padded[..., dy : dy + 5, dx : dx + 7]).sum(1) for dy in range(2 * d + 1) for dx in range(2 * d + 1)], 1
    )
    torch.testing.assert_close(correlation_scores(f_t, f_r, d), expected)


def test_official_score_of_uniform_distribution() -> None:
    scores = uncertainty_scores(torch.zeros(1, 169, 2, 2))
    torch.testing.assert_close(scores, torch.full((1, 2, 2), 169 * -math.log(1 / 169 + 1e-12)))


@pytest.mark.parametrize("score", ["official", "shannon"])
def test_mask_keeps_exact_global_fraction_per_sample(score: str) -> None:
    f_t, f_r = torch.randn(3, 16, 32, 32), torch.randn(3, 16, 32, 32)
    mask = uncertainty_mask(f_t, f_r, keep_ratio=0.7, score=score)
    assert mask.shape == (3, 32, 32) and mask.dtype == torch.bool
    assert mask.flatten(1).sum(1).tolist() == [int(1024 * 0.7)] * 3
    scores = uncertainty_scores(correlation_scores(f_t, f_r, 6), score).flatten(1)  # type: ignore[arg-type]
    threshold = scores.sort(dim=1, descending=True).values[:, int(1024 * 0.7), None]
    assert torch.equal(mask.flatten(1), scores > threshold)  # strict '>' at the k-th value, k = int(HW * T)


def test_mask_ties_are_broken_deterministically_in_raster_order() -> None:
    zeros = torch.zeros(2, 4, 10, 10)  # every position has the same (uniform) score
    mask = uncertainty_mask(zeros, zeros, keep_ratio=0.37)
    expected = torch.zeros(100, dtype=torch.bool)
    expected[:37] = True
    assert torch.equal(mask.flatten(1), expected.expand(2, -1))
    boundary_tie = torch.tensor([[1.0, 3.0, 3.0, 5.0, 3.0]])
    assert top_fraction_mask(boundary_tie, 0.4).tolist() == [[False, True, False, True, False]]


def test_score_directions_official_keeps_peaked_shannon_keeps_uncertain() -> None:
    features = positional_features(8, 8, magnitude=10.0)
    features[..., 4:] = 0  # right half: flat correlations (uniform q); left half: peaked at zero displacement
    left = torch.zeros(1, 8, 8, dtype=torch.bool)
    left[..., :4] = True
    assert torch.equal(uncertainty_mask(features, features, keep_ratio=0.5, score="official"), left)
    assert torch.equal(uncertainty_mask(features, features, keep_ratio=0.5, score="shannon"), ~left)


def test_mask_rejects_bad_ratio_and_score() -> None:
    f = torch.randn(1, 2, 4, 4)
    with pytest.raises(InputError):
        uncertainty_mask(f, f, keep_ratio=0.0)
    with pytest.raises(InputError):
        uncertainty_mask(f, f, score="kl")  # type: ignore[arg-type]


# -------------------------------------------------------------------------- local distillation


def test_local_target_shape_row_sums_and_formula() -> None:
    fine = torch.softmax(torch.randn(2, 4 * 6, 4 * 6), dim=-1)
    target = local_distillation_target(fine, (4, 6), (2, 3))
    assert target.shape == (2, 6, 6)
    torch.testing.assert_close(target.sum(-1), torch.full((2, 6), 0.25))
    normalized = local_distillation_target(fine, (4, 6), (2, 3), normalize=True)
    torch.testing.assert_close(normalized.sum(-1), torch.ones(2, 6))
    grid = fine.view(2, 4, 6, 4, 6)
    for big_i, (yi, xi) in enumerate([(y, x) for y in range(2) for x in range(3)]):
        for big_j, (yj, xj) in enumerate([(y, x) for y in range(2) for x in range(3)]):
            block = grid[:, 2 * yi : 2 * yi + 2, 2 * xi : 2 * xi + 2, 2 * yj : 2 * yj + 2, 2 * xj : 2 * xj + 2]
            torch.testing.assert_close(target[:, big_i, big_j], block.sum((1, 2, 3, 4)) / 16)


def test_local_target_from_radius_2r_stays_inside_coarse_window_r() -> None:
    fine = local_affinity(torch.randn(1, 4, 16, 16), torch.randn(1, 4, 16, 16), 4)
    target = local_distillation_target(fine, (16, 16), (8, 8))
    outside = dense_window_reference(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), 2, 1.0) == 0
    assert target[outside].abs().max() == 0


def test_local_target_rejects_non_halved_grid() -> None:
    with pytest.raises(InputError):
        local_distillation_target(torch.rand(1, 64, 64), (8, 8), (3, 3))


def test_local_distillation_loss_is_masked_mean_and_only_trains_student() -> None:
    coarse = torch.softmax(torch.randn(2, 6, 6), dim=-1).requires_grad_()
    fine = torch.softmax(torch.randn(2, 24, 24), dim=-1).requires_grad_()
    target = local_distillation_target(fine, (4, 6), (2, 3))
    mask = torch.zeros(2, 2, 3, dtype=torch.bool)
    mask[0, 0, 1] = mask[1, 1, 2] = True
    loss = local_distillation_loss(coarse, target, mask)
    rows = torch.stack([coarse[0, 1] - target[0, 1], coarse[1, 5] - target[1, 5]])
    torch.testing.assert_close(loss, rows.pow(2).sum() / (2 * 6))
    loss.backward()
    assert coarse.grad is not None and coarse.grad[0, 1].abs().sum() > 0 and coarse.grad[0, 0].abs().sum() == 0
    assert fine.grad is None
    assert local_distillation_loss(coarse, target, torch.zeros(2, 6)).item() == 0.0


# ------------------------------------------------------------------------- global distillation


def test_global_distillation_zero_when_affinities_match() -> None:
    teacher_t, teacher_r = torch.randn(2, 32, 4, 4), torch.randn(2, 32, 4, 4)
    # softmax(<a g, a g'> / sqrt(C)) == softmax(<g, g'> / 0.07) when a^2 = sqrt(C) / 0.07.
    a = math.sqrt(math.sqrt(32) / 0.07)
    loss = global_distillation_loss(a * teacher_t, a * teacher_r, teacher_t, teacher_r)
    assert loss.item() < 1e-10
    other = global_distillation_loss(torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4), teacher_t, teacher_r)
    assert other.item() > 1e-3


def test_global_distillation_gradients_reach_student_only() -> None:
    student_t, student_r = torch.randn(2, 16, 4, 4, requires_grad=True), torch.randn(2, 16, 4, 4, requires_grad=True)
    teacher_t, teacher_r = torch.randn(2, 32, 4, 4, requires_grad=True), torch.randn(2, 32, 4, 4, requires_grad=True)
    global_distillation_loss(student_t, student_r, teacher_t, teacher_r).backward()
    assert student_t.grad is not None and student_t.grad.abs().sum() > 0
    assert student_r.grad is not None and student_r.grad.abs().sum() > 0
    assert teacher_t.grad is None and teacher_r.grad is None


def test_global_distillation_rejects_different_grids() -> None:
    with pytest.raises(InputError, match="interpolate"):
        global_distillation_loss(
            torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 8), torch.randn(1, 8, 7, 7), torch.randn(1, 8, 7, 7)
        )


def test_cosine_kl_equals_hand_computed_case() -> None:
    # A 1x2 grid: two query cells, two reference cells; cosines chosen by hand.
    def grid(a: list[float], b: list[float]) -> torch.Tensor:
        return torch.tensor([a, b]).T.reshape(1, 2, 1, 2)  # cells a, b -> (1, C=2, 1, 2)

    student_t, student_r = grid([1.0, 0.0], [0.0, 1.0]), grid([1.0, 0.0], [0.0, 2.0])  # rows [1, 0], [0, 1]
    teacher_t, teacher_r = grid([3.0, 4.0], [1.0, 0.0]), grid([0.0, 1.0], [3.0, 4.0])  # rows [.8, 1], [0, .6]
    tau = 0.5
    q = torch.softmax(torch.tensor([[1.0, 0.0], [0.0, 1.0]]) / tau, 1)
    p = torch.softmax(torch.tensor([[0.8, 1.0], [0.0, 0.6]]) / tau, 1)
    expected = (p * (p / q).log()).sum(1).mean()
    loss = cosine_kl_distillation_loss(student_t, student_r, teacher_t, teacher_r, temperature=tau)
    assert torch.allclose(loss, expected, atol=1e-6)


def test_cosine_kl_zero_for_same_directions_and_grad_to_student_only() -> None:
    teacher_t, teacher_r = torch.randn(2, 8, 3, 4), torch.randn(2, 8, 3, 4)
    scale = torch.rand(2, 1, 3, 4) + 0.5  # per-position norms do not matter: cosine affinities
    assert cosine_kl_distillation_loss(scale * teacher_t, 2 * teacher_r, teacher_t, teacher_r).abs().item() < 1e-5
    student_t = torch.randn(2, 5, 3, 4, requires_grad=True)
    student_r = torch.randn(2, 5, 3, 4, requires_grad=True)
    teacher_t.requires_grad_(True)
    loss = cosine_kl_distillation_loss(student_t, student_r, teacher_t, teacher_r)
    loss.backward()
    assert loss.item() > 1e-3 and student_t.grad.abs().sum() > 0 and student_r.grad.abs().sum() > 0
    assert teacher_t.grad is None


def test_temporal_loss_selects_the_global_loss() -> None:
    f_t, f_r = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    g_t, g_r = torch.randn(1, 6, 2, 2), torch.randn(1, 6, 2, 2)
    s_t, s_r = torch.randn(1, 8, 2, 2), torch.randn(1, 8, 2, 2)
    kw = dict(student_global=(s_t, s_r), teacher_global=(g_t, g_r))
    for name, function, extra in (
        ("mse", global_distillation_loss, {"teacher_temperature": 0.07}),
        ("cosine-kl", cosine_kl_distillation_loss, {"temperature": 0.07}),
    ):
        config = TemporalLossConfig(radii=(2,), strides=(8,), global_loss=name, global_distillation_weight=3.0)
        _, parts = temporal_loss([f_t], [f_r], config=config, **kw)
        assert torch.allclose(parts["global_distillation"], 3.0 * function(s_t, s_r, g_t, g_r, **extra))
    with pytest.raises(InputError, match="global_loss"):
        TemporalLossConfig(global_loss="l1")


# ------------------------------------------------------------------------------------- MoCo v2


def test_info_nce_equals_manual_computation() -> None:
    q = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True)  # normalised to (1, 0) and (0, 1)
    k = torch.tensor([[0.6, 0.8], [0.0, 3.0]], requires_grad=True)  # (0.6, 0.8) and (0, 1)
    queue = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    rows = [[0.6, 1.0, 0.0, -1.0], [1.0, 0.0, 1.0, 0.0]]  # [positive, negatives] cosine similarities
    expected = sum(-r[0] / 0.2 + math.log(sum(math.exp(v / 0.2) for v in r)) for r in rows) / 2
    loss = info_nce_loss(q, k, queue, temperature=0.2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert q.grad is not None and k.grad is None


def test_momentum_queue_is_fixed_size_fifo() -> None:
    queue = MomentumQueue(5, 3, generator=torch.Generator().manual_seed(0))
    assert len(queue) == 5 and torch.allclose(queue.keys.norm(dim=1), torch.ones(5))
    first, second = torch.arange(9.0).view(3, 3), -torch.arange(9.0).view(3, 3) - 1
    queue.enqueue(first)
    queue.enqueue(second)
    assert queue.keys.shape == (5, 3) and int(queue.pointer) == 1
    torch.testing.assert_close(queue.keys[:1], second[2:])
    torch.testing.assert_close(queue.keys[1:3], first[1:])
    torch.testing.assert_close(queue.keys[3:], second[:2])
    with pytest.raises(InputError):
        queue.enqueue(torch.zeros(6, 3))
    assert set(queue.state_dict()) == {"keys", "pointer"}


# ------------------------------------------------------------------------------------ total


def test_config_holds_official_constants_and_is_frozen() -> None:
    config = TemporalLossConfig()
    assert (config.radii, config.strides) == ((12, 6), (4, 8))
    assert (config.reconstruction_scale, config.local_distillation_weight, config.global_distillation_weight) == (
        20.0,
        1000.0,
        50.0,
    )
    assert (config.keep_ratio, config.teacher_temperature, config.max_displacement) == (0.7, 0.07, 6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.keep_ratio = 0.5  # type: ignore[misc]
    with pytest.raises(InputError):
        TemporalLossConfig(radii=(12,), strides=(4, 8))


def _student(batch: int = 2) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    shapes = [(batch, 6, 8, 8), (batch, 10, 4, 4)]
    return (
        [torch.randn(s, requires_grad=True) for s in shapes],
        [torch.randn(s, requires_grad=True) for s in shapes],
    )


def test_temporal_loss_sums_parts_and_trains_student_only() -> None:
    config = TemporalLossConfig(radii=(4, 2), max_displacement=2)
    target_levels, reference_levels = _student()
    lab_t, lab_r = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    student = (torch.randn(2, 12, 2, 2, requires_grad=True), torch.randn(2, 12, 2, 2, requires_grad=True))
    teacher = (torch.randn(2, 20, 2, 2, requires_grad=True), torch.randn(2, 20, 2, 2, requires_grad=True))
    total, parts = temporal_loss(
        target_levels,
        reference_levels,
        target_channel=lab_t[:, 1:2],
        reference_channel=lab_r[:, 1:2],
        student_global=student,
        teacher_global=teacher,
        config=config,
    )
    assert set(parts) == {"reconstruction_0", "reconstruction_1", "local_distillation", "global_distillation"}
    torch.testing.assert_close(total, sum(parts.values()))
    total.backward()
    for feature in [*target_levels, *reference_levels, *student]:
        assert feature.grad is not None and feature.grad.abs().sum() > 0
    assert all(feature.grad is None for feature in teacher)


def test_temporal_loss_skips_absent_parts() -> None:
    target_levels, reference_levels = _student()
    config = TemporalLossConfig(radii=(4, 2), max_displacement=2)
    _, parts = temporal_loss(target_levels, reference_levels, config=config)
    assert set(parts) == {"local_distillation"}
    _, parts = temporal_loss(
        target_levels[:1],
        reference_levels[:1],
        target_channel=torch.randn(2, 1, 32, 32),
        reference_channel=torch.randn(2, 1, 32, 32),
        config=TemporalLossConfig(radii=(4,), strides=(4,)),
    )
    assert set(parts) == {"reconstruction_0"}
    with pytest.raises(InputError, match="teacher"):
        temporal_loss(target_levels, reference_levels, student_global=(target_levels[1], reference_levels[1]))
