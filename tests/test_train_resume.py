"""Resuming continues exactly: k steps, stop, resume to n == n uninterrupted steps (CPU, deterministic)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stcorr.model import CorrespondenceModel
from stcorr.train.cli import main
from stcorr.train.loop import BACKBONE_NAME, list_checkpoints, read_log
from train_helpers import make_data, one_thread  # noqa: F401 (autouse fixture)

pytest.importorskip("av")

TIMING = ("it_per_s", "samples_per_s", "time")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_data(tmp_path_factory.mktemp("resume_data"))


def losses(out: Path) -> list[dict[str, float]]:
    return [{key: value for key, value in record.items() if key not in TIMING} for record in read_log(out)]


def assert_same_run(full: Path, resumed: Path) -> None:
    expected, got = losses(full), losses(resumed)
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(expected, got):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), (a["step"], key)
    weights_a, weights_b = load_file(full / BACKBONE_NAME), load_file(resumed / BACKBONE_NAME)
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        torch.testing.assert_close(weights_b[key], weights_a[key], rtol=1e-5, atol=1e-6)


def test_temporal_resume_from_an_older_checkpoint(data: dict[str, Path], tmp_path: Path) -> None:
    teacher = tmp_path / "teacher"  # inference weights (no layer4): also the --init, whose layer4 stays random
    torch.manual_seed(1)
    CorrespondenceModel("resnet18").save_pretrained(teacher)
    argv = ["temporal", "--data", str(data["videos"]), "--init", str(teacher), "--teacher", str(teacher),
            "--preset", "cpu", "--iters", "5", "--batch-size", "2", "--image-size", "64", "--log-every", "1",
            "--save-every", "2", "--keep-last", "2", "--no-progress", "--workers", "0"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main([*argv, "--out", str(full)]) == 0
    assert main([*argv, "--out", str(part), "--stop-at", "3"]) == 0
    assert [step for step, _ in list_checkpoints(part)] == [2, 3]
    assert not (part / "model.safetensors").exists()  # stopped early: no export
    older = list_checkpoints(part)[0][1]
    assert main([*argv, "--out", str(part), "--resume", str(older), "--workers", "2"]) == 0
    assert [step for step, _ in list_checkpoints(part)] == [4, 5]
    assert "global_distillation" in losses(part)[0]
    assert_same_run(full, part)


def test_moco_resume_restores_momentum_encoder_and_queues(data: dict[str, Path], tmp_path: Path) -> None:
    # a queue of 8 with batch 4 wraps around every 2 steps, so a stale queue would show immediately
    argv = ["spatial", "--data", str(data["mixed"]), "--preset", "cpu", "--iters", "5", "--batch-size", "4",
            "--image-size", "64", "--moco-queue", "8", "--detco", "--log-every", "1", "--save-every", "0",
            "--no-progress", "--workers", "0"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main([*argv, "--out", str(full)]) == 0
    assert main([*argv, "--out", str(part), "--stop-at", "2"]) == 0
    assert main([*argv, "--out", str(part), "--resume"]) == 0
    assert_same_run(full, part)
    state = torch.load(list_checkpoints(part)[-1][1], weights_only=True)["task"]
    assert {"queue.keys", "queue.pointer", "local_queue.keys", "key_encoder.conv1.weight"} <= state.keys()
