"""First labels to the feature grid (issue 21): area coverage from the mask's original size, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stcorr.errors import InputError
from stcorr.propagation.labels import LabelSet, mask_to_onehot, mask_to_working, to_grid
from stcorr.propagation.options import PropagationOptions
from stcorr.propagation.passes import Geometry, make_prompt


def test_area_is_the_fraction_of_each_cell_every_label_covers() -> None:
    mask = np.zeros((10, 12), np.uint8)  # stride 4: a 3 x 3 grid, the last row of cells only 2 pixels high
    mask[0:3, 0:6] = 1
    mask[9, 11] = 2  # one pixel in the partial corner cell
    onehot, _ = mask_to_onehot(mask)
    grid = to_grid(onehot, (3, 3), 4, "area")
    expected_1 = np.zeros((3, 3))
    expected_1[0, 0] = 12 / 16  # rows 0-2 x cols 0-3 of the cell's 16 pixels
    expected_1[0, 1] = 6 / 16  # rows 0-2 x cols 4-5
    expected_2 = np.zeros((3, 3))
    expected_2[2, 2] = 1 / 8  # the corner cell holds 2 x 4 image pixels
    np.testing.assert_allclose(grid[1].numpy(), expected_1)
    np.testing.assert_allclose(grid[2].numpy(), expected_2)
    np.testing.assert_allclose(grid.sum(0).numpy(), np.ones((3, 3)))  # a distribution in every cell
    with pytest.raises(InputError, match="grid"):
        to_grid(onehot, (2, 3), 4, "area")


def test_mask_to_working_keeps_what_nearest_drops() -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[2, 2] = 5  # one pixel, in the 2 x 2 block of working pixel (1, 1)
    onehot, labels = mask_to_onehot(mask)
    area = mask_to_working(mask, onehot, labels, (4, 4), "area")
    expected = np.zeros((4, 4))
    expected[1, 1] = 0.25
    np.testing.assert_allclose(area[1].numpy(), expected)
    np.testing.assert_allclose(area[0].numpy(), 1 - expected)
    nearest = mask_to_working(mask, onehot, labels, (4, 4), "nearest")  # PIL samples rows/columns 1, 3, 5, 7 ...
    assert nearest[1].sum() == 0  # ... the object's even row and column are never sampled: it is gone
    assert mask_to_working(mask, onehot, labels, (8, 8), "area") is onehot


def test_the_default_prompt_takes_an_object_smaller_than_a_cell_from_the_original_size() -> None:
    mask = np.zeros((16, 16), np.uint8)  # original 16 x 16, working 8 x 8, stride 4: a 2 x 2 grid
    mask[5:7, 9:11] = 3  # a 2 x 2 object (a quarter of each of 4 working pixels), in cell (0, 1)
    geometry = Geometry(working=(8, 8), original=(16, 16), stride=4)
    assert PropagationOptions().label_downsampling == "area"
    prompt = make_prompt(mask, 0, geometry, (2, 2), PropagationOptions())
    assert prompt.labels == LabelSet((0, 3))
    expected = torch.tensor([[0.0, 4 / 64], [0.0, 0.0]])  # 4 of the cell's 8 x 8 = 64 original pixels
    torch.testing.assert_close(prompt.grid[1], expected)
    torch.testing.assert_close(prompt.grid.sum(0), torch.ones(2, 2))
    np.testing.assert_array_equal(prompt.image.labels, mask)  # the annotated frame outputs the mask as given
