"""`quantart convert` between the native and safetensors formats on a tiny model."""

from __future__ import annotations

import torch
from cli_support import run_cli

from quantart_cli.core.config import (
    VQGANConfig,
)
from quantart_cli.core.io.checkpoints import load_model
from quantart_cli.core.io.images import load_image_tensor


def test_convert_between_formats(capsys, saved_vq, pictures, tmp_path):
    target = tmp_path / "vq.safetensors"
    result = run_cli(capsys, "convert", str(saved_vq), str(target))
    assert result.code == 0, result.err
    assert result.out.strip() == str(target)
    a = load_model(saved_vq, expected_kind="vqgan")
    b = load_model(target, expected_kind="vqgan")
    assert isinstance(b.config, VQGANConfig)
    x = load_image_tensor(pictures / "a.png")
    with torch.inference_mode():
        assert torch.equal(a.encode_to_indices(x), b.encode_to_indices(x))
    assert run_cli(capsys, "convert", str(saved_vq), str(target)).code == 2  # exists, no --overwrite
    assert run_cli(capsys, "convert", str(saved_vq), str(tmp_path / "x.bin")).code == 2
