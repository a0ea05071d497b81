"""A colour-distribution term for stage 2 (not in the original): the sliced Wasserstein-1 distance between the RGB
pixels of the decoded output and of the painting, per sample.

The latent and VGG19 style terms match channel means and standard deviations, which leave a palette's shape free:
a painting of a few saturated colours and a greyish mix of them have close statistics. Comparing whole pixel
distributions asks for the palette itself (:func:`~quantart_cli.core.losses.sliced.sliced_wasserstein` on
:data:`COLOR_DIRECTIONS` random directions of RGB space a step).
"""

from __future__ import annotations

from torch import Tensor

from quantart_cli.core.losses.sliced import random_directions, sliced_wasserstein

__all__ = ["COLOR_DIRECTIONS", "color_directions", "color_distribution_loss"]

#: Random directions per step: in three dimensions a few dozen cover the sphere well.
COLOR_DIRECTIONS = 32


def color_directions(step: int, count: int = COLOR_DIRECTIONS) -> Tensor:
    """``count`` unit vectors of RGB space (count, 3), the same for the same ``step``."""
    return random_directions(step, count, 3)


def color_distribution_loss(output: Tensor, painting: Tensor, directions: Tensor) -> Tensor:
    """Mean over samples and ``directions`` of the Wasserstein-1 distance between the projected RGB pixels of
    ``output`` and ``painting`` (both (B, 3, H, W) in [-1, 1], pairs by batch index); the painting without gradient.
    """
    if output.dim() != 4 or output.shape[1] != 3 or painting.shape[:2] != output.shape[:2]:
        raise ValueError(f"expected two (B, 3, H, W) batches of one size B, got {tuple(output.shape)} and "
                         f"{tuple(painting.shape)}")
    return sliced_wasserstein(output.flatten(2), painting.flatten(2), directions, power=1)
