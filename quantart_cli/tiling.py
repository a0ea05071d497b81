"""Tiled encode / decode, for images larger than memory allows in one piece.

Only the high-resolution part of each autoencoder is tiled (:mod:`quantart_cli.autoencoder_split`);
the latent-resolution part, with the attention blocks, always sees the whole latent. Two ways to
run the high part, chosen by ``norm_stats``:

``"image"`` (the default): **exact**. The high part runs one :class:`~quantart_cli.autoencoder_split.Unit`
(a resnet block, an up/downsample, ...) at a time. The image is cut into tiles that partition it;
each tile computes only its own part of a unit's output, from a crop of the previous unit's output
(kept as one whole-image buffer) widened by the unit's receptive radius, so the halo holds the true
neighbouring values and the result is the untiled model's. GroupNorm statistics come from the whole
image: a pass over the tiles stops at the first norm whose statistics are unknown, sums every
tile's own part of its input (in float64), and the next pass goes on with them. Tiled output equals
untiled output up to float rounding. Memory: at most two whole-image buffers of unit outputs; a
unit output larger than ``buffer_bytes`` is never stored, the following units then run in the same
pass from the last stored buffer (more passes recompute more, so it costs time, not memory).
``overlap`` plays no part here.

``"tile"``: each tile (``tile`` pixels, ``overlap`` shared with each neighbour) runs the whole high
part on its own, with GroupNorm statistics of that tile, and the overlaps are blended with feathered
weights. One pass and no whole-image buffers, but tiles normalize differently: colours can shift
by a few grey levels from tile to tile (measured in docs/stylize.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quantart_cli.autoencoder_split import (
    Unit,
    decoder_high,
    decoder_low,
    decoder_units,
    encoder_high,
    encoder_low,
    encoder_units,
    group_norms,
    run_units,
)
from quantart_cli.errors import UsageError
from quantart_cli.nn.autoencoder import Decoder, Encoder
from quantart_cli.tile_plan import Tile, feather_ramp, own_span, plan_tiles, tile_starts, tile_weights

#: "image": GroupNorm in tiles uses statistics of the whole image (exact); "tile": each tile its own.
NormStats = Literal["image", "tile"]

#: Largest whole-image intermediate buffer exact tiling keeps by default (two may be alive at once).
DEFAULT_BUFFER_BYTES = 2 * 1024**3

__all__ = [
    "DEFAULT_BUFFER_BYTES",
    "NormStats",
    "Tile",
    "decode_tiled",
    "decoder_high",
    "decoder_low",
    "encode_tiled",
    "encoder_high",
    "encoder_low",
    "feather_ramp",
    "plan_tiles",
    "tile_starts",
]


def _check_tiling(tile: int, overlap: int, factor: int) -> None:
    if tile % factor or overlap % factor:
        raise UsageError(f"tile ({tile}) and overlap ({overlap}) must be multiples of {factor} pixels")
    if overlap * 2 >= tile:
        raise UsageError(f"overlap ({overlap}) must be less than half the tile size ({tile})")


# ------------------------------------------------------------------------ "tile": feathered blending


def _feathered(
    run_high: Callable[[Tensor], Tensor],
    source: Tensor,
    scale_in: int,
    scale_out: int,
    tiles: list[Tile],
    overlap: int,
    fmt: torch.memory_format,
) -> Tensor:
    """Run ``run_high`` on each tile's crop of ``source`` and blend the outputs with feathered weights.

    Tiles and ``overlap`` are in grid units; ``source`` has ``scale_in`` pixels per grid unit, the
    outputs ``scale_out``.
    """
    grid_h, grid_w = source.shape[-2] // scale_in, source.shape[-1] // scale_in
    height, width = grid_h * scale_out, grid_w * scale_out
    out: Tensor | None = None
    weight_sum = source.new_zeros(height, width)
    for t in tiles:
        rows = slice(t.top * scale_in, (t.top + t.height) * scale_in)
        cols = slice(t.left * scale_in, (t.left + t.width) * scale_in)
        result = run_high(source[:, :, rows, cols].contiguous(memory_format=fmt))
        if out is None:
            out = result.new_zeros(result.shape[0], result.shape[1], height, width)
        top, left, tall, wide = t.top * scale_out, t.left * scale_out, t.height * scale_out, t.width * scale_out
        weights = tile_weights(top, left, tall, wide, overlap * scale_out, height, width, result.device)
        out[:, :, top : top + tall, left : left + wide] += result * weights.to(result.dtype)
        weight_sum[top : top + tall, left : left + wide] += weights
    assert out is not None
    return out / weight_sum


# --------------------------------------------------------------------------- "image": exact tiling


class _StopAtNorm(Exception):
    """Ends a statistics pass at the GroupNorm whose image-wide statistics it was run for."""


class _ImageNormStatistics:
    """Image-wide GroupNorm statistics, found one norm per pass over the tiles."""

    def __init__(self) -> None:
        self.stats: dict[nn.GroupNorm, tuple[Tensor, Tensor]] = {}
        self.pending: tuple[nn.GroupNorm, Tensor, Tensor, int] | None = None
        self.whole = False  # True while a unit runs on the whole image: plain GroupNorm
        self.tile: Tile | None = None
        self.origin = (0, 0)
        self.rows_in = 1
        self.scale_in = 1

    def begin_tile(self, tile: Tile, row0: int, col0: int, rows_in: int, scale_in: int) -> None:
        self.tile, self.origin, self.rows_in, self.scale_in = tile, (row0, col0), rows_in, scale_in

    def finish_pass(self) -> None:
        assert self.pending is not None
        norm, mean, m2, count = self.pending
        self.stats[norm] = (mean.float(), (m2 / count).float())
        self.pending = None

    def _record(self, norm: nn.GroupNorm, x: Tensor) -> None:
        assert self.tile is not None
        if self.pending is not None and self.pending[0] is not norm:
            raise RuntimeError("tiles reached different GroupNorm layers first")
        ratio = Fraction(x.shape[-2], self.rows_in)  # resolution here relative to the tile's input crop
        scale = self.scale_in * ratio
        assert scale.denominator == 1, "a tile crop does not line up with the grid"
        row0, col0 = (int(o * ratio) for o in self.origin)
        r0, r1 = own_span(self.tile.own_top, self.tile.own_bottom, int(scale))
        c0, c1 = own_span(self.tile.own_left, self.tile.own_right, int(scale))
        own = x[:, :, r0 - row0 : r1 - row0, c0 - col0 : c1 - col0].unflatten(1, (norm.num_groups, -1))
        # Per-tile moments from float32 sums (about twice as fast as torch.var_mean here), merged across
        # tiles in float64 with Chan et al.'s update, so no float64 copy of the activations is made.
        count = own[0, 0].numel()
        total = own.sum(dim=(2, 3, 4), dtype=torch.float32).double()
        total_sq = own.square().sum(dim=(2, 3, 4), dtype=torch.float32).double()
        mean = total / count
        m2 = (total_sq - total * mean).clamp_min(0.0)
        if self.pending is not None:
            _, mean_a, m2_a, count_a = self.pending
            total = count_a + count
            delta = mean - mean_a
            mean, m2 = mean_a + delta * (count / total), m2_a + m2 + delta * delta * (count_a * count / total)
            count = total
        self.pending = (norm, mean, m2, count)

    def forward(self, norm: nn.GroupNorm, x: Tensor) -> Tensor:
        if self.whole:
            return F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        known = self.stats.get(norm)
        if known is None:
            self._record(norm, x)
            raise _StopAtNorm
        mean, var = known
        per_group = x.shape[1] // norm.num_groups
        scale = torch.rsqrt(var + norm.eps)  # (B, G)
        # Fold the group statistics into a per-channel affine map: one fused multiply-add over the tile.
        scale_c = scale.repeat_interleave(per_group, dim=1)
        shift_c = -(mean * scale).repeat_interleave(per_group, dim=1)
        if norm.affine:
            shift_c = shift_c * norm.weight + norm.bias
            scale_c = scale_c * norm.weight
        return torch.addcmul(shift_c[:, :, None, None].to(x.dtype), x, scale_c[:, :, None, None].to(x.dtype))


@contextmanager
def _patched_group_norms(module: nn.Module, statistics: _ImageNormStatistics) -> Iterator[None]:
    """Route every GroupNorm inside ``module`` through ``statistics`` (instance attribute, restored after)."""
    norms = group_norms(module)
    for norm in norms:
        norm.forward = lambda x, n=norm: statistics.forward(n, x)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for norm in norms:
            del norm.forward


def _input_span(
    own: tuple[int, int], scale_in: int, scale_out: int, halo: int, align: int, length: int
) -> tuple[int, int]:
    """Input pixels (at ``scale_in``) a segment needs for its own output pixels ``own`` (at ``scale_out``)."""
    start = max(0, (own[0] * scale_in) // scale_out - halo)
    stop = min(length, -((-own[1] * scale_in) // scale_out) + halo)
    return start // align * align, min(length, -(-stop // align) * align)


def _run_segment(
    segment: list[Unit], buffer: Tensor, tiles: list[Tile], statistics: _ImageNormStatistics, fmt: torch.memory_format
) -> Tensor:
    """Run consecutive local ``segment`` units over the whole image, each tile computing its own part."""
    scale_in, scale_out = segment[0].scale_in, segment[-1].scale_out
    # How far the first input must reach past a tile's own part: the receptive radii, in input pixels.
    halo = sum(math.ceil(u.radius * scale_in / u.scale_in) for u in segment)
    # Crops must start on a multiple of every downsampling inside the segment so the outputs line up.
    align = max(1, scale_in // min(u.scale_out for u in segment))
    in_h, in_w = buffer.shape[-2:]
    plans = []
    for t in tiles:
        own_rows = own_span(t.own_top, t.own_bottom, scale_out)
        own_cols = own_span(t.own_left, t.own_right, scale_out)
        rows = _input_span(own_rows, scale_in, scale_out, halo, align, in_h)
        cols = _input_span(own_cols, scale_in, scale_out, halo, align, in_w)
        plans.append((t, own_rows, own_cols, rows, cols))
    out: Tensor | None = None
    while True:
        finished = 0
        for t, own_rows, own_cols, rows, cols in plans:
            statistics.begin_tile(t, rows[0], cols[0], rows[1] - rows[0], scale_in)
            crop = buffer[:, :, rows[0] : rows[1], cols[0] : cols[1]].contiguous(memory_format=fmt)
            try:
                result = run_units(segment, crop)
            except _StopAtNorm:
                continue
            if out is None:
                size = (in_h * scale_out // scale_in, in_w * scale_out // scale_in)
                out = result.new_empty(result.shape[0], result.shape[1], *size)
            row0, col0 = rows[0] * scale_out // scale_in, cols[0] * scale_out // scale_in
            out[:, :, own_rows[0] : own_rows[1], own_cols[0] : own_cols[1]] = result[
                :, :, own_rows[0] - row0 : own_rows[1] - row0, own_cols[0] - col0 : own_cols[1] - col0
            ]
            finished += 1
        if finished:
            # Every tile runs the same layers, so a pass either stops in all of them or in none.
            assert finished == len(plans), "tiles disagree on their GroupNorm layers"
            assert out is not None
            return out
        statistics.finish_pass()


def _run_exact(
    module: nn.Module, units: list[Unit], source: Tensor, tiles: list[Tile], buffer_bytes: int, fmt: torch.memory_format
) -> Tensor:
    """Run ``units`` on ``source`` (a whole-image tensor at ``units[0].scale_in``) with exact tiling."""
    if len(tiles) == 1:
        return run_units(units, source.contiguous(memory_format=fmt))
    grid_h, grid_w = source.shape[-2] // units[0].scale_in, source.shape[-1] // units[0].scale_in

    def stored_bytes(unit: Unit) -> int:
        pixels = grid_h * grid_w * unit.scale_out**2
        return source.shape[0] * unit.channels * pixels * source.element_size()

    statistics = _ImageNormStatistics()
    buffer, i = source, 0
    with _patched_group_norms(module, statistics):
        while i < len(units):
            if not units[i].local:  # attention sees the whole image: run it on the whole buffer
                statistics.whole = True
                try:
                    buffer = units[i].run(buffer)
                finally:
                    statistics.whole = False
                i += 1
                continue
            j = i
            while j + 1 < len(units) and units[j + 1].local and stored_bytes(units[j]) > buffer_bytes:
                j += 1
            buffer = _run_segment(units[i : j + 1], buffer, tiles, statistics, fmt)
            i = j + 1
    return buffer


# ------------------------------------------------------------------------------------ public entry


def encode_tiled(
    encoder: Encoder,
    x: Tensor,
    *,
    tile: int = 512,
    overlap: int = 128,
    norm_stats: NormStats = "image",
    channels_last: bool = False,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
) -> Tensor:
    """``encoder(x)`` computed tile by tile (``tile``/``overlap`` in pixels, multiples of the factor)."""
    factor = 2 ** (encoder.num_resolutions - 1)
    _check_tiling(tile, overlap, factor)
    height, width = x.shape[-2:]
    if height % factor or width % factor:
        raise UsageError(f"image sides must be multiples of {factor}, got {height}x{width}")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    grid_h, grid_w = height // factor, width // factor
    if norm_stats == "image":
        tiles = plan_tiles(grid_h, grid_w, tile // factor, 0)
        features = _run_exact(encoder, encoder_units(encoder), x, tiles, buffer_bytes, fmt)
    else:
        tiles = plan_tiles(grid_h, grid_w, tile // factor, overlap // factor)
        features = _feathered(lambda c: encoder_high(encoder, c), x, factor, 1, tiles, overlap // factor, fmt)
    return encoder_low(encoder, features.contiguous(memory_format=fmt))


def decode_tiled(
    decoder: Decoder,
    z: Tensor,
    *,
    tile: int = 512,
    overlap: int = 128,
    norm_stats: NormStats = "image",
    channels_last: bool = False,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
) -> Tensor:
    """``decoder(z)`` computed tile by tile; ``tile``/``overlap`` in output pixels (multiples of the factor)."""
    factor = 2 ** (decoder.num_resolutions - 1)
    _check_tiling(tile, overlap, factor)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    features = decoder_low(decoder, z.contiguous(memory_format=fmt))
    grid_h, grid_w = features.shape[-2:]
    if norm_stats == "image":
        tiles = plan_tiles(grid_h, grid_w, tile // factor, 0)
        image = _run_exact(decoder, decoder_units(decoder), features, tiles, buffer_bytes, fmt)
    else:
        tiles = plan_tiles(grid_h, grid_w, tile // factor, overlap // factor)
        image = _feathered(lambda c: decoder_high(decoder, c), features, 1, factor, tiles, overlap // factor, fmt)
    return image.contiguous()
