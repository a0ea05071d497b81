"""Small images for tests, made on the spot (nothing is read from disk but the packaged samples).

``noise_image``: uniform RGB noise (numpy's generator), for loaders and formats. ``smooth_images``: a folder of
PNGs upsampled from 4x4 random colours, so that they look like blurry photos to a model. ``random_pixel_images``:
a folder of named images of uniform noise from torch's generator, each of its own size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def noise_image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB")
    return image if mode == "RGB" else image.convert(mode)


def smooth_images(folder: Path, count: int, *, seed: int = 0, size: tuple[int, int] = (32, 32)) -> Path:
    """``img_0.png`` ... in ``folder`` (made if needed), ``size`` = (height, width)."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for index in range(count):
        coarse = torch.rand(3, 4, 4, generator=generator)
        smooth = F.interpolate(coarse[None], size=size, mode="bicubic", align_corners=False)[0]
        pixels = (smooth.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"img_{index}.png")
    return folder


def random_pixel_images(folder: Path, sizes: dict[str, tuple[int, int]], *, seed: int) -> Path:
    """One image of uniform noise per ``name: (width, height)``, drawn in that order from one generator."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for name, (width, height) in sizes.items():
        pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / name)
    return folder
