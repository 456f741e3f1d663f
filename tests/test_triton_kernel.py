"""The fused Triton propagation kernel, run on CPU by Triton's interpreter, against the float64 dense reference.

tests/conftest.py sets TRITON_INTERPRET=1 before anything imports Triton, so the kernel is interpreted in the
test process. The compiled CUDA kernel is tested by tests/test_triton_cuda.py (benchmarks/gpu_check.sh runs it
with TRITON_INTERPRET=0).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

pytest.importorskip("triton", reason="Triton is installed with PyTorch's Linux wheels and the dev extra")
if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("this process runs compiled Triton kernels (TRITON_INTERPRET is not 1)", allow_module_level=True)

from dense_reference import Anchor, dense_propagate, random_video  # noqa: E402

from stcorr.baselines import load_baseline  # noqa: E402
from stcorr.errors import InputError  # noqa: E402
from stcorr.propagation import LabelPropagator, _backend, propagate, propagate_stream  # noqa: E402
from stcorr.propagation.api import propagate_labels  # noqa: E402

EXACT = 1e-6  # max |kernel - float64 dense reference| where the top-k is well defined



def random_batch(b: int, t: int, c: int, h: int, w: int, counts: list[int], seed: int = 0):
    """(B, T, C, h, w) features and B soft label maps with their own label counts."""
    videos = [random_video(t, c, h, w, k, seed=seed + i) for i, k in enumerate(counts[:b])]
    return torch.stack([f for f, _ in videos]), [lab for _, lab in videos]


def test_the_kernel_is_interpreted():
    """Triton's own jit functions too: Triton was first imported with TRITON_INTERPRET=1 (tests/conftest.py)."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    from stcorr.propagation import _triton_kernel

    assert isinstance(_triton_kernel._window_topk_kernel, InterpretedFunction)
    assert isinstance(tl.zeros, InterpretedFunction)


# (T, C, h, w, context, radius, topk, temperature, label counts per video (B = their number))
SETTINGS = [
    pytest.param(5, 16, 7, 9, 2, 2, 4, 0.1, [3], id="non-square,4-tiles"),
    pytest.param(4, 8, 5, 6, 10, 20, 5, 0.07, [1, 2], id="radius>grid,context>video,B=2"),
    pytest.param(4, 8, 3, 4, 2, 0, 10, 0.07, [2], id="radius0,topk>candidates"),
    pytest.param(3, 4, 1, 1, 2, 1, 3, 0.1, [2, 1, 3], id="1x1-grid,B=3"),
    pytest.param(3, 40, 9, 17, 3, 3, 10, 0.05, [4, 2], id="C=40,3-key-chunks,B=2"),
    pytest.param(4, 3, 6, 10, 1, 2, 6, 0.2, [2], id="C=3,context1"),
    pytest.param(4, 8, 6, 5, 0, 1, 3, 0.07, [2], id="context0"),
    pytest.param(3, 8, 6, 7, 4, 3, 32, 0.07, [2], id="topk=max"),
]


@pytest.mark.parametrize("t,c,h,w,context,radius,topk,temperature,counts", SETTINGS)
def test_matches_float64_dense_reference(t, c, h, w, context, radius, topk, temperature, counts):
    features, labels = random_batch(len(counts), t, c, h, w, counts, seed=3)
    opts = dict(context=context, radius=radius, topk=topk, temperature=temperature)
    out, conf = propagate(features, labels, backend="triton", return_confidence=True, **opts)
    assert conf.shape == (len(counts), t, h, w)
    for b, k in enumerate(counts):
        ref, ref_conf = dense_propagate(features[b], labels[b], **opts)
        assert out[b].shape == (t, k, h, w) and out[b].dtype == torch.float32
        assert (out[b] - ref).abs().max() < EXACT
        assert (conf[b] - ref_conf).abs().max() < EXACT


def test_batch_equals_one_video_at_a_time():
    features, labels = random_batch(3, 4, 16, 5, 9, [3, 1, 2], seed=5)
    opts = dict(context=2, radius=2, topk=5, temperature=0.1)
    batch, batch_conf = propagate(features, labels, backend="triton", return_confidence=True, **opts)
    for b in range(3):
        alone, alone_conf = propagate(features[b], labels[b], backend="triton", return_confidence=True, **opts)
        assert torch.equal(batch[b], alone) and torch.equal(batch_conf[b], alone_conf)
    # Labels as one (B, K, h, w) tensor: one (B, T, K, h, w) tensor out, the same numbers.
    same_k = [torch.nn.functional.pad(lab, (0, 0, 0, 0, 0, 3 - lab.shape[0])) for lab in labels]
    stacked = propagate(features, torch.stack(same_k), backend="triton", **opts)
    assert stacked.shape == (3, 4, 3, 5, 9)
    for b, lab in enumerate(labels):
        assert torch.equal(stacked[b, :, : lab.shape[0]], batch[b])
        assert (stacked[b, :, lab.shape[0] :] == 0).all()


def test_stream_and_step_equal_whole_video():
    features, labels = random_batch(2, 4, 8, 4, 9, [2, 3], seed=6)
    opts = dict(context=2, radius=2, topk=4, temperature=0.07)
    whole = propagate(features, labels, backend="triton", **opts)
    streamed = list(propagate_stream(features.unbind(1), labels, backend="triton", **opts))
    for t, (lab, conf) in enumerate(streamed):
        assert conf.shape == (2, 4, 9)
        for b in range(2):
            assert torch.equal(lab[b], whole[b][t])


def test_anchors_as_in_the_dense_reference_and_the_torch_kernel():
    """An anchor from the start and a re-anchored frame, in a batch of two videos."""
    features, labels = random_batch(2, 7, 16, 8, 10, [3, 2], seed=7)
    anchors = random_batch(2, 1, 16, 8, 10, [3, 2], seed=9)
    corrected = random_batch(2, 1, 16, 8, 10, [3, 2], seed=11)[1]
    opts = dict(context=1, radius=2, topk=6, temperature=0.1)
    outputs = {}
    for backend in ("triton", "torch"):
        propagator = LabelPropagator(features[:, 0], labels, backend=backend, **opts)
        assert propagator.backend == backend
        propagator.add_anchor(anchors[0][:, 0], anchors[1])
        out = {1: propagator.step(features[:, 1])[0]}
        propagator.add_anchor(features[:, 2], corrected)  # frame 2 re-anchored instead of stepped
        assert propagator.frames_seen == 2 and propagator.num_context_frames == 4
        out.update({t: propagator.step(features[:, t])[0] for t in range(3, 7)})
        outputs[backend] = out
    kept = [0, 1, 3, 4, 5, 6]
    for b in range(2):
        fixed = [Anchor(anchors[0][b, 0], anchors[1][b]), Anchor(features[b, 2], corrected[b], from_frame=2)]
        ref, _ = dense_propagate(features[b, kept], labels[b], anchors=fixed, **opts)
        for i, t in enumerate(kept[1:], start=1):
            assert (outputs["triton"][t][b] - ref[i]).abs().max() < EXACT
            assert (outputs["triton"][t][b] - outputs["torch"][t][b]).abs().max() < 1e-5


def test_both_directions_and_anchors_through_propagate_labels():
    """The frame-level API with backend="triton" gives the torch kernel's masks, forwards and backwards."""
    gen = np.random.default_rng(0)
    base = gen.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    frames = np.stack([np.roll(base, (2 * t, 3 * t), axis=(0, 1)) for t in range(6)])
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 16:40] = 1
    mask[32:44, 4:20] = 2
    anchor = np.roll(mask, (2, 3), axis=(0, 1))
    model = load_baseline("lab-pixels")
    opts = dict(start=2, anchors={4: np.roll(anchor, (4, 6), axis=(0, 1))}, context=2, radius=3, topk=5,
                return_probabilities=True)
    fused = propagate_labels(model, frames, np.roll(mask, (4, 6), axis=(0, 1)), backend="triton", **opts)
    plain = propagate_labels(model, frames, np.roll(mask, (4, 6), axis=(0, 1)), backend="torch", **opts)
    assert fused.ids == plain.ids
    assert np.abs(fused.probabilities - plain.probabilities).max() < 1e-5
    assert (fused.labels == plain.labels).mean() > 0.999


def test_uncertified_tiles_are_selected_again_widely(monkeypatch):
    """Keeping only k candidates in the first pass certifies nothing: every tile goes through the wide pass,
    and the results stay exact."""
    from stcorr.propagation import _triton_kernel

    launches: list[int] = []
    original = _triton_kernel._launch

    def spy(tiles, keep, *args):
        launches.append(keep)
        return original(tiles, keep, *args)

    monkeypatch.setattr(_triton_kernel, "kept_candidates", lambda topk: (topk, 16 * topk))
    monkeypatch.setattr(_triton_kernel, "_launch", spy)
    features, labels = random_video(4, 16, 6, 9, 2, seed=12)
    opts = dict(context=2, radius=2, topk=4, temperature=0.07)
    out, conf = propagate(features, labels, backend="triton", return_confidence=True, **opts)
    ref, ref_conf = dense_propagate(features, labels, **opts)
    assert launches == [4, 64] * 3  # each of the 3 target frames: a first pass and a wide pass
    assert (out - ref).abs().max() < EXACT and (conf - ref_conf).abs().max() < EXACT


def test_near_tie_in_float32_is_ranked_in_float64():
    """Two keys whose cosines with the query differ by less than float32 can resolve: the exactly better wins."""
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(8, generator=gen)
    a = q + 0.1 * torch.randn(8, generator=gen)
    for _ in range(10000):
        b = a + 1e-7 * torch.randn(8, generator=gen)
        features = torch.stack([torch.stack([a, b], 1), torch.stack([q, q], 1)])[:, :, None, :]
        keys, query = (LabelPropagator._normalise(f)[:, 0] for f in features)
        exact = query[:, 0].double() @ keys.double()
        if 0 < abs(float(exact[0] - exact[1])) < 1e-9:
            break
    else:
        raise AssertionError("no near-tie found")
    winner = int(exact.argmax())
    labels = torch.eye(2)[:, None, :]
    out = propagate(features, labels, context=1, radius=1, topk=1, backend="triton")
    assert (out[1, winner] == 1.0).all()
    swapped = propagate(features.flip(-1), labels, context=1, radius=1, topk=1, backend="triton")
    assert (swapped[1, 1 - winner] == 1.0).all()


def test_zero_features_give_finite_outputs():
    features, labels = random_video(3, 8, 4, 5, 2, seed=13)
    features[1:, :, 1, 2] = 0  # a query cell whose feature vector is zero: every cosine 0
    out, conf = propagate(features, labels, radius=1, topk=3, backend="triton", return_confidence=True)
    ref, ref_conf = dense_propagate(features, labels, radius=1, topk=3)
    assert torch.isfinite(out).all() and torch.isfinite(conf).all()
    assert conf[1, 1, 2] == 0
    keep = torch.ones(4, 5, dtype=torch.bool)
    keep[1, 2] = False  # its top-k is any 3 of its tied candidates
    assert (out[1][:, keep] - ref[1][:, keep]).abs().max() < EXACT


# --------------------------------------------------------------------------- backend selection


def test_backend_resolution(monkeypatch, caplog):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _backend.resolve_backend("auto", cpu, 10) == "torch"  # CPU: unchanged, interpreter or not
    assert _backend.resolve_backend("torch", cuda, 10) == "torch"
    assert _backend.resolve_backend("triton", cpu, 10) == "triton"  # interpreter mode is on here
    assert _backend.resolve_backend("auto", cuda, 10) == "triton"
    assert _backend.resolve_backend("auto", cuda, 64) == "torch"  # above the kernel's maximum top-k
    with pytest.raises(InputError, match="topk 64"):
        _backend.resolve_backend("triton", cuda, 64)
    with pytest.raises(InputError, match="backend must be one of"):
        _backend.resolve_backend("cuda", cpu, 10)
    with pytest.raises(InputError, match="mps"):
        _backend.resolve_backend("triton", torch.device("mps"), 10)
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(InputError, match="TRITON_INTERPRET=1"):
        _backend.resolve_backend("triton", cpu, 10)
    monkeypatch.setattr(_backend.importlib.util, "find_spec", lambda name: None)
    assert _backend.resolve_backend("auto", cuda, 10) == "torch"  # CUDA without Triton
    with pytest.raises(InputError, match="not installed"):
        _backend.resolve_backend("triton", cuda, 10)


def test_backend_choice_is_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(_backend, "_logged", set())
    features, labels = random_video(2, 4, 3, 3, 2)
    with caplog.at_level(logging.INFO, logger="stcorr.propagation._backend"):
        for _ in range(3):
            propagate(features, labels, radius=1, topk=2)
    messages = [r.getMessage() for r in caplog.records if r.name == "stcorr.propagation._backend"]
    assert messages == ["label propagation on cpu: torch kernel (cpu device)"]


def test_batch_inputs_are_checked():
    features, labels = random_batch(2, 3, 8, 5, 6, [2, 3])
    with pytest.raises(InputError, match="labels for 2 videos, got 1"):
        propagate(features, labels[:1])
    with pytest.raises(InputError, match=r"video 1, frame 0.*\(K, h, w\)"):
        propagate(features, [labels[0], labels[1][0]])
    bad = features.clone()
    bad[1, 2, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="video 1, frame 2"):
        propagate(bad, labels)
    propagator = LabelPropagator(features[:, 0], labels, backend="triton")
    with pytest.raises(InputError, match=r"\(B, C, h, w\) = \(2, 8, 5, 6\)"):
        propagator.step(features[0, 1])
    with pytest.raises(InputError, match="video 0, anchor 1: expected labels with 2 channels"):
        propagator.add_anchor(features[:, 1], [labels[1], labels[1]])
    with pytest.raises(InputError, match="B >= 1"):
        LabelPropagator(features[:0, 0], [], backend="torch")


def test_remember_resumes_the_fused_propagator_exactly():
    """LabelPropagator.remember on the Triton backend (one video and a batch): a propagator given the last
    ``context`` frames with their labels predicts the next frame as the one that stepped through them."""
    features, labels = random_batch(2, 6, 8, 5, 7, [3, 2], seed=13)
    opts = dict(context=2, radius=2, topk=4, temperature=0.1, backend="triton")
    for first, frames, first_labels in ((features[0, 0], features[0], labels[0]), (features[:, 0], features, labels)):
        at = (lambda t: frames[t]) if frames.dim() == 4 else (lambda t: frames[:, t])
        full = LabelPropagator(first, first_labels, **opts)
        outputs = [full.step(at(t))[0] for t in range(1, 6)]
        resumed = LabelPropagator(first, first_labels, **opts)
        for t in (2, 3):
            resumed.remember(at(t), outputs[t - 1])
        assert resumed.frames_seen == 3
        got, want = resumed.step(at(4))[0], outputs[3]
        for g, w in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want]):
            assert torch.equal(g, w)


def test_session_on_the_triton_backend_equals_the_torch_backend():
    """PropagationSession with backend="triton" (an option like the others): a correction re-propagates by
    resuming from cached predictions (remember), and gives the torch backend's masks."""
    from stcorr import PropagationOptions, PropagationSession

    gen = np.random.default_rng(1)
    base = gen.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    frames = np.stack([np.roll(base, (t, 2 * t), axis=(0, 1)) for t in range(7)])
    mask = np.zeros((40, 48), np.uint8)
    mask[8:24, 10:30] = 1
    model = load_baseline("lab-pixels")
    results = {}
    for backend in ("triton", "torch"):
        options = PropagationOptions(context=2, radius=3, topk=4, backend=backend)
        session = PropagationSession(model, frames, options=options, return_probabilities=True)
        session.add_mask(0, mask)
        list(session.propagate())
        session.add_mask(5, np.roll(mask, (5, 10), axis=(0, 1)))
        redone = [r.t for r in session.propagate()]
        results[backend] = (redone, np.stack([session.result(t).probabilities for t in range(7)]))
    assert results["triton"][0] == results["torch"][0]
    assert np.abs(results["triton"][1] - results["torch"][1]).max() < 1e-5
    assert PropagationSession(model, frames, backend="triton").options.backend == "triton"
    with pytest.raises(InputError, match="backend must be one of"):
        PropagationOptions(backend="gpu")


def test_iter_propagate_batch_equals_iter_propagate():
    """Videos of one working size but different lengths and original sizes, batched on the fused kernel."""
    from stcorr.propagation.api import iter_propagate, iter_propagate_batch

    gen = np.random.default_rng(2)
    model = load_baseline("lab-pixels")
    videos, masks = [], []
    for length, (h, w) in ((5, (40, 48)), (3, (30, 36))):
        base = gen.integers(0, 256, (h, w, 3), dtype=np.uint8)
        videos.append(np.stack([np.roll(base, (t, 2 * t), axis=(0, 1)) for t in range(length)]))
        mask = np.zeros((h, w), np.uint8)
        mask[5 : h // 2, 6 : w // 2] = 1
        masks.append(mask)
    opts = dict(size=(32, 40), context=2, radius=3, topk=4, backend="triton")
    steps = list(iter_propagate_batch(model, videos, masks, **opts))
    assert len(steps) == 5 and steps[3][1] is None
    for b, (video, mask) in enumerate(zip(videos, masks)):
        alone = list(iter_propagate(model, video, mask, **opts))
        for t, prediction in enumerate(alone):
            np.testing.assert_array_equal(steps[t][b].labels, prediction.labels)
    with pytest.raises(InputError, match="one working size"):
        next(iter_propagate_batch(model, videos, masks, backend="torch"))
