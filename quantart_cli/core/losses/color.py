"""A colour-distribution term for stage 2 (not in the original): the sliced Wasserstein-1 distance between the RGB
pixels of the decoded output and of the painting, per sample.

The latent and VGG19 style terms match channel means and standard deviations, which leave a palette's shape free:
a painting of a few saturated colours and a greyish mix of them have close statistics. Comparing whole pixel
distributions asks for the palette itself. Each step projects the pixels on ``directions`` random unit vectors of
RGB space (drawn from a generator seeded with the step, so a resumed run draws the same ones), sorts them, and
averages the absolute differences of the sorted values (the 1-D Wasserstein-1 distance along each direction; when
the two images have different pixel counts, the painting's sorted values are resampled to the output's count).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["COLOR_DIRECTIONS", "color_directions", "color_distribution_loss"]

#: Random directions per step: in three dimensions a few dozen cover the sphere well.
COLOR_DIRECTIONS = 32


def color_directions(step: int, count: int = COLOR_DIRECTIONS) -> Tensor:
    """``count`` unit vectors of RGB space (count, 3), the same for the same ``step``."""
    generator = torch.Generator().manual_seed(int(step))
    directions = torch.randn(count, 3, generator=generator)
    return directions / directions.norm(dim=1, keepdim=True)


def _sorted_projections(images: Tensor, directions: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, count, H*W): each image's pixels projected on each direction, sorted."""
    pixels = images.float().flatten(2)  # (B, 3, N)
    return torch.einsum("dc,bcn->bdn", directions.to(pixels.device), pixels).sort(dim=-1).values


def color_distribution_loss(output: Tensor, painting: Tensor, directions: Tensor) -> Tensor:
    """Mean over samples and ``directions`` of the Wasserstein-1 distance between the projected RGB pixels of
    ``output`` and ``painting`` (both (B, 3, H, W) in [-1, 1], pairs by batch index); the painting without gradient.
    """
    if output.dim() != 4 or output.shape[1] != 3 or painting.shape[:2] != output.shape[:2]:
        raise ValueError(f"expected two (B, 3, H, W) batches of one size B, got {tuple(output.shape)} and "
                         f"{tuple(painting.shape)}")
    out = _sorted_projections(output, directions)
    with torch.no_grad():
        ref = _sorted_projections(painting, directions)
        if ref.shape[-1] != out.shape[-1]:
            ref = F.interpolate(ref, size=out.shape[-1], mode="linear", align_corners=True)
    return (out - ref).abs().mean()
