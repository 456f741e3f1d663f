"""Tiling of the feature grid for the propagation kernel: query blocks, key rectangles and column bands.

Private to :mod:`stcorr.propagation.kernel` (see its docstring, *Speed*).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def default_block_size(radius: int) -> tuple[int, int]:
    """Query block (rows, columns) used when ``block_size`` is not given.

    Smaller blocks waste fewer similarities on window corners but make smaller matmuls; narrower blocks
    duplicate more key columns in the stored bands ((bw + 2r) / bw: 4x for (4, 8), 3x for (4, 12)). (4, 12)
    was chosen by measurement (``benchmarks/tuning.md``); for radii above 12 the block widens with the
    radius to keep the duplication at most 3x.
    """
    return (4, max(12, radius))


@dataclass(frozen=True)
class _Tiling:
    """How an h x w grid is cut into query blocks and key rectangles, plus the masks that go with it."""

    h: int
    w: int
    bh: int  # query block rows
    bw: int  # query block columns
    ry: int  # window half-height actually needed (radius clipped to the grid)
    rx: int  # window half-width
    nby: int  # row blocks
    nbx: int  # column blocks = key bands
    window_bias: torch.Tensor  # (Q, rect_rows, 1, band_width): 0 where the key is in the query's window, else -inf
    grid_bias: torch.Tensor  # (nbx, nby, 1, rect_rows, 1, band_width): 0 where the key is on the grid, else -inf
    key_cell: torch.Tensor  # (nbx, nby, R) int64: flat grid index y * w + x of each key (clamped)

    @property
    def rect_rows(self) -> int:
        return self.bh + 2 * self.ry

    @property
    def band_width(self) -> int:
        return self.bw + 2 * self.rx

    @property
    def padded_rows(self) -> int:
        return self.nby * self.bh + 2 * self.ry

    @property
    def queries(self) -> int:
        return self.bh * self.bw

    @property
    def keys(self) -> int:
        return self.rect_rows * self.band_width

    def decode(self, flat_idx: torch.Tensor, slots: int, key_cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate indices into similarities laid out (rect_row, slot, column) -> (slot, grid cell).

        ``key_cell`` holds the grid cell of each key of the rectangle, (..., 1, R), broadcastable to
        ``flat_idx``'s leading dimensions.
        """
        row_len = slots * self.band_width
        row, slot, col = flat_idx // row_len, flat_idx % row_len // self.band_width, flat_idx % self.band_width
        cell = key_cell.expand(*flat_idx.shape[:-1], -1).gather(-1, row * self.band_width + col)
        return slot, cell


def _make_tiling(
    h: int, w: int, radius: int, block: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> _Tiling:
    bh, bw = min(block[0], h), min(block[1], w)
    ry, rx = min(radius, h - 1), min(radius, w - 1)
    nby, nbx = math.ceil(h / bh), math.ceil(w / bw)
    rows, cols = bh + 2 * ry, bw + 2 * rx
    # Offsets of query cells inside a block and of key cells inside a rectangle, relative to the
    # block's top-left cell.
    qy, qx = torch.meshgrid(torch.arange(bh), torch.arange(bw), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(rows) - ry, torch.arange(cols) - rx, indexing="ij")
    qy, qx, ky, kx = qy.flatten(), qx.flatten(), ky.flatten(), kx.flatten()
    in_window = ((ky[None] - qy[:, None]).abs() <= radius) & ((kx[None] - qx[:, None]).abs() <= radius)
    # Absolute key coordinates per block: (nbx, nby, R).
    abs_y = (torch.arange(nby) * bh)[None, :, None] + ky[None, None, :]
    abs_x = (torch.arange(nbx) * bw)[:, None, None] + kx[None, None, :]
    on_grid = (abs_y >= 0) & (abs_y < h) & (abs_x >= 0) & (abs_x < w)
    key_cell = abs_y.clamp(0, h - 1) * w + abs_x.clamp(0, w - 1)
    return _Tiling(
        h=h,
        w=w,
        bh=bh,
        bw=bw,
        ry=ry,
        rx=rx,
        nby=nby,
        nbx=nbx,
        window_bias=_bias(in_window, dtype, device).view(bh * bw, rows, 1, cols),
        grid_bias=_bias(on_grid, dtype, device).view(nbx, nby, 1, rows, 1, cols),
        key_cell=key_cell.to(device),
    )


def _bias(keep: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """0 where ``keep``, -inf elsewhere."""
    return torch.zeros(keep.shape, dtype=dtype).masked_fill_(~keep, float("-inf")).to(device)


def _to_blocks(grid: torch.Tensor, t: _Tiling) -> torch.Tensor:
    """(h, w, D) -> (nbx, nby, Q, D), zero-padding the grid up to whole blocks."""
    d = grid.shape[-1]
    padded = F.pad(grid, (0, 0, 0, t.nbx * t.bw - t.w, 0, t.nby * t.bh - t.h))
    blocks = padded.reshape(t.nby, t.bh, t.nbx, t.bw, d).permute(2, 0, 1, 3, 4)
    return blocks.reshape(t.nbx, t.nby, t.queries, d)


def _from_blocks(blocks: torch.Tensor, t: _Tiling) -> torch.Tensor:
    """(nbx, nby, Q, D) -> (D, h, w), dropping the padding cells."""
    d = blocks.shape[-1]
    grid = blocks.reshape(t.nbx, t.nby, t.bh, t.bw, d).permute(4, 1, 2, 0, 3)
    return grid.reshape(d, t.nby * t.bh, t.nbx * t.bw)[:, : t.h, : t.w]


def _to_bands(grid: torch.Tensor, t: _Tiling) -> torch.Tensor:
    """(C, h, w) -> (nbx, C, padded_rows, band_width): overlapping, zero-padded column bands."""
    padded = F.pad(grid, (t.rx, t.nbx * t.bw + t.rx - t.w, t.ry, t.padded_rows - t.ry - t.h))
    # unfold -> (C, padded_rows, nbx, band_width)
    return padded.unfold(2, t.band_width, t.bw).permute(2, 0, 1, 3).contiguous()


def _key_rects(band: torch.Tensor, t: _Tiling) -> torch.Tensor:
    """One band of a chunk, (C, padded_rows, slots, band_width) -> (nby, C, rect_rows * slots * band_width).

    The key rectangle of a row block is a run of whole band rows (each holding every slot), so it
    is a plain strided matrix: no copy.
    """
    c, _, slots, width = band.shape
    row = slots * width
    return band.as_strided((t.nby, c, t.rect_rows * row), (t.bh * row, t.padded_rows * row, 1))
