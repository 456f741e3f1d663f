"""OnlinePropagation (frames given one call at a time) is iter_propagate's forward pass, frame for frame."""

from __future__ import annotations

import numpy as np
import pytest

from app_helpers import shapes_frames
from stcorr.errors import InputError
from stcorr.loading import load_encoder
from stcorr.propagation.api import iter_propagate
from stcorr.propagation.online import OnlinePropagation, encode_frame
from stcorr.propagation.options import PropagationOptions


@pytest.fixture(scope="module")
def model():
    return load_encoder(None, device="cpu")


@pytest.mark.parametrize("start", [0, 3])
def test_matches_iter_propagate(model, start: int) -> None:
    frames, truth = shapes_frames(9, size=(96, 128))
    options = PropagationOptions(context=3, radius=6)  # a window shorter than the clip: old frames drop out
    expected = list(iter_propagate(model, frames, truth[start], start=start, options=options, max_side=112))
    first = encode_frame(model, frames[start], max_side=112)
    assert first.geometry.working == (84, 112) and first.geometry.original == (96, 128)
    online = OnlinePropagation(first, truth[start], options=options)
    assert online.ids == (0, 1, 2)
    got = [online.first] + [online.step(encode_frame(model, frame, max_side=112)) for frame in frames[start + 1:]]
    assert len(got) == len(expected) == 9 - start
    for step, (a, b) in enumerate(zip(got, expected)):
        assert a.t == step and b.t == start + step
        assert np.array_equal(a.labels, b.labels) and np.array_equal(a.confidence, b.confidence)
        assert a.reliability == b.reliability
    assert (got[-1].labels == 2).any() and (got[-1].labels == 1).any()


def test_soft_labels_and_bad_input(model) -> None:
    frames, truth = shapes_frames(3, size=(96, 128))
    soft = np.stack([truth[0] == i for i in range(3)]).astype(np.float32)
    expected = list(iter_propagate(model, frames, soft, return_probabilities=True))
    online = OnlinePropagation(encode_frame(model, frames[0]), soft, return_probabilities=True)
    for frame, want in zip(frames[1:], expected[1:]):
        got = online.step(encode_frame(model, frame))
        assert np.array_equal(got.labels, want.labels) and np.allclose(got.probabilities, want.probabilities)
    with pytest.raises(InputError, match="same model and working size"):
        online.step(encode_frame(model, frames[1], max_side=64))
    with pytest.raises(InputError, match="keypoints"):
        OnlinePropagation(encode_frame(model, frames[0]), np.array([[10.0, 20.0]], np.float32))
    with pytest.raises(InputError, match="do not fit frames"):
        OnlinePropagation(encode_frame(model, frames[0]), truth[0][:50])
