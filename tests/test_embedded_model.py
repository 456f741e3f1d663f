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

MAX_BYTES = 12 * 2**20


@pytest.fixture(scope="module")
def entry():
    name = default_model_name()
    assert name is not None, "the manifest names no default model"
    return get_entry(name)


def test_manifest_default_is_an_embedded_file_with_matching_hash(entry) -> None:
    assert entry.kind == "embedded" and (entry.arch, entry.stride, entry.input_space) == ("resnet18", 8, "lab")
    folder = resources.files("stcorr").joinpath(entry.embedded_path)
    weights = folder.joinpath("model.safetensors")
    assert weights.is_file() and folder.joinpath("config.json").is_file()
    assert sha256_of(weights) == entry.sha256
    assert weights.stat().st_size == entry.size <= MAX_BYTES
    config = json.loads(folder.joinpath("config.json").read_text())
    assert (config["arch"], config["stride"], config["input_space"]) == ("resnet18", 8, "lab")
    for key in ("data", "commands", "license"):  # provenance the issue asks for
        assert entry.extra.get("training", {}).get(key), key


def test_load_model_without_arguments_works_offline(entry, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = stcorr.load_model(device="cpu")
    assert (model.arch, model.stride, model.input_space, model.feature_dim) == ("resnet18", 8, "lab", 256)
    assert not model.training and all(p.dtype == torch.float32 for p in model.parameters())
    rgb = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model(rgb)
    assert features.shape == (1, 256, 8, 12) and torch.isfinite(features).all()
    assert stcorr.load_model(entry.name, device="cpu").state_dict().keys() == model.state_dict().keys()
