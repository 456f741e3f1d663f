"""Official-layout checkpoints load exactly: same features as a hand-patched torchvision ResNet."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
import torchvision

from conftest import randomize_batchnorm
from stcorr import load_model
from stcorr.cli import main as cli_main
from stcorr.color import normalize_lab
from stcorr.errors import CheckpointError, InputError


def reference_network(arch: str, stride: int, seed: int) -> torch.nn.Module:
    """torchvision ResNet patched by hand as method.md §5.3 describes."""
    torch.manual_seed(seed)
    net = randomize_batchnorm(getattr(torchvision.models, arch)(weights=None), seed)
    if stride == 8:
        net.maxpool = torch.nn.Identity()
    else:
        net.maxpool = torch.nn.AvgPool2d(3, stride=2, padding=1)
        for stage in (net.layer2, net.layer3):
            block = stage[0]
            conv = block.conv2 if arch == "resnet50" else block.conv1
            conv.stride = (1, 1)
            block.downsample[0].stride = (1, 1)
    return net.eval()


def reference_features(net: torch.nn.Module, lab: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(lab))))
    return net.layer3(net.layer2(net.layer1(x)))


def to_mmcv_key(key: str) -> str:
    """torchvision -> MMCV ConvModule names (the inverse of the converter), written independently."""
    key = re.sub(r"^conv1\.weight$", "conv1.conv.weight", key)
    key = re.sub(r"^bn1\.", "conv1.bn.", key)
    key = re.sub(r"\.conv(\d)\.weight$", r".conv\1.conv.weight", key)
    key = re.sub(r"\.bn(\d)\.", r".conv\1.bn.", key)
    key = re.sub(r"\.downsample\.0\.", ".downsample.conv.", key)
    key = re.sub(r"\.downsample\.1\.", ".downsample.bn.", key)
    return key


def official_checkpoint(net: torch.nn.Module) -> dict:
    """A checkpoint shaped like the MMCV runner's: meta, state_dict (student + teacher), optimizer."""
    student = {f"backbone.{to_mmcv_key(k)}": v.clone() for k, v in net.state_dict().items() if not k.startswith("fc.")}
    teacher = {f"backbone_t.{to_mmcv_key(k)}": torch.zeros_like(v) for k, v in net.state_dict().items()}
    state = {**student, **teacher, "iteration": torch.tensor(44000)}
    return {
        "meta": {"epoch": 800, "mmcv_version": "1.3.18"},
        "state_dict": state,
        "optimizer": {"backbone": {"state": {}, "param_groups": [{"lr": 5e-8, "params": [0, 1, 2]}]}},
    }


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


CASES = [("resnet18", 8), ("resnet18", 4), ("resnet50", 8), ("resnet50", 4)]


@pytest.mark.parametrize("arch,stride", CASES)
def test_official_checkpoint_matches_hand_patched_torchvision(tmp_path, arch, stride):
    net = reference_network(arch, stride, seed=1)
    path = tmp_path / "release.pth"
    torch.save(official_checkpoint(net), path)
    rgb = torch.rand(2, 3, 64, 88, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference_features(net, normalize_lab(rgb))

    model = load_model(path, stride=stride, device="cpu")
    assert (model.arch, model.stride) == (arch, stride)
    with torch.no_grad():
        got = model(rgb)
    assert got.shape == expected.shape == (2, model.feature_dim, 64 // stride, 88 // stride)
    assert cosine(got, expected) > 0.999
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)

    out_dir = tmp_path / "converted"
    assert cli_main(["convert", str(path), str(out_dir), "--stride", str(stride)]) == 0
    converted = load_model(out_dir, device="cpu")
    with torch.no_grad():
        assert cosine(converted(rgb), expected) > 0.999
    assert not any(key.startswith("layer4") for key in converted.state_dict())


def test_convert_prints_sha256(tmp_path, capsys):
    from stcorr.hub import sha256_of

    path = tmp_path / "release.pth"
    torch.save(official_checkpoint(reference_network("resnet18", 8, seed=2)), path)
    assert cli_main(["convert", str(path), str(tmp_path / "out"), "--stride", "8"]) == 0
    printed = capsys.readouterr().out
    assert sha256_of(tmp_path / "out" / "model.safetensors") in printed


def test_convert_a_model_folder_to_float16(tmp_path, capsys):
    from safetensors.torch import load_file

    source = randomize_batchnorm(load_model(_saved_release(tmp_path), stride=8, device="cpu"), seed=4)
    source.save_pretrained(tmp_path / "fp32")
    assert cli_main(["convert", str(tmp_path / "fp32"), str(tmp_path / "fp16"), "--dtype", "float16"]) == 0
    assert "float16" in capsys.readouterr().out
    stored = load_file(tmp_path / "fp16" / "model.safetensors")
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    half = load_model(tmp_path / "fp16", device="cpu")
    assert next(half.parameters()).dtype == torch.float32  # cast back when loaded
    for key, value in source.state_dict().items():  # every tensor equals the float32 one rounded to float16
        assert torch.equal(half.state_dict()[key], value.half().to(value.dtype)), key
    rgb = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert cosine(half(rgb), source(rgb)) > 0.999


def test_convert_pth_without_stride_is_a_typed_error(tmp_path, capsys):
    assert cli_main(["convert", str(_saved_release(tmp_path)), str(tmp_path / "out")]) == 2
    assert "--stride 8 or --stride 4" in capsys.readouterr().err


def _saved_release(tmp_path):
    path = tmp_path / "release.pth"
    torch.save(official_checkpoint(reference_network("resnet18", 8, seed=3)), path)
    return path


def test_pth_without_stride_is_a_clear_error(tmp_path):
    path = tmp_path / "release.pth"
    torch.save(official_checkpoint(reference_network("resnet18", 8, seed=3)), path)
    with pytest.raises(InputError, match="stride=8 or stride=4"):
        load_model(path)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    ckpt = official_checkpoint(reference_network("resnet18", 8, seed=4))
    del ckpt["state_dict"]["backbone.layer2.0.conv1.conv.weight"]
    ckpt["state_dict"]["backbone.layer3.0.extra.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path, stride=8)
    message = str(info.value)
    assert "layer2.0.conv1.weight" in message and "layer3.0.extra.weight" in message


def test_pickles_with_code_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(CheckpointError, match="tensors only"):
        load_model(path, stride=8)


def test_truncated_pth_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "release.pth"
    torch.save(official_checkpoint(reference_network("resnet18", 8, seed=5)), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_model(path, stride=8)
