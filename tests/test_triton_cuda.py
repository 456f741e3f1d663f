"""The compiled Triton kernel on a CUDA device against the float64 dense reference (skipped without CUDA).

The test process runs Triton in its interpreter by default (tests/conftest.py sets TRITON_INTERPRET=1 for
tests/test_triton_kernel.py), so these tests skip there rather than test the interpreter twice;
``bash benchmarks/gpu_check.sh`` runs them with TRITON_INTERPRET=0 on a CUDA machine.
"""

from __future__ import annotations

import os

import pytest
import torch
from dense_reference import Anchor, dense_propagate, random_video

from stcorr.propagation import LabelPropagator, propagate

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") == "1",
        reason="Triton's interpreter is on in this process: run this file on its own (benchmarks/gpu_check.sh)",
    ),
]

EXACT = 1e-6



# (T, C, h, w, context, radius, topk, temperature, K)
SETTINGS = [
    (6, 64, 13, 21, 3, 4, 10, 0.07, 3),
    (5, 256, 30, 54, 20, 12, 10, 0.07, 4),  # a quarter of DAVIS scale, context longer than the video
    (4, 32, 9, 9, 2, 30, 5, 0.1, 2),  # radius larger than the grid
    (4, 3, 12, 16, 2, 3, 32, 0.05, 2),  # colour-like features, the largest top-k
    (4, 100, 1, 1, 3, 1, 3, 0.1, 2),  # 1 x 1 grid, C not a multiple of the channel step
]


@pytest.mark.parametrize("t,c,h,w,context,radius,topk,temperature,k", SETTINGS)
def test_cuda_kernel_matches_float64_dense_reference(t, c, h, w, context, radius, topk, temperature, k):
    features, labels = random_video(t, c, h, w, k, seed=t + c)
    opts = dict(context=context, radius=radius, topk=topk, temperature=temperature)
    ref, ref_conf = dense_propagate(features, labels, **opts)
    out, conf = propagate(features.cuda(), labels.cuda(), backend="triton", return_confidence=True, **opts)
    assert out.device.type == "cuda" and out.dtype == torch.float32
    assert (out.cpu() - ref).abs().max() < EXACT
    assert (conf.cpu() - ref_conf).abs().max() < EXACT


def test_auto_is_triton_on_cuda_and_batch_equals_single():
    videos = [random_video(5, 64, 12, 20, k, seed=k) for k in (3, 1, 2)]
    features = torch.stack([f for f, _ in videos]).cuda()
    labels = [lab.cuda() for _, lab in videos]
    opts = dict(context=2, radius=4, topk=10)
    assert LabelPropagator(features[:, 0], labels, **opts).backend == "triton"
    batch = propagate(features, labels, **opts)
    for b, (f, lab) in enumerate(videos):
        assert torch.equal(batch[b], propagate(f.cuda(), lab.cuda(), **opts))
        ref, _ = dense_propagate(f, lab, **opts)
        assert (batch[b].cpu() - ref).abs().max() < EXACT


def test_cuda_anchor_and_torch_kernel_agree():
    features, labels = random_video(6, 32, 10, 14, 3, seed=3)
    anchor, anchor_labels = random_video(1, 32, 10, 14, 3, seed=4)
    opts = dict(context=2, radius=3, topk=6, temperature=0.1)
    ref, _ = dense_propagate(features, labels, anchors=[Anchor(anchor[0], anchor_labels)], **opts)
    for backend in ("triton", "torch"):
        propagator = LabelPropagator(features[0].cuda(), labels.cuda(), backend=backend, **opts)
        propagator.add_anchor(anchor[0].cuda(), anchor_labels.cuda())
        for t in range(1, 6):
            lab, _ = propagator.step(features[t].cuda())
            assert (lab.cpu() - ref[t]).abs().max() < (EXACT if backend == "triton" else 1e-4)


def test_cuda_remember_with_auto_backend_resumes_exactly():
    """What a PropagationSession needs on CUDA with backend auto (the fused kernel): remember resumes a pass."""
    features, labels = random_video(6, 32, 9, 11, 3, seed=5)
    features, labels = features.cuda(), labels.cuda()
    full = LabelPropagator(features[0], labels, context=2, radius=3, topk=5)
    assert full.backend == "triton"
    outputs = [full.step(features[t])[0] for t in range(1, 6)]
    resumed = LabelPropagator(features[0], labels, context=2, radius=3, topk=5)
    for t in (2, 3):
        resumed.remember(features[t], outputs[t - 1])
    assert torch.equal(resumed.step(features[4])[0], outputs[3])
