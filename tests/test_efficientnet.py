"""EfficientNet-Lite0/1/2 as stcorr encoders: architecture read from the weights, real ImageNet weights,
the fused stride-8 features, persistence, and stage-2 training from the ImageNet initialisation."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import stcorr
from stcorr.color import denormalize_lab, lab_to_rgb, normalize_imagenet, normalize_lab, rgb_to_lab
from stcorr.efficientnet import (
    LITE_VARIANTS,
    EfficientNetLite,
    block_table_from_state_dict,
    lite_block_table,
    packaged_lite_weights,
    stage_ends,
)
from stcorr.errors import CheckpointError, InputError
from stcorr.model import LiteCorrespondenceModel, model_from_config


def _needs(name: str):
    package = LITE_VARIANTS[name].package
    return pytest.mark.skipif(importlib.util.find_spec(package) is None, reason=f"needs {LITE_VARIANTS[name].pip_name}")


@pytest.mark.parametrize("name", list(LITE_VARIANTS))
def test_block_table_read_from_the_weights_matches_the_published_stage_table(name):
    pytest.importorskip(LITE_VARIANTS[name].package)
    weights = packaged_lite_weights(name)
    table = block_table_from_state_dict(weights)
    assert table == lite_block_table(name)
    network = EfficientNetLite(table)
    network.load_state_dict(weights, strict=True)  # every key of the package, no more, no less
    repeats = np.diff((-1, *stage_ends(table)))
    assert tuple(repeats) == LITE_VARIANTS[name].repeats


@pytest.mark.parametrize("name,size,expected", [("efficientnet-lite1", 240, 285), ("efficientnet-lite2", 260, 285)])
def test_packaged_weights_are_real_imagenet_classifiers(name, size, expected):
    """Independent check of weights and forward pass: skimage's cat photo is class 285 (Egyptian cat)."""
    pytest.importorskip(LITE_VARIANTS[name].package)
    data = pytest.importorskip("skimage.data")
    image = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float() / 255
    image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    network = EfficientNetLite(lite_block_table(name)).eval()
    network.load_state_dict(packaged_lite_weights(name))
    with torch.no_grad():
        probabilities = network(normalize_imagenet(image)).softmax(-1)[0]
    assert int(probabilities.argmax()) == expected and float(probabilities.max()) > 0.4


def test_not_efficientnet_weights_are_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="not EfficientNet-Lite weights"):
        block_table_from_state_dict({"conv1.weight": torch.zeros(1)})


@_needs("efficientnet-lite2")
def test_fused_features_are_normalised_stage_outputs_upsampled_and_concatenated():
    model = stcorr.load_model("efficientnet-lite2", device="cpu")
    assert (model.stride, model.stages, model.feature_dim, model.input_space) == (8, (3, 5), 48 + 120, "rgb")
    rgb = torch.rand(1, 3, 70, 90)
    # independent: the full ImageNet network's block outputs, normalised, nearest block-wise checks
    full = EfficientNetLite(lite_block_table("efficientnet-lite2")).eval()
    full.load_state_dict(packaged_lite_weights("efficientnet-lite2"))
    with torch.no_grad():
        s3, s5 = full.block_outputs(normalize_imagenet(rgb), [6, 14])
        out = model(rgb)
    grid = (math.ceil(70 / 8), math.ceil(90 / 8))
    assert out.shape == (1, 168, *grid) and s3.shape[-2:] == grid
    torch.testing.assert_close(out[:, :48], F.normalize(s3, dim=1))
    up = F.interpolate(F.normalize(s5, dim=1), scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[:, 48:], up[..., : grid[0], : grid[1]])


def test_embedded_fusion_normalises_each_stage_on_its_own_grid_then_upsamples():
    """The default model's fusion, kept after issue 21's ablation (README model card): stage 3 has unit norm
    at every stride-8 cell; stage 5 is normalised on its stride-16 grid, then interpolated, so its vectors are
    at most unit length and shorter where neighbouring cells disagree (its share of the cosine shrinks)."""
    model = stcorr.load_model(device="cpu")
    rgb = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    rgb[..., 16:48, 24:64] = torch.tensor([0.9, 0.2, 0.1]).view(3, 1, 1)
    with torch.no_grad():
        out = model(rgb)
        s3, s5 = model.block_outputs(normalize_imagenet(rgb), list(model.stage_blocks))
    split = s3.shape[1]
    up = F.interpolate(F.normalize(s5, dim=1), scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, torch.cat([F.normalize(s3, dim=1), up[..., :8, :12]], dim=1))
    fine, coarse = out[0, :split].norm(dim=0), out[0, split:].norm(dim=0)
    torch.testing.assert_close(fine, torch.ones_like(fine), atol=1e-3, rtol=0)
    assert coarse.max() <= 1 + 1e-3 and coarse.mean() < 0.97 and coarse.min() < 0.9


@_needs("efficientnet-lite0")
def test_lite0_model_equals_the_lite0_baseline():
    from stcorr.baselines import load_baseline

    rgb = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(stcorr.load_model("efficientnet-lite0", device="cpu")(rgb),
                                   load_baseline("efficientnet-lite0", device="cpu")(rgb))


def test_save_pretrained_round_trip_needs_no_package(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = LiteCorrespondenceModel("efficientnet-lite1", stages=(3, 4, 5), projection=32).eval()
    model.save_pretrained(tmp_path)
    monkeypatch.setitem(LITE_VARIANTS, "efficientnet-lite1", None)  # the config carries the block table
    loaded = stcorr.load_model(tmp_path, device="cpu")
    assert isinstance(loaded, LiteCorrespondenceModel) and loaded.config == model.config
    rgb = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded(rgb), model(rgb))
    assert loaded(rgb).shape == (1, 32, 5, 7)


@pytest.mark.parametrize("kwargs,message", [
    (dict(stages=(2,)), "stages must be a non-empty subset of"),
    (dict(stages=(6,)), "stages must be a non-empty subset of"),
    (dict(stride=4), "stride 8"),
    (dict(projection=-1), "projection"),
    (dict(arch="efficientnet-b7"), "arch must be one of"),
])
def test_bad_lite_options_are_input_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        LiteCorrespondenceModel(**kwargs)


def test_model_from_config_rejects_a_non_object():
    with pytest.raises(InputError, match="JSON object"):
        model_from_config([1, 2, 3])  # type: ignore[arg-type]


def test_lab_to_rgb_inverts_rgb_to_lab_and_the_rgb_student_input_matches_preprocess():
    rgb = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    torch.testing.assert_close(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-5, rtol=0)  # OpenCV's 7.787 segment
    model = LiteCorrespondenceModel("efficientnet-lite0")
    lab = normalize_lab(rgb.float())
    torch.testing.assert_close(denormalize_lab(lab), rgb_to_lab(rgb.float()), atol=1e-4, rtol=0)
    torch.testing.assert_close(model.input_from_lab(lab), model.preprocess(rgb.float()), atol=2e-4, rtol=0)
    # a dropped chroma channel removes that opponent axis: a grey-ish image comes back for a = b = 0
    grey = model.input_from_lab(lab * torch.tensor([1.0, 0.0, 0.0])[:, None, None])
    back = grey * torch.tensor([0.229, 0.224, 0.225])[:, None, None] + torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    assert float((back.max(1).values - back.min(1).values).max()) < 1e-3


@_needs("efficientnet-lite0")
def test_temporal_training_from_imagenet_init_freezes_batch_norm_and_exports(tmp_path):
    pytest.importorskip("av")
    from train_helpers import make_data

    from stcorr.train.__main__ import main

    data = make_data(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["temporal", "--data", str(data["videos"]), "--out", str(out), "--preset", "cpu-lite2",
            "--arch", "efficientnet-lite0", "--init", "efficientnet-lite0", "--image-size", "64",
            "--batch-size", "2", "--iters", "2", "--log-every", "1", "--no-progress", "--workers", "0"]
    torch.set_num_threads(1)
    assert main(argv) == 0
    config = __import__("json").loads((out / "train_config.json").read_text())
    assert config["freeze_bn"] is True and config["arch"] == "efficientnet-lite0"
    trained = stcorr.load_model(out, device="cpu")
    initial = stcorr.load_model("efficientnet-lite0", device="cpu")
    assert isinstance(trained, LiteCorrespondenceModel)
    own, start = trained.state_dict(), initial.state_dict()
    running = [key for key in own if key.endswith("running_mean") or key.endswith("running_var")]
    weights = [key for key in own if key.endswith("_project_conv.weight")]
    assert running and all(torch.equal(own[key], start[key]) for key in running)  # BN statistics frozen
    assert any(not torch.equal(own[key], start[key]) for key in weights)  # the network was trained
    from stcorr.train.loop import read_log

    assert {"reconstruction_0", "reconstruction_1", "local_distillation", "global_distillation"} <= set(read_log(out)[0])


def test_lite_students_train_in_the_temporal_stage_only():
    from stcorr.train.presets import resolve_config

    with pytest.raises(InputError, match="temporal stage only"):
        resolve_config("spatial", "cpu-lite2")
    with pytest.raises(InputError, match="no layer4"):
        resolve_config("temporal", "cpu-lite2", global_layer="layer4")
    assert resolve_config("temporal", "cpu").freeze_bn is False
    assert resolve_config("temporal", "cpu-lite2").freeze_bn is True
    assert resolve_config("temporal", "cpu-lite2", freeze_bn=False).freeze_bn is False
