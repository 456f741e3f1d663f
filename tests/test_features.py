"""extract_features: every accepted input form gives identical features; bad input is rejected clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import randomize_batchnorm
from stcorr import CorrespondenceModel
from stcorr.errors import InputError
from stcorr.features import extract_features, iter_features
from stcorr.frames import open_frames


@pytest.fixture(scope="module")
def model() -> CorrespondenceModel:
    torch.manual_seed(0)
    return randomize_batchnorm(CorrespondenceModel(), 0)


@pytest.fixture(scope="module")
def frames_uint8() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(5, 37, 52, 3), dtype=np.uint8)


def test_every_input_form_gives_identical_features(tmp_path, model, frames_uint8):
    reference = extract_features(model, frames_uint8, batch_size=2)
    assert reference.shape == (5, 256, 5, 7) and reference.dtype == torch.float32
    assert torch.allclose(reference.norm(dim=1), torch.ones(5, 5, 7), atol=1e-5)

    for name, frame in enumerate(frames_uint8):
        Image.fromarray(frame).save(tmp_path / f"frame{name * 5}.png")  # natural sort: 0, 5, 10, 15, 20
    forms = {
        "uint8 (T,3,H,W) tensor": torch.from_numpy(frames_uint8).permute(0, 3, 1, 2).contiguous(),
        "float (T,H,W,3)": frames_uint8.astype(np.float32) / 255,
        "float (T,3,H,W) tensor": torch.from_numpy(frames_uint8).permute(0, 3, 1, 2).float() / 255,
        "PIL list": [Image.fromarray(f) for f in frames_uint8],
        "folder": tmp_path,
        "FrameSource": open_frames(frames_uint8),
    }
    for form, frames in forms.items():
        got = extract_features(model, frames, batch_size=3)
        assert torch.allclose(got, reference, atol=1e-5), form


def test_video_path_equals_its_decoded_frames(tmp_path, model, frames_uint8):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 52, 38, "yuv420p"
        for frame in frames_uint8:
            padded = np.pad(frame, ((0, 1), (0, 0), (0, 0)))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")))
        container.mux(stream.encode())
    decoded = torch.stack(list(open_frames(path)))
    assert decoded.shape == (5, 3, 38, 52)
    assert torch.allclose(extract_features(model, path), extract_features(model, decoded), atol=1e-6)


def test_iter_features_streams_the_same_values(model, frames_uint8):
    """Guards batching: frames encoded 4 at a time, streamed, equal frames encoded one by one."""
    streamed = torch.stack(list(iter_features(model, frames_uint8, batch_size=4)))
    assert torch.allclose(streamed, extract_features(model, frames_uint8, batch_size=1), atol=1e-5)


def test_bfloat16_autocast_is_close_and_float32(model, frames_uint8):
    reference = extract_features(model, frames_uint8)
    low = extract_features(model, frames_uint8, dtype=torch.bfloat16)
    assert low.dtype == torch.float32
    cosine = (low * reference).sum(dim=1)
    assert cosine.mean() > 0.98


def test_late_fusion_weights(model, frames_uint8):
    torch.manual_seed(1)
    other = randomize_batchnorm(CorrespondenceModel(), 1)
    fused = extract_features([model, other], frames_uint8, fusion_weights=[1.0, 0.0])
    assert fused.shape[1] == 512
    assert torch.allclose(fused[:, :256], extract_features(model, frames_uint8), atol=1e-5)
    assert torch.count_nonzero(fused[:, 256:]) == 0


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((2, 8, 8), dtype=np.uint8), "expected"),
        (np.zeros((2, 8, 8, 4), dtype=np.uint8), "expected"),
        (np.full((2, 8, 8, 3), 3.0, dtype=np.float32), "255"),
        (np.zeros((2, 8, 8, 3), dtype=np.int64), "dtype"),
        ("/no/such/folder", "exist"),
    ],
)
def test_bad_inputs_are_rejected_with_clear_messages(model, bad, match):
    with pytest.raises((InputError, FileNotFoundError, OSError), match=match):
        extract_features(model, bad)


def test_bad_options(model, frames_uint8):
    with pytest.raises(InputError, match="batch_size"):
        extract_features(model, frames_uint8, batch_size=0)
    with pytest.raises(InputError, match="dtype"):
        extract_features(model, frames_uint8, dtype=torch.int8)
    with pytest.raises(InputError, match="fusion weights"):
        extract_features([model, model], frames_uint8, fusion_weights=[1.0])
