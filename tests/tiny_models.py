"""Tiny models for tests: the one place that spells out a small VQGAN or style-transfer configuration.

``tiny_vq_config()`` is a two-level autoencoder (downsampling factor 2) of 8 channels, without attention, for
32 px images, and a book of 16 codes of 8 dimensions; every field can be changed by keyword, so a test that
needs another shape says only what differs. (``quantart_cli.core.config.tiny_vqgan_config`` is the library's
own, larger tiny model, the one the ``tiny`` presets train; tests use it as it is.)
"""

from __future__ import annotations

from collections.abc import Sequence

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
