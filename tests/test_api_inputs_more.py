"""Python API inputs the reliability probe (group A) found accepted silently or failing raw: each is now a
typed InputError before any work, or a documented, sound result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stcorr import PropagationOptions, PropagationSession, extract_features, iter_propagate, propagate_labels
from stcorr.baselines import LabPixelEncoder
from stcorr.errors import InputError
from stcorr.io.frames import open_frames

OPTIONS = PropagationOptions(context=2, radius=3, topk=4, compute_dtype=torch.float32)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return LabPixelEncoder(stride=4).eval()


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.random((6, 24, 32, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def mask() -> np.ndarray:
    mask = np.zeros((24, 32), np.uint8)
    mask[4:12, 4:14] = 1
    mask[14:22, 18:30] = 2
    return mask


def test_a_meta_tensor_is_a_typed_error(model, mask):  # A39
    meta = torch.empty((6, 24, 32, 3), dtype=torch.uint8, device="meta")
    with pytest.raises(InputError, match="meta device"):
        propagate_labels(model, meta, mask, options=OPTIONS)
    with pytest.raises(InputError, match="meta device"):
        open_frames([torch.empty((24, 32, 3), device="meta")])


def test_a_meta_tensor_as_labels_is_a_typed_error(model, frames):
    with pytest.raises(InputError, match="meta device"):
        propagate_labels(model, frames, torch.zeros((24, 32), dtype=torch.uint8, device="meta"), options=OPTIONS)


def test_points_or_mask_on_two_pixel_wide_frames_follow_the_dtype_rule(model):  # A67
    rng = np.random.default_rng(2)
    narrow = (rng.random((4, 5, 2, 3)) * 255).astype(np.uint8)
    labels = [[0, 0], [1, 1], [0, 2], [1, 3], [1, 4]]
    with pytest.raises(InputError, match=r"could be a mask .* or as many \(x, y\) keypoints.*uint8.*float32"):
        propagate_labels(model, narrow, np.array(labels), options=OPTIONS)
    as_points = propagate_labels(model, narrow, np.array(labels, np.float32), options=OPTIONS)
    assert as_points.points is not None and as_points.points.shape == (4, 5, 2)
    np.testing.assert_array_equal(as_points.points[0], np.array(labels, np.float32))
    as_mask = propagate_labels(model, narrow, np.array(labels, np.uint8), options=OPTIONS)
    assert as_mask.labels.shape == (4, 5, 2) and as_mask.ids == (0, 1, 2, 3, 4)
    np.testing.assert_array_equal(as_mask.labels[0], np.array(labels))
    session = PropagationSession(model, narrow, options=OPTIONS)
    session.add_mask(0, np.array(labels))  # add_mask says which it is: int64 is fine there
    assert session.object_ids == [1, 2, 3, 4]


@pytest.mark.parametrize("direction, start, anchor", [("backward", 3, 5), ("forward", 3, 1)])
def test_an_anchor_the_pass_never_reaches_is_a_typed_error(model, frames, mask, direction, start, anchor):  # A85
    with pytest.raises(InputError, match=f"frame {anchor} lies .* start={start}, so a {direction} pass never"):
        next(iter_propagate(model, frames, mask, start=start, direction=direction, anchors={anchor: mask},
                            options=OPTIONS))


def test_an_anchor_on_the_pass_is_still_used(model, frames, mask):
    shifted = np.roll(mask, 2, axis=1)
    results = list(iter_propagate(model, frames, mask, start=4, direction="backward", anchors={2: shifted},
                                  options=OPTIONS))
    assert [r.t for r in results] == [4, 3, 2, 1, 0]
    np.testing.assert_array_equal(results[2].labels, shifted)


@pytest.mark.parametrize("weights", [[1, 2, 3], [1.0, 2.0], [0], [float("nan")], [True]])
def test_fusion_weights_need_one_weight_per_model(model, frames, mask, weights):  # A108
    with pytest.raises(InputError, match=r"fusion_weights must be one .* per model \(1\)"):
        propagate_labels(model, frames, mask, fusion_weights=weights, options=OPTIONS)
    with pytest.raises(InputError, match="fusion_weights"):
        next(iter_propagate(model, frames, mask, fusion_weights=weights, options=OPTIONS))
    with pytest.raises(InputError, match="fusion_weights"):
        extract_features(model, frames, fusion_weights=weights)
    with pytest.raises(InputError, match="fusion_weights"):
        PropagationSession([model, model], frames, fusion_weights=weights[:1] * 3)


def test_one_weight_for_one_model_is_accepted(model, frames, mask):
    fused = propagate_labels(model, frames, mask, fusion_weights=[2.0], options=OPTIONS)
    plain = propagate_labels(model, frames, mask, options=OPTIONS)
    np.testing.assert_array_equal(fused.labels, plain.labels)


def test_a_huge_working_size_is_refused_before_allocating(model, frames, mask):  # A137
    with pytest.raises(InputError, match=r"20000x30000 .* at most 4x each side .* resize the frames yourself"):
        propagate_labels(model, frames, mask, size=(20000, 30000), options=OPTIONS)
    with pytest.raises(InputError, match="short_side=5000"):
        open_frames(frames, short_side=5000)
    assert open_frames(frames, size=(96, 128)).size == (96, 128)  # 4x: allowed
    assert open_frames(frames, size=(1024, 1024)).size == (1024, 1024)  # small frames may reach 1024 px
    with pytest.raises(InputError, match="at most 4x"):
        open_frames(frames, size=(1025, 64))
