"""Typed model configurations.

A checkpoint stores exactly these objects (``model_dump()``), and a model is rebuilt from them with no
other input: ``VQGAN(VQGANConfig(**cfg))``. They hold constructor arguments only, never training
options. Pure pydantic: importing this module must not import torch (the CLI reads these classes
to build its options before any model exists).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AutoencoderConfig(_Strict):
    """Encoder/decoder shape (taming-transformers ``ddconfig``). Defaults are the f16 model of QuantArt."""

    ch: int = Field(128, ge=1, description="Base channel count.")
    ch_mult: tuple[int, ...] = Field((1, 1, 2, 2, 4), min_length=1, description="Channel multiplier per level.")
    num_res_blocks: int = Field(2, ge=1, description="ResnetBlocks per encoder level (decoder uses one more).")
    attn_resolutions: tuple[int, ...] = Field((16,), description="Feature sizes at which attention is applied.")
    resolution: int = Field(256, ge=1, description="Nominal training resolution (selects attention levels).")
    in_channels: int = Field(3, ge=1)
    out_ch: int = Field(3, ge=1)
    z_channels: int = Field(256, ge=1, description="Encoder output channels.")
    double_z: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    norm_groups: int = Field(
        32,
        ge=1,
        description="GroupNorm groups (the original's 32). A narrow model needs fewer: with one channel per "
        "group every norm removes each channel's mean, and with it the image's colour.",
    )

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


class QuantizerConfig(_Strict):
    """Vector quantizer. Defaults reproduce the original (legacy loss, plain L2 codes)."""

    n_embed: int = Field(1024, ge=2, description="Number of codes.")
    embed_dim: int = Field(256, ge=1, description="Latent channels seen by the quantizer.")
    beta: float = Field(0.25, ge=0.0, description="Commitment weight.")
    legacy_loss: bool = Field(
        True,
        description="Original taming loss: beta on the codebook term instead of the commitment term.",
    )
    l2_normalize: bool = Field(False, description="Search and store L2-normalized codes (cosine codebook).")
    code_dim: int | None = Field(
        None, ge=1, description="Low-dimensional code space with in/out projections (None: codes are embed_dim)."
    )


class VQGANConfig(_Strict):
    """Stage-1 model: encoder, quant_conv, quantize, post_quant_conv, decoder."""

    kind: Literal["vqgan"] = "vqgan"
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    quantizer: QuantizerConfig = QuantizerConfig()


class StyleTransferConfig(_Strict):
    """Stage-2 model: a content VQGAN's encoder side, a style VQGAN's encoder + decoder side, and SGA."""

    kind: Literal["style-transfer"] = "style-transfer"
    content: VQGANConfig = VQGANConfig()
    style: VQGANConfig = VQGANConfig()
    sga_blocks: int = Field(6, ge=1, description="Style-Guided Attention blocks.")
    use_residual: bool = Field(True, description="Residual connections in the SGA attention blocks.")
    sga_padding: Literal["zeros", "replicate"] = Field(
        "zeros",
        description="Padding of the SGA module's convolutions: 'zeros' (the original) or 'replicate' (the module "
        "cannot see where the image ends, so it cannot learn to draw a frame along it).",
    )
    continuous: bool = Field(
        False, description="Continuous variant: no quantizers around the SGA module (paper's visual-fidelity path)."
    )

    @model_validator(mode="after")
    def _same_latent_width(self) -> StyleTransferConfig:
        c, s = self.content.quantizer.embed_dim, self.style.quantizer.embed_dim
        if c != s:
            raise ValueError(
                f"content and style VQGANs must share embed_dim, got {c} (content) and {s} (style)"
            )
        return self

    @property
    def embed_dim(self) -> int:
        return self.style.quantizer.embed_dim


ModelConfig = VQGANConfig | StyleTransferConfig


def tiny_vqgan_config() -> VQGANConfig:
    """A VQGAN small enough to train on a laptop CPU in minutes (used by tests and the tiny preset)."""
    return VQGANConfig(
        autoencoder=AutoencoderConfig(
            ch=32, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=1, attn_resolutions=(16,), resolution=256, z_channels=64
        ),
        quantizer=QuantizerConfig(n_embed=128, embed_dim=64),
    )
