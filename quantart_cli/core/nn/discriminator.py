"""PatchGAN discriminator (pix2pix ``NLayerDiscriminator``), used on images (stage 1) and latents (stage 2).

The ``main`` Sequential keeps the original layer indices so state dicts of taming/QuantArt checkpoints
(``loss.discriminator.main.*``) load unchanged.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

KERNEL_SIZE = 4
PADDING = 1
LEAKY_SLOPE = 0.2
MAX_CHANNEL_MULT = 8


def weights_init(module: nn.Module) -> None:
    """Original discriminator init: conv weights N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0.

    Conv biases keep PyTorch's default init, as in the original. Apply with ``model.apply(weights_init)``.
    """
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class NLayerDiscriminator(nn.Module):
    """PatchGAN: one logit per overlapping receptive-field patch.

    ``n_layers`` stride-2 stages (the first without norm), one stride-1 stage with norm, then a
    stride-1 conv to a single channel. 256x256 images with ``n_layers=3`` give 30x30 logits; 16x16
    latents with ``n_layers=0`` give 6x6 logits.
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: Literal["batch"] = "batch") -> None:
        super().__init__()
        if norm != "batch":
            raise ValueError(f"unsupported discriminator norm {norm!r}; only 'batch' is implemented")
        if n_layers < 0:
            raise ValueError(f"n_layers must be >= 0, got {n_layers}")
        self.input_nc = input_nc
        self.ndf = ndf
        self.n_layers = n_layers

        # Convs followed by BatchNorm carry no bias: the norm's shift makes it redundant.
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, KERNEL_SIZE, stride=2, padding=PADDING),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        ]
        channels = ndf
        for n in range(1, n_layers):
            out_channels = ndf * min(2**n, MAX_CHANNEL_MULT)
            layers += _conv_norm_act(channels, out_channels, stride=2)
            channels = out_channels
        out_channels = ndf * min(2**n_layers, MAX_CHANNEL_MULT)
        layers += _conv_norm_act(channels, out_channels, stride=1)
        layers.append(nn.Conv2d(out_channels, 1, KERNEL_SIZE, stride=1, padding=PADDING))
        self.main = nn.Sequential(*layers)
        self.apply(weights_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, input_nc, H, W)`` -> ``(B, 1, H', W')`` patch logits."""
        return self.main(x)


def logits_side(side: int, n_layers: int) -> int:
    """The side of the logit map of an :class:`NLayerDiscriminator` with ``n_layers`` for an input of ``side``
    pixels, 0 when the input is too small (each 4x4 convolution needs 2 pixels besides its padding of one)."""
    for stride in [2] * max(n_layers, 1) + [1, 1]:
        if side < 2:
            return 0
        side = side // 2 if stride == 2 else side - 1
    return side


def min_input_side(n_layers: int) -> int:
    """The smallest input side that gives an :class:`NLayerDiscriminator` with ``n_layers`` at least one logit."""
    side = 1
    while logits_side(side, n_layers) < 1:
        side += 1
    return side


def _conv_norm_act(in_channels: int, out_channels: int, *, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, KERNEL_SIZE, stride=stride, padding=PADDING, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    ]
