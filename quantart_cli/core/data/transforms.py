"""The training transforms: resize (shorter side or squash), crop (centre or random), scale jitter, flips."""

from __future__ import annotations

import random
from typing import Literal

import torch
from PIL import Image

from quantart_cli.core.errors import UsageError
from quantart_cli.core.io.images import (
    image_to_tensor,
)

ResizeMode = Literal["shorter-side", "squash"]
CropMode = Literal["center", "random"]


# ----------------------------------------------------------------------------------- transforms


def check_transform(size: int, resize: str, crop: str) -> None:
    if size < 1:
        raise UsageError(f"Image size must be positive, got {size}.")
    if resize not in ("shorter-side", "squash"):
        raise UsageError(f"Resize mode must be 'shorter-side' or 'squash', got {resize!r}.")
    if crop not in ("center", "random"):
        raise UsageError(f"Crop mode must be 'center' or 'random', got {crop!r}.")


def transform_image(
    image: Image.Image,
    size: int,
    *,
    resize: ResizeMode = "shorter-side",
    crop: CropMode = "center",
    hflip: bool = False,
    rng: random.Random | None = None,
    max_scale: float = 1.0,
) -> torch.Tensor:
    """Resize, crop and optionally flip an RGB image to a ``(3, size, size)`` tensor in ``[-1, 1]``.

    ``shorter-side``: shorter side to ``size`` (bilinear; PIL antialiases when shrinking), then a
    centre or random ``size`` crop. ``squash``: straight to ``size x size`` (aspect not kept), crop is
    a no-op. ``hflip`` flips with probability 0.5. ``rng`` drives the random choices.

    ``max_scale`` > 1 (scale jitter, ``shorter-side`` only): the shorter side goes to ``size * s`` with
    ``s`` uniform in [1, max_scale] (never beyond the image's own size when that is larger than
    ``size``), so crops show the image at several scales; a model trained on small crops then also
    knows the scale of full-resolution photos.
    """
    check_transform(size, resize, crop)
    if max_scale < 1.0:
        raise UsageError(f"max_scale must be at least 1, got {max_scale}.")
    rng = rng or random.Random(0)
    width, height = image.size
    side = size
    if max_scale > 1.0 and resize == "shorter-side":
        ceiling = min(max_scale * size, max(size, min(width, height)))
        side = round(size + rng.random() * (ceiling - size))
    if resize == "squash":
        target = (size, size)
    elif width <= height:
        target = (side, max(side, round(height * side / width)))
    else:
        target = (max(side, round(width * side / height)), side)
    if target != image.size:
        image = image.resize(target, Image.Resampling.BILINEAR)
    width, height = image.size
    if crop == "random":
        left, top = rng.randint(0, width - size), rng.randint(0, height - size)
    else:
        left, top = (width - size) // 2, (height - size) // 2
    if (left, top, width, height) != (0, 0, size, size):
        image = image.crop((left, top, left + size, top + size))
    if hflip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image_to_tensor(image, batch=False)
