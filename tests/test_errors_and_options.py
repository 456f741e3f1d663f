"""The error taxonomy, argument checks that name the expected type, and PropagationOptions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from stcorr import DataReadError, PropagationOptions, VideoReadError, extract_features
from stcorr.datasets import DavisDataset
from stcorr.errors import InputError, StcorrError
from stcorr.loading import load_encoder
from stcorr.propagation import LabelPropagator, propagate


def test_data_read_error_is_the_parent_of_video_read_error(tmp_path):
    assert issubclass(VideoReadError, DataReadError) and issubclass(DataReadError, (StcorrError, OSError))
    with pytest.raises(DataReadError, match="not found") as raised:
        DavisDataset(tmp_path / "no_davis")
    assert not isinstance(raised.value, VideoReadError)  # a dataset folder, not frames


def test_load_encoder_rejects_options_a_baseline_cannot_honour():
    assert load_encoder("lab-pixels", device="cpu", stride=8).stride == 8
    with pytest.raises(InputError, match="stride 8, not 4"):
        load_encoder("lab-pixels", stride=4)
    with pytest.raises(InputError, match="revision"):
        load_encoder("random-r18", revision="main")


def test_wrong_argument_types_name_the_expected_type():
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(InputError, match=r"model must be an encoder nn\.Module.*got NoneType"):
        extract_features(None, frames)
    with pytest.raises(InputError, match="got str"):
        extract_features([torch.nn.Conv2d(3, 4, 1), "not a model"], frames)
    with pytest.raises(InputError, match="batch_size must be a positive int, got str"):
        extract_features(load_encoder("lab-pixels", device="cpu"), frames, batch_size="2")


def test_options_are_frozen_and_validated_once():
    options = PropagationOptions(radius=3, topk=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.radius = 5
    for bad in (dict(context=-1), dict(radius=1.5), dict(topk=0), dict(temperature=0), dict(sigma=float("inf")),
                dict(label_downsampling="area"), dict(minmax_normalize=1), dict(compute_dtype=torch.int8)):
        with pytest.raises(InputError):
            PropagationOptions(**bad)
    assert options.replace(radius=None, context=5) == PropagationOptions(radius=3, topk=4, context=5)
    assert PropagationOptions.from_dict(options.to_dict()) == options
    with pytest.raises(InputError, match="unknown propagation options"):
        options.replace(window=3)


def test_keywords_are_shorthand_for_options():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(4, 8, 5, 6, generator=generator)
    labels = torch.rand(2, 5, 6, generator=generator)
    options = PropagationOptions(context=2, radius=2, topk=3, temperature=0.1, compute_dtype=torch.float32)
    by_keywords = propagate(features, labels, context=2, radius=2, topk=3, temperature=0.1,
                            compute_dtype=torch.float32)
    torch.testing.assert_close(propagate(features, labels, options), by_keywords, rtol=0, atol=0)
    overridden = LabelPropagator(features[0], labels, options, radius=1)
    assert (overridden.radius, overridden.topk) == (1, 3)
