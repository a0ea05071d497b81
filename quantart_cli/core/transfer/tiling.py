"""Tiled encode / decode, for images larger than memory allows in one piece.

Only the high-resolution part of each autoencoder is tiled (:mod:`quantart_cli.core.transfer.units`);
the latent-resolution part, with the attention blocks, always sees the whole latent. Two ways to
run the high part, chosen by ``norm_stats``:

``"image"`` (the default): **exact**. The high part runs one :class:`~quantart_cli.core.transfer.units.Unit`
(half a resnet block, an up/downsample, ...) at a time. The image is cut into tiles that partition
it; each tile computes only its own part of a unit's output, from a crop of the unit's input (kept as
whole-image buffers) widened by the unit's receptive radius, so the halo holds the true neighbouring
values and the result is the untiled model's. GroupNorm statistics are those of the whole image,
taken from the whole-image input buffer. Tiled output equals untiled output up to float rounding (a quantizer
after the encoder may still pick another code for a latent vector near a tie; docs/stylize.md measures it).

Memory: the buffers alive at once (a unit's input and output) must fit in ``buffer_bytes``. Where
they do not, several units run as one segment from the last stored state: a pass over the tiles
stops at each GroupNorm inside the segment whose statistics are unknown, sums every tile's own part
of its input (float32 sums, merged in float64), and the next pass goes on with them, so more memory
saved costs more recomputation. A dynamic program over the unit boundaries picks which states to
store (:func:`_schedule`). ``overlap`` plays no part here.

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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quantart_cli.core.errors import UsageError
from quantart_cli.core.nn.autoencoder import Decoder, Encoder
from quantart_cli.core.transfer.options import DEFAULT_TILE_MEMORY_GIB, NormStats
from quantart_cli.core.transfer.tile_plan import Tile, own_span, plan_tiles, tile_weights
from quantart_cli.core.transfer.units import (
    State,
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

#: "image": GroupNorm in tiles uses statistics of the whole image (exact); "tile": each tile its own.

#: Whole-image buffers exact tiling may keep alive at once, by default.
DEFAULT_BUFFER_BYTES = int(DEFAULT_TILE_MEMORY_GIB * 1024**3)

__all__ = ["DEFAULT_BUFFER_BYTES", "NormStats", "decode_tiled", "encode_tiled"]


def _check_tiling(tile: int, overlap: int, factor: int, norm_stats: NormStats) -> None:
    if norm_stats not in ("image", "tile"):
        raise UsageError(f"norm_stats must be image or tile, got {norm_stats!r}")
    overlap = overlap if norm_stats == "tile" else 0  # exact tiling has no overlap to check
    if tile <= 0 or tile % factor or overlap % factor:
        raise UsageError(f"tile ({tile}) and overlap ({overlap}) must be positive multiples of {factor} pixels")
    if overlap < 0 or overlap * 2 >= tile:
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


#: Rows per slice when statistics are taken from a whole-image buffer (bounds the temporary squares).
_STATS_ROWS = 64


def _moments(x: Tensor, groups: int) -> tuple[Tensor, Tensor, int]:
    """Per-(sample, group) mean and sum of squared deviations of ``x`` (B, C, H, W), in float64.

    From float32 sums (about twice as fast as ``torch.var_mean`` on CPU); float64 only per group.
    """
    grouped = x.unflatten(1, (groups, -1))
    count = grouped[0, 0].numel()
    total = grouped.sum(dim=(2, 3, 4), dtype=torch.float32).double()
    total_sq = grouped.square().sum(dim=(2, 3, 4), dtype=torch.float32).double()
    mean = total / count
    return mean, (total_sq - total * mean).clamp_min(0.0), count


def _merge(
    so_far: tuple[Tensor, Tensor, int] | None, part: tuple[Tensor, Tensor, int]
) -> tuple[Tensor, Tensor, int]:
    """Moments of the union of two disjoint sets (Chan et al.'s parallel update)."""
    if so_far is None:
        return part
    mean_a, m2_a, count_a = so_far
    mean_b, m2_b, count_b = part
    total = count_a + count_b
    delta = mean_b - mean_a
    return mean_a + delta * (count_b / total), m2_a + m2_b + delta * delta * (count_a * count_b / total), total


class _ImageNormStatistics:
    """Image-wide GroupNorm statistics: from a whole-image buffer, or summed over tiles one norm per pass."""

    def __init__(self) -> None:
        self.stats: dict[nn.GroupNorm, tuple[Tensor, Tensor]] = {}
        self.pending_norm: nn.GroupNorm | None = None
        self.pending: tuple[Tensor, Tensor, int] | None = None
        self.whole = False  # True while a unit runs on the whole image: plain GroupNorm
        self.tile: Tile | None = None
        self.origin = (0, 0)
        self.rows_in = 1
        self.scale_in = 1

    def begin_tile(self, tile: Tile, row0: int, col0: int, rows_in: int, scale_in: int) -> None:
        self.tile, self.origin, self.rows_in, self.scale_in = tile, (row0, col0), rows_in, scale_in

    def finish_pass(self) -> None:
        assert self.pending_norm is not None and self.pending is not None
        mean, m2, count = self.pending
        self.stats[self.pending_norm] = (mean.float(), (m2 / count).float())
        self.pending_norm, self.pending = None, None

    def from_buffer(self, norm: nn.GroupNorm, x: Tensor) -> None:
        """Statistics of ``norm`` from ``x``, its whole input, a slice of rows at a time."""
        for row in range(0, x.shape[-2], _STATS_ROWS):
            self.pending = _merge(self.pending, _moments(x[:, :, row : row + _STATS_ROWS], norm.num_groups))
        self.pending_norm = norm
        self.finish_pass()

    def _record(self, norm: nn.GroupNorm, x: Tensor) -> None:
        assert self.tile is not None
        if self.pending_norm is not None and self.pending_norm is not norm:
            raise RuntimeError("tiles reached different GroupNorm layers first")
        ratio = Fraction(x.shape[-2], self.rows_in)  # resolution here relative to the tile's input crop
        scale = self.scale_in * ratio
        assert scale.denominator == 1, "a tile crop does not line up with the grid"
        row0, col0 = (int(o * ratio) for o in self.origin)
        r0, r1 = own_span(self.tile.own_top, self.tile.own_bottom, int(scale))
        c0, c1 = own_span(self.tile.own_left, self.tile.own_right, int(scale))
        own = x[:, :, r0 - row0 : r1 - row0, c0 - col0 : c1 - col0]
        self.pending_norm, self.pending = norm, _merge(self.pending, _moments(own, norm.num_groups))

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
    segment: list[Unit], state: State, tiles: list[Tile], statistics: _ImageNormStatistics, fmt: torch.memory_format
) -> State:
    """Run consecutive local ``segment`` units over the whole image, each tile computing its own part."""
    first = segment[0]
    if first.norm is not None and first.norm not in statistics.stats:
        statistics.from_buffer(first.norm, state[first.norm_input])  # no pass over the tiles needed
    scale_in, scale_out = first.scale_in, segment[-1].scale_out
    # How far the first input must reach past a tile's own part: the receptive radii, in input pixels.
    halo = sum(math.ceil(u.radius * scale_in / u.scale_in) for u in segment)
    # Crops must start on a multiple of every downsampling inside the segment so the outputs line up.
    align = max(1, scale_in // min(u.scale_out for u in segment))
    in_h, in_w = state[0].shape[-2:]
    plans = []
    for t in tiles:
        own_rows = own_span(t.own_top, t.own_bottom, scale_out)
        own_cols = own_span(t.own_left, t.own_right, scale_out)
        rows = _input_span(own_rows, scale_in, scale_out, halo, align, in_h)
        cols = _input_span(own_cols, scale_in, scale_out, halo, align, in_w)
        plans.append((t, own_rows, own_cols, rows, cols))
    kept = first.keeps if len(segment) == 1 else None  # an output that is an input: reuse its buffer
    out: list[Tensor | None] = [None] * len(segment[-1].channels)
    if kept is not None:
        out[0] = state[kept]
    while True:
        finished = 0
        for t, own_rows, own_cols, rows, cols in plans:
            statistics.begin_tile(t, rows[0], cols[0], rows[1] - rows[0], scale_in)
            crops = [x[:, :, rows[0] : rows[1], cols[0] : cols[1]].contiguous(memory_format=fmt) for x in state]
            try:
                result = run_units(segment, *crops)
            except _StopAtNorm:
                continue
            row0, col0 = rows[0] * scale_out // scale_in, cols[0] * scale_out // scale_in
            for index, part in enumerate(result):
                if index == 0 and kept is not None:
                    continue
                buffer = out[index]
                if buffer is None:
                    size = (in_h * scale_out // scale_in, in_w * scale_out // scale_in)
                    buffer = out[index] = part.new_empty(part.shape[0], part.shape[1], *size)
                buffer[:, :, own_rows[0] : own_rows[1], own_cols[0] : own_cols[1]] = part[
                    :, :, own_rows[0] - row0 : own_rows[1] - row0, own_cols[0] - col0 : own_cols[1] - col0
                ]
            finished += 1
        if finished:
            # Every tile runs the same layers, so a pass either stops in all of them or in none.
            assert finished == len(plans), "tiles disagree on their GroupNorm layers"
            assert all(buffer is not None for buffer in out)
            return tuple(buffer for buffer in out if buffer is not None)
        statistics.finish_pass()


def _schedule(units: list[Unit], stored: list[int], budget: int) -> list[int]:
    """Where to store whole-image buffers: the last unit of each segment, for the cheapest plan.

    ``stored[b]`` is the size in bytes of the state before unit ``b`` (``stored[len(units)]``: the
    output). A segment runs from one stored state to the next; storing its output must keep the two
    states within ``budget`` bytes (the last output and the input of attention are stored regardless;
    an output a lone unit passes through from its input takes no new memory). Its cost is one pass
    over its units plus, for every GroupNorm inside it (not at its start), a pass up to that norm.
    Dynamic programming over the unit boundaries finds the cheapest plan.
    """
    n = len(units)
    best: list[float] = [math.inf] * n + [0.0]
    end_of: list[int] = [n - 1] * n
    for i in reversed(range(n)):
        if not units[i].local:
            best[i], end_of[i] = best[i + 1], i
            continue
        work = passes = 0.0
        for j in range(i, n):
            if not units[j].local:
                break
            if j > i and units[j].norm is not None:
                passes += work
            work += units[j].cost
            reused = stored[i] if j == i and units[j].keeps is not None else 0
            forced = j + 1 == n or not units[j + 1].local
            if forced or stored[i] + stored[j + 1] - reused <= budget:
                total = passes + work + best[j + 1]
                if total < best[i]:
                    best[i], end_of[i] = total, j
    ends, i = [], 0
    while i < n:
        ends.append(end_of[i])
        i = end_of[i] + 1
    return ends


def _run_exact(
    module: nn.Module, units: list[Unit], source: Tensor, tiles: list[Tile], buffer_bytes: int, fmt: torch.memory_format
) -> Tensor:
    """Run ``units`` on ``source`` (a whole-image tensor at ``units[0].scale_in``) with exact tiling."""
    if len(tiles) == 1:
        return run_units(units, source.contiguous(memory_format=fmt))[0]
    # Bytes of one channel of a state at the latent grid's resolution; a state at scale s takes s^2 times that.
    cell_bytes = source.shape[0] * source.element_size() * source.shape[-2] * source.shape[-1] // units[0].scale_in ** 2
    stored = [source.numel() * source.element_size()] + [sum(u.channels) * u.scale_out**2 * cell_bytes for u in units]
    ends = _schedule(units, stored, buffer_bytes)
    statistics = _ImageNormStatistics()
    state: State = (source,)
    start = 0
    with _patched_group_norms(module, statistics):
        for end in ends:
            if not units[start].local:  # attention sees the whole image: run it on the whole buffer
                statistics.whole = True
                try:
                    state = units[start].run(*state)
                finally:
                    statistics.whole = False
            else:
                state = _run_segment(units[start : end + 1], state, tiles, statistics, fmt)
            start = end + 1
    return state[0]


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
    _check_tiling(tile, overlap, factor, norm_stats)
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
    _check_tiling(tile, overlap, factor, norm_stats)
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
