"""Network-free measures of texture and detail: does the output take the painting's brush work, and stay sharp?

The colour measures (:mod:`quantart_cli.core.metrics.style`) compare palettes; these compare structure. Images
are (3, H, W) or (1, 3, H, W) tensors in [-1, 1], of any sizes, and nothing is downloaded:

- :func:`texture_swd`: sliced Wasserstein-1 distance between the distributions of the 7x7 RGB patches of two
  images, each patch less its own mean colour (so a palette change alone moves it little), at three pyramid
  levels: the image resized so its longer side is 256, 128 and 64 pixels. At each level every patch position
  (stride 1; a fixed random subset of :data:`TEXTURE_MAX_PATCHES` when there are more) is a point in 147-d
  space ([0, 1] pixel units), projected on :data:`TEXTURE_PROJECTIONS` fixed random unit directions; each
  projection gets the 1-D Wasserstein-1 distance, read at 256 evenly spaced quantile levels, and the level's
  distance is their mean. The result is the mean over the three levels.
- :func:`texture_ratio`: ``texture_swd(output, painting) / texture_swd(photo, painting)``: 1 when the output's
  texture is as far from the painting's as the photo's was, below 1 when it moved toward it.
- :func:`gradient_energy`: the mean Sobel gradient magnitude of the BT.601 luma ([0, 1] units) of the image
  resized so its longer side is :data:`DETAIL_SIZE` pixels (valid positions only).
- :func:`detail_ratio`: ``gradient_energy(output) / gradient_energy(painting)``: how much fine detail the output
  has, on the painting's scale (a blurry output is well below 1).

The directions, quantile levels and patch subsets are fixed by the arguments, so every figure is deterministic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from quantart_cli.core.errors import BadInputError
from quantart_cli.core.metrics.style import KeptProfiles, _as_image, luminance, swd_between

__all__ = [
    "DETAIL_SIZE",
    "PATCH_SIZE",
    "TEXTURE_LEVELS",
    "TEXTURE_MAX_PATCHES",
    "TEXTURE_PROJECTIONS",
    "TextureProfiles",
    "detail_ratio",
    "gradient_energy",
    "texture_profile",
    "texture_ratio",
    "texture_swd",
    "texture_swd_between",
]

#: Longer side, in pixels, of each pyramid level the texture distance reads.
TEXTURE_LEVELS: tuple[int, ...] = (256, 128, 64)
#: Side of the square patches.
PATCH_SIZE = 7
#: Random directions of patch space each level is projected on.
TEXTURE_PROJECTIONS = 128
#: Quantile levels each projection is read at.
TEXTURE_QUANTILES = 256
#: Patches a level contributes at most (a fixed random subset of larger images').
TEXTURE_MAX_PATCHES = 2**13
#: Longer side, in pixels, at which :func:`gradient_energy` is measured.
DETAIL_SIZE = 256

_FLAT = 1e-9
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)


def _resized(x: Tensor, size: int, what: str) -> Tensor:
    """(3, H, W) in [0, 1] with its longer side resized to ``size`` (bicubic, antialiased), clamped to [0, 1]."""
    height, width = x.shape[-2:]
    scale = size / max(height, width)
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    if min(shape) < PATCH_SIZE:
        raise BadInputError(f"{what} is too narrow for the texture measure ({height}x{width}: at a longer side of "
                            f"{size} px its shorter side is under {PATCH_SIZE} px)")
    if shape == (height, width):
        return x
    return F.interpolate(x[None], size=shape, mode="bicubic", align_corners=False, antialias=True)[0].clamp(0, 1)


def _patch_directions(count: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(count, 3 * PATCH_SIZE * PATCH_SIZE, generator=generator, dtype=torch.float64)
    return directions / directions.norm(dim=1, keepdim=True)


def _centred_patches(level: Tensor, limit: int, seed: int) -> Tensor:
    """(N, 147): the 7x7 patches of ``level`` (3, h, w) at every position (a fixed random subset of ``limit`` when
    there are more), channel-major, each channel less the patch's mean of that channel."""
    _, height, width = level.shape
    rows, cols = height - PATCH_SIZE + 1, width - PATCH_SIZE + 1
    count = rows * cols
    if count > limit:
        corners = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:limit]
    else:
        corners = torch.arange(count)
    offsets = torch.arange(PATCH_SIZE)
    ys = (corners // cols)[:, None, None] + offsets[None, :, None]
    xs = (corners % cols)[:, None, None] + offsets[None, None, :]
    patches = level[:, ys, xs].reshape(3, len(corners), PATCH_SIZE * PATCH_SIZE)  # gathered, not unfolded
    patches = patches - patches.mean(dim=2, keepdim=True)
    return patches.permute(1, 0, 2).reshape(len(corners), 3 * PATCH_SIZE * PATCH_SIZE)


def texture_profile(
    x: Tensor,
    *,
    levels: tuple[int, ...] = TEXTURE_LEVELS,
    projections: int = TEXTURE_PROJECTIONS,
    quantiles: int = TEXTURE_QUANTILES,
    seed: int = 0,
    max_patches: int = TEXTURE_MAX_PATCHES,
    what: str = "image",
) -> Tensor:
    """What :func:`texture_swd` compares: (levels, quantiles, projections) quantiles of the image's centred patches
    projected on fixed random directions, one slice per pyramid level.

    ``texture_swd(a, b) == texture_swd_between(texture_profile(a), texture_profile(b))`` exactly, so a caller
    comparing one image with many keeps its profile (:class:`TextureProfiles`).
    """
    image = _as_image(x, what)
    directions = _patch_directions(projections, seed)
    rows = []
    for size in levels:
        patches = _centred_patches(_resized(image, size, what), max_patches, seed)
        rows.append(_row_quantiles(directions @ patches.t(), quantiles).t())
    return torch.stack(rows)


def _row_quantiles(values: Tensor, count: int) -> Tensor:
    """Row quantiles (P, count) of ``values`` (P, N) at levels (i + 0.5) / count, linearly interpolated (the
    definition of ``torch.quantile(..., interpolation="linear")``; sorting contiguous rows is the fast way)."""
    ordered = values.sort(dim=1).values
    n = ordered.shape[1]
    position = ((torch.arange(count, dtype=torch.float64) + 0.5) / count) * (n - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=n - 1)
    frac = position - low
    return ordered[:, low] * (1 - frac) + ordered[:, high] * frac


def texture_swd_between(profile_a: Tensor, profile_b: Tensor) -> float:
    """Texture distance between two :func:`texture_profile` results (same arguments): the mean over levels of
    each level's sliced Wasserstein-1 distance (the mean absolute difference of the profiles, as for colours)."""
    return swd_between(profile_a, profile_b)


def texture_swd(a: Tensor, b: Tensor, **options) -> float:
    """Sliced Wasserstein-1 distance between the centred 7x7 patch distributions of ``a`` and ``b``, averaged over
    the pyramid levels ([0, 1] pixel units; 0 for the same patch distributions). Symmetric; any sizes compare."""
    return texture_swd_between(texture_profile(a, what="first image", **options),
                               texture_profile(b, what="second image", **options))


class TextureProfiles(KeptProfiles):
    """:func:`texture_profile` of images by a caller's key, each made once however often it is compared."""

    def __init__(self) -> None:
        super().__init__(texture_profile)


def texture_ratio(output: Tensor, photo: Tensor, painting: Tensor) -> float:
    """``texture_swd(output, painting) / texture_swd(photo, painting)`` (NaN when the photo's distance is 0)."""
    target = texture_profile(painting, what="painting")
    base = texture_swd_between(texture_profile(photo, what="photo"), target)
    moved = texture_swd_between(texture_profile(output, what="output"), target)
    return moved / base if base > 0 else float("nan")


def gradient_energy(x: Tensor, *, size: int = DETAIL_SIZE) -> float:
    """Mean Sobel gradient magnitude of the image's luma at a longer side of ``size`` pixels.

    Luma in [0, 1]; the unnormalised Sobel kernels (weights 1, 2, 1), valid positions only. Below 1e-9 (a flat
    image) it is 0.
    """
    image = _as_image(x, "image")
    height, width = image.shape[-2:]
    scale = size / max(height, width)
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    if min(shape) < 3:
        raise BadInputError(f"the image is too narrow to measure its detail ({height}x{width})")
    if shape != (height, width):
        image = F.interpolate(image[None], size=shape, mode="bicubic", align_corners=False,
                              antialias=True)[0].clamp(0, 1)
    luma = luminance(image * 2 - 1)[None, None]
    kernels = torch.stack([_SOBEL_X, _SOBEL_X.t()])[:, None]
    gx, gy = F.conv2d(luma, kernels)[0]
    energy = float((gx**2 + gy**2).sqrt().mean())
    return energy if energy > _FLAT else 0.0  # a flat image, whatever rounding the resize left in it


def detail_ratio(output: Tensor, painting: Tensor) -> float:
    """``gradient_energy(output) / gradient_energy(painting)`` (NaN for a flat painting)."""
    reference = gradient_energy(painting)
    return gradient_energy(output) / reference if reference > 0 else float("nan")
