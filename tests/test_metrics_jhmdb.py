"""JHMDB: PCK by hand under both protocols, heatmap drawing/decoding, keypoint files, the MAT reader."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from stcorr.datasets import read_joint_positions, read_mat_array
from stcorr.errors import DataReadError, InputError
from stcorr.metrics import jhmdb

# ------------------------------------------------------------------------------------------------
# PCK


def gt_pose() -> np.ndarray:
    """15 joints: joint 0 at (10, 20), joint 1 at (40, 60), the others at (25, 40).
    Box 30 x 40, diagonal 50, reference size 0.6 * 50 = 30 px."""
    pose = np.tile([25.0, 40.0], (15, 1))
    pose[0], pose[1] = (10, 20), (40, 60)
    return pose


def two_frame_video() -> tuple[np.ndarray, np.ndarray]:
    gt = np.stack([gt_pose(), gt_pose()])
    pred = gt.copy()  # frame 0: exact
    pred[1, 0] += (2.9, 0)  # d = 2.9 / 30 = 0.0967
    pred[1, 1] += (0, 7.5)  # d = 7.5 / 30 = 0.25
    pred[1, 2] = (-1, -1)  # no prediction: never counted
    pred[1, 3] = (0, 40)  # x = 0: counted by crw only; d = 25 / 30 = 0.83
    return pred, gt


def test_pck_stt_protocol_by_hand() -> None:
    result = jhmdb.pck([two_frame_video()], protocol="stt")
    # Frame 0 counted for every joint (all exact). Frame 1: joints 2 and 3 not counted (x <= 0).
    # joint 0: 2/2 at every threshold; joint 1: 1/2 below 0.25, 2/2 from 0.3; the rest 100.
    expected = {0.1: (14 * 100 + 50) / 15, 0.2: (14 * 100 + 50) / 15, 0.3: 100.0, 0.4: 100.0, 0.5: 100.0}
    for alpha, value in zip(result.thresholds, result.mean):
        assert value == pytest.approx(expected[alpha])
    assert result.counts.tolist() == [2, 2, 1, 1] + [2] * 11
    assert result.as_dict()["PCK@0.1"] == pytest.approx(expected[0.1])


def test_pck_crw_protocol_by_hand() -> None:
    result = jhmdb.pck([two_frame_video()], protocol="crw")
    # Frame 0 skipped. Frame 1: joint 2 never counted (NaN, left out); joint 3 counted (x = 0) and missed.
    # At 0.1 and 0.2: joints 0 (100), 1 (0), 3 (0), 4..14 (100) -> 1200 / 14; from 0.3 joint 1 hits: 1300 / 14.
    assert result.counts.tolist() == [1, 1, 0, 1] + [1] * 11
    assert np.isnan(result.per_joint[:, 2]).all()
    np.testing.assert_allclose(result.mean, [1200 / 14, 1200 / 14, 1300 / 14, 1300 / 14, 1300 / 14])


def test_reference_size_uses_only_counted_joints() -> None:
    gt = np.stack([gt_pose(), gt_pose()])
    pred = gt.copy()
    pred[:, 0] = (-1, -1)  # the (10, 20) extreme is not counted: box (25..40, 40..60), size 0.6 * 25 = 15
    pred[:, 1] += (2.7, 0)  # 2.7 / 15 = 0.18 (it would be 0.09 with the full box)
    result = jhmdb.pck([(pred, gt)], protocol="stt")
    assert result.per_joint[0, 1] == 0.0  # PCK@0.1
    assert result.per_joint[1, 1] == 100.0  # PCK@0.2


def test_zero_size_box_counts_as_miss() -> None:
    gt = np.stack([gt_pose()])
    pred = np.full_like(gt, -1.0)
    pred[0, 5] = gt[0, 5]  # the only counted joint: box of size 0, distance 0 / 0
    distances, counted = jhmdb.joint_distances(pred, gt)
    assert counted.sum() == 1 and np.isnan(distances[0, 5])
    assert jhmdb.pck([(pred, gt)]).per_joint[:, 5].tolist() == [0.0] * 5


def test_pck_pools_per_joint_over_videos() -> None:
    pred, gt = two_frame_video()
    exact = (gt.copy(), gt.copy())
    result = jhmdb.pck([(pred, gt), exact], protocol="stt")
    assert result.per_joint[0, 1] == pytest.approx(100 * 3 / 4)  # joint 1 at 0.1: misses once in 4 counted frames


def test_prediction_truncated_to_gt_and_must_cover_it() -> None:
    pred, gt = two_frame_video()
    longer = np.concatenate([pred, np.zeros((3, 15, 2))])
    assert jhmdb.pck([(longer, gt)]).mean.tolist() == jhmdb.pck([(pred, gt)]).mean.tolist()
    with pytest.raises(InputError, match="does not cover"):
        jhmdb.pck([(pred[:1], gt)])
    with pytest.raises(InputError, match="protocol"):
        jhmdb.pck([(pred, gt)], protocol="uvc")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Heatmaps


def test_gaussian_at_integer_point() -> None:
    heatmap = jhmdb.draw_gaussian_heatmaps([[50, 40]], (100, 120))[0].double()
    assert heatmap.max() == 1.0 and heatmap[40, 50] == 1.0
    assert heatmap[43, 54].item() == pytest.approx(math.exp(-25 / 32))  # offset (4, 3): d^2 = 25, 2 sigma^2 = 32
    support = torch.nonzero(heatmap)
    assert (support.min(0).values.tolist(), support.max(0).values.tolist()) == ([28, 38], [52, 62])  # 25 x 25 window


def test_subpixel_gaussian_is_centred_on_the_point() -> None:
    heatmap = jhmdb.draw_gaussian_heatmaps(torch.tensor([[20.3, 30.6]]), (64, 64), sigma=2.0, dtype=torch.float64)[0]
    assert heatmap[31, 20].item() == pytest.approx(math.exp(-(0.3**2 + 0.4**2) / 8))
    assert heatmap[31, 20] == heatmap.max()  # nearest pixel
    support = torch.nonzero(heatmap)  # window of 6 sigma + 1 = 13 px around (20, 31)
    assert (support.min(0).values.tolist(), support.max(0).values.tolist()) == ([25, 14], [37, 26])


def test_reference_mode_anchors_like_the_reference() -> None:
    maps = jhmdb.draw_gaussian_heatmaps([[20.7, 30.2], [5.7, 5.2]], (64, 64), subpixel=False)
    # p >= 3 sigma: centre floor(p); p < 3 sigma: trunc(p - 12) + 12 = ceil(p). Peak 1 in both.
    assert maps[0, 30, 20] == 1.0 and maps[1, 6, 6] == 1.0
    assert maps[0, 30, 21].item() == pytest.approx(math.exp(-1 / 32))


def test_points_outside_the_frame_give_empty_maps() -> None:
    maps = jhmdb.draw_gaussian_heatmaps([[-20.0, -20.0], [float("nan"), 3.0], [-5.0, 10.0]], (40, 40))
    assert maps[0].sum() == 0 and maps[1].sum() == 0
    assert maps[2].sum() > 0 and maps[2, 10, 0].item() == pytest.approx(math.exp(-25 / 32))  # partly inside


def test_draw_then_decode_round_trip_within_half_a_pixel() -> None:
    rng = np.random.default_rng(0)
    height, width = 60, 80
    points = rng.uniform((0.5, 0.5), (width - 1.5, height - 1.5), (300, 2))  # at least half a pixel inside
    coords, scores = jhmdb.decode_heatmaps_topk(jhmdb.draw_gaussian_heatmaps(points, (height, width)))
    error = np.linalg.norm(coords.numpy() - points, axis=1)
    assert error.max() < 0.5
    assert (scores.numpy() > math.exp(-0.5 / 32) - 1e-6).all()  # peak = value at the nearest pixel
    integer = np.array([[1, 1], [78, 58], [40, 30], [12, 50]], float)
    coords, _ = jhmdb.decode_heatmaps_topk(jhmdb.draw_gaussian_heatmaps(integer, (height, width)))
    np.testing.assert_allclose(coords.numpy(), integer, atol=1e-4)  # centre + 4 neighbours: exact


def test_decode_is_pulled_inwards_on_the_frame_border() -> None:
    """The frame truncates the Gaussian, so top-k decoding of a corner point is biased inwards (< 1 px)."""
    coords, _ = jhmdb.decode_heatmaps_topk(jhmdb.draw_gaussian_heatmaps([[0.0, 0.0], [79.0, 59.0]], (60, 80)))
    assert (coords[0] > 0).all() and (coords[1] < torch.tensor([79.0, 59.0])).all()
    assert torch.linalg.norm(coords - torch.tensor([[0.0, 0.0], [79.0, 59.0]]), dim=1).max() < 1.0


def test_decode_by_hand_and_empty_channels() -> None:
    maps = torch.zeros(2, 3, 5)
    maps[0, 0, 1], maps[0, 0, 3], maps[0, 2, 4] = 1.0, 3.0, 0.5
    coords, scores = jhmdb.decode_heatmaps_topk(maps, k=2)
    assert coords[0].tolist() == pytest.approx([2.5, 0.0])  # weights 3/4 at x=3, 1/4 at x=1
    assert coords[1].tolist() == [-1.0, -1.0] and scores.tolist() == [3.0, 0.0]


def test_decode_accepts_batches_and_numpy() -> None:
    points = np.array([[3.0, 4.0], [10.0, 2.0]])
    maps = jhmdb.draw_gaussian_heatmaps(points, (16, 20)).numpy()
    coords, scores = jhmdb.decode_heatmaps_topk(np.stack([maps, maps]), k=5)
    assert coords.shape == (2, 2, 2) and scores.shape == (2, 2)
    np.testing.assert_allclose(coords[1].numpy(), points, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Keypoint files


@pytest.mark.parametrize("suffix", [".npy", ".json"])
def test_keypoint_files_round_trip(tmp_path: Path, suffix: str) -> None:
    keypoints = np.random.default_rng(0).uniform(-1, 300, (4, 15, 2))
    path = jhmdb.save_keypoints(tmp_path / "cls" / f"video{suffix}", keypoints)
    np.testing.assert_array_equal(jhmdb.load_keypoints(path), keypoints)


def test_keypoint_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataReadError, match="not found"):
        jhmdb.load_keypoints(tmp_path / "missing.npy")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([[[1, 2]]]))
    with pytest.raises(InputError, match="keypoints"):
        jhmdb.load_keypoints(bad)
    ragged = tmp_path / "ragged.json"
    ragged.write_text(json.dumps({"keypoints": [[[1, 2]], [[1, 2], [3, 4]]]}))
    with pytest.raises(InputError):
        jhmdb.load_keypoints(ragged)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 15)))
    with pytest.raises(InputError, match=r"\(T, joints, 2\)"):
        jhmdb.load_keypoints(wrong)


# ------------------------------------------------------------------------------------------------
# MAT reader


@pytest.mark.parametrize("compress", [False, True])
def test_joint_positions_from_scipy_written_files(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(0)
    pos_img = rng.uniform(1, 320, (2, 15, 7))
    variables = {
        "viewpoint": "E",
        "meta": {"a": np.arange(3)},
        "cells": np.array([1, "x"], dtype=object),
        "scale": rng.random(7).astype(np.float32),
        "pos_img": pos_img,
    }
    path = tmp_path / "joint_positions.mat"
    scipy.io.savemat(path, variables, do_compression=compress)
    np.testing.assert_array_equal(read_mat_array(path, "pos_img"), pos_img)
    np.testing.assert_array_equal(read_mat_array(path, "scale"), variables["scale"][None, :])
    joints = read_joint_positions(path)
    assert joints.shape == (7, 15, 2)
    np.testing.assert_array_equal(joints, pos_img.transpose(2, 1, 0) - 1)


def test_single_frame_video_is_read_as_one_frame(tmp_path: Path) -> None:
    path = tmp_path / "one.mat"
    scipy.io.savemat(path, {"pos_img": np.arange(30.0).reshape(2, 15, 1)})  # stored as 2 x 15
    assert read_joint_positions(path).shape == (1, 15, 2)


def _element(mtype: int, payload: bytes, endian: str) -> bytes:
    return struct.pack(endian + "II", mtype, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def _small_element(mtype: int, payload: bytes, endian: str) -> bytes:
    return struct.pack(endian + "I", (len(payload) << 16) | mtype) + payload.ljust(4, b"\0")


def _matrix(name: str, mx_class: int, dims: tuple[int, ...], data_type: int, data: bytes, endian: str) -> bytes:
    name_bytes = name.encode()
    name_element = _small_element(1, name_bytes, endian) if len(name_bytes) <= 4 else _element(1, name_bytes, endian)
    body = (
        _element(6, struct.pack(endian + "II", mx_class, 0), endian)
        + _element(5, struct.pack(endian + "i" * len(dims), *dims), endian)
        + name_element
        + _element(data_type, data, endian)
    )
    return _element(14, body, endian)


@pytest.mark.parametrize("endian", ["<", ">"])
def test_hand_written_mat_files_of_both_byte_orders(tmp_path: Path, endian: str) -> None:
    header = b"MATLAB 5.0 MAT-file, written by hand".ljust(116, b" ") + b"\0" * 8 + struct.pack(endian + "H", 0x0100)
    header += struct.pack(endian + "H", 0x4D49)  # 'MI' as a uint16: reads "IM" in a little-endian file
    pos_img = np.arange(2 * 15 * 3, dtype=np.float64).reshape(2, 15, 3)
    ids = np.array([[1, 2, 3]], dtype=np.int32)
    content = _matrix("ids", 12, (1, 3), 2, ids.astype(np.uint8).tobytes(), endian)  # int32 stored as miUINT8
    content += _matrix("pos_img", 6, pos_img.shape, 9, pos_img.astype(endian + "f8").tobytes(order="F"), endian)
    path = tmp_path / "hand.mat"
    path.write_bytes(header + content)
    read_ids = read_mat_array(path, "ids")
    assert read_ids.dtype == np.int32 and read_ids.tolist() == [[1, 2, 3]]
    np.testing.assert_array_equal(read_mat_array(path, "pos_img"), pos_img)


def test_mat_reader_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.mat"
    scipy.io.savemat(path, {"pos_img": np.zeros((2, 15, 2)), "label": "run"})
    with pytest.raises(InputError, match="no variable"):
        read_mat_array(path, "missing")
    with pytest.raises(InputError, match="not a numeric"):
        read_mat_array(path, "label")
    with pytest.raises(DataReadError, match="not found"):
        read_mat_array(tmp_path / "absent.mat", "pos_img")
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(b"not a mat file" * 20)
    with pytest.raises(DataReadError, match="not a MATLAB v5"):
        read_mat_array(garbage, "pos_img")
    hdf5 = tmp_path / "v73.mat"
    hdf5.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(128, b" "))
    with pytest.raises(InputError, match="v7.3"):
        read_mat_array(hdf5, "pos_img")
    truncated = tmp_path / "truncated.mat"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataReadError, match="corrupt"):
        read_mat_array(truncated, "pos_img")
