"""Tests of the windowed label-propagation kernel against a dense reference and hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
from dense_reference import Anchor, dense_propagate, random_video

from stcorr.errors import InputError
from stcorr.propagation import LabelPropagator, _store, kernel, propagate, propagate_stream

TOL = 1e-4



# (T, C, h, w, context, radius, topk, temperature, K, block_size)
SETTINGS = [
    pytest.param(5, 16, 7, 9, 2, 2, 4, 0.1, 3, None, id="non-square"),
    pytest.param(4, 8, 5, 6, 10, 20, 5, 0.07, 1, None, id="radius>grid,context>video,K=1"),
    pytest.param(4, 8, 3, 4, 2, 0, 10, 0.07, 2, None, id="radius0,topk>candidates"),
    pytest.param(3, 4, 1, 1, 2, 1, 3, 0.1, 2, None, id="1x1-grid"),
    pytest.param(6, 32, 13, 11, 3, 3, 10, 0.05, 4, (2, 3), id="tall,small-blocks"),
    pytest.param(5, 16, 20, 31, 3, 4, 7, 0.07, 3, (4, 8), id="many-blocks"),
    pytest.param(5, 16, 20, 31, 3, 4, 7, 0.07, 3, (100, 100), id="one-block"),
    pytest.param(7, 8, 6, 10, 1, 2, 6, 0.2, 2, (3, 4), id="context1"),
    pytest.param(4, 8, 6, 5, 0, 1, 3, 0.07, 2, None, id="context0"),
    pytest.param(5, 12, 9, 17, 20, 5, 200, 0.07, 3, (2, 5), id="topk>all"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("t,c,h,w,context,radius,topk,temperature,k,block", SETTINGS)
def test_matches_dense_reference(t, c, h, w, context, radius, topk, temperature, k, block, dtype):
    """Both compute dtypes give the float32 result: bfloat16 only preselects, with a certificate."""
    features, labels = random_video(t, c, h, w, k)
    opts = dict(context=context, radius=radius, topk=topk, temperature=temperature)
    ref, ref_conf = dense_propagate(features, labels, **opts)
    out, conf = propagate(features, labels, block_size=block, compute_dtype=dtype, return_confidence=True, **opts)
    assert out.shape == (t, k, h, w) and conf.shape == (t, h, w)
    assert (out - ref).abs().max() < TOL
    assert (conf - ref_conf).abs().max() < TOL


def test_block_size_and_chunking_do_not_change_result(monkeypatch):
    features, labels = random_video(4, 16, 11, 13, 3, seed=1)
    opts = dict(radius=3, topk=5)
    results = [propagate(features, labels, block_size=b, **opts) for b in [(1, 1), (2, 7), (11, 13), (5, 4)]]
    monkeypatch.setattr(kernel, "_SIMS_BUDGET", 1)  # one row block per similarity buffer
    results.append(propagate(features, labels, block_size=(2, 7), **opts))
    for other in results[1:]:
        assert (other - results[0]).abs().max() < 1e-6


@pytest.mark.parametrize("slots_per_chunk", [1, 2, 3])
def test_chunked_context_store_matches_dense(monkeypatch, slots_per_chunk):
    """Context frames spread over several chunks, slots reused once the window is full, an anchor."""
    monkeypatch.setattr(_store, "_SLOTS_PER_CHUNK", slots_per_chunk)
    features, labels = random_video(9, 16, 7, 11, 3, seed=11)
    anchor_feats, anchor_labels = random_video(1, 16, 7, 11, 3, seed=12)
    opts = dict(context=4, radius=2, topk=7, temperature=0.1)
    ref, ref_conf = dense_propagate(features, labels, anchors=[Anchor(anchor_feats[0], anchor_labels)], **opts)
    for dtype in (torch.float32, torch.bfloat16):
        propagator = LabelPropagator(features[0], labels, compute_dtype=dtype, block_size=(3, 4), **opts)
        propagator.add_anchor(anchor_feats[0], anchor_labels)
        for t in range(1, 9):
            lab, conf = propagator.step(features[t])
            assert (lab - ref[t]).abs().max() < TOL and (conf - ref_conf[t]).abs().max() < TOL


def test_stream_equals_batch():
    """Guards the wrappers' plumbing (frame order, frame 0, confidence); the kernel itself is checked against
    the dense reference above."""
    features, labels = random_video(6, 16, 9, 12, 3, seed=2)
    opts = dict(context=2, radius=3, topk=5, temperature=0.07)
    batch, batch_conf = propagate(features, labels, return_confidence=True, **opts)
    propagator = LabelPropagator(features[0], labels, **opts)
    for t in range(1, 6):
        lab, conf = propagator.step(features[t])
        assert torch.equal(lab, batch[t]) and torch.equal(conf, batch_conf[t])
    streamed = list(propagate_stream(iter(features), labels, **opts))
    assert torch.equal(torch.stack([s[0] for s in streamed]), batch)
    assert torch.equal(torch.stack([s[1] for s in streamed]), batch_conf)


def test_context_size_is_bounded():
    features, labels = random_video(6, 4, 3, 3, 2)
    propagator = LabelPropagator(features[0], labels, context=2)
    sizes = []
    for t in range(1, 6):
        sizes.append(propagator.num_context_frames)
        propagator.step(features[t])
    assert sizes == [1, 2, 3, 3, 3]  # frame 0 once, plus up to 2 previous frames
    propagator.add_anchor(features[5], labels)
    assert propagator.num_context_frames == 4 and propagator.frames_seen == 6


def test_anchor_from_start_matches_dense():
    features, labels = random_video(6, 16, 8, 10, 3, seed=3)
    anchor_feats, anchor_labels = random_video(1, 16, 8, 10, 3, seed=4)
    opts = dict(context=2, radius=2, topk=6, temperature=0.1)
    ref, ref_conf = dense_propagate(features, labels, anchors=[Anchor(anchor_feats[0], anchor_labels)], **opts)
    propagator = LabelPropagator(features[0], labels, **opts)
    propagator.add_anchor(anchor_feats[0], anchor_labels)
    for t in range(1, 6):
        lab, conf = propagator.step(features[t])
        assert (lab - ref[t]).abs().max() < TOL and (conf - ref_conf[t]).abs().max() < TOL


def test_reanchoring_mid_video():
    """A corrected frame 2 is given with add_anchor instead of step: it is in the context once,
    and stays there as fixed context after it would have left the window of previous frames."""
    features, labels = random_video(7, 16, 8, 10, 3, seed=5)
    corrected = random_video(1, 1, 8, 10, 3, seed=6)[1]
    opts = dict(context=1, radius=2, topk=6, temperature=0.1)
    propagator = LabelPropagator(features[0], labels, **opts)
    out = {1: propagator.step(features[1])[0]}
    propagator.add_anchor(features[2], corrected)
    assert propagator.frames_seen == 2 and propagator.num_context_frames == 3
    out.update({t: propagator.step(features[t])[0] for t in range(3, 7)})
    # Dense equivalent: the video without frame 2, plus frame 2 as anchor from frame 3 on
    # (index 2 of the shortened video).
    kept = [0, 1, 3, 4, 5, 6]
    anchor = Anchor(features[2], corrected, from_frame=2)
    ref, _ = dense_propagate(features[kept], labels, anchors=[anchor], **opts)
    for i, t in enumerate(kept[1:], start=1):
        assert (out[t] - ref[i]).abs().max() < TOL
    # Without the anchor the later frames differ: the anchor really is used.
    plain, _ = dense_propagate(features[kept], labels, **opts)
    assert (plain[3:] - ref[3:]).abs().max() > 1e-3


def test_frame0_unchanged_float32_and_rows_sum_to_one():
    features, labels = random_video(5, 8, 6, 7, 4, seed=7)
    out, conf = propagate(features, labels, radius=2, topk=5, return_confidence=True)
    assert out.dtype == torch.float32 and conf.dtype == torch.float32
    assert torch.equal(out[0], labels)
    assert torch.equal(conf[0], torch.ones(6, 7))
    assert torch.allclose(out.sum(1), torch.ones(5, 6, 7), atol=1e-5)
    # Other input dtypes: outputs are float32 all the same, frame 0 is the labels as float32.
    out64 = propagate(features.double(), labels.half(), radius=2, topk=5)
    assert out64.dtype == torch.float32 and torch.equal(out64[0], labels.half().float())
    assert conf.min() >= -1 - 1e-6 and conf.max() <= 1 + 1e-6
    # The output is a copy: changing it does not change the input labels.
    out[0].zero_()
    assert labels.sum() > 0


def test_hand_computed_two_cells():
    """1x2 grid, C=2, radius 1, top-2, temperature 0.5; frame 2 checks that feedback stays soft."""
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    frame0 = torch.stack([a, b], dim=1).view(2, 1, 2)  # cell 0 = a, cell 1 = b
    frame1 = torch.stack([torch.tensor([3.0, 4.0]), torch.tensor([2.0, 0.0])], dim=1).view(2, 1, 2)
    frame2 = torch.stack([torch.tensor([0.6, 0.8]), torch.tensor([0.6, 0.8])], dim=1).view(2, 1, 2)
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 1, 2)  # cell 0 -> class 0, cell 1 -> class 1
    out, conf = propagate(
        torch.stack([frame0, frame1, frame2]), labels, radius=1, topk=2, temperature=0.5, return_confidence=True
    )
    # Frame 1, cell 0: (0.6, 0.8) has cosines 0.6 with a and 0.8 with b.
    w_a = math.exp(0.6 / 0.5) / (math.exp(0.6 / 0.5) + math.exp(0.8 / 0.5))
    expected_c0 = torch.tensor([w_a, 1 - w_a])
    assert torch.allclose(out[1, :, 0, 0], expected_c0, atol=1e-6)
    assert conf[1, 0, 0] == pytest.approx(0.6 * w_a + 0.8 * (1 - w_a), abs=1e-6)
    # Frame 1, cell 1: (1, 0) has cosines 1 with a and 0 with b.
    v_a = math.exp(1 / 0.5) / (math.exp(1 / 0.5) + math.exp(0))
    assert torch.allclose(out[1, :, 0, 1], torch.tensor([v_a, 1 - v_a]), atol=1e-6)
    assert conf[1, 0, 1] == pytest.approx(v_a, abs=1e-6)
    # Frame 2, cell 0 = (0.6, 0.8): candidates a 0.6, b 0.8, frame-1 cell 0 1.0, frame-1 cell 1 0.6.
    # Top-2 = frame-1 cell 0 (its soft label expected_c0) and b (class 1).
    w1 = math.exp(1.0 / 0.5) / (math.exp(1.0 / 0.5) + math.exp(0.8 / 0.5))
    expected = w1 * expected_c0 + (1 - w1) * torch.tensor([0.0, 1.0])
    assert torch.allclose(out[2, :, 0, 0], expected, atol=1e-6)


def test_radius_zero_uses_all_candidates_without_nan():
    features, labels = random_video(4, 8, 3, 4, 2, seed=8)
    out, conf = propagate(features, labels, context=1, radius=0, topk=10, return_confidence=True)
    assert torch.isfinite(out).all() and torch.isfinite(conf).all()
    # Frame 1 has a single candidate per cell (same cell in frame 0): labels are copied exactly.
    assert torch.allclose(out[1], labels, atol=1e-6)


@pytest.mark.parametrize("block", [None, (2, 3)])
def test_bfloat16_equals_float32(block):
    features, labels = random_video(5, 32, 12, 15, 3, seed=9)
    opts = dict(context=3, radius=4, topk=8, block_size=block)
    full, full_conf = propagate(features, labels, compute_dtype=torch.float32, return_confidence=True, **opts)
    reduced, conf = propagate(features, labels, compute_dtype=torch.bfloat16, return_confidence=True, **opts)
    assert reduced.dtype == torch.float32 and conf.dtype == torch.float32
    assert (reduced - full).abs().max() < TOL and (conf - full_conf).abs().max() < TOL


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("channels", [3, 64, 256, 1024])
def test_cosine_error_bound_holds(channels, dtype):
    """|exact cosine - cosine from a float32 or bfloat16 matmul| never exceeds the bound."""
    gen = torch.Generator().manual_seed(channels)
    queries = torch.randn(64, channels, generator=gen)
    keys = torch.randn(3000, channels, generator=gen)
    # Hard cases: near-duplicates of the queries (cosines close to 1) and vectors whose components span
    # many orders of magnitude (rounding errors of very different sizes).
    keys[:64] = queries + 1e-3 * torch.randn(64, channels, generator=gen)
    keys[64:128] *= torch.logspace(-30, 0, channels)[torch.randperm(channels, generator=gen)]
    queries, keys = torch.nn.functional.normalize(queries, dim=1), torch.nn.functional.normalize(keys, dim=1)
    computed = queries.to(dtype) @ keys.to(dtype).t()
    exact = queries.double() @ keys.double().t()
    query_error = kernel.rounding_error(queries, dtype)[:, None]
    key_error = float(kernel.rounding_error(keys, dtype).max())
    bound = kernel.cosine_error_bound(computed, query_error, key_error, dtype, channels).double()
    assert ((exact - computed.double()).abs() <= bound).all()
    assert bound.max() < (0.02 if dtype == torch.bfloat16 else 1e-4 * channels / 1024)  # and tight enough to be useful


@pytest.mark.parametrize("wide", [16, 1])
def test_uncertified_blocks_are_selected_again(monkeypatch, wide):
    """Preselecting only k candidates leaves many queries without a certificate (their k-th and (k+1)-th
    cosines are closer than bfloat16 can tell apart): their blocks are selected again with 16k candidates
    kept, or (when that is made too narrow as well) recomputed in float32 over all candidates."""
    monkeypatch.setattr(kernel, "_preselect_count", lambda topk: topk)
    monkeypatch.setattr(kernel, "_WIDE_PRESELECT", wide)
    features, labels = random_video(6, 32, 13, 17, 3, seed=21)
    opts = dict(context=3, radius=3, topk=5, temperature=0.07)
    ref, ref_conf = dense_propagate(features, labels, **opts)
    calls = {"_block_top_exact": 0, "_block_top_float32": 0}
    for name in calls:
        original = getattr(LabelPropagator, name)

        def spy(self, *args, name=name, original=original):
            calls[name] += 1
            return original(self, *args)

        monkeypatch.setattr(LabelPropagator, name, spy)
    out, conf = propagate(
        features, labels, compute_dtype=torch.bfloat16, block_size=(3, 4), return_confidence=True, **opts
    )
    assert 0 < calls["_block_top_exact"] < 5 * 5 * 5  # some, not all, of the 5 x 5 blocks of 5 target frames
    assert (calls["_block_top_float32"] > 0) == (wide == 1)
    assert (out - ref).abs().max() < TOL and (conf - ref_conf).abs().max() < TOL


def _near_tie_video(channels: int = 8) -> torch.Tensor:
    """Features (2, C, 1, 2): frame 0 holds two keys whose cosines with frame 1's first cell (as the kernel
    normalises them) differ by less than float32 can resolve, but not exactly."""
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(channels, generator=gen)
    a = q + 0.1 * torch.randn(channels, generator=gen)
    for _ in range(10000):
        b = a + 1e-7 * torch.randn(channels, generator=gen)
        features = torch.stack([torch.stack([a, b], 1), torch.stack([q, q], 1)])[:, :, None, :]
        keys, query = (LabelPropagator._normalise(f)[:, 0] for f in features)
        exact = query[:, 0].double() @ keys.double()
        if 0 < abs(float(exact[0] - exact[1])) < 1e-9:
            return features
    raise AssertionError("no near-tie found")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_near_tie_in_float32_is_ranked_exactly(dtype):
    """Two candidates whose cosines float32 cannot separate: the exactly better one is kept."""
    features = _near_tie_video()
    keys, query = (LabelPropagator._normalise(f)[:, 0] for f in features)
    winner = int((query[:, 0].double() @ keys.double()).argmax())
    labels = torch.eye(2)[:, None, :]  # key cell i carries label i
    out = propagate(features, labels, context=1, radius=1, topk=1, compute_dtype=dtype)
    assert (out[1, winner] == 1.0).all()  # both query cells hold q
    swapped = propagate(features.flip(-1), labels, context=1, radius=1, topk=1, compute_dtype=dtype)
    assert (swapped[1, 1 - winner] == 1.0).all()  # keys stored in the other order: the same key wins


def test_default_compute_dtype_follows_the_hardware(monkeypatch):
    monkeypatch.delenv(kernel.CPU_BF16_ENV, raising=False)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    native = any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    features, labels = random_video(3, 8, 5, 6, 2)
    assert LabelPropagator(features[0], labels).compute_dtype == (torch.bfloat16 if native else torch.float32)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert kernel.default_compute_dtype(torch.device("cpu")) == torch.float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert kernel.default_compute_dtype(torch.device("cpu")) == torch.bfloat16
    assert kernel.default_compute_dtype(torch.device("cuda")) == torch.float32


def test_cpu_bf16_environment_variable_forces_the_avx2_behaviour(monkeypatch):
    """STCORR_CPU_BF16=0 makes a bf16-capable CPU take the float32 path of an AVX2-only one (and 1 the reverse)."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setenv(kernel.CPU_BF16_ENV, "0")
    assert kernel.default_compute_dtype(torch.device("cpu")) == torch.float32
    features, labels = random_video(3, 8, 5, 6, 2)
    assert LabelPropagator(features[0], labels).compute_dtype == torch.float32
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setenv(kernel.CPU_BF16_ENV, "1")
    assert kernel.default_compute_dtype(torch.device("cpu")) == torch.bfloat16
    monkeypatch.setenv(kernel.CPU_BF16_ENV, "yes")
    with pytest.raises(InputError, match="STCORR_CPU_BF16"):
        kernel.default_compute_dtype(torch.device("cpu"))


def test_automatic_dtype_falls_back_to_float32_on_alike_features(monkeypatch):
    """Colour-like features (C=3, few distinct values): bfloat16 cannot certify the top-k, so an automatic
    propagator moves to float32; results equal float32 throughout."""
    monkeypatch.setattr(kernel, "default_compute_dtype", lambda device: torch.bfloat16)
    gen = torch.Generator().manual_seed(3)
    palette = torch.rand(3, 6, generator=gen) + 0.5
    features = palette[:, torch.randint(0, 6, (5, 14, 18), generator=gen)].permute(1, 0, 2, 3)  # (T, 3, h, w)
    features = features + 1e-3 * torch.randn(features.shape, generator=gen)
    labels = torch.softmax(torch.randn(3, 14, 18, generator=gen), 0)
    opts = dict(context=3, radius=3, topk=5)
    automatic = LabelPropagator(features[0], labels, **opts)
    assert automatic.compute_dtype == torch.bfloat16
    explicit = LabelPropagator(features[0], labels, compute_dtype=torch.float32, **opts)
    for t in range(1, 5):
        assert (automatic.step(features[t])[0] - explicit.step(features[t])[0]).abs().max() < 1e-6
    assert automatic.compute_dtype == torch.float32
    pinned = LabelPropagator(features[0], labels, compute_dtype=torch.bfloat16, **opts)
    for t in range(1, 5):
        pinned.step(features[t])
    assert pinned.compute_dtype == torch.bfloat16  # an explicit choice is kept


def test_cuda_matmul_settings_are_ieee_inside_the_kernel_and_restored_after():
    """The flags are global settings, so this runs without a GPU; a user's TF32 choice is kept afterwards."""
    matmul = torch.backends.cuda.matmul
    precision = "fp32_precision" if hasattr(matmul, "fp32_precision") else "allow_tf32"
    before = {name: getattr(matmul, name) for name in ("allow_bf16_reduced_precision_reduction", precision)}
    try:
        setattr(matmul, precision, "tf32" if precision == "fp32_precision" else True)
        matmul.allow_bf16_reduced_precision_reduction = True
        with kernel._ieee_matmuls(torch.device("cuda")):
            assert getattr(matmul, precision) in ("ieee", False)
            assert not matmul.allow_bf16_reduced_precision_reduction
        assert getattr(matmul, precision) in ("tf32", True) and matmul.allow_bf16_reduced_precision_reduction
    finally:
        for name, value in before.items():
            setattr(matmul, name, value)


def test_bad_inputs_raise_input_error():
    features, labels = random_video(4, 8, 5, 6, 2)
    bad = features.clone()
    bad[2, 3, 1, 1] = float("nan")
    with pytest.raises(InputError, match="frame 2"):
        propagate(bad, labels)
    inf = features.clone()
    inf[3, 0, 0, 0] = float("inf")
    propagator = LabelPropagator(inf[0], labels)
    propagator.step(inf[1])
    propagator.step(inf[2])
    with pytest.raises(InputError, match="frame 3"):
        propagator.step(inf[3])
    with pytest.raises(InputError, match=r"\(T, C, h, w\).*\(8, 5, 6\)"):
        propagate(features[0], labels)
    with pytest.raises(InputError, match=r"\(5, 6\).*\(2, 5, 7\)"):
        propagate(features, torch.rand(2, 5, 7))
    with pytest.raises(InputError, match=r"\(K, h, w\)"):
        propagate(features, torch.rand(5, 6))
    with pytest.raises(InputError, match=r"\(8, 5, 6\).*\(8, 5, 7\)"):
        LabelPropagator(features[0], labels).step(torch.rand(8, 5, 7))
    with pytest.raises(InputError, match="2 channels"):
        LabelPropagator(features[0], labels).add_anchor(features[1], torch.rand(3, 5, 6))
    with pytest.raises(InputError, match="floating-point"):
        propagate(features.long(), labels)
    with pytest.raises(InputError, match="at least one frame"):
        propagate(features[:0], labels)
    for option in (
        dict(topk=0),
        dict(radius=-1),
        dict(context=1.5),
        dict(temperature=0.0),
        dict(compute_dtype=torch.int8),
        dict(block_size=(0, 4)),
    ):
        with pytest.raises(InputError):
            propagate(features, labels, **option)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [None, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    features, labels = random_video(5, 32, 12, 15, 3, seed=10)
    cpu = propagate(features, labels, radius=4, topk=8)
    gpu = propagate(features.cuda(), labels, radius=4, topk=8, compute_dtype=dtype)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    assert (gpu.cpu() - cpu).abs().max() < TOL


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


@pytest.mark.slow  # ~15 s on 2 free cores
def test_streaming_memory_is_bounded():
    """500 DAVIS-size frames (60x107x256), generated on the fly, keep RSS flat after warm-up."""
    gen = torch.Generator().manual_seed(0)
    c, h, w = 256, 60, 107

    def frames(n: int):
        for _ in range(n):
            yield torch.randn(c, h, w, generator=gen)

    labels = torch.rand(3, h, w, generator=gen)
    baseline = None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small ops: one thread is as fast and immune to a busy machine
    try:
        for t, (lab, conf) in enumerate(propagate_stream(frames(500), labels, context=2, radius=2, topk=3)):
            assert lab.shape == (3, h, w) and conf.shape == (h, w)
            if t == 50:
                baseline = _rss_mb()
    finally:
        torch.set_num_threads(threads)
    assert baseline is not None
    growth = _rss_mb() - baseline
    assert growth < 150, f"RSS grew by {growth:.0f} MB over 450 frames"
