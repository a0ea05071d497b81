"""The VQGAN encoder and decoder cut into pieces that tiled execution can run separately.

Each autoencoder is split in two at its lowest resolution:

- the *high-resolution part* (encoder: ``conv_in`` and every level that ends in a downsample;
  decoder: the first upsample and every level above it, ``norm_out``, ``conv_out``) is where
  activations are huge; tiled execution runs it tile by tile;
- the *latent-resolution part* (encoder: the lowest level, ``mid``, ``norm_out``, ``conv_out``;
  decoder: ``conv_in``, ``mid`` and the lowest level) is small (1/f^2 of the pixels) and holds the
  attention blocks of every QuantArt config, so it always runs on the whole latent.

The high part is further cut into :class:`Unit` s, each opening with at most one GroupNorm: a resnet
block is two units (up to its second norm, then the rest with the skip), and an attention block, an
up- or downsample and the output head are one each. A unit maps a *state* (a tuple of tensors: one,
or the block's input and its half-way activation) to the next state, with a known receptive radius,
change of resolution and cost: enough to schedule exact tiling (:mod:`quantart_cli.core.transfer.tiling`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from quantart_cli.core.nn.attention import AttnBlock
from quantart_cli.core.nn.autoencoder import Decoder, Encoder
from quantart_cli.core.nn.blocks import Downsample, ResnetBlock, Upsample, norm_swish

__all__ = [
    "State",
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

#: What flows between units: the activation, or (block input, half-way activation) inside a resnet block.
State = tuple[Tensor, ...]


@dataclass(frozen=True)
class Unit:
    """One piece of a high-resolution part.

    ``scale_in``/``scale_out``: input and output resolution in multiples of the latent grid.
    ``radius``: how far (input pixels, either side) an output pixel can see. ``channels``: the output
    state's channel counts. ``cost``: multiply-adds per latent-grid cell (only ratios matter).
    ``norm``: the GroupNorm the unit opens with, applied to input tensor ``norm_input``. ``keeps``:
    output 0 is input ``keeps`` unchanged. ``local`` is False for attention, which sees the whole image.
    """

    run: Callable[..., State]
    scale_in: int
    scale_out: int
    radius: int
    channels: tuple[int, ...]
    cost: float
    norm: nn.GroupNorm | None = None
    norm_input: int = 0
    keeps: int | None = None
    local: bool = True


def _conv_cost(conv: nn.Module, scale: int) -> float:
    """Multiply-adds of a convolution per latent-grid cell at output ``scale``."""
    assert isinstance(conv, nn.Conv2d)
    return float(conv.weight.numel() * scale * scale)


def _single(module: nn.Module) -> Callable[[Tensor], State]:
    def run(x: Tensor) -> State:
        return (module(x),)

    return run


def _block_units(block: ResnetBlock, scale: int) -> list[Unit]:
    def first(x: Tensor) -> State:
        return x, block.first_half(x)

    def second(x: Tensor, h: Tensor) -> State:
        return (block.second_half(x, h),)

    c_in, c_out = block.in_channels, block.out_channels
    second_cost = _conv_cost(block.conv2, scale)
    if c_in != c_out:
        second_cost += _conv_cost(block.nin_shortcut, scale)
    return [
        Unit(first, scale, scale, 1, (c_in, c_out), _conv_cost(block.conv1, scale), block.norm1, 0, keeps=0),
        Unit(second, scale, scale, 1, (c_out,), second_cost, block.norm2, 1),
    ]


def _level_units(level: nn.Module, scale: int) -> list[Unit]:
    units = []
    for j, block in enumerate(level.block):
        assert isinstance(block, ResnetBlock)
        units += _block_units(block, scale)
        if len(level.attn) > 0:
            attn = level.attn[j]
            assert isinstance(attn, AttnBlock)
            units.append(Unit(_single(attn), scale, scale, 0, (block.out_channels,), 0.0, local=False))
    return units


def encoder_units(encoder: Encoder) -> list[Unit]:
    """The encoder's high part, in order: image (scale f) -> features at latent resolution (scale 1)."""
    scale = 2 ** (encoder.num_resolutions - 1)
    conv_in = encoder.conv_in
    units = [Unit(_single(conv_in), scale, scale, 1, (conv_in.out_channels,), _conv_cost(conv_in, scale))]
    for level in list(encoder.down)[:-1]:
        units += _level_units(level, scale)
        down = level.downsample
        assert isinstance(down, Downsample)
        # Pads right/bottom by one, 3x3 stride 2: output i reads inputs 2i .. 2i+2.
        cost = _conv_cost(down.conv, scale // 2)
        units.append(Unit(_single(down), scale, scale // 2, 2, (down.conv.out_channels,), cost))
        scale //= 2
    return units


def decoder_units(decoder: Decoder) -> list[Unit]:
    """The decoder's high part, in order: features at latent resolution (scale 1) -> image (scale f)."""
    last = decoder.num_resolutions - 1
    units: list[Unit] = []
    scale = 1

    def upsample(level: nn.Module) -> None:
        nonlocal scale
        up = level.upsample
        assert isinstance(up, Upsample)
        # Nearest x2 then 3x3 conv: output 2i and 2i+1 read inputs i-1 .. i+1.
        units.append(Unit(_single(up), scale, scale * 2, 1, (up.conv.out_channels,), _conv_cost(up.conv, scale * 2)))
        scale *= 2

    if last > 0:
        upsample(decoder.up[last])
    for i in reversed(range(last)):
        units += _level_units(decoder.up[i], scale)
        if i != 0:
            upsample(decoder.up[i])

    def head(h: Tensor) -> State:
        return (decoder.conv_out(norm_swish(decoder.norm_out, h)),)

    conv_out = decoder.conv_out
    units.append(Unit(head, scale, scale, 1, (conv_out.out_channels,), _conv_cost(conv_out, scale), decoder.norm_out))
    return units


def run_units(units: list[Unit], *state: Tensor) -> State:
    """Apply ``units`` in order to ``state``."""
    for unit in units:
        state = unit.run(*state)
    return state


def encoder_high(encoder: Encoder, x: Tensor) -> Tensor:
    """``conv_in`` and every level that ends in a downsample: image -> features at latent resolution."""
    return run_units(encoder_units(encoder), x)[0]


def encoder_low(encoder: Encoder, h: Tensor) -> Tensor:
    """The lowest level, ``mid``, ``norm_out`` and ``conv_out``; with :func:`encoder_high` equals ``encoder``."""
    h = encoder.mid(encoder.down[-1].run_blocks(h))
    return encoder.conv_out(norm_swish(encoder.norm_out, h))


def decoder_low(decoder: Decoder, z: Tensor) -> Tensor:
    """``conv_in``, ``mid`` and the lowest level's blocks: latent -> features at latent resolution."""
    return decoder.up[-1].run_blocks(decoder.mid(decoder.conv_in(z)))


def decoder_high(decoder: Decoder, h: Tensor) -> Tensor:
    """Everything after :func:`decoder_low`: features at latent resolution -> image."""
    return run_units(decoder_units(decoder), h)[0]


def group_norms(module: nn.Module) -> list[nn.GroupNorm]:
    """Every GroupNorm inside ``module``."""
    return [m for m in module.modules() if isinstance(m, nn.GroupNorm)]
