"""load_model: folders, files, manifest names, the Hub cache (simulated, never the network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

import stcorr.hub
import stcorr.loading
from conftest import randomize_batchnorm
from stcorr import CorrespondenceModel, load_model
from stcorr.errors import CheckpointError, ChecksumError, UnknownModelError, WeightsUnavailableError
from stcorr.hub import sha256_of
from stcorr.manifest import load_manifest

REVISION = "0123456789abcdef0123456789abcdef01234567"
REPO = "stcorr-test/tiny"


def tiny_model(seed: int = 0, **kwargs) -> CorrespondenceModel:
    torch.manual_seed(seed)
    return randomize_batchnorm(CorrespondenceModel(**kwargs), seed)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def put_in_hub_cache(filename: str, source: Path, repo: str = REPO, revision: str = REVISION) -> Path:
    """Lay a file out exactly as huggingface_hub's cache does (blob + snapshot + ref)."""
    root = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    blob = root / "blobs" / sha256_of(source)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(source.read_bytes())
    snapshot = root / "snapshots" / revision / filename
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.symlink_to(blob)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    return snapshot


def hub_manifest(weights: Path, **overrides) -> dict:
    entry = {
        "kind": "hub",
        "arch": "resnet18",
        "stride": 8,
        "hub": {"repo_id": REPO, "revision": REVISION, "filename": "model.safetensors",
                "sha256": sha256_of(weights), "size": weights.stat().st_size},
    }
    entry["hub"].update(overrides)
    return {"schema_version": 1, "default": None, "models": {"tiny-hub": entry}}


@pytest.fixture
def saved(tmp_path) -> tuple[CorrespondenceModel, Path]:
    model = tiny_model()
    model.save_pretrained(tmp_path / "saved")
    return model, tmp_path / "saved"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network must not be used")

    monkeypatch.setattr(stcorr.hub, "hf_hub_download", refuse)


def use_manifest(monkeypatch, data: dict) -> None:
    monkeypatch.setattr(stcorr.loading, "load_manifest", lambda: load_manifest(data))


def test_save_pretrained_round_trip(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["arch"] == "resnet18" and config["stride"] == 8 and config["feature_dim"] == 256
    assert config["input_space"] == "lab" and config["layers"] == ["layer3"]
    loaded = load_model(folder, device="cpu")
    assert same_weights(model, loaded)
    assert not loaded.training
    assert same_weights(model, CorrespondenceModel.from_pretrained(folder))
    assert same_weights(model, load_model(folder / "model.safetensors", device="cpu"))


def test_inference_weights_stop_at_layer3(saved):
    _, folder = saved
    from safetensors.torch import load_file

    keys = load_file(folder / "model.safetensors").keys()
    assert any(k.startswith("layer3.") for k in keys)
    assert not any(k.startswith(("layer4.", "fc.")) for k in keys)
    assert "conv1.weight" in keys and "bn1.running_mean" in keys


def test_stride_override_keeps_weights(saved):
    model, folder = saved
    s4 = load_model(folder, stride=4, device="cpu")
    assert s4.stride == 4 and same_weights(model, s4)
    assert s4(torch.rand(1, 3, 32, 32)).shape[-2:] == (8, 8)


def test_truncated_safetensors_is_a_checkpoint_error(saved):
    _, folder = saved
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(folder)


def test_wrong_architecture_lists_keys(tmp_path, saved):
    _, folder = saved
    config = json.loads((folder / "config.json").read_text())
    config.update(arch="resnet50", feature_dim=1024)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="missing keys"):
        load_model(folder)


def test_manifest_hub_entry_loads_from_cache_offline(monkeypatch, saved, no_network):
    model, folder = saved
    weights = folder / "model.safetensors"
    put_in_hub_cache("model.safetensors", weights)
    use_manifest(monkeypatch, hub_manifest(weights))
    assert same_weights(model, load_model("tiny-hub", local_files_only=True, device="cpu"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert same_weights(model, load_model("tiny-hub", device="cpu"))


def test_offline_with_empty_cache_prints_download_command(monkeypatch, saved, no_network):
    _, folder = saved
    use_manifest(monkeypatch, hub_manifest(folder / "model.safetensors"))
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("tiny-hub", local_files_only=True)
    assert f"hf download {REPO} model.safetensors --revision {REVISION}" in str(info.value)
    assert constants.HF_HUB_CACHE in str(info.value)


def test_truncated_cached_file_is_a_checksum_error(monkeypatch, saved, no_network):
    _, folder = saved
    weights = folder / "model.safetensors"
    use_manifest(monkeypatch, hub_manifest(weights))
    cached = put_in_hub_cache("model.safetensors", weights)
    cached.resolve().write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ChecksumError, match="truncated"):
        load_model("tiny-hub", local_files_only=True)


def fake_download(content: bytes):
    """A stand-in for hf_hub_download that 'downloads' ``content`` into the simulated cache."""

    def download(repo_id, filename, *, revision=None, cache_dir=None, **kwargs):
        source = Path(constants.HF_HUB_CACHE).parent / f"download-{filename}"
        source.write_bytes(content)
        return str(put_in_hub_cache(filename, source, repo_id, revision))

    return download


def test_fresh_download_is_verified(monkeypatch, saved):
    model, folder = saved
    weights = folder / "model.safetensors"
    use_manifest(monkeypatch, hub_manifest(weights))
    monkeypatch.setattr(stcorr.hub, "hf_hub_download", fake_download(weights.read_bytes()))
    assert same_weights(model, load_model("tiny-hub", local_files_only=False, device="cpu"))


def test_fresh_download_with_wrong_sha256_is_rejected_and_removed(monkeypatch, saved):
    _, folder = saved
    weights = folder / "model.safetensors"
    use_manifest(monkeypatch, hub_manifest(weights, sha256="0" * 64))
    monkeypatch.setattr(stcorr.hub, "hf_hub_download", fake_download(weights.read_bytes()))
    with pytest.raises(ChecksumError, match="sha256"):
        load_model("tiny-hub", local_files_only=False)
    snapshot = Path(constants.HF_HUB_CACHE) / f"models--{REPO.replace('/', '--')}" / "snapshots" / REVISION
    assert not (snapshot / "model.safetensors").exists()


def test_hf_hub_repo_with_revision(monkeypatch, saved, no_network):
    model, folder = saved
    put_in_hub_cache("model.safetensors", folder / "model.safetensors")
    put_in_hub_cache("config.json", folder / "config.json")
    loaded = load_model(f"hf-hub:{REPO}@{REVISION}", device="cpu")
    assert same_weights(model, loaded)
    assert same_weights(model, CorrespondenceModel.from_pretrained(REPO, revision=REVISION))


def test_release_entry_not_on_disk_explains_download_and_convert():
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("stt-r18-s8")
    message = str(info.value)
    assert "drive.google.com" in message
    assert "python -m stcorr convert" in message and "--stride 8" in message


def test_release_entry_loads_after_conversion(tmp_path, saved):
    model, folder = saved
    from stcorr.loading import release_dir

    target = release_dir("stt-r18-s4")
    target.parent.mkdir(parents=True, exist_ok=True)
    folder.rename(target)
    loaded = load_model("stt-r18-s4", device="cpu")
    assert loaded.stride == 4 and same_weights(model, loaded)


def test_manifest_lists_the_five_releases():
    entries = load_manifest()
    releases = {name: e for name, e in entries.items() if e.kind == "release"}
    assert {(e.arch, e.stride) for e in releases.values()} == {
        ("resnet18", 8), ("resnet50", 8), ("resnet18", 4), ("resnet50", 4)}
    assert len(releases) == 5
    assert all({"davis17_jf", "vip_miou", "jhmdb_pck@0.1", "jhmdb_pck@0.2"} <= e.reported.keys() for e in releases.values())


def test_repo_root_manifest_is_the_packaged_one():
    root = Path(__file__).resolve().parents[1] / "weights_manifest.json"
    from importlib import resources

    packaged = resources.files("stcorr").joinpath("weights_manifest.json").read_text()
    assert json.loads(root.read_text()) == json.loads(packaged)


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownModelError) as info:
        load_model("no-such-model")
    assert "stt-r18-s8" in str(info.value)
    with pytest.raises(UnknownModelError, match="hf-hub:org/repo"):
        load_model("org/repo")


def test_default_model_without_embedded_weights_is_a_typed_error(monkeypatch):
    monkeypatch.setattr(stcorr.loading, "default_model_name", lambda: None)
    with pytest.raises(WeightsUnavailableError, match="no embedded default model"):
        load_model()


def test_public_docstrings_describe_every_argument():
    """help(load_model) explains each form of name_or_path itself (not "see the module docstring")."""
    import inspect

    import stcorr

    doc = inspect.getdoc(stcorr.load_model)
    assert "module docstring" not in doc
    for form in ("None", "hf-hub:org/repo", ".safetensors", ".pth", "manifest name", "folder"):
        assert form in doc, form
    for function in (stcorr.load_model, stcorr.load_encoder, stcorr.match_points, stcorr.propagate_labels,
                     stcorr.extract_features):
        parameters = [name for name in inspect.signature(function).parameters if name not in ("kwargs",)]
        text = inspect.getdoc(function)
        missing = [name for name in parameters if name not in text]
        assert not missing, f"{function.__name__} does not document {missing}"
