"""Training faults of the reliability probe (group F): a corrupt newest checkpoint is detected by its sha256
and --resume falls back past it (continuing exactly as an uninterrupted run); --out that is a file or not
writable, and a decompression-bomb image, end with ``error: ...`` (exit 2) before any training."""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from train_helpers import make_data, one_thread  # noqa: F401 (autouse fixture)

from stcorr.errors import CheckpointError, InputError, OutputWriteError
from stcorr.train.checkpoints import check_run_folder, read_checkpoint, write_checkpoint
from stcorr.train.cli import main
from stcorr.train.loop import BACKBONE_NAME, list_checkpoints, read_log

pytest.importorskip("av")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_data(tmp_path_factory.mktemp("safety_data"))


def _temporal(data: dict[str, Path], iters: int = 3) -> list[str]:
    return ["temporal", "--data", str(data["videos"]), "--init", "none", "--teacher", "none", "--preset", "cpu",
            "--iters", str(iters), "--batch-size", "2", "--image-size", "64", "--log-every", "1",
            "--save-every", "1", "--keep-last", "0", "--no-progress", "--workers", "0"]


def _overwrite_tensor_bytes(path: Path, count: int = 4096) -> None:
    """Random bytes inside the largest tensor's data: the zip still opens and torch.load does not notice."""
    with zipfile.ZipFile(path) as archive:
        entry = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as file:
        file.seek(entry.header_offset + 26)
        name_length, extra_length = (int.from_bytes(file.read(2), "little") for _ in range(2))
        start = entry.header_offset + 30 + name_length + extra_length
        file.seek(start + entry.file_size // 4)
        file.write(os.urandom(min(count, entry.file_size // 2)))


def test_a_corrupt_newest_checkpoint_is_detected_and_resume_falls_back(data, tmp_path, caplog):  # F02
    full, part = tmp_path / "full", tmp_path / "part"
    assert main([*_temporal(data), "--out", str(full)]) == 0
    assert main([*_temporal(data), "--out", str(part), "--stop-at", "2"]) == 0
    newest = list_checkpoints(part)[-1][1]
    assert newest.name == "step_00000002.pt"
    _overwrite_tensor_bytes(newest)
    torch.load(newest, map_location="cpu", weights_only=True)  # torch alone reads the damaged file
    with pytest.raises(CheckpointError, match="sha256"):
        read_checkpoint(newest)
    with caplog.at_level(logging.WARNING):
        assert main([*_temporal(data), "--out", str(part), "--resume"]) == 0
    assert "step_00000002.pt is corrupt" in caplog.text and "step_00000001.pt instead" in caplog.text
    expected, got = read_log(full), read_log(part)
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(expected, got):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-7), a["step"]
    weights_a, weights_b = load_file(full / BACKBONE_NAME), load_file(part / BACKBONE_NAME)
    for key in weights_a:
        torch.testing.assert_close(weights_b[key], weights_a[key], rtol=1e-5, atol=1e-6)


def test_an_explicitly_named_corrupt_checkpoint_is_refused(tmp_path):
    payload = {"format": 1, "step": 3, "weights": torch.arange(4096, dtype=torch.float32), "nested": {"a": [1, 2.5]}}
    write_checkpoint(tmp_path, 3, payload, keep_last=0)
    path = list_checkpoints(tmp_path)[-1][1]
    assert read_checkpoint(path)["weights"].equal(payload["weights"])
    _overwrite_tensor_bytes(path, 64)
    with pytest.raises(CheckpointError, match="corrupt: its content does not match the sha256"):
        read_checkpoint(path)


def test_a_checkpoint_without_a_checksum_still_loads_with_a_warning(tmp_path, caplog):
    path = tmp_path / "old.pt"
    torch.save({"format": 1, "step": 1, "weights": torch.ones(3)}, path)
    with caplog.at_level(logging.WARNING):
        assert read_checkpoint(path)["step"] == 1
    assert "no checksum" in caplog.text


def test_out_that_is_a_file_is_a_typed_error(data, tmp_path, capsys):  # F33
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    assert main([*_temporal(data, 2), "--out", str(afile)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main([*_temporal(data, 2), "--out", str(afile / "run")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert afile.read_text() == "not a folder"


def test_out_on_a_read_only_place_is_a_typed_error(data, tmp_path, capsys, monkeypatch):  # F34
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere but on a read-only mount: answer as such a mount would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == readonly else real_access(p, mode))
    try:
        with pytest.raises(OutputWriteError, match="not writable"):
            check_run_folder(readonly / "run")
        assert main([*_temporal(data, 2), "--out", str(readonly / "run")]) == 2
        assert "choose an --out on a writable disk" in capsys.readouterr().err
    finally:
        readonly.chmod(0o755)
    assert not (readonly / "run").exists()


def test_a_decompression_bomb_among_training_images_is_a_typed_error(tmp_path, capsys, monkeypatch):  # F15
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 64), (i * 90, 40, 200)).save(images / f"ok{i}.png")
    Image.new("1", (200, 200)).save(images / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 40,000 px: over twice the limit, a bomb to Pillow
    argv = ["spatial", "--data", str(images), "--out", str(tmp_path / "r"), "--preset", "cpu", "--iters", "2",
            "--batch-size", "2", "--image-size", "64", "--workers", "0", "--moco-queue", "8", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "huge.png" in err and "decompression bomb" in err and "MAX_IMAGE_PIXELS" in err


def test_check_run_folder_accepts_new_and_existing_folders(tmp_path):
    check_run_folder(tmp_path / "new" / "run")
    check_run_folder(tmp_path)
    with pytest.raises(InputError):
        (tmp_path / "f").write_text("x")
        check_run_folder(tmp_path / "f")
