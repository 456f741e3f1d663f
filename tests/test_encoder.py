"""Encoder variants: output strides, channels and the parameter set."""

from __future__ import annotations

import pytest
import torch

from stcorr.encoder import ResNetEncoder
from stcorr.errors import InputError
from stcorr.model import CorrespondenceModel


@pytest.mark.parametrize("arch,channels", [("resnet18", 256), ("resnet50", 1024)])
@pytest.mark.parametrize("stride", [8, 4])
def test_layer3_stride_and_channels(arch, channels, stride):
    model = CorrespondenceModel(arch=arch, stride=stride).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 67, 90))
    assert out.shape == (1, channels, -(-67 // stride), -(-90 // stride))
    assert model.feature_dim == channels


def test_parameter_set_does_not_depend_on_stride():
    keys8 = CorrespondenceModel(stride=8).state_dict().keys()
    keys4 = CorrespondenceModel(stride=4).state_dict().keys()
    assert keys8 == keys4


def test_training_pyramid():
    encoder = ResNetEncoder("resnet18", stride=8, layers=("layer2", "layer3", "layer4"), layer4_stride=4).eval()
    with torch.no_grad():
        out = encoder(torch.rand(2, 3, 256, 256))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "layer2": (2, 128, 64, 64), "layer3": (2, 256, 32, 32), "layer4": (2, 512, 8, 8)}


@pytest.mark.parametrize("kwargs", [{"arch": "resnet34"}, {"stride": 16}, {"layers": ()}, {"layers": ("fc",)}])
def test_bad_configs(kwargs):
    with pytest.raises(InputError):
        ResNetEncoder(**kwargs)
