"""Shared fixtures: tiny deterministic models and official-layout checkpoints."""

from __future__ import annotations

import os

# Triton kernels run in Triton's interpreter in the test process (tests/test_triton_kernel.py checks the fused
# propagation kernel on CPU tensors). It must be set before Triton is first imported, which importing
# torchvision (hence stcorr) already does. benchmarks/gpu_check.sh sets TRITON_INTERPRET=0 to test the
# compiled kernel on CUDA (tests/test_triton_cuda.py).
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402



def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return model.eval()


@pytest.fixture(autouse=True)
def _isolated_homes(tmp_path_factory, monkeypatch):
    """Never read or write the user's caches: STCORR_HOME and the Hub cache point into tmp dirs."""
    from huggingface_hub import constants

    monkeypatch.setenv("STCORR_HOME", str(tmp_path_factory.mktemp("stcorr_home")))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf_cache")))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
