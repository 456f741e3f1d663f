"""stcorr.OnnxEncoder (the ``onnx`` extra): the same features as PyTorch, exported once per size and cached."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import stcorr
from stcorr.features import encode_batch
from stcorr.model import LiteCorrespondenceModel
from tests.conftest import randomize_batchnorm

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("onnx", reason="the onnx extra is not installed")


def test_onnx_features_are_pytorchs_and_the_export_is_cached(tmp_path):
    model = randomize_batchnorm(LiteCorrespondenceModel("efficientnet-lite0"))
    rgb = torch.rand(2, 3, 48, 72, generator=torch.Generator().manual_seed(0))
    encoder = stcorr.OnnxEncoder(model, cache_dir=tmp_path)
    assert encoder.stride == model.stride
    with torch.inference_mode():
        expected = F.normalize(model(rgb), dim=1)
    assert (encode_batch(encoder, rgb) - expected).abs().max() <= 1e-4
    path = encoder.export_path((48, 72))
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left
    stamp = path.stat().st_mtime_ns
    again = stcorr.OnnxEncoder(model, cache_dir=tmp_path)
    assert (encode_batch(again, rgb) - expected).abs().max() <= 1e-4
    assert path.stat().st_mtime_ns == stamp  # read from the cache, not exported again


def test_onnx_encoder_refuses_a_module_without_a_stride():
    with pytest.raises(stcorr.InputError, match="encoder module with an integer `stride`"):
        stcorr.OnnxEncoder(torch.nn.Conv2d(3, 4, 3))
