"""Sliced Wasserstein distances between two sets of vectors (pixels, or feature vectors at each position), the
shared part of stage 2's colour term and its sliced style term.

Each call projects both sets on random unit directions (drawn from a generator seeded with the training step and
a salt, so a resumed run draws the same ones), sorts the projections, and compares the sorted values. When the
two sets differ in size, the target's sorted values are resampled to the other's count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_directions", "sliced_wasserstein"]

_SALT_STRIDE = 1_000_003  # salt 0 seeds with the step itself; other salts far from any step count


def random_directions(step: int, count: int, dim: int, salt: int = 0) -> Tensor:
    """``count`` unit vectors of ``dim``-dimensional space, (count, dim), the same for the same step and salt."""
    generator = torch.Generator().manual_seed(int(salt) * _SALT_STRIDE + int(step))
    directions = torch.randn(count, dim, generator=generator)
    return directions / directions.norm(dim=1, keepdim=True)


def _sorted_projections(vectors: Tensor, directions: Tensor) -> Tensor:
    """(B, dim, N) -> (B, count, N): each sample's vectors projected on each direction, sorted."""
    return torch.einsum("dc,bcn->bdn", directions.to(vectors.device, torch.float32), vectors.float()).sort(-1).values


def sliced_wasserstein(output: Tensor, target: Tensor, directions: Tensor, power: int = 1) -> Tensor:
    """Mean over samples, directions and ranks of ``|sorted output projection - sorted target projection| ** power``
    (``power`` 1: the sliced Wasserstein-1 distance; 2: its squared-difference form). ``output`` and ``target`` are
    (B, dim, N) and (B, dim, M), paired by batch index; the target without gradient."""
    if output.dim() != 3 or target.dim() != 3 or output.shape[:2] != target.shape[:2]:
        raise ValueError(f"expected two (B, dim, N) sets of one B and dim, got {tuple(output.shape)} and "
                         f"{tuple(target.shape)}")
    out = _sorted_projections(output, directions)
    with torch.no_grad():
        ref = _sorted_projections(target, directions)
        if ref.shape[-1] != out.shape[-1]:
            ref = F.interpolate(ref, size=out.shape[-1], mode="linear", align_corners=True)
    return (out - ref).abs().pow(power).mean()
