"""The paper's one-way protocol is unchanged: ``python -m stcorr.eval``'s predictions, the one-shot API and a
one-way session with corrections give the same outputs as before sessions learnt to predict in both
directions (issue 21).

The pinned SHA-256 digests were computed by running :func:`outputs` with the code of main at 0d7530c
(before that change; ``PYTHONPATH=<main>/src python tests/test_one_way_pins.py``), so the reference does not
depend on the code under test. Everything is uint8 masks or float32 keypoints from the weight-free Lab
pixel encoder on small semi-synthetic clips (the kernel ranks exactly, whatever the CPU's matmul dtype).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

pytest.importorskip("skimage")

PINNED = {
    'eval davis video 0': '80051a28a4baa2060716ac7007b24067fe4596a66f292c45ca1fe00f2cbd8871',
    'eval davis video 1': 'f2ea5f8b8f046744aa7608852c163540fe33e23f30a352c3374b2375c9f808f5',
    'eval davis batched': '5983c124085b841b1f0a5362e9e0d7b3bd8f42a3e1a30a79b49282256116f471',
    'eval jhmdb keypoints': 'e69ae02469792c478f502c2a9893118a5b4d9aaae6a13b6574a8b3addd014b2a',
    'propagate_labels start 4': '2e1b966b736bd1f24cdd485708e74df7001308c0286c5a2b83b8ebfd3f1e6013',
    'one-way session': '8b160e2025945f669658900327f7ed58d8e380f7f1af0ec78e137236f2a1fa49',
}


def _digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    return hashlib.sha256(str((array.dtype.str, array.shape)).encode() + array.tobytes()).hexdigest()


def outputs() -> dict[str, str]:
    """Digests of the outputs of every one-way entry point on two small clips (API of main at 0d7530c)."""
    from stcorr import PropagationOptions, PropagationSession, propagate_labels
    from stcorr.baselines import LabPixelEncoder
    from stcorr.eval.predict import propagate_keypoints, propagate_mask, propagate_masks
    from stcorr.eval.presets import preset_for
    from stcorr.eval.sources import skimage_photos
    from stcorr.eval.synthetic import make_video

    photos = skimage_photos()
    videos = [make_video(seed, 9, size=(72, 96), photos=photos) for seed in (3, 4)]
    model = LabPixelEncoder(stride=8).eval()
    davis = preset_for("davis", 8)
    digests = {}
    for i, video in enumerate(videos):
        masks = np.stack(list(propagate_mask(model, video.frames, video.masks[0], davis)))
        digests[f"eval davis video {i}"] = _digest(masks)
    batched = [np.stack([m for m in step]) for step in propagate_masks(model, [(v.frames, v.masks[0])
                                                                              for v in videos], davis)]
    digests["eval davis batched"] = _digest(np.stack(batched))
    video = videos[0]
    points = np.array([[20.0, 30.0], [60.0, 40.0], [75.0, 12.0]], np.float32)
    jhmdb = preset_for("jhmdb", 8).with_overrides(input_size=(72, 96))
    coords = np.asarray(propagate_keypoints(model, video.frames, points, jhmdb), np.float32)
    digests["eval jhmdb keypoints"] = _digest(np.round(coords, 3))
    one_shot = propagate_labels(model, video.frames, video.masks[4], start=4, radius=6)
    digests["propagate_labels start 4"] = _digest(one_shot.labels)
    options = PropagationOptions(context=3, radius=6, topk=5)
    if "directions" in {f for f in PropagationOptions.__dataclass_fields__}:
        options = options.replace(directions="forward")
    session = PropagationSession(model, video.frames, options=options)
    session.add_mask(2, video.masks[2])
    session.add_mask(6, video.masks[6])
    list(session.propagate())
    session.add_mask(4, video.masks[4])  # a correction: resumes from the cache
    list(session.propagate())
    digests["one-way session"] = _digest(np.stack([session.result(t).labels for t in range(9)]))
    return digests


def test_one_way_outputs_are_bit_identical_to_before():
    assert PINNED, "no pinned digests"
    assert outputs() == PINNED


if __name__ == "__main__":
    for name, digest in outputs().items():
        print(f"    {name!r}: {digest!r},")
