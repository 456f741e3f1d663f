"""Weights files that are not what they claim: typed errors, never a hang or a silently wrong model.

Reliability probe 2026-12-07, group C: C38 (a FIFO named *.safetensors blocked forever), C07-C10 (int64, bool,
complex weights cast silently), C44 (.pth with int keys: raw AttributeError), C29 (deeply nested config.json:
RecursionError), C48/C59 (a flipped byte in a .pth loaded silently; release checkpoints carry no sha256 pin),
C62 (convert into a symlinked folder replaced the link and left a hidden entry).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import stcorr
from stcorr.cli import main
from stcorr.errors import CheckpointError


@pytest.fixture(scope="module")
def r18(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("weights") / "r18model"
    stcorr.load_model("embedded-r18-s8", device="cpu").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def r18_pth(r18, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pth") / "r18_tv.pth"
    torch.save(load_file(r18 / "model.safetensors"), path)
    return path


@pytest.mark.parametrize("name", ["x.pth", "x.safetensors"])
def test_non_regular_files_are_refused(tmp_path, name):
    """C38: load_model on a FIFO named *.safetensors blocked in open() for good; now refused unopened."""
    fifo = tmp_path / name
    os.mkfifo(fifo)
    done = threading.Event()
    errors = []

    def load():
        try:
            stcorr.load_model(str(fifo), stride=8)
        except CheckpointError as exc:
            errors.append(exc)
        done.set()

    threading.Thread(target=load, daemon=True).start()
    assert done.wait(30), "load_model blocked on a FIFO"
    assert errors and "not a regular file" in str(errors[0])
    link = tmp_path / ("dev" + Path(name).suffix)
    link.symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match="a device"):
        stcorr.load_model(str(link), stride=8)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_weights_of_the_wrong_number_kind_are_refused(r18, tmp_path, dtype):
    """C07, C09, C10: int64/bool/complex weights were cast to float silently (a garbage model)."""
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "config.json").write_bytes((r18 / "config.json").read_bytes())
    weights = load_file(r18 / "model.safetensors")
    save_file({key: value.to(dtype) for key, value in weights.items()}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="wrong number types"):
        stcorr.load_model(str(folder))


def test_float16_weights_still_load(r18, tmp_path):
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "config.json").write_bytes((r18 / "config.json").read_bytes())
    weights = load_file(r18 / "model.safetensors")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, folder / "model.safetensors")
    assert stcorr.load_model(str(folder)).arch == "resnet18"


def test_pth_with_int_keys_is_typed(tmp_path):
    """C44: a .pth whose keys are ints raised a raw AttributeError."""
    torch.save({1: torch.zeros(1)}, tmp_path / "i.pth")
    with pytest.raises(CheckpointError, match="not names"):
        stcorr.load_model(str(tmp_path / "i.pth"), stride=8)


def test_deeply_nested_config_is_typed(r18, tmp_path):
    """C29: 100k nested brackets in config.json raised RecursionError."""
    folder = tmp_path / "deep"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((r18 / "model.safetensors").read_bytes())
    (folder / "config.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(CheckpointError, match="nested too deeply"):
        stcorr.load_model(str(folder))


def _flip(path: Path, out: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # in the middle of the tensor data
    out.write_bytes(bytes(data))
    return out


def test_pth_with_a_flipped_byte_is_refused(r18_pth, tmp_path):
    """C48: torch.load does not check the zip's CRCs, so a changed tensor value loaded silently."""
    assert stcorr.load_model(str(r18_pth), stride=8).arch == "resnet18"
    with pytest.raises(CheckpointError, match="CRC-32"):
        stcorr.load_model(str(_flip(r18_pth, tmp_path / "flip.pth")), stride=8)


def test_damaged_release_checkpoint_is_refused_and_an_intact_one_warns_unpinned(r18_pth, tmp_path, monkeypatch,
                                                                                caplog):
    """C59: a flipped byte in STCORR_HOME/stt-r18-s8.pth loaded silently; the release has no sha256 pin."""
    monkeypatch.setenv("STCORR_HOME", str(tmp_path))
    _flip(r18_pth, tmp_path / "stt-r18-s8.pth")
    with pytest.raises(CheckpointError, match="CRC-32"):
        stcorr.load_model("stt-r18-s8")
    (tmp_path / "stt-r18-s8.pth").write_bytes(r18_pth.read_bytes())
    with caplog.at_level(logging.WARNING, logger="stcorr.loading"):
        assert stcorr.load_model("stt-r18-s8").arch == "resnet18"
    assert "no sha256 pin" in caplog.text


def test_models_listing_says_which_releases_are_unpinned(capsys):
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "stt-r18-s8" in listing and "unpinned" in listing


def test_convert_into_a_symlinked_folder_replaces_its_target(r18, tmp_path, capsys):
    """C62: the link was replaced by a real folder, its target kept the old model, a hidden entry was left."""
    real = tmp_path / "real"
    assert main(["convert", str(r18), str(real)]) == 0
    link = tmp_path / "link"
    link.symlink_to(real)
    assert main(["convert", "embedded-lite2-s8", str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert stcorr.load_model(str(real)).arch == "efficientnet-lite2"
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["link", "real"]
