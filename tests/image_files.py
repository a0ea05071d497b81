"""Small images for tests, made on the spot (nothing is read from disk but the packaged samples).

Files: ``noise_image`` (uniform RGB noise from numpy's generator, for loaders and formats), ``write_image``,
``truncated_jpeg``; folders: ``smooth_images`` (PNGs upsampled from 4x4 random colours, so that they look like
blurry photos to a model), ``random_pixel_images`` (named images of uniform noise from torch's generator, each of
its own size). Tensors in [-1, 1]: ``random_batch``, ``smooth_batch``.
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


def write_image(path: Path, image: Image.Image | None = None, **save_options) -> Path:
    """``image`` (24x16 noise when not given) saved at ``path``, folders made as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (image or noise_image(24, 16)).save(path, **save_options)
    return path


def truncated_jpeg(path: Path) -> Path:
    """A 64x64 JPEG cut in half: its header reads, its pixels do not."""
    write_image(path, noise_image(64, 64), quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def random_batch(seed: int, size: tuple[int, int] = (48, 64), shift: float = 0.0) -> torch.Tensor:
    """A (1, 3, H, W) tensor of uniform noise in [-0.8, 0.8] moved by ``shift``, clamped to [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 3, *size, generator=generator) * 1.6 - 0.8 + shift).clamp(-1, 1)


def smooth_batch(seed: int, size: int = 48, batch: int = 2) -> torch.Tensor:
    """Smooth random images in [-1, 1]: low-resolution noise upsampled, so blurring changes them only a little."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, size // 8, size // 8, generator=generator) * 2 - 1
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
