"""PropagationSession: re-anchoring, new ids mid-video, reverse passes, cancelling, and recomputing only
what a correction changes, each checked against an independent path (the streaming iter_propagate, or a
fresh session computed from scratch)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stcorr import PropagationOptions, PropagationSession
from stcorr.baselines import LabPixelEncoder
from stcorr.errors import InputError
from stcorr.propagation import LabelPropagator
from stcorr.propagation.api import iter_propagate

pytest.importorskip("skimage")  # real photos
from skimage import data  # noqa: E402

SHIFT = (2, 3)  # (dy, dx) pixels per frame
FRAMES = 8
OPTIONS = PropagationOptions(context=3, radius=4, topk=5, compute_dtype=torch.float32, directions="forward")
BOTH = OPTIONS.replace(directions="both")


def shifted(image: np.ndarray, t: int) -> np.ndarray:
    return np.roll(image, (SHIFT[0] * t, SHIFT[1] * t), axis=(0, 1))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return LabPixelEncoder(stride=4).eval()


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    photo = data.astronaut()[40:296:2, 80:368:2]  # 128 x 144 real photo
    return np.stack([shifted(photo, t) for t in range(FRAMES)])


@pytest.fixture(scope="module")
def mask(clip) -> np.ndarray:
    mask = np.zeros(clip.shape[1:3], np.uint8)
    mask[30:75, 45:95] = 1
    mask[85:115, 15:55] = 2
    return mask


def run(session: PropagationSession, **kwargs) -> list[int]:
    return [result.t for result in session.propagate(**kwargs)]


def labels_of(session: PropagationSession) -> np.ndarray:
    return np.stack([session.result(t).labels for t in range(session.num_frames)])


def test_forward_pass_equals_the_streaming_api(model, clip, mask):
    session = PropagationSession(model, clip, options=OPTIONS)
    assert session.stale_frames() == list(range(FRAMES))
    session.add_mask(0, mask)
    assert run(session) == list(range(FRAMES))
    assert session.stale_frames() == []
    for prediction in iter_propagate(model, clip, mask, options=OPTIONS):
        result = session.result(prediction.t)
        np.testing.assert_array_equal(result.labels, prediction.labels)
        np.testing.assert_allclose(result.confidence, prediction.confidence)
    assert session.object_ids == [1, 2] and session.frame_size == mask.shape and session.num_frames == FRAMES
    assert session.frame_names[:2] == ["00000", "00001"]
    np.testing.assert_array_equal(session.frame(3), clip[3])


def test_correction_recomputes_only_later_frames(model, clip, mask, monkeypatch):
    session = PropagationSession(model, clip, options=OPTIONS)
    session.add_mask(0, mask)
    run(session)
    before = {t: session.result(t) for t in range(FRAMES)}
    steps, encoded = [], []
    original_step, original_forward = LabelPropagator.step, type(model).forward
    monkeypatch.setattr(LabelPropagator, "step", lambda self, f: steps.append(1) or original_step(self, f))
    monkeypatch.setattr(type(model), "forward", lambda self, x: encoded.append(len(x)) or original_forward(self, x))

    corrected = shifted(mask, 3)
    session.add_mask(3, corrected)
    assert session.stale_frames() == [3, 4, 5, 6, 7]
    assert all(session.result(t) is before[t] for t in range(3))  # earlier frames untouched
    assert run(session) == [3, 4, 5, 6, 7]
    assert len(steps) == 4 and encoded == []  # frames 4..7 predicted once each; no feature re-extracted
    np.testing.assert_array_equal(session.result(3).labels, corrected)

    fresh = PropagationSession(model, clip, options=OPTIONS)  # the same anchors, computed from scratch
    fresh.add_mask(0, mask)
    fresh.add_mask(3, corrected)
    run(fresh)
    np.testing.assert_array_equal(labels_of(session), labels_of(fresh))
    for t in range(FRAMES):
        np.testing.assert_allclose(session.result(t).confidence, fresh.result(t).confidence, atol=1e-6)


def test_reanchoring_at_the_same_frame_replaces_the_anchor(model, clip, mask):
    session = PropagationSession(model, clip, options=OPTIONS)
    session.add_mask(0, mask)
    session.add_mask(4, np.zeros_like(mask))
    run(session)
    session.add_mask(4, shifted(mask, 4))
    assert session.stale_frames() == [4, 5, 6, 7] and sorted(session.anchors) == [0, 4]
    run(session)
    fresh = PropagationSession(model, clip, options=OPTIONS)
    fresh.add_mask(0, mask)
    fresh.add_mask(4, shifted(mask, 4))
    run(fresh)
    np.testing.assert_array_equal(labels_of(session), labels_of(fresh))

    session.remove_anchor(4)
    assert session.stale_frames() == [4, 5, 6, 7]
    run(session)
    single = PropagationSession(model, clip, options=OPTIONS)
    single.add_mask(0, mask)
    run(single)
    np.testing.assert_array_equal(labels_of(session), labels_of(single))


def test_new_object_id_mid_video(model, clip, mask):
    first = mask.copy()
    first[:40, 80:] = 255  # unknown at frame 0 (void carries no label) ...
    session = PropagationSession(model, clip, options=OPTIONS)
    session.add_mask(0, first)
    run(session)
    early = labels_of(session)[:4]
    with_new = shifted(mask, 4).copy()
    with_new[5:25, 100:130] = 9  # ... where a new object is annotated at frame 4
    session.add_mask(4, with_new)
    assert session.object_ids == [1, 2, 9]
    assert run(session) == [4, 5, 6, 7]
    labels = labels_of(session)
    np.testing.assert_array_equal(labels[:4], early)
    assert not (labels[:4] == 9).any()
    for t in range(5, FRAMES):  # the new object is tracked after its first anchor
        expected = shifted(with_new, t - 4) == 9
        assert ((labels[t] == 9) & expected).sum() > 0.4 * expected.sum()  # raw Lab pixels: a weak encoder
    fresh = PropagationSession(model, clip, options=OPTIONS)
    fresh.add_mask(0, first)
    fresh.add_mask(4, with_new)
    run(fresh)
    np.testing.assert_array_equal(labels, labels_of(fresh))


def test_backward_pass_before_the_first_anchor(model, clip, mask):
    start = 5
    session = PropagationSession(model, clip, options=OPTIONS)
    session.add_mask(start, shifted(mask, start))
    assert run(session, reverse=True) == [4, 3, 2, 1, 0, 5, 6, 7]
    for prediction in iter_propagate(model, clip, shifted(mask, start), start=start, direction="backward",
                                     options=OPTIONS):
        np.testing.assert_array_equal(session.result(prediction.t).labels, prediction.labels)
    session.add_mask(2, shifted(mask, 2))  # the new first anchor: every frame but the old anchor changes
    assert session.stale_frames() == [0, 1, 2, 3, 4, 6, 7]
    assert run(session, start=3, reverse=True) == [1, 0, 2, 3]  # frames up to 3: backward pass first
    assert session.stale_frames() == [4, 6, 7]


def test_cancelled_pass_leaves_a_consistent_cache(model, clip, mask):
    session = PropagationSession(model, clip, options=OPTIONS)
    session.add_mask(0, mask)
    iterator = session.propagate()
    assert [next(iterator).t for _ in range(3)] == [0, 1, 2]
    iterator.close()  # the consumer stops (e.g. a cancel button)
    assert session.stale_frames() == [3, 4, 5, 6, 7] and session.result(3) is None
    assert run(session) == [3, 4, 5, 6, 7]
    uninterrupted = PropagationSession(model, clip, options=OPTIONS)
    uninterrupted.add_mask(0, mask)
    run(uninterrupted)
    np.testing.assert_array_equal(labels_of(session), labels_of(uninterrupted))


def test_working_size_and_replay_from_dict(model, clip, mask):
    session = PropagationSession(model, clip, options=OPTIONS, max_side=72)
    assert session.working_size == (64, 72) and session.frame_size == mask.shape
    session.add_mask(0, mask)
    session.add_mask(3, shifted(mask, 3))
    run(session)
    assert session.result(5).labels.shape == mask.shape
    saved = json.loads(json.dumps(session.to_dict()))
    replay = PropagationSession.from_dict(saved, model, clip)
    assert replay.options == OPTIONS and replay.working_size == (64, 72)
    run(replay)
    np.testing.assert_array_equal(labels_of(replay), labels_of(session))


def test_remember_resumes_a_propagator_exactly():
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(7, 8, 6, 9, generator=generator)
    labels = torch.rand(3, 6, 9, generator=generator)
    full = LabelPropagator(features[0], labels, context=2, radius=2, topk=4)
    outputs = [full.step(features[t])[0] for t in range(1, 7)]
    resumed = LabelPropagator(features[0], labels, context=2, radius=2, topk=4)
    for t in (3, 4):  # only the window matters: the last `context` frames before frame 5
        resumed.remember(features[t], outputs[t - 1])
    torch.testing.assert_close(resumed.step(features[5])[0], outputs[4], atol=1e-6, rtol=0)


def test_bad_session_inputs(model, clip, mask):
    session = PropagationSession(model, clip, options=OPTIONS)
    with pytest.raises(InputError, match="no anchor"):
        next(session.propagate())
    with pytest.raises(InputError, match="original size"):
        session.add_mask(0, mask[:50])
    with pytest.raises(InputError, match="outside"):
        session.add_mask(FRAMES, mask)
    session.add_mask(0, mask)
    with pytest.raises(InputError, match="mask"):
        session.add_points(2, [[10.0, 10.0]])
    with pytest.raises(InputError, match="not an anchor"):
        session.remove_anchor(5)
    with pytest.raises(InputError, match="encoder"):
        PropagationSession(None, clip)


@pytest.mark.parametrize("directions, recomputed", [("forward", [7, 8, 9, 10, 11]),
                                                    ("both", [7, 6, 5, 4, 3, 2, 1, 8, 9, 10, 11])])
def test_correction_keeps_the_automatic_float32_switch(monkeypatch, tmp_path, directions, recomputed):
    """Near-duplicate features (flat shapes, pixel colours) make the automatic compute dtype switch from
    bfloat16 to float32 a few frames in. A pass resumed after a correction must resume in float32 too (not
    restart the switch's count in bfloat16), or its ties break differently from a fresh session's."""
    import stcorr.propagation.kernel as kernel
    from app_helpers import write_shapes_folder
    from stcorr.baselines import load_baseline

    monkeypatch.setattr(kernel, "default_compute_dtype", lambda device: torch.bfloat16)  # any CPU
    switches = []
    original = LabelPropagator._switch_to_float32
    monkeypatch.setattr(LabelPropagator, "_switch_to_float32",
                        lambda self: (switches.append(self.frames_seen), original(self))[1])
    folder, truth = write_shapes_folder(tmp_path / "clip")
    pixels = load_baseline("lab-pixels", device="cpu")
    corrected = PropagationSession(pixels, folder, directions=directions)
    assert corrected.options.compute_dtype is None
    corrected.add_mask(0, truth[0])
    run(corrected)
    assert switches and switches[0] < 7  # the first pass had switched before the correction
    corrected.add_mask(7, truth[7])
    assert run(corrected) == recomputed  # both ways: frames 1..6 are fused again (their forward parts kept)
    fresh = PropagationSession(pixels, folder, directions=directions)
    fresh.add_mask(0, truth[0])
    fresh.add_mask(7, truth[7])
    run(fresh)
    np.testing.assert_array_equal(labels_of(corrected), labels_of(fresh))
