"""RGB <-> YCbCr (ITU-R BT.601 full range, the JPEG convention) on (B, 3, H, W) tensors."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rgb_to_ycbcr", "ycbcr_to_rgb"]

# ITU-R BT.601 full range (JPEG): rows give Y, Cb, Cr from R, G, B. Linear without the offsets, so it
# works on [-1, 1] pixels as well as on [0, 1] ones (the offsets cancel in a round trip).
_RGB_TO_YCBCR = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=torch.float64
)
_YCBCR_TO_RGB = torch.linalg.inv(_RGB_TO_YCBCR)


def _apply_matrix(matrix: Tensor, x: Tensor) -> Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix.to(device=x.device, dtype=x.dtype), x)


def rgb_to_ycbcr(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> Y, Cb, Cr (BT.601 full range, offsets left out)."""
    return _apply_matrix(_RGB_TO_YCBCR, x)


def ycbcr_to_rgb(x: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_ycbcr`."""
    return _apply_matrix(_YCBCR_TO_RGB, x)
