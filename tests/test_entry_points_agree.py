"""The command line and the evaluation go through one propagation API: the same input gives the same masks,
at the native size and at a reduced working size (results at the original size in both)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stcorr.baselines import load_baseline
from stcorr.cli import main
from stcorr.eval.predict import propagate_mask
from stcorr.eval.presets import preset_for
from stcorr.frames import read_mask
from stcorr.outputs import write_image, write_mask_png

pytest.importorskip("skimage")
from skimage import data  # noqa: E402

FRAMES = 6


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("video")
    photo = data.astronaut()[60:316:2, 60:380:2]  # 128 x 160
    frames = np.stack([np.roll(photo, (2 * t, 3 * t), axis=(0, 1)) for t in range(FRAMES)])
    for t, image in enumerate(frames):
        write_image(root / "frames" / f"{t:05d}.png", image)
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[20:70, 40:100] = 1
    mask[80:120, 10:60] = 2
    return root / "frames", write_mask_png(root / "first.png", mask), frames, mask


@pytest.mark.parametrize("max_side", [None, 80])
def test_cli_and_evaluation_give_identical_masks(folder, tmp_path, max_side):
    frames_dir, mask_path, frames, mask = folder
    args = ["propagate", "--video", str(frames_dir), "--mask", str(mask_path), "--model", "lab-pixels",
            "--out", str(tmp_path), "--device", "cpu", "--radius", "6", "--context", "4", "--topk", "5"]
    assert main(args + (["--max-side", str(max_side)] if max_side else [])) == 0
    cli_masks = [read_mask(tmp_path / "masks" / f"{t:05d}.png") for t in range(FRAMES)]

    model = load_baseline("lab-pixels", device="cpu")
    working = None if max_side is None else (64, 80)  # what --max-side 80 gives for 128 x 160 frames
    # The CLI's knobs and resampling, through the evaluation's entry point.
    preset = preset_for("davis", 8).with_overrides(
        input_size=working, resample="antialias", radius=6, context=4, topk=5,
        label_downsampling="bilinear", minmax_normalize=False,
    )
    eval_masks = list(propagate_mask(model, list(frames), mask, preset))
    assert len(eval_masks) == FRAMES
    for t in range(FRAMES):
        assert cli_masks[t].shape == mask.shape
        np.testing.assert_array_equal(cli_masks[t], eval_masks[t])
    assert (np.stack(cli_masks[1:]) == 1).any() and (np.stack(cli_masks[1:]) == 2).any()
