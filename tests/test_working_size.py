"""One working size everywhere (issue 25): the Python API encodes at the CLI's 640 px on CPU unless told otherwise,
``iter_propagate`` yields the given frame before encoding anything, thin objects are warned about, the evaluation
keeps its protocol sizes, and the CPU inference twin gives the plain forward's features."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import stcorr
from stcorr.errors import InputError
from stcorr.features import encode_batch, extract_features, fold_batchnorm, working_frames
from stcorr.io.frames import open_frames
from stcorr.propagation.api import iter_propagate, propagate_labels
from stcorr.propagation.matching import match_points
from stcorr.propagation.options import PropagationOptions
from stcorr.propagation.passes import Geometry, warn_thin_objects
from stcorr.propagation.session import PropagationSession
from stcorr.working_size import CPU_MAX_SIDE, default_max_side, working_max_side

WIDE = (40, 800)  # (H, W): longer than 640, so the CPU default shrinks it to 640 x 32


class Recorder(nn.Module):
    """A stride-8 encoder (8x8 patches, fixed random projection) that records the (B, 3, H, W) of every call."""

    stride = 8

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 8, stride=8, bias=False)
        with torch.no_grad():
            self.patch.weight.copy_(torch.randn(self.patch.weight.shape, generator=torch.Generator().manual_seed(0)))
        self.calls: list[tuple[int, ...]] = []

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(rgb.shape))
        height, width = rgb.shape[-2:]
        padded = F.pad(rgb, (0, -width % 8, 0, -height % 8), mode="replicate")
        return self.patch(padded)


def frames(count: int = 3, size: tuple[int, int] = WIDE) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, *size, 3), dtype=np.uint8)


def mask(size: tuple[int, int] = WIDE) -> np.ndarray:
    ids = np.zeros(size, np.uint8)
    ids[5:35, 100:300] = 1
    return ids


def test_the_default_is_the_cli_one():
    assert CPU_MAX_SIDE == 640 and default_max_side("cpu") == 640 and default_max_side("cuda") is None
    assert working_max_side(None, "cpu") == 640 and working_max_side(0, "cpu") is None
    assert working_max_side(300, "cuda") == 300
    for bad in (-1, 2.5, True):
        with pytest.raises(InputError, match="max_side"):
            working_max_side(bad, "cpu")


def test_extract_features_takes_max_side():
    model = Recorder()
    assert extract_features(model, frames(2)).shape[-2:] == (4, 80)  # 32 x 640 on CPU by default
    assert model.calls[-1][-2:] == (32, 640)
    assert extract_features(model, frames(2), max_side=320).shape[-2:] == (2, 40)
    assert extract_features(model, frames(2), max_side=0).shape[-2:] == (5, 100)  # full size
    assert model.calls[-1][-2:] == WIDE
    small = frames(1, (40, 64))
    assert extract_features(model, small).shape[-2:] == (5, 8)  # never made larger


def test_a_source_opened_at_a_reduced_size_keeps_it():
    model = Recorder()
    source = open_frames(frames(2), max_side=200)
    assert tuple(working_frames(source, model).size) == (10, 200)
    assert tuple(working_frames(source, model, max_side=0).size) == WIDE
    assert tuple(working_frames(frames(2), model, size=(16, 64)).size) == (16, 64)


@pytest.mark.parametrize("entry", ["propagate_labels", "iter_propagate", "session", "model.propagate"])
def test_propagation_entry_points_work_at_640_on_cpu(entry):
    model = Recorder()
    if entry == "propagate_labels":
        result = propagate_labels(model, frames(), mask())
    elif entry == "iter_propagate":
        result = list(iter_propagate(model, frames(), mask()))
    elif entry == "session":
        session = PropagationSession(model, frames())
        assert session.working_size == (32, 640) and session.to_dict()["max_side"] == 640
        session.add_mask(0, mask())
        result = list(session.propagate())
    else:
        embedded = stcorr.load_model("embedded-r18-s8", device="cpu")
        calls = []
        embedded.register_forward_pre_hook(lambda module, args: calls.append(tuple(args[0].shape)))
        result = embedded.propagate(frames(2), mask())
        assert (32, 640) in [shape[-2:] for shape in calls] and max(shape[-1] for shape in calls) == 640
        assert result.labels.shape == (2, *WIDE)
        return
    assert model.calls and all(shape[-2:] == (32, 640) for shape in model.calls)
    labels = result[-1].labels if isinstance(result, list) else result.labels[-1]
    assert labels.shape == WIDE  # results at the original size


def test_max_side_zero_is_full_size_and_replays_as_such():
    model = Recorder()
    session = PropagationSession(model, frames(), max_side=0)
    assert session.working_size == WIDE
    replay = PropagationSession.from_dict(session.to_dict(), model, frames())
    assert replay.working_size == WIDE
    old_file = {**session.to_dict(), "max_side": None}  # written before the CPU default: meant full size
    assert PropagationSession.from_dict(old_file, model, frames()).working_size == WIDE


def smooth_field(size: tuple[int, int] = WIDE) -> np.ndarray:
    """A smooth random colour field: every position differs from the others, and survives downscaling."""
    coarse = torch.rand(1, 3, size[0] // 8, size[1] // 8, generator=torch.Generator().manual_seed(5))
    field = F.interpolate(coarse, size=size, mode="bicubic", align_corners=False).clamp(0, 1)[0]
    return (field.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_match_points_works_at_640_and_answers_in_the_frames_pixels():
    model = Recorder()
    image = smooth_field()
    points = np.array([[140.0, 20.0], [700.0, 17.0]], np.float32)
    matches = match_points(model, image, image, points)
    assert model.calls and all(shape[-2:] == (32, 640) for shape in model.calls)
    # the same as matching the frames resized by hand, in their pixels, mapped back (pixel centres scale)
    small = next(iter(open_frames(image[None]).resized(size=(32, 640))))
    scale = np.array([640 / 800, 32 / 40], np.float32)
    by_hand = match_points(model, small, small, (points + 0.5) * scale - 0.5, max_side=0)
    assert np.allclose(matches.points, (by_hand.points + 0.5) / scale - 0.5, atol=1e-3)
    assert np.array_equal(matches.scores, by_hand.scores)
    model.calls.clear()
    match_points(model, image, image, points, max_side=0)
    assert all(shape[-2:] == WIDE for shape in model.calls)


class Counting(Recorder):
    pass


def test_iter_propagate_yields_frame_0_before_encoding():
    model = Counting()
    stream = iter_propagate(model, frames(4), mask())
    first = next(stream)
    assert first.t == 0 and np.array_equal(first.labels, mask())
    assert model.calls == []  # nothing encoded yet
    second = next(stream)
    assert second.t == 1
    assert [shape[0] for shape in model.calls] == [1, 1]  # frame by frame on CPU, frames 0 and 1 only


def test_iter_propagate_backward_also_yields_its_start_first():
    model = Counting()
    stream = iter_propagate(model, frames(4), mask(), start=2, direction="backward")
    assert next(stream).t == 2 and model.calls == []
    assert [p.t for p in stream] == [1, 0]


def thin_mask(size: tuple[int, int] = (120, 640)) -> np.ndarray:
    ids = np.zeros(size, np.uint8)
    ids[20:100, 40:200] = 1  # large
    ids[30:90, 400:406] = 2  # 6 px wide: under one cell once the frame is 4x smaller
    return ids


def test_thin_objects_are_warned_about_with_the_max_side_that_keeps_them(caplog):
    ids = thin_mask()
    options = PropagationOptions()
    with caplog.at_level(logging.WARNING, logger="stcorr.propagation.passes"):
        assert warn_thin_objects(ids, Geometry((30, 160), ids.shape, 8), options) == [2]
    text = caplog.text
    assert "object 2" in text and "object 1" not in text and "max_side=160" in text
    keep = int(text.split("max_side=")[-1].split()[0])
    assert 160 < keep <= 640
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stcorr.propagation.passes"):
        keep_size = (round(120 * keep / 640), keep)
        assert warn_thin_objects(ids, Geometry(keep_size, ids.shape, 8), options) == []
    assert caplog.text == ""


def test_the_session_and_iter_propagate_warn(caplog):
    video = frames(2, (120, 640))
    with caplog.at_level(logging.WARNING, logger="stcorr.propagation.passes"):
        PropagationSession(Recorder(), video, max_side=160).add_mask(0, thin_mask())
        next(iter_propagate(Recorder(), video, thin_mask(), max_side=160))
    assert caplog.text.count("object 2") == 2


def test_the_cli_prints_the_warning(tmp_path):
    from PIL import Image

    from stcorr.io.masks import write_mask_png

    folder = tmp_path / "frames"
    folder.mkdir()
    for t, image in enumerate(frames(2, (120, 640))):
        Image.fromarray(image).save(folder / f"{t:05d}.png")
    write_mask_png(tmp_path / "first.png", thin_mask())
    command = [sys.executable, "-m", "stcorr", "propagate", "--video", str(folder),
               "--mask", str(tmp_path / "first.png"), "--out", str(tmp_path / "out"), "--max-side", "160",
               "--model", "lab-pixels"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "object 2" in result.stderr and "max_side=" in result.stderr


# -- the evaluation keeps its protocol sizes ------------------------------------------------------------


def test_eval_propagates_at_the_native_size_or_the_preset_size():
    from stcorr.eval.predict import propagate_mask
    from stcorr.eval.presets import preset_for

    model = Recorder()
    native = preset_for("davis", 8)
    assert native.input_size is None
    list(propagate_mask(model, frames(), mask(), native))
    assert model.calls and all(shape[-2:] == WIDE for shape in model.calls)  # 800 px wide, not 640
    model.calls.clear()
    sized = native.with_overrides(input_size=(24, 480))
    list(propagate_mask(model, frames(), mask(), sized))
    assert all(shape[-2:] == (24, 480) for shape in model.calls)


def test_offline_matching_works_at_the_pairs_own_size():
    from stcorr.eval.offline import _EncoderMethod

    model = Recorder()
    image = frames(1)[0]
    _EncoderMethod(model).match(image, image, np.array([[10.0, 10.0]]))
    assert all(shape[-2:] == WIDE for shape in model.calls)


# -- the CPU inference twin -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["embedded-lite2-s8", "embedded-r18-s8"])
def test_the_cpu_twin_gives_the_plain_forward_features(name):
    model = stcorr.load_model(name, device="cpu").eval()
    rgb = torch.rand(2, 3, 72, 104, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        plain = F.normalize(model(rgb), dim=1)
    assert (encode_batch(model, rgb) - plain).abs().max() <= 1e-5
    with torch.no_grad():
        next(model.parameters()).mul_(0.5)  # an in-place change: the twin is rebuilt
        changed = F.normalize(model(rgb), dim=1)
    assert (encode_batch(model, rgb) - changed).abs().max() <= 1e-5


def test_fold_batchnorm_folds_every_conv_bn_pair():
    from tests.conftest import randomize_batchnorm

    model = randomize_batchnorm(stcorr.load_model("embedded-r18-s8", device="cpu"))
    rgb = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model(rgb)
        folded = fold_batchnorm(__import__("copy").deepcopy(model))
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        assert (folded(rgb) - plain).abs().max() <= 1e-4 * plain.abs().max()


# -- exports ------------------------------------------------------------------------------------------


def test_dir_lists_only_public_names_and_every_error_is_exported():
    names = dir(stcorr)
    assert names == sorted(stcorr.__all__)
    assert not {"Any", "TYPE_CHECKING", "annotations", "import_module"} & set(names)
    from stcorr.errors import DeviceError, InputNotFoundError

    assert stcorr.DeviceError is DeviceError and stcorr.InputNotFoundError is InputNotFoundError


def test_the_kernel_says_how_to_pass_an_integer_mask():
    from stcorr.propagation import propagate

    features = torch.randn(2, 4, 3, 5)
    with pytest.raises(InputError, match=r"float torch.Tensor of shape \(K, h, w\).*propagate_labels"):
        propagate(features, np.zeros((3, 5), np.int64))


def test_app_help_states_the_max_side_default(capsys):
    from stcorr.cli import main

    with pytest.raises(SystemExit):
        main(["app", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "640 on CPU" in text and "0 = full resolution" in text


def test_points_outside_the_frame_fail_before_any_progress_bar(tmp_path, capsys):
    from PIL import Image

    from stcorr.cli import main

    folder = tmp_path / "frames"
    folder.mkdir()
    for t, image in enumerate(frames(2, (40, 64))):
        Image.fromarray(image).save(folder / f"{t:05d}.png")
    (tmp_path / "pts.json").write_text('{"points": [[10, 10], [500, 10]]}')
    code = main(["points", "--video", str(folder), "--points", str(tmp_path / "pts.json"), "--out", str(tmp_path / "o"),
                 "--model", "lab-pixels"])
    err = capsys.readouterr().err
    assert code == 2 and "outside" in err and "[1]" in err
    assert "/2" not in err and "frame/s" not in err  # no progress bar was shown


def test_train_help_has_no_rest_markup():
    from stcorr.train.cli import build_parser

    text = build_parser().format_help()
    assert "``" not in text and ":class:" not in text and "python -m stcorr.train {spatial" in text


# -- ONNX Runtime behind the same API ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = stcorr.load_model(device="cpu")
    return model, stcorr.OnnxEncoder(model, cache_dir=tmp_path_factory.mktemp("onnx"))


def test_onnx_encoder_gives_pytorchs_features(onnx_model):
    model, encoder = onnx_model
    rgb = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        plain = F.normalize(model(rgb), dim=1)
    assert (extract_features(encoder, rgb) - plain).abs().max() <= 1e-5
    assert encoder.export_path((40, 56)).is_file() and encoder.stride == model.stride


def test_onnx_encoder_reuses_its_export_and_runs_the_whole_api(onnx_model, monkeypatch):
    model, encoder = onnx_model
    rgb = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(3))
    extract_features(encoder, rgb)
    again = stcorr.OnnxEncoder(model, cache_dir=encoder.export_path((40, 56)).parent)
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: pytest.fail("exported again"))
    video = (torch.rand(3, 3, 40, 56, generator=torch.Generator().manual_seed(4)) * 255).byte().numpy()
    ids = np.zeros((40, 56), np.uint8)
    ids[8:32, 8:32] = 1
    ours = propagate_labels(again, video, ids)
    reference = propagate_labels(model, video, ids)
    assert (ours.labels == reference.labels).mean() > 0.99
    with pytest.raises(InputError, match=r"\(B, 3, H, W\)"):
        again(torch.zeros(3, 40, 56))
