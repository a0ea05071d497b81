"""Network-free measures of a stylization: does the output take the painting's colours and keep the photo?

Every function takes images as (3, H, W) or (1, 3, H, W) tensors in [-1, 1] (the package's pixel
convention) and needs no download:

- :func:`color_swd`: sliced Wasserstein distance between the RGB colour distributions of two images of
  any sizes (pixels in [0, 1]; 0 for the same colour histogram). Each of ``projections`` fixed random
  directions of RGB space gets the 1-D Wasserstein-1 distance between the projected pixels, read at
  ``quantiles`` evenly spaced quantile levels; the result is their mean.
- :func:`luminance_ssim`: SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03)
  of the BT.601 luma of two images; the second is resized to the first's size if they differ.
- :func:`color_histogram_distance`: Hellinger distance between joint RGB histograms (8 bins per channel):
  0 for the same colours, 1 for disjoint ones.
- :func:`mean_abs_diff`: mean absolute difference in grey levels (0-255).

:func:`quantart_cli.core.metrics.grid.stylization_report` applies them (and the texture measures of
:mod:`quantart_cli.core.metrics.texture`) to a grid of outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from quantart_cli.core.errors import BadInputError

__all__ = [
    "ColourProfiles",
    "KeptProfiles",
    "SWD_MAX_PIXELS",
    "color_histogram_distance",
    "color_quantiles",
    "color_swd",
    "luminance",
    "luminance_ssim",
    "mean_abs_diff",
    "mean_std_color_transfer",
    "swd_between",
]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def _as_image(x: Tensor, what: str) -> Tensor:
    """(3, H, W) or (1, 3, H, W) in [-1, 1] -> (3, H, W) float64 in [0, 1]."""
    if not isinstance(x, Tensor):
        raise BadInputError(f"{what} must be a tensor, got {type(x).__name__}")
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3 or x.shape[1] < 1 or x.shape[2] < 1:
        raise BadInputError(f"{what} must be a (3, H, W) or (1, 3, H, W) RGB tensor, got {tuple(x.shape)}")
    return ((x.detach().double().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)


def _directions(count: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(count, 3, generator=generator, dtype=torch.float64)
    return directions / directions.norm(dim=1, keepdim=True)


#: Pixels an image contributes to :func:`color_swd` at most (a fixed random subset of larger images).
SWD_MAX_PIXELS = 2**15


def _pixels(x: Tensor, what: str, limit: int, seed: int) -> Tensor:
    pixels = _as_image(x, what).reshape(3, -1).t()
    if len(pixels) > limit:
        # Quantiles from 32k pixels are within ~0.5% in rank of the full image's, at a fraction of the sort.
        pick = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))[:limit]
        pixels = pixels[pick]
    return pixels


def color_quantiles(
    x: Tensor,
    *,
    projections: int = 64,
    quantiles: int = 256,
    seed: int = 0,
    max_pixels: int = SWD_MAX_PIXELS,
) -> Tensor:
    """The colour profile :func:`color_swd` compares: quantiles (``quantiles``, ``projections``) of the image's
    RGB pixels projected on fixed random directions.

    Sorting the projections is most of a distance's cost, so a caller comparing one image with many keeps its
    profile: ``color_swd(a, b) == swd_between(color_quantiles(a), color_quantiles(b))`` exactly.
    """
    return _profile(x, "image", projections, quantiles, seed, max_pixels)


def _profile(x: Tensor, what: str, projections: int, quantiles: int, seed: int, max_pixels: int) -> Tensor:
    pixels = _pixels(x, what, max_pixels, seed)
    return _quantiles(pixels @ _directions(projections, seed).t(), quantiles)


def swd_between(profile_a: Tensor, profile_b: Tensor) -> float:
    """Sliced Wasserstein-1 distance between two :func:`color_quantiles` profiles (same arguments)."""
    return float((profile_a - profile_b).abs().mean())


class KeptProfiles:
    """``profile(image)`` of images by a caller's key, each made once however often it is compared."""

    def __init__(self, profile: Callable[[Tensor], Tensor]) -> None:
        self._profile = profile
        self._by_key: dict[object, Tensor] = {}

    def __call__(self, key: object, image: Tensor) -> Tensor:
        if key not in self._by_key:
            self._by_key[key] = self._profile(image)
        return self._by_key[key]


class ColourProfiles(KeptProfiles):
    """:func:`color_quantiles` of images by a caller's key, each made once however often it is compared."""

    def __init__(self) -> None:
        super().__init__(color_quantiles)

    def swd(self, key_a: object, a: Tensor, key_b: object, b: Tensor) -> float:
        """``color_swd(a, b)``, from the kept profiles."""
        return swd_between(self(key_a, a), self(key_b, b))


def color_swd(
    a: Tensor,
    b: Tensor,
    *,
    projections: int = 64,
    quantiles: int = 256,
    seed: int = 0,
    max_pixels: int = SWD_MAX_PIXELS,
) -> float:
    """Sliced Wasserstein-1 distance between the RGB pixel distributions of ``a`` and ``b`` ([0, 1] scale).

    The directions, quantile levels and (for images over ``max_pixels`` pixels) the subset of pixels read
    are fixed by the arguments, so the distance is deterministic and symmetric, and images of different
    sizes compare directly.
    """
    return swd_between(_profile(a, "first image", projections, quantiles, seed, max_pixels),
                       _profile(b, "second image", projections, quantiles, seed, max_pixels))


def _quantiles(values: Tensor, count: int) -> Tensor:
    """Column quantiles of ``values`` (N, P) at levels (i + 0.5) / count, linearly interpolated.

    The same definition as ``torch.quantile(..., interpolation="linear")``, from one sort (much faster).
    """
    ordered = values.sort(dim=0).values
    n = ordered.shape[0]
    position = ((torch.arange(count, dtype=torch.float64) + 0.5) / count) * (n - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=n - 1)
    frac = (position - low).unsqueeze(1)
    return ordered[low] * (1 - frac) + ordered[high] * frac


def color_histogram_distance(a: Tensor, b: Tensor, *, bins: int = 8) -> float:
    """Hellinger distance between the joint RGB histograms of ``a`` and ``b`` (``bins`` per channel).

    0 for the same colour histogram, 1 for images that share no colour bin; any sizes compare directly.
    """
    if bins < 1:
        raise BadInputError(f"a colour histogram needs at least one bin per channel, got {bins}")
    ha, hb = _rgb_histogram(a, "first image", bins), _rgb_histogram(b, "second image", bins)
    return float((0.5 * ((ha.sqrt() - hb.sqrt()) ** 2).sum()).sqrt().clamp(max=1.0))


def _rgb_histogram(x: Tensor, what: str, bins: int) -> Tensor:
    pixels = _as_image(x, what).reshape(3, -1)
    index = (pixels * bins).long().clamp(0, bins - 1)
    flat = (index[0] * bins + index[1]) * bins + index[2]
    counts = torch.bincount(flat, minlength=bins**3).double()
    return counts / counts.sum()


def luminance(x: Tensor) -> Tensor:
    """BT.601 luma (H, W) in [0, 1] of an RGB image in [-1, 1]."""
    rgb = _as_image(x, "image")
    weights = torch.tensor(_LUMA, dtype=rgb.dtype).view(3, 1, 1)
    return (rgb * weights).sum(dim=0)


def _gaussian_taps(size: int = 11, sigma: float = 1.5) -> Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _gaussian_blur(maps: Tensor, taps: Tensor) -> Tensor:
    """``maps`` (N, 1, H, W) through the 2-D Gaussian window as two 1-D passes (the window is separable)."""
    size = len(taps)
    return F.conv2d(F.conv2d(maps, taps.view(1, 1, size, 1)), taps.view(1, 1, 1, size))


def luminance_ssim(a: Tensor, b: Tensor) -> float:
    """Mean SSIM of the luma of ``a`` and ``b`` (``b`` resized to ``a``'s size when they differ).

    The usual definition: an 11x11 Gaussian window (sigma 1.5), valid positions only, c1 = 0.01^2,
    c2 = 0.03^2, in float64.
    """
    ya = luminance(a)[None, None]
    yb = luminance(b)[None, None]
    if yb.shape != ya.shape:
        yb = F.interpolate(yb, size=ya.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    taps = _gaussian_taps()
    size = len(taps)
    if min(ya.shape[-2:]) < size:
        raise BadInputError(f"SSIM needs images of at least {size}x{size} pixels, got {tuple(ya.shape[-2:])}")
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b, sq_a, sq_b, ab = _gaussian_blur(torch.cat([ya, yb, ya * ya, yb * yb, ya * yb]), taps)
    var_a = sq_a - mu_a**2
    var_b = sq_b - mu_b**2
    cov = ab - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim.mean())


def mean_std_color_transfer(photo: Tensor, painting: Tensor) -> Tensor:
    """Reference baseline, not a stylizer: each RGB channel of ``photo`` given ``painting``'s mean and std.

    (B, 3, H, W) tensors in [-1, 1]; the result is clamped to that range. It calibrates the figures of
    :func:`~quantart_cli.core.metrics.grid.stylization_report`: colours move to the painting while the photo's
    layout is kept.
    """
    dims = (-2, -1)
    normed = (photo - photo.mean(dims, keepdim=True)) / photo.std(dims, keepdim=True).clamp_min(1e-6)
    return (normed * painting.std(dims, keepdim=True) + painting.mean(dims, keepdim=True)).clamp(-1, 1)


def mean_abs_diff(a: Tensor, b: Tensor) -> float:
    """Mean absolute difference of two same-sized images in grey levels (0-255)."""
    x, y = _as_image(a, "first image"), _as_image(b, "second image")
    if x.shape != y.shape:
        raise BadInputError(f"images must have the same size, got {tuple(x.shape)} and {tuple(y.shape)}")
    return float((x - y).abs().mean() * 255.0)
