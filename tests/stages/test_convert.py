"""`quantart convert` between the native and safetensors formats on a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_support import run_cli
from image_files import random_pixel_images

from quantart_cli.core.config import (
    VQGANConfig,
    tiny_vqgan_config,
)
from quantart_cli.core.io.checkpoints import load_model, save_checkpoint
from quantart_cli.core.io.images import load_image_tensor
from quantart_cli.core.models import VQGAN


@pytest.fixture(scope="module")
def vq_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_vq.pt"
    save_checkpoint(VQGAN(tiny_vqgan_config()), path)
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    return random_pixel_images(tmp_path / "images", {"a.png": (48, 32), "odd.jpg": (50, 37), "b.png": (48, 32)},
                               seed=1)


def test_convert_between_formats(capsys, vq_ckpt, images, tmp_path):
    target = tmp_path / "vq.safetensors"
    result = run_cli(capsys, "convert", str(vq_ckpt), str(target))
    assert result.code == 0, result.err
    assert result.out.strip() == str(target)
    a = load_model(vq_ckpt, expected_kind="vqgan")
    b = load_model(target, expected_kind="vqgan")
    assert isinstance(b.config, VQGANConfig)
    x = load_image_tensor(images / "a.png")
    with torch.inference_mode():
        assert torch.equal(a.encode_to_indices(x), b.encode_to_indices(x))
    assert run_cli(capsys, "convert", str(vq_ckpt), str(target)).code == 2  # exists, no --overwrite
    assert run_cli(capsys, "convert", str(vq_ckpt), str(tmp_path / "x.bin")).code == 2
