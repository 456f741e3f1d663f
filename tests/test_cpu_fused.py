"""The oneDNN-fused CPU inference path: FusedConv2d, the EfficientNet-Lite twin extract_features runs on CPU, and
the faster arg-max and overlay of the demo pipeline; each checked against the plain computation it replaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import stcorr
from stcorr.features import _twins, encode_batch
from stcorr.io.masks import readonly_palette
from stcorr.io.render import _contour_mask, overlay
from stcorr.model import LiteCorrespondenceModel
from stcorr.onednn import FusedConv2d, fusion_available
from stcorr.propagation.labels import channel_argmax
from tests.conftest import randomize_batchnorm

needs_onednn = pytest.mark.skipif(not fusion_available(), reason="this PyTorch has no oneDNN fused convolution")


def _reference(conv: nn.Conv2d, x: torch.Tensor, padding: tuple[int, int, int, int], activation: str,
               residual: torch.Tensor | None) -> torch.Tensor:
    top, bottom, left, right = padding
    y = F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, conv.bias, conv.stride, 0, 1, conv.groups)
    if residual is not None:
        y = y + residual
    return {"none": y, "relu": F.relu(y), "relu6": F.relu6(y)}[activation]


@needs_onednn
@pytest.mark.parametrize(("channels", "groups", "kernel", "stride", "padding", "activation", "residual"), [
    (8, 1, 3, 2, (0, 1, 0, 1), "relu6", False),   # TensorFlow "same", stride 2, even size: one more after
    (16, 16, 5, 2, (1, 2, 2, 2), "relu6", False),  # depthwise 5x5, asymmetric rows only
    (16, 16, 3, 1, (1, 1, 1, 1), "relu", False),   # symmetric
    (12, 1, 1, 1, (0, 0, 0, 0), "none", True),     # 1x1 projection with the residual sum
    (6, 2, 3, 1, (2, 0, 0, 2), "none", False),     # no shifted-kernel form: a padded copy
])
def test_fused_conv_is_the_plain_convolution(channels, groups, kernel, stride, padding, activation, residual):
    generator = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(channels, channels, kernel, stride, groups=groups, bias=True).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        conv.bias.copy_(torch.randn(channels, generator=generator))
    x = torch.randn(2, channels, 18, 25, generator=generator)
    expected_shape = _reference(conv, x, padding, activation, None).shape
    other = torch.randn(expected_shape, generator=generator) if residual else None
    fused = FusedConv2d(conv, activation)
    with torch.inference_mode():
        expected = _reference(conv, x, padding, activation, other)
        for _ in range(2):  # the second call reuses the reordered weight
            got = fused(x, padding, residual=other)
            assert got.shape == expected.shape
            assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_fused_conv_rejects_an_unknown_activation():
    with pytest.raises(stcorr.InputError, match="activation must be one of"):
        FusedConv2d(nn.Conv2d(3, 4, 3), "gelu")


@needs_onednn
@pytest.mark.parametrize("size", [(64, 64), (71, 103), (48, 90), (33, 97)])
def test_the_lite_twin_gives_the_plain_forward(size):
    model = randomize_batchnorm(LiteCorrespondenceModel("efficientnet-lite0", projection=24))
    rgb = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    twin = model.cpu_inference_twin()
    with torch.inference_mode():
        plain = model(rgb)
        fused = twin(rgb)
    assert fused.shape == plain.shape
    assert (fused - plain).abs().max() <= 1e-4 * plain.abs().max()


@needs_onednn
def test_extract_features_runs_the_fused_twin_of_the_default_model():
    model = stcorr.load_model(device="cpu")
    rgb = torch.rand(1, 3, 72, 104, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        plain = F.normalize(model(rgb), dim=1)
    assert (encode_batch(model, rgb) - plain).abs().max() <= 1e-5
    assert type(_twins[model][1]).__name__ == "_LiteCpuTwin"


def test_a_twin_that_disagrees_is_not_used(monkeypatch):
    model = stcorr.load_model(device="cpu")

    class Wrong(nn.Module):
        def forward(self, rgb: torch.Tensor) -> torch.Tensor:
            return torch.ones_like(model(rgb))

    monkeypatch.setattr(model, "cpu_inference_twin", lambda: Wrong(), raising=False)
    rgb = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        plain = F.normalize(model(rgb), dim=1)
    assert (encode_batch(model, rgb) - plain).abs().max() <= 1e-5
    assert not isinstance(_twins[model][1], Wrong)


@pytest.mark.parametrize("channels", [1, 2, 4, 9])
def test_channel_argmax_is_torch_argmax(channels):
    generator = torch.Generator().manual_seed(channels)
    scores = torch.rand(channels, 37, 53, generator=generator).mul(4).floor()  # many ties
    scores[:, 0, 0] = 0.0  # all channels equal: the first wins
    assert torch.equal(channel_argmax(scores).long(), scores.argmax(dim=0))
    scores[channels - 1, 3, 4] = float("nan")
    assert torch.equal(channel_argmax(scores).long(), scores.argmax(dim=0))


def test_overlay_blends_as_documented():
    generator = np.random.default_rng(0)
    frame = generator.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    ids = generator.integers(0, 4, (30, 40)).astype(np.uint8)
    ids[:, :10] = 0
    ids[0, 0] = 255
    colors = readonly_palette()[ids].astype(np.float32)
    expected = np.where((ids != 0)[..., None], (1 - 0.3) * frame.astype(np.float32) + 0.3 * colors,
                        frame.astype(np.float32))
    expected = (expected + 0.5).astype(np.uint8)
    assert np.array_equal(overlay(frame, ids, alpha=0.3, contours=False), expected)
    edge = _contour_mask(ids)
    expected[edge] = readonly_palette()[ids[edge]]
    assert np.array_equal(overlay(frame, ids, alpha=0.3), expected)


@needs_onednn
def test_the_twin_needs_an_eval_mode_model():
    model = LiteCorrespondenceModel("efficientnet-lite0").train()
    with pytest.raises(stcorr.InputError, match="eval mode"):
        model.cpu_inference_twin()
    assert model.training and all(m.training for m in model.modules())  # left as it was
