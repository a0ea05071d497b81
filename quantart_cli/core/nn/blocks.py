"""Convolutional building blocks of the taming-transformers autoencoder (parameter names kept).

Numerics follow the original; two things are computed differently but equivalently:
swish uses the fused ``silu`` kernel, and :class:`Upsample` folds "nearest x2, then 3x3 conv"
into one stride-2 transposed convolution (2.25x fewer multiply-adds, no upsampled copy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Groups of the original's GroupNorm.
NORM_GROUPS = 32


def normalize(channels: int, groups: int = NORM_GROUPS) -> nn.GroupNorm:
    """GroupNorm of the original: ``groups`` groups (1 group below that many channels), eps 1e-6, affine.

    The original always uses 32 groups; fewer suit narrow models, where 32 groups of one channel each would
    normalize every channel by its own mean and erase the image's colour at every norm (see
    :class:`~quantart_cli.core.config.AutoencoderConfig.norm_groups`).
    """
    groups = groups if channels >= groups else 1
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


def can_modify_inplace(t: Tensor) -> bool:
    """True when overwriting ``t`` cannot corrupt an autograd graph (saves a buffer per op)."""
    return not t.requires_grad


def swish(x: Tensor, inplace: bool = False) -> Tensor:
    """x * sigmoid(x)."""
    return F.silu(x, inplace=inplace)


def norm_swish(norm: nn.GroupNorm, x: Tensor) -> Tensor:
    """``swish(norm(x))``, in place on the fresh norm output when autograd allows."""
    h = norm(x)
    return swish(h, inplace=can_modify_inplace(h))


class ResnetBlock(nn.Module):
    """norm1 -> swish -> conv1 -> norm2 -> swish -> dropout -> conv2, plus a (projected) skip.

    No timestep embedding (``temb_proj``) as in every QuantArt / taming VQGAN.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        dropout: float = 0.0,
        norm_groups: int = NORM_GROUPS,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = normalize(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, padding_mode=padding_mode)
        self.norm2 = normalize(out_channels, norm_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, padding_mode=padding_mode)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def first_half(self, x: Tensor) -> Tensor:
        """``conv1(swish(norm1(x)))``: the part before the second GroupNorm (tiling runs the halves apart)."""
        return self.conv1(norm_swish(self.norm1, x))

    def second_half(self, x: Tensor, h: Tensor) -> Tensor:
        """``conv2(dropout(swish(norm2(h)))) + skip(x)`` with ``h`` from :meth:`first_half`."""
        h = self.conv2(self.dropout(norm_swish(self.norm2, h)))
        skip = self.nin_shortcut(x) if self.in_channels != self.out_channels else x
        if can_modify_inplace(h):
            return h.add_(skip)
        return skip + h

    def forward(self, x: Tensor) -> Tensor:
        return self.second_half(x, self.first_half(x))


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then a 3x3 stride-2 convolution (channels unchanged)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


def fold_upsample_weight(weight: Tensor) -> Tensor:
    """Turn a 3x3 conv applied after nearest x2 upsampling into a 4x4 stride-2 transposed-conv kernel.

    Output row 2i reads input rows (i-1, i) with kernel rows (w0, w1+w2); row 2i+1 reads (i, i+1)
    with (w0+w1, w2). In ``conv_transpose2d(stride=2, padding=1)`` terms the taps are
    ``[w2, w1+w2, w0+w1, w0]`` along each axis.
    """

    def fold(w: Tensor, dim: int) -> Tensor:
        w0, w1, w2 = w.unbind(dim)
        return torch.stack([w2, w1 + w2, w0 + w1, w0], dim=dim)

    folded = fold(fold(weight, 2), 3)  # (out, in, 4, 4)
    return folded.transpose(0, 1).contiguous()  # conv_transpose2d wants (in, out, kh, kw)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 convolution (channels unchanged).

    ``folded=True`` (default) runs the mathematically identical transposed convolution of
    :func:`fold_upsample_weight`; results agree with the two-step form to float rounding.
    """

    def __init__(self, channels: int, folded: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)
        self.folded = folded

    def forward(self, x: Tensor) -> Tensor:
        if not self.folded:
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        weight = fold_upsample_weight(self.conv.weight)
        return F.conv_transpose2d(x, weight, self.conv.bias, stride=2, padding=1)
