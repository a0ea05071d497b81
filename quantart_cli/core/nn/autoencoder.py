"""Encoder and Decoder of the taming-transformers VQGAN, with the original parameter names.

Attention placement follows the *nominal* ``resolution`` of the config (a level gets attention
when its nominal size is in ``attn_resolutions``), exactly like the original, so a model trained at
256 px keeps its layout at any input size.
"""

from __future__ import annotations

from torch import Tensor, nn

from quantart_cli.core.config import AutoencoderConfig
from quantart_cli.core.nn.attention import AttnBlock
from quantart_cli.core.nn.blocks import Downsample, ResnetBlock, Upsample, norm_swish, normalize


class _Level(nn.Module):
    """One resolution level: ``block.{j}``, ``attn.{j}`` and an optional down/upsample."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()

    def run_blocks(self, h: Tensor) -> Tensor:
        for j, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[j](h)
        return h


class _Middle(nn.Module):
    """``block_1 -> attn_1 -> block_2`` at the lowest resolution."""

    def __init__(self, channels: int, dropout: float, norm_groups: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, norm_groups)
        self.attn_1 = AttnBlock(channels, norm_groups=norm_groups)
        self.block_2 = ResnetBlock(channels, channels, dropout, norm_groups)

    def forward(self, h: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> features (B, z_channels, H/f, W/f), f = 2^(levels-1)."""

    def __init__(self, config: AutoencoderConfig | None = None) -> None:
        super().__init__()
        config = AutoencoderConfig() if config is None else config
        self.config = config
        ch, ch_mult = config.ch, tuple(config.ch_mult)
        groups = config.norm_groups
        self.num_resolutions = len(ch_mult)
        self.conv_in = nn.Conv2d(config.in_channels, ch, kernel_size=3, stride=1, padding=1)

        in_ch_mult = (1, *ch_mult)
        current_res = config.resolution
        self.down = nn.ModuleList()
        block_in = ch
        for i, mult in enumerate(ch_mult):
            level = _Level()
            block_in, block_out = ch * in_ch_mult[i], ch * mult
            for _ in range(config.num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out, config.dropout, groups))
                block_in = block_out
                if current_res in config.attn_resolutions:
                    level.attn.append(AttnBlock(block_in, norm_groups=groups))
            if i != self.num_resolutions - 1:
                level.downsample = Downsample(block_in)
                current_res //= 2
            self.down.append(level)

        self.mid = _Middle(block_in, config.dropout, groups)
        self.norm_out = normalize(block_in, groups)
        out_channels = 2 * config.z_channels if config.double_z else config.z_channels
        self.conv_out = nn.Conv2d(block_in, out_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            h = level.run_blocks(h)
            if i != self.num_resolutions - 1:
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(norm_swish(self.norm_out, h))


class Decoder(nn.Module):
    """Features (B, z_channels, h, w) -> image (B, out_ch, h*f, w*f). No output squashing (no tanh).

    ``up.0`` is the full-resolution level (the original builds the list backwards).
    """

    def __init__(self, config: AutoencoderConfig | None = None) -> None:
        super().__init__()
        config = AutoencoderConfig() if config is None else config
        self.config = config
        ch, ch_mult = config.ch, tuple(config.ch_mult)
        groups = config.norm_groups
        self.num_resolutions = len(ch_mult)
        block_in = ch * ch_mult[-1]
        current_res = config.resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = nn.Conv2d(config.z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = _Middle(block_in, config.dropout, groups)

        levels: list[_Level] = []
        for i in reversed(range(self.num_resolutions)):
            level = _Level()
            block_out = ch * ch_mult[i]
            for _ in range(config.num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, config.dropout, groups))
                block_in = block_out
                if current_res in config.attn_resolutions:
                    level.attn.append(AttnBlock(block_in, norm_groups=groups))
            if i != 0:
                level.upsample = Upsample(block_in)
                current_res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)

        self.norm_out = normalize(block_in, groups)
        self.conv_out = nn.Conv2d(block_in, config.out_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for i in reversed(range(self.num_resolutions)):
            level = self.up[i]
            h = level.run_blocks(h)
            if i != 0:
                h = level.upsample(h)
        return self.conv_out(norm_swish(self.norm_out, h))
