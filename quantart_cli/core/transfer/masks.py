"""Regions: a greyscale mask per painting says where, and how strongly, that painting is applied.

White takes the painting fully, black not at all (the photo shows there as ``alpha`` 0 renders it), grey blends.
The paintings are grouped (:func:`group_styles`): each painting with a mask is a group of its own, run through the
SGA module alone, and the paintings without a mask form one group, blended inside attention by ``style_weights``
as without masks, which fills whatever the masks leave. Per latent cell the groups' *shares* (:func:`latent_shares`)
weigh their stylized latents::

    z = alpha * sum_g share_g * z_y_g + (1 - alpha * sum_g share_g) * z_c

A mask is stretched to the photo (after ``size``), padded as the photo is, averaged over each latent cell and
feathered with a Gaussian of :data:`FEATHER_SIGMA` latent cells, so two paintings meet in a soft band instead of
a seam. Where masks add up to more than 1 they are scaled down to sum 1; the group without masks (or, when every
painting has a mask, the photo) takes ``1 - sum`` of the rest. A mask of one grey level everywhere skips the
resizing and feathering and is used as that exact number: one painting with an all-white mask is stylized as
without a mask, and with an all-black one as with ``alpha`` 0, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from quantart_cli.core.blend import check_style_weights
from quantart_cli.core.errors import BadInputError, UsageError
from quantart_cli.core.io.images import MIN_LATENT_SIDE, load_image, pad_to_multiple, to_rgb
from quantart_cli.core.io.limits import DEFAULT_MAX_PIXELS

__all__ = [
    "FEATHER_SIGMA",
    "StyleGroup",
    "group_styles",
    "latent_shares",
    "load_mask",
    "mask_to_tensor",
]

#: Standard deviation of the Gaussian that feathers each mask, in latent cells (8 px for the built-in model).
FEATHER_SIGMA = 1.0

#: A share: one number for the whole photo, or a (1, 1, h, w) map over the latent grid.
Share = float | Tensor


@dataclass(frozen=True)
class StyleGroup:
    """Paintings stylized in one SGA pass: their indices among the styles, their blend weights (summing to 1;
    None: equal) and the mask of the group (None: the group without masks, or every painting when none has one)."""

    indices: tuple[int, ...]
    weights: tuple[float, ...] | None
    mask: Tensor | None = None


def load_mask(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Tensor:
    """A mask file as a (1, 1, H, W) float tensor in [0, 1]: its grey level (colours are converted to grey,
    transparent pixels count as black), read with :func:`~quantart_cli.core.io.images.load_image`'s checks and
    EXIF orientation."""
    return mask_to_tensor(load_image(path, max_pixels=max_pixels, background=(0, 0, 0)))


def mask_to_tensor(mask: Image.Image | Tensor) -> Tensor:
    """A PIL image (any mode; transparent pixels count as black) or a tensor of shape (H, W), (1, H, W) or
    (1, 1, H, W) with values in [0, 1], as a (1, 1, H, W) float tensor."""
    if isinstance(mask, Image.Image):
        grey = to_rgb(mask, background=(0, 0, 0)).convert("L")
        return torch.frombuffer(bytearray(grey.tobytes()), dtype=torch.uint8).reshape(
            1, 1, grey.height, grey.width).float() / 255.0
    if not isinstance(mask, Tensor):
        raise BadInputError(f"a mask must be a PIL image or a tensor, got {type(mask).__name__}")
    shape = tuple(mask.shape)
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    if mask.dim() != 4 or mask.shape[:2] != (1, 1) or mask.numel() == 0:
        raise BadInputError(f"a mask must be a (H, W), (1, H, W) or (1, 1, H, W) tensor, got {shape}")
    mask = mask.float()
    if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise BadInputError("a mask tensor must hold values between 0 (no style) and 1 (full style)")
    return mask


def group_styles(count: int, masks: Sequence[Tensor | Image.Image | None] | None,
                 weights: Sequence[float] | None) -> list[StyleGroup]:
    """The SGA passes for ``count`` paintings: one group of all of them without masks; with masks, one group per
    painting with a mask, then one of the paintings without (when there are any)."""
    masks = [None] * count if masks is None else list(masks)
    if len(masks) != count:
        raise UsageError(f"`mask` has {len(masks)} entries for {count} style images; give one per style image "
                         "(None for a painting without a mask).")
    masked = [m is not None for m in masks]
    free_weights = check_style_weights(weights, masked)
    groups = [StyleGroup((i,), (1.0,), mask_to_tensor(m)) for i, m in enumerate(masks) if m is not None]
    free = tuple(i for i, m in enumerate(masks) if m is None)
    if free:
        groups.append(StyleGroup(free, None if weights is None else free_weights))
    return groups


def _constant(mask: Tensor) -> float | None:
    low, high = mask.aminmax()
    return float(low) if bool(low == high) else None


def _feather(mask: Tensor, sigma: float) -> Tensor:
    """A separable Gaussian blur (edges repeated, so a constant stays constant)."""
    radius = math.ceil(2 * sigma)
    if sigma <= 0 or radius == 0:
        return mask
    taps = torch.arange(-radius, radius + 1, dtype=mask.dtype, device=mask.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = F.conv2d(F.pad(mask, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))


def _latent_mask(mask: Tensor, photo: tuple[int, int], factor: int, device: torch.device) -> Tensor:
    """A mask stretched to the photo's size, padded as the photo is, averaged per latent cell and feathered."""
    mask = mask.to(device)
    if tuple(mask.shape[-2:]) != photo:
        shrinking = mask.shape[-2] > photo[0] or mask.shape[-1] > photo[1]
        mask = F.interpolate(mask, size=photo, mode="bilinear", align_corners=False, antialias=shrinking)
    padded, _ = pad_to_multiple(mask, factor, "reflect", min_size=MIN_LATENT_SIDE * factor)
    cells = F.avg_pool2d(padded, factor)
    return _feather(cells, FEATHER_SIGMA).clamp(0.0, 1.0)


def latent_shares(groups: Sequence[StyleGroup], photo: tuple[int, int], factor: int,
                  device: torch.device) -> list[Share]:
    """Each group's share of every latent cell of a photo of ``photo`` = (height, width) pixels, for a model of
    downsampling ``factor``: its mask there (masks summing over 1 scaled down to sum 1), and for the group without
    masks what the masks leave. A constant mask gives a plain number (exact arithmetic, no resizing)."""
    masked = [g.mask for g in groups if g.mask is not None]
    if not masked:
        return [1.0 for _ in groups]
    constants = [_constant(m) for m in masked]
    values: list[Share]
    rest: Share
    if all(c is not None for c in constants):
        numbers = [float(c) for c in constants if c is not None]
        total = sum(numbers)
        if total > 1.0:
            numbers = [v / total for v in numbers]
        values, rest = list(numbers), max(0.0, 1.0 - sum(numbers))
    else:
        maps: list[Share] = [c if c is not None else _latent_mask(m, photo, factor, device)
                             for m, c in zip(masked, constants, strict=True)]
        total_map = sum(maps[1:], maps[0])
        assert isinstance(total_map, Tensor)
        scale = 1.0 / total_map.clamp(min=1.0)
        values = [m * scale for m in maps]
        rest = (1.0 - total_map * scale).clamp(min=0.0)
    it = iter(values)
    return [next(it) if group.mask is not None else rest for group in groups]
