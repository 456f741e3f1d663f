"""RGB -> Lab matches scikit-image's independent implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stcorr.color import normalize_lab, rgb_to_lab
from stcorr.errors import InputError

pytest.importorskip("skimage")  # the independent reference colour conversion
from skimage.color import rgb2xyz, xyz2lab  # noqa: E402

# OpenCV's D65 white point (used here, as in the official pipeline) vs scikit-image's.
OPENCV_WHITE = np.array([0.950456, 1.0, 1.088754])
SKIMAGE_WHITE = np.array([0.95047, 1.0, 1.08883])


def skimage_lab(rgb_hwc: np.ndarray) -> np.ndarray:
    """scikit-image's Lab, with XYZ rescaled so both use OpenCV's white point."""
    return xyz2lab(rgb2xyz(rgb_hwc) * (SKIMAGE_WHITE / OPENCV_WHITE))


def test_matches_scikit_image_within_1e3():
    rng = np.random.default_rng(0)
    image = rng.random((96, 80, 3))
    image[0, :16] = np.linspace(0, 0.06, 16)[:, None]  # the linear segments near black
    image[1, :3] = [[0, 0, 0], [1, 1, 1], [1, 0, 0]]
    ours = rgb_to_lab(torch.from_numpy(image).float().permute(2, 0, 1)).permute(1, 2, 0).numpy()
    assert np.abs(ours - skimage_lab(image)).max() < 1e-3


def test_uint8_grid_and_batches():
    values = np.arange(256, dtype=np.float64) / 255
    grid = np.stack(np.meshgrid(values, values[::5], indexing="ij"), -1)
    image = np.concatenate([grid, grid[..., :1]], -1)  # (256, 52, 3)
    expected = skimage_lab(image)
    batch = torch.from_numpy(np.stack([image, image[::-1]])).float().permute(0, 3, 1, 2)
    ours = rgb_to_lab(batch).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours[0] - expected).max() < 1e-3
    assert np.abs(ours[1] - expected[::-1]).max() < 1e-3


def test_normalised_ranges():
    lab = normalize_lab(torch.tensor([[[0.0]], [[0.0]], [[0.0]]]))
    assert torch.allclose(lab.flatten(), torch.tensor([-1.0, 0.0, 0.0]), atol=1e-6)
    white = normalize_lab(torch.ones(3, 1, 1))
    assert torch.allclose(white.flatten(), torch.tensor([1.0, 0.0, 0.0]), atol=1e-4)


@pytest.mark.parametrize("bad", [torch.zeros(4, 4, 3), torch.zeros(3, 4, 4, dtype=torch.uint8)])
def test_rejects_bad_input(bad):
    with pytest.raises(InputError):
        rgb_to_lab(bad)
