"""The VQGAN encoder and decoder cut into pieces that tiled execution can run separately.

Each autoencoder is split in two at its lowest resolution:

- the *high-resolution part* (encoder: ``conv_in`` and every level that ends in a downsample;
  decoder: the first upsample and every level above it, ``norm_out``, ``conv_out``) is where
  activations are huge; tiled execution runs it tile by tile;
- the *latent-resolution part* (encoder: the lowest level, ``mid``, ``norm_out``, ``conv_out``;
  decoder: ``conv_in``, ``mid`` and the lowest level) is small (1/f^2 of the pixels) and holds the
  attention blocks of every QuantArt config, so it always runs on the whole latent.

The high part is further cut into :class:`Unit` s (a resnet block, an attention block, an up- or
downsample, the output head), each a function of one tensor with a known receptive radius and a
known change of resolution: enough for exact tiling (:mod:`quantart_cli.tiling`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from quantart_cli.nn.attention import AttnBlock
from quantart_cli.nn.autoencoder import Decoder, Encoder, _Level
from quantart_cli.nn.blocks import Downsample, ResnetBlock, Upsample, norm_swish

__all__ = [
    "Unit",
    "decoder_high",
    "decoder_low",
    "decoder_units",
    "encoder_high",
    "encoder_low",
    "encoder_units",
    "group_norms",
    "run_units",
]


@dataclass(frozen=True)
class Unit:
    """One piece of a high-resolution part.

    ``scale_in``/``scale_out`` are its input and output resolution in multiples of the latent grid;
    ``radius`` is how far (in input pixels, either side) an output pixel can see; ``channels`` is the
    output channel count; ``local`` is False for attention, which sees the whole image.
    """

    run: Callable[[Tensor], Tensor]
    scale_in: int
    scale_out: int
    radius: int
    channels: int
    local: bool = True


def _level_units(level: _Level, scale: int) -> list[Unit]:
    units = []
    for j, block in enumerate(level.block):
        assert isinstance(block, ResnetBlock)
        units.append(Unit(block, scale, scale, radius=2, channels=block.out_channels))
        if len(level.attn) > 0:
            attn = level.attn[j]
            assert isinstance(attn, AttnBlock)
            units.append(Unit(attn, scale, scale, radius=0, channels=block.out_channels, local=False))
    return units


def encoder_units(encoder: Encoder) -> list[Unit]:
    """The encoder's high part, in order: image (scale f) -> features at latent resolution (scale 1)."""
    scale = 2 ** (encoder.num_resolutions - 1)
    units = [Unit(encoder.conv_in, scale, scale, radius=1, channels=encoder.conv_in.out_channels)]
    for level in list(encoder.down)[:-1]:
        units += _level_units(level, scale)
        down = level.downsample
        assert isinstance(down, Downsample)
        # Pads right/bottom by one, 3x3 stride 2: output i reads inputs 2i .. 2i+2.
        units.append(Unit(down, scale, scale // 2, radius=2, channels=down.conv.out_channels))
        scale //= 2
    return units


def _decoder_head(decoder: Decoder) -> Callable[[Tensor], Tensor]:
    def head(h: Tensor) -> Tensor:
        return decoder.conv_out(norm_swish(decoder.norm_out, h))

    return head


def decoder_units(decoder: Decoder) -> list[Unit]:
    """The decoder's high part, in order: features at latent resolution (scale 1) -> image (scale f)."""
    last = decoder.num_resolutions - 1
    units: list[Unit] = []
    scale = 1

    def upsample(level: _Level) -> None:
        nonlocal scale
        up = level.upsample
        assert isinstance(up, Upsample)
        # Nearest x2 then 3x3 conv: output 2i and 2i+1 read inputs i-1 .. i+1.
        units.append(Unit(up, scale, scale * 2, radius=1, channels=up.conv.out_channels))
        scale *= 2

    if last > 0:
        upsample(decoder.up[last])
    for i in reversed(range(last)):
        units += _level_units(decoder.up[i], scale)
        if i != 0:
            upsample(decoder.up[i])
    units.append(Unit(_decoder_head(decoder), scale, scale, radius=1, channels=decoder.conv_out.out_channels))
    return units


def run_units(units: list[Unit], h: Tensor) -> Tensor:
    """Apply ``units`` in order."""
    for unit in units:
        h = unit.run(h)
    return h


def encoder_high(encoder: Encoder, x: Tensor) -> Tensor:
    """``conv_in`` and every level that ends in a downsample: image -> features at latent resolution."""
    return run_units(encoder_units(encoder), x)


def encoder_low(encoder: Encoder, h: Tensor) -> Tensor:
    """The lowest level, ``mid``, ``norm_out`` and ``conv_out``; with :func:`encoder_high` equals ``encoder``."""
    h = encoder.mid(encoder.down[-1].run_blocks(h))
    return encoder.conv_out(norm_swish(encoder.norm_out, h))


def decoder_low(decoder: Decoder, z: Tensor) -> Tensor:
    """``conv_in``, ``mid`` and the lowest level's blocks: latent -> features at latent resolution."""
    return decoder.up[-1].run_blocks(decoder.mid(decoder.conv_in(z)))


def decoder_high(decoder: Decoder, h: Tensor) -> Tensor:
    """Everything after :func:`decoder_low`: features at latent resolution -> image."""
    return run_units(decoder_units(decoder), h)


def group_norms(module: nn.Module) -> list[nn.GroupNorm]:
    """Every GroupNorm inside ``module``."""
    return [m for m in module.modules() if isinstance(m, nn.GroupNorm)]
