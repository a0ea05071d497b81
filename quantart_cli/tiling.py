"""Tiled encode / decode with overlap blending, for images larger than memory allows in one piece.

Each autoencoder is split in two at its lowest resolution:

- the *high-resolution part* (encoder: ``conv_in`` and every level that ends in a downsample;
  decoder: the first upsample and every level above it, ``norm_out``, ``conv_out``) is where
  activations are huge; it runs tile by tile;
- the *latent-resolution part* (encoder: the lowest level, ``mid``, ``norm_out``, ``conv_out``;
  decoder: ``conv_in``, ``mid`` and the lowest level) is small (1/f^2 of the pixels) and holds the
  attention blocks of every QuantArt config, so it runs on the whole latent at once: attention and
  the GroupNorm statistics there are exactly those of the untiled model.

Tiles overlap and are blended with feathered (linear-ramp) weights: in latent space after the
encoder's high part, in pixel space after the decoder's. The outer quarter of each overlap gets
zero weight (that is where a tile's zero padding disturbs its values), the middle half ramps.

GroupNorm inside the high part: with ``norm_stats="tile"`` (the default) each tile normalizes by its
own statistics: one pass, but tiles can differ in colour. With ``norm_stats="image"`` every GroupNorm
uses statistics of the whole image, not of one tile: one statistics pass per GroupNorm layer runs the tiles up to
that layer, sums each tile's own share of the image (the overlaps split at their middle) and stops;
the layers before it already normalize image-wide, so the sums equal the untiled model's wherever
the overlap covers the receptive field (about 7 latent pixels, ~110 px, for the f16 decoder). The
passes stop early, but they still cost several times one tiled pass (most layers sit at full
resolution). Estimating all statistics in one pass from tile-normalized activations is not good
enough: the errors compound through the layers (measured worse than per-tile statistics).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quantart_cli.errors import UsageError
from quantart_cli.nn.autoencoder import Decoder, Encoder
from quantart_cli.nn.blocks import norm_swish

#: "image": GroupNorm in tiles uses statistics of the whole image (exact, more passes); "tile": its own.
NormStats = Literal["image", "tile"]

__all__ = [
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


# ----------------------------------------------------------------------------------------- the split


def encoder_high(encoder: Encoder, x: Tensor) -> Tensor:
    """``conv_in`` and every level that ends in a downsample: image -> features at latent resolution."""
    h = encoder.conv_in(x)
    for level in list(encoder.down)[:-1]:
        h = level.downsample(level.run_blocks(h))
    return h


def encoder_low(encoder: Encoder, h: Tensor) -> Tensor:
    """The lowest level, ``mid``, ``norm_out`` and ``conv_out``; with :func:`encoder_high` equals ``encoder``."""
    h = encoder.mid(encoder.down[-1].run_blocks(h))
    return encoder.conv_out(norm_swish(encoder.norm_out, h))


def decoder_low(decoder: Decoder, z: Tensor) -> Tensor:
    """``conv_in``, ``mid`` and the lowest level's blocks: latent -> features at latent resolution."""
    return decoder.up[-1].run_blocks(decoder.mid(decoder.conv_in(z)))


def decoder_high(decoder: Decoder, h: Tensor) -> Tensor:
    """Everything after :func:`decoder_low`: features at latent resolution -> image."""
    last = decoder.num_resolutions - 1
    if last > 0:
        h = decoder.up[last].upsample(h)
    for i in reversed(range(last)):
        h = decoder.up[i].run_blocks(h)
        if i != 0:
            h = decoder.up[i].upsample(h)
    return decoder.conv_out(norm_swish(decoder.norm_out, h))


# ---------------------------------------------------------------------------------------- tile plans


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
    while any(b - a > tile - overlap for a, b in zip(starts, starts[1:], strict=False)):
        count += 1
        starts = sorted({round(last * i / (count - 1) / align) * align for i in range(count)})
    return starts


@dataclass(frozen=True)
class Tile:
    """One tile in the units of the grid it was planned on; ``share_*`` is its own part of the image
    (the overlaps split at their middle), as fractions of the tile's extent, for norm statistics."""

    top: int
    left: int
    height: int
    width: int
    share_top: float
    share_bottom: float
    share_left: float
    share_right: float


def _shares(starts: list[int], tile: int, length: int) -> list[tuple[float, float]]:
    spans = [(s, min(s + tile, length)) for s in starts]
    out = []
    for i, (a, b) in enumerate(spans):
        lo = a if i == 0 else (a + spans[i - 1][1]) / 2
        hi = b if i == len(spans) - 1 else (spans[i + 1][0] + b) / 2
        out.append(((lo - a) / (b - a), (hi - a) / (b - a)))
    return out


def plan_tiles(height: int, width: int, tile: int, overlap: int, align: int = 1) -> list[Tile]:
    """Tiles covering a ``height`` x ``width`` grid, row by row."""
    rows, cols = tile_starts(height, tile, overlap, align), tile_starts(width, tile, overlap, align)
    row_shares, col_shares = _shares(rows, tile, height), _shares(cols, tile, width)
    return [
        Tile(top, left, min(tile, height - top), min(tile, width - left), *rs, *cs)
        for top, rs in zip(rows, row_shares, strict=True)
        for left, cs in zip(cols, col_shares, strict=True)
    ]


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


def _tile_weights(tile: Tile, overlap: int, full_height: int, full_width: int, device: torch.device) -> Tensor:
    rows = feather_ramp(tile.height, overlap, tile.top > 0, tile.top + tile.height < full_height, device)
    cols = feather_ramp(tile.width, overlap, tile.left > 0, tile.left + tile.width < full_width, device)
    return rows[:, None] * cols[None, :]


# ---------------------------------------------------------------------------- image-wide GroupNorm


class _StopAtNorm(Exception):
    """Ends a statistics pass at the GroupNorm whose image-wide statistics it was run for."""


class _GroupNormStatistics:
    """Image-wide GroupNorm statistics, one norm (in call order) per pass over the tiles.

    Norm ``i`` normalizes with the statistics found for it once ``i`` passes are done; in pass ``i``
    the tiles run up to norm ``i``, add their own share of its input to per-(sample, group) sums in
    float64, and stop there. Every earlier norm already used image-wide statistics, so the sums are
    those of the untiled model (wherever the overlap covers the receptive field).
    """

    def __init__(self, local: bool) -> None:
        self.local = local
        self.stats: list[tuple[Tensor, Tensor]] = []
        self.sums: tuple[Tensor, Tensor, float] | None = None
        self.calls = 0
        self.share: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 1.0)

    def start_tile(self, tile: Tile) -> None:
        self.calls = 0
        self.share = (tile.share_top, tile.share_bottom, tile.share_left, tile.share_right)

    def finish_pass(self) -> None:
        assert self.sums is not None
        total, total_sq, count = self.sums
        mean = total / count
        var = (total_sq / count - mean * mean).clamp_min(0.0)
        self.stats.append((mean.float(), var.float()))
        self.sums = None

    def _record(self, x: Tensor, groups: int) -> None:
        batch, _, height, width = x.shape
        top, bottom, left, right = self.share
        row0, col0 = round(top * height), round(left * width)
        rows = slice(row0, max(round(bottom * height), row0 + 1))
        cols = slice(col0, max(round(right * width), col0 + 1))
        own = x[:, :, rows, cols].reshape(batch, groups, -1).double()
        total, total_sq, count = own.sum(-1), own.pow(2).sum(-1), float(own.shape[-1])
        if self.sums is not None:
            total, total_sq, count = self.sums[0] + total, self.sums[1] + total_sq, self.sums[2] + count
        self.sums = (total, total_sq, count)

    def forward(self, norm: nn.GroupNorm, x: Tensor) -> Tensor:
        index = self.calls
        self.calls += 1
        if self.local:
            return F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        if index >= len(self.stats):
            self._record(x, norm.num_groups)
            raise _StopAtNorm
        mean, var = self.stats[index]
        channels = x.shape[1]
        scale = torch.rsqrt(var + norm.eps)  # (B, G)
        # Fold the group statistics into a per-channel affine map: one fused multiply-add over the tile.
        per_group = channels // norm.num_groups
        scale_c = scale.repeat_interleave(per_group, dim=1)
        shift_c = -(mean * scale).repeat_interleave(per_group, dim=1)
        if norm.affine:
            shift_c = shift_c * norm.weight + norm.bias
            scale_c = scale_c * norm.weight
        return torch.addcmul(shift_c[:, :, None, None].to(x.dtype), x, scale_c[:, :, None, None].to(x.dtype))


@contextmanager
def _patched_group_norms(module: nn.Module, statistics: _GroupNormStatistics) -> Iterator[None]:
    """Route every GroupNorm inside ``module`` through ``statistics`` (instance attribute, restored after)."""
    norms = [m for m in module.modules() if isinstance(m, nn.GroupNorm)]
    for norm in norms:
        norm.forward = lambda x, n=norm: statistics.forward(n, x)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for norm in norms:
            del norm.forward


# ------------------------------------------------------------------------------------ tiled passes


def _check_tiling(tile: int, overlap: int, factor: int) -> None:
    if tile % factor or overlap % factor:
        raise UsageError(f"tile ({tile}) and overlap ({overlap}) must be multiples of {factor} pixels")
    if overlap * 2 >= tile:
        raise UsageError(f"overlap ({overlap}) must be less than half the tile size ({tile})")


def _run_tiles(
    module: nn.Module,
    run_tile: Callable[[Tile], Tensor],
    tiles: list[Tile],
    accumulate: Callable[[Tile, Tensor], None],
    norm_stats: NormStats,
) -> None:
    statistics = _GroupNormStatistics(local=norm_stats == "tile")
    with _patched_group_norms(module, statistics):
        while True:
            finished = 0
            for tile in tiles:
                statistics.start_tile(tile)
                try:
                    out = run_tile(tile)
                except _StopAtNorm:
                    continue
                accumulate(tile, out)
                finished += 1
            if finished:
                # Every tile runs the same layers, so a pass either stops in all of them or in none.
                assert finished == len(tiles), "tiles disagree on their GroupNorm layers"
                return
            statistics.finish_pass()


def encode_tiled(
    encoder: Encoder,
    x: Tensor,
    *,
    tile: int = 512,
    overlap: int = 128,
    norm_stats: NormStats = "tile",
    channels_last: bool = False,
) -> Tensor:
    """``encoder(x)`` computed tile by tile (``tile``/``overlap`` in pixels, multiples of the factor)."""
    factor = 2 ** (encoder.num_resolutions - 1)
    _check_tiling(tile, overlap, factor)
    batch, _, height, width = x.shape
    if height % factor or width % factor:
        raise UsageError(f"image sides must be multiples of {factor}, got {height}x{width}")
    lat_h, lat_w, lat_tile, lat_overlap = height // factor, width // factor, tile // factor, overlap // factor
    tiles = plan_tiles(lat_h, lat_w, lat_tile, lat_overlap)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    features: Tensor | None = None
    weight_sum = x.new_zeros(lat_h, lat_w)

    def run_tile(t: Tile) -> Tensor:
        crop = x[:, :, t.top * factor : (t.top + t.height) * factor, t.left * factor : (t.left + t.width) * factor]
        return encoder_high(encoder, crop.contiguous(memory_format=fmt))

    def accumulate(t: Tile, out: Tensor) -> None:
        nonlocal features
        if features is None:
            features = out.new_zeros(batch, out.shape[1], lat_h, lat_w)
        weights = _tile_weights(t, lat_overlap, lat_h, lat_w, out.device).to(out.dtype)
        features[:, :, t.top : t.top + t.height, t.left : t.left + t.width] += out * weights
        weight_sum[t.top : t.top + t.height, t.left : t.left + t.width] += weights

    _run_tiles(encoder, run_tile, tiles, accumulate, norm_stats)
    assert features is not None
    features /= weight_sum
    return encoder_low(encoder, features.contiguous(memory_format=fmt))


def decode_tiled(
    decoder: Decoder,
    z: Tensor,
    *,
    tile: int = 512,
    overlap: int = 128,
    norm_stats: NormStats = "tile",
    channels_last: bool = False,
) -> Tensor:
    """``decoder(z)`` computed tile by tile; ``tile``/``overlap`` in output pixels (multiples of the factor)."""
    factor = 2 ** (decoder.num_resolutions - 1)
    _check_tiling(tile, overlap, factor)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    features = decoder_low(decoder, z.contiguous(memory_format=fmt))
    batch, _, lat_h, lat_w = features.shape
    height, width = lat_h * factor, lat_w * factor
    tiles = plan_tiles(lat_h, lat_w, tile // factor, overlap // factor)
    image: Tensor | None = None
    weight_sum = z.new_zeros(height, width)

    def run_tile(t: Tile) -> Tensor:
        crop = features[:, :, t.top : t.top + t.height, t.left : t.left + t.width]
        return decoder_high(decoder, crop.contiguous(memory_format=fmt))

    def accumulate(t: Tile, out: Tensor) -> None:
        nonlocal image
        if image is None:
            image = out.new_zeros(batch, out.shape[1], height, width)
        pixel_tile = Tile(t.top * factor, t.left * factor, t.height * factor, t.width * factor, 0, 1, 0, 1)
        weights = _tile_weights(pixel_tile, overlap, height, width, out.device).to(out.dtype)
        rows = slice(pixel_tile.top, pixel_tile.top + pixel_tile.height)
        cols = slice(pixel_tile.left, pixel_tile.left + pixel_tile.width)
        image[:, :, rows, cols] += out * weights
        weight_sum[rows, cols] += weights

    _run_tiles(decoder, run_tile, tiles, accumulate, norm_stats)
    assert image is not None
    return (image / weight_sum).contiguous()
