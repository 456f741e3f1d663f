"""Per-object reliability (issue 21): on every frame result, low where a label leaks or vanishes; identity
switches and the corrections protocol of the offline benchmark; ``reliability.json`` from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stcorr import load_model
from stcorr.eval.identity import IdentityVideo, corrections_protocol, identity_scores, make_identity_video
from stcorr.eval.reliability import ObjectSample, auroc, fit_logistic
from stcorr.io.reliability import read_reliability_json
from stcorr.propagation.api import iter_propagate, propagate_labels
from stcorr.propagation.reliability import ReliabilityTracker, components
from stcorr.propagation.session import PropagationSession

SIZE = (64, 80)


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def newcomer():
    pytest.importorskip("skimage")
    from stcorr.eval.sources import skimage_photos

    return make_identity_video(3, "newcomer", 8, size=SIZE, photos=skimage_photos())


def _disk(centre: tuple[float, float], radius: float, size=(48, 64)) -> np.ndarray:
    ys, xs = np.mgrid[: size[0], : size[1]]
    return (ys - centre[0]) ** 2 + (xs - centre[1]) ** 2 <= radius**2


def _in_unit_interval(result) -> None:
    assert result.reliability is not None
    objects = [int(i) for i in result.ids if i not in (0, 255)]
    assert sorted(result.reliability) == objects
    assert all(0.0 <= v <= 1.0 for v in result.reliability.values())


def test_every_frame_result_has_a_reliability_per_object_in_0_1(model, newcomer) -> None:
    mask = newcomer.truth[0]
    streamed = list(iter_propagate(model, newcomer.frames, mask))
    for result in streamed:
        _in_unit_interval(result)
    assert streamed[0].reliability == {1: 1.0} or set(streamed[0].reliability.values()) == {1.0}
    session = PropagationSession(model, newcomer.frames)
    session.add_mask(0, mask)
    list(session.propagate())
    # One anchor: the session measures each frame as the one-way stream does.
    for t in range(len(newcomer.frames)):
        assert session.result(t).reliability == pytest.approx(streamed[t].reliability)
    session.add_mask(5, newcomer.truth[5])  # frames 1-4 (both directions) and 6-7 are recomputed
    recomputed = {r.t: r for r in session.propagate()}
    assert 5 in recomputed and set(recomputed[5].reliability.values()) == {1.0}
    for t in range(len(newcomer.frames)):
        _in_unit_interval(session.result(t))
    result = propagate_labels(model, newcomer.frames, mask, start=2)
    assert len(result.reliability) == len(newcomer.frames)
    assert all(0.0 <= v <= 1.0 for frame in result.reliability for v in frame.values())


def test_leaking_and_vanishing_frames_get_lower_reliability_than_clean_ones() -> None:
    """A deterministic leak: object 1 (a disk) is clean on frames 1-3, spreads onto a second, separate disk
    (a look-alike walking in) on frames 4-6; object 2 vanishes from frame 5."""
    tracker = ReliabilityTracker(cell=1)
    frames = []
    for t in range(7):
        labels = np.zeros((48, 64), np.uint8)
        labels[_disk((24, 16 + t), 7)] = 1
        if t >= 4:
            labels[_disk((24, 44 + (6 - t) * 2), 6 + t - 4)] = 1  # the newcomer, taking the label
        if t < 5:
            labels[_disk((8, 56), 4)] = 2
        frames.append(labels)
    confidence = np.full((48, 64), 0.7, np.float32)  # identical pixel confidence: it cannot tell
    assert tracker.anchor(frames[0], (0, 1, 2)) == {1: 1.0, 2: 1.0}
    values = [tracker.observe(labels, confidence, (0, 1, 2)) for labels in frames[1:]]
    clean_1 = [v[1] for v in values[:3]]
    leaking_1 = [v[1] for v in values[3:]]
    assert max(leaking_1) < min(clean_1) and max(leaking_1) < 0.5 < min(clean_1)
    assert max(v[2] for v in values[4:]) < 0.5 < min(v[2] for v in values[:4])


def test_components_are_8_connected() -> None:
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one component
    mask[4:6, 3:6] = True
    assert components(mask) == [6, 2]
    assert components(np.zeros((3, 3), bool)) == []


def test_identity_switches_are_counted_on_a_hand_built_case() -> None:
    """Objects 1 and 2 annotated, 3 a newcomer. Predictions: frame 1 right; frame 2 object 1's label on
    object 2 (a switch) and object 2 vanished; frame 3 object 1's label on the newcomer (a switch frame, not a
    new entry: frame 2 was switched already); frame 4 right; frame 5 object 2's label also on a strip of the
    newcomer (a leak, not a switch: less than its own pixels)."""
    masks = np.zeros((6, 20, 30), np.uint8)
    masks[:, 2:8, 2:8] = 1  # 36 px
    masks[:, 12:18, 2:8] = 2
    masks[1:, 2:8, 20:26] = 3  # the newcomer from frame 1 on
    video = IdentityVideo("hand", "newcomer", None, np.zeros((6, 20, 30, 3), np.uint8), masks, (1, 2))
    predicted = [masks[0].copy() for _ in range(6)]
    predicted[1] = video.truth[1]
    predicted[2] = np.where(masks[2] == 2, 1, np.where(masks[2] == 1, 0, masks[2])).astype(np.uint8)
    predicted[2][masks[2] == 3] = 0
    predicted[3] = np.where(masks[3] == 3, 1, video.truth[3] * (masks[3] == 2)).astype(np.uint8)
    predicted[4] = video.truth[4]
    predicted[5] = video.truth[5].copy()
    predicted[5][2:4, 20:26] = 2  # 12 px of object 2's label on the newcomer: a leak, no switch (own 36 px)
    scores = {s.object_id: s for s in identity_scores(video, predicted)}
    assert (scores[1].switches, scores[1].switch_frames, scores[1].first_switch) == (1, 2, 2)
    assert scores[1].leak_frames == 2
    assert (scores[2].switches, scores[2].switch_frames, scores[2].first_switch) == (0, 0, None)
    assert scores[2].leak_frames == 1  # frame 5: 12 of 48 px on the newcomer (>= 20 %)
    np.testing.assert_array_equal(video.truth[3][masks[3] == 3], 0)  # the newcomer is ground-truth background


def test_the_newcomer_is_absent_from_frame_0_and_enters_next_to_the_walker(newcomer) -> None:
    newcomer_id = int(newcomer.masks.max())
    assert newcomer_id not in newcomer.annotated and not (newcomer.masks[0] == newcomer_id).any()
    assert (newcomer.masks[-1] == newcomer_id).sum() > 0.5 * (newcomer.masks[-1] == 1).sum()


def test_corrections_protocol_runs_and_a_correction_does_not_lower_jf(model, newcomer) -> None:
    run = corrections_protocol(lambda frames: PropagationSession(model, frames), newcomer, rounds=2)
    assert len(run.jf) == 3 and len(run.corrected) == 2 and len(set(run.corrected)) == 2
    assert all(1 <= t <= 6 for t in run.corrected)
    assert run.jf[1] >= run.jf[0] and run.jf[2] >= run.jf[1]
    assert all(0.0 <= v <= 1.0 for v in run.jf)


def test_auroc_and_logistic_fit() -> None:
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert auroc([1, 1], [True, False]) == 0.5 and np.isnan(auroc([1.0], [True]))
    samples = [ObjectSample("v", t, 1, iou, 1.0, {"growth": g}) for t, (iou, g) in
               enumerate([(0.9, 0.0), (0.8, 0.1), (0.2, 1.5), (0.3, 1.0), (0.7, 0.4), (0.4, 0.5)])]
    fitted = fit_logistic(samples, ["growth"])
    assert fitted.weights["growth"] < 0 and fitted({"growth": 0.0}) > 0.5 > fitted({"growth": 1.5})


def test_cli_propagate_writes_reliability_json(tmp_path: Path, newcomer) -> None:
    pytest.importorskip("av")
    from stcorr.cli import main
    from stcorr.outputs import write_mask_png

    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image

    for t, image in enumerate(newcomer.frames):
        Image.fromarray(image).save(frames / f"f{t:02d}.png")
    write_mask_png(tmp_path / "m.png", newcomer.truth[0])
    out = tmp_path / "out"
    assert main(["propagate", "--video", str(frames), "--mask", str(tmp_path / "m.png"), "--model",
                 "lab-pixels", "--out", str(out)]) == 0
    data = json.loads((out / "reliability.json").read_text())
    assert data["frame_names"] == [f"f{t:02d}" for t in range(8)] and data["objects"] == [1]
    values = read_reliability_json(out / "reliability.json")
    assert values[0] == {1: 1.0} and all(0.0 <= v[1] <= 1.0 for v in values)
    suspects = [t for t, v in enumerate(values) if v[1] < data["threshold"]]
    assert data["suspect_frames"]["1"] == suspects
    assert data["first_suspect_frame"] == (suspects[0] if suspects else None)
    assert not list(out.glob(".*tmp*"))
