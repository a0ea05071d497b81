"""Fixtures shared by the stage tests of checkpoints and codes (convert, encode)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from image_files import random_pixel_images

from quantart_cli.core.config import tiny_vqgan_config
from quantart_cli.core.io.checkpoints import save_checkpoint
from quantart_cli.core.models import VQGAN


@pytest.fixture(scope="module")
def saved_vq(tmp_path_factory) -> Path:
    """A tiny VQGAN (random weights, seed 0) saved as a native checkpoint."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_vq.pt"
    save_checkpoint(VQGAN(tiny_vqgan_config()), path)
    return path


@pytest.fixture
def pictures(tmp_path) -> Path:
    """A folder of three random-pixel images: two PNGs of 48x32 and a JPEG of 50x37 (a size no VQGAN divides)."""
    return random_pixel_images(tmp_path / "images", {"a.png": (48, 32), "odd.jpg": (50, 37), "b.png": (48, 32)},
                               seed=1)
