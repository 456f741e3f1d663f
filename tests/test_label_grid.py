"""First labels to the feature grid (issue 21): a mask at another size than the working size is area-averaged
from its original size (PIL nearest only for the official protocol), then downsampled to the grid; by hand."""

from __future__ import annotations

import numpy as np
import torch

from stcorr.propagation.labels import LabelSet, mask_to_onehot, mask_to_working
from stcorr.propagation.options import PropagationOptions
from stcorr.propagation.passes import Geometry, make_prompt


def test_mask_to_working_keeps_what_nearest_drops() -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[2, 2] = 5  # one pixel, in the 2 x 2 block of working pixel (1, 1)
    onehot, labels = mask_to_onehot(mask)
    area = mask_to_working(mask, onehot, labels, (4, 4), "bilinear")
    expected = np.zeros((4, 4))
    expected[1, 1] = 0.25
    np.testing.assert_allclose(area[1].numpy(), expected)
    np.testing.assert_allclose(area[0].numpy(), 1 - expected)
    nearest = mask_to_working(mask, onehot, labels, (4, 4), "nearest")  # PIL samples rows/columns 1, 3, 5, 7 ...
    assert nearest[1].sum() == 0  # ... the object's even row and column are never sampled: it is gone
    assert mask_to_working(mask, onehot, labels, (8, 8), "bilinear") is onehot


def test_the_default_prompt_keeps_an_object_smaller_than_the_resize_step() -> None:
    """Original 16 x 16, working 8 x 8, stride 4 (a 2 x 2 grid); a one-pixel object at an even row and
    column, which PIL nearest (it samples rows and columns 1, 3, 5, ...) would drop."""
    mask = np.zeros((16, 16), np.uint8)
    mask[4, 8] = 3  # -> a quarter of working pixel (2, 4)
    geometry = Geometry(working=(8, 8), original=(16, 16), stride=4)
    prompt = make_prompt(mask, 0, geometry, (2, 2), PropagationOptions())
    assert prompt.labels == LabelSet((0, 3))
    # Antialiased bilinear from 8 to 2 pixels: cell i is centred at 4 i + 1.5 with tent weights 1 - |x - c| / 4
    # over pixels 0..7 (summing to 3.5); cell 0 takes pixel 2 with 0.875 / 3.5 and pixel 4 with 0.375 / 3.5,
    # cell 1 takes pixel 2 with 0.125 / 3.5 and pixel 4 with 0.625 / 3.5.
    row = {0: 0.875 / 3.5, 1: 0.125 / 3.5}  # weight of working row 2 in grid row i
    col = {0: 0.375 / 3.5, 1: 0.625 / 3.5}  # weight of working column 4 in grid column j
    expected = torch.tensor([[0.25 * row[i] * col[j] for j in range(2)] for i in range(2)])
    torch.testing.assert_close(prompt.grid[1], expected)
    torch.testing.assert_close(prompt.grid.sum(0), torch.ones(2, 2))
    np.testing.assert_array_equal(prompt.image.labels, mask)  # the annotated frame outputs the mask as given
    official = make_prompt(mask, 0, geometry, (2, 2), PropagationOptions(label_downsampling="nearest"))
    assert official.grid[1].sum() == 0  # the official protocol's nearest path drops it, as before
