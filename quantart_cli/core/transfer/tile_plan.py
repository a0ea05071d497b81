"""Where tiles go: overlapping tiles that cover a grid, each tile's own part of it, feathered blend weights."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from quantart_cli.core.errors import UsageError

__all__ = ["Tile", "feather_ramp", "own_span", "plan_tiles", "tile_starts", "tile_weights"]


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of ``tile`` covering ``length`` with at least ``overlap`` shared, spread evenly.

    Offsets are multiples of ``align`` (the last tile ends exactly at ``length``; ``length`` and
    ``tile`` must be multiples of ``align``).
    """
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise UsageError(f"tile size {tile} and overlap {overlap} need 0 <= overlap < tile")
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    last = length - tile
    starts = sorted({round(last * i / (count - 1) / align) * align for i in range(count)})
    # Rounding to the alignment may shrink a gap below the overlap; add tiles until it holds.
    while any(after - before > tile - overlap for before, after in zip(starts, starts[1:], strict=False)):
        count += 1
        starts = sorted({round(last * i / (count - 1) / align) * align for i in range(count)})
    return starts


@dataclass(frozen=True)
class Tile:
    """One tile in the units of the grid it was planned on.

    ``own_*`` bound the tile's *own* part of the grid: the overlaps with its neighbours split at their
    middle (so a multiple of 0.5), which makes the own parts of all tiles a partition of the grid.
    """

    top: int
    left: int
    height: int
    width: int
    own_top: float
    own_bottom: float
    own_left: float
    own_right: float


def _own_bounds(starts: list[int], tile: int, length: int) -> list[tuple[float, float]]:
    spans = [(s, min(s + tile, length)) for s in starts]
    out = []
    for i, (start, end) in enumerate(spans):
        low = start if i == 0 else (start + spans[i - 1][1]) / 2
        high = end if i == len(spans) - 1 else (spans[i + 1][0] + end) / 2
        out.append((low, high))
    return out


def plan_tiles(height: int, width: int, tile: int, overlap: int, align: int = 1) -> list[Tile]:
    """Tiles covering a ``height`` x ``width`` grid, row by row."""
    rows, cols = tile_starts(height, tile, overlap, align), tile_starts(width, tile, overlap, align)
    row_own, col_own = _own_bounds(rows, tile, height), _own_bounds(cols, tile, width)
    return [
        Tile(top, left, min(tile, height - top), min(tile, width - left), *own_rows, *own_cols)
        for top, own_rows in zip(rows, row_own, strict=True)
        for left, own_cols in zip(cols, col_own, strict=True)
    ]


def own_span(low: float, high: float, scale: int) -> tuple[int, int]:
    """A tile's own ``[low, high)`` (grid units) in pixels of a grid ``scale`` times finer.

    Neighbouring tiles round their shared boundary the same way, so the spans still partition the grid.
    """
    return math.floor(low * scale + 0.5), math.floor(high * scale + 0.5)


def feather_ramp(size: int, overlap: int, at_start: bool, at_end: bool, device: torch.device | None = None) -> Tensor:
    """1-D blend weights of one tile side: 1 inside, a linear ramp over each overlap that meets a neighbour.

    The outer quarter of the overlap is (almost) zero, the middle half ramps up, the inner quarter is 1.
    Weights never reach exactly 0, so a location covered by one tile only is never lost.
    """
    weights = torch.ones(size, dtype=torch.float32, device=device)
    if overlap <= 0:
        return weights
    margin = overlap / 4.0
    width = max(overlap - 2.0 * margin, 1.0)
    distance = torch.arange(size, dtype=torch.float32, device=device) + 0.5
    ramp = ((distance - margin) / width).clamp(1e-3, 1.0)
    if at_start:
        weights = torch.minimum(weights, ramp)
    if at_end:
        weights = torch.minimum(weights, ramp.flip(0))
    return weights


def tile_weights(
    top: int, left: int, height: int, width: int, overlap: int, full_height: int, full_width: int, device: torch.device
) -> Tensor:
    """2-D feathered weights of the tile at (``top``, ``left``) of a ``full_height`` x ``full_width`` grid."""
    rows = feather_ramp(height, overlap, top > 0, top + height < full_height, device)
    cols = feather_ramp(width, overlap, left > 0, left + width < full_width, device)
    return rows[:, None] * cols[None, :]
