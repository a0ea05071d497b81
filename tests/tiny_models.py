"""Tiny models for tests: the one place that spells out a small VQGAN or style-transfer configuration.

``tiny_vq_config()`` is a two-level autoencoder (downsampling factor 2) of 8 channels, without attention, for
32 px images, and a book of 16 codes of 8 dimensions; every field can be changed by keyword, so a test that
needs another shape says only what differs. (``quantart_cli.core.config.tiny_vqgan_config`` is the library's
own, larger tiny model, the one the ``tiny`` presets train; tests use it as it is.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from quantart_cli.core.config import AutoencoderConfig, QuantizerConfig, StyleTransferConfig, VQGANConfig
from quantart_cli.core.models import VQGAN, StyleTransfer


def tiny_autoencoder_config(*, ch: int = 8, ch_mult: Sequence[int] = (1, 2), num_res_blocks: int = 1,
                            attn_resolutions: Sequence[int] = (), resolution: int = 32, z_channels: int = 8,
                            **fields) -> AutoencoderConfig:
    return AutoencoderConfig(ch=ch, ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks,
                             attn_resolutions=tuple(attn_resolutions), resolution=resolution, z_channels=z_channels,
                             **fields)


def tiny_vq_config(*, n_embed: int = 16, embed_dim: int | None = None, **autoencoder) -> VQGANConfig:
    """A small VQGAN configuration; ``embed_dim`` defaults to the autoencoder's ``z_channels``."""
    encoder = tiny_autoencoder_config(**autoencoder)
    return VQGANConfig(autoencoder=encoder,
                       quantizer=QuantizerConfig(n_embed=n_embed, embed_dim=encoder.z_channels
                                                 if embed_dim is None else embed_dim))


def tiny_st_config(vq: VQGANConfig | None = None, *, style: VQGANConfig | None = None, sga_blocks: int = 1,
                   **fields) -> StyleTransferConfig:
    """A style-transfer configuration whose two halves are ``vq`` (``tiny_vq_config()`` when not given)."""
    content = vq or tiny_vq_config()
    return StyleTransferConfig(content=content, style=style or content, sga_blocks=sga_blocks, **fields)


def seeded_vqgan(config: VQGANConfig, seed: int | None = None, *, spread_codes: float | None = None) -> VQGAN:
    """``VQGAN(config)`` built after ``torch.manual_seed(seed)`` (when given); ``spread_codes`` draws the book from
    N(0, spread_codes) so that codes spread like encoder outputs and quantization is not degenerate."""
    if seed is not None:
        torch.manual_seed(seed)
    model = VQGAN(config)
    if spread_codes is not None:
        with torch.no_grad():
            model.quantize.embedding.weight.normal_(0, spread_codes)
    return model


def seeded_style_transfer(config: StyleTransferConfig | None = None, seed: int | None = None) -> StyleTransfer:
    """``StyleTransfer(config or tiny_st_config())`` built after ``torch.manual_seed(seed)`` (when given)."""
    if seed is not None:
        torch.manual_seed(seed)
    return StyleTransfer(config or tiny_st_config())


def tiny_preset_vq_config() -> VQGANConfig:
    """The model of the shipped ``tiny`` presets: four levels, 32 latent channels (so each GroupNorm of 32 groups
    at the lowest level and in the SGA module holds one channel), a book of 128 codes, for 64 px images."""
    return tiny_vq_config(ch=32, ch_mult=(1, 2, 2, 4), resolution=64, z_channels=32, n_embed=128)


#: A train-vq preset of ``tiny_vq_config()`` that saves every step (``{steps}`` is filled in).
TINY_VQ_PRESET = """\
steps = {steps}
batch_size = 2
lr = 1e-3
size = 32
workers = 0
save_every = 1
sample_every = 0
log_every = 1
keep_checkpoints = 2

[loss]
perceptual_weight = 0.0
disc_start = 1
disc_ndf = 8
disc_num_layers = 1

[model.autoencoder]
ch = 8
ch_mult = [1, 2]
num_res_blocks = 1
attn_resolutions = []
resolution = 32
z_channels = 8

[model.quantizer]
n_embed = 16
embed_dim = 8
"""


def write_tiny_vq_preset(folder: Path, steps: int) -> Path:
    """``TINY_VQ_PRESET`` of ``steps`` steps as ``folder/tiny-<steps>.toml``."""
    path = folder / f"tiny-{steps}.toml"
    path.write_text(TINY_VQ_PRESET.format(steps=steps))
    return path


def engine_test_model(seed: int, continuous: bool = False) -> StyleTransfer:
    """The style-transfer model the engine's tests run: the core's tiny VQGAN config on both sides, seeded, eval."""
    from quantart_cli.core.config import tiny_vqgan_config

    return seeded_style_transfer(tiny_st_config(tiny_vqgan_config(), continuous=continuous), seed).eval()


def smooth_image(height: int, width: int, seed: int):
    """A seeded (1, 3, H, W) image in [-1, 1], blurred so it has the local structure of a picture."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, height, width, generator=gen) * 2 - 1
    return torch.nn.functional.avg_pool2d(x, 5, 1, 2).clamp(-1, 1)
