"""Typed configurations of the two training losses.

Kept apart from ``losses.py`` so settings and the CLI can read them without importing torch.
Defaults are the original's shipped values (stage 1: wikiart fine-tuning; stage 2: coco2art).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DiscLossKind = Literal["hinge", "vanilla"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VQGANLossConfig(_Strict):
    """Stage 1: L1 + LPIPS reconstruction, VQ loss, PatchGAN on images with an adaptive weight."""

    codebook_weight: float = Field(1.0, ge=0.0, description="Weight of the quantizer loss.")
    perceptual_weight: float = Field(1.0, ge=0.0, description="Weight of LPIPS(vgg); 0 builds no LPIPS.")
    chroma_weight: float = Field(
        0.0,
        ge=0.0,
        description="Extra L1 on the chroma (Cb, Cr of BT.601 YCbCr) of the reconstruction, for models trained "
        "without LPIPS, which otherwise learn colour last (0: the original's loss).",
    )
    disc_weight: float = Field(0.8, ge=0.0, description="Multiplier of the adaptive GAN weight.")
    disc_factor: float = Field(1.0, ge=0.0, description="GAN factor once step >= disc_start.")
    disc_start: int = Field(10000, ge=0, description="Global step at which the GAN terms switch on.")
    disc_loss: DiscLossKind = Field("hinge", description="Discriminator loss.")
    disc_ndf: int = Field(64, ge=1, description="Discriminator base channels.")
    disc_num_layers: int = Field(3, ge=0, description="Stride-2 stages of the PatchGAN.")
    disc_in_channels: int = Field(3, ge=1, description="Image channels seen by the discriminator.")


class StyleTransferLossConfig(_Strict):
    """Stage 2, all in latent space: content (reverse), VQ, AdaIN-statistics style, latent PatchGAN."""

    reverse_weight: float = Field(1.0, ge=0.0, description="Weight of MSE(quant_y, quant_x).")
    codebook1_weight: float = Field(1.0, ge=0.0, description="Weight of the style quantizer's VQ loss.")
    style_weight: float = Field(10.0, ge=0.0, description="Weight of the channel mean/std matching.")
    disc_weight: float = Field(1.0, ge=0.0, description="Constant GAN weight (no adaptive weighting).")
    disc_factor: float = Field(0.8, ge=0.0, description="GAN factor once step >= disc_start.")
    disc_start: int = Field(0, ge=0, description="Global step at which the GAN terms switch on.")
    disc_loss: DiscLossKind = Field("hinge", description="Discriminator loss.")
    disc_ndf: int = Field(64, ge=1, description="Discriminator base channels.")
    disc_num_layers: int = Field(0, ge=0, description="Stride-2 stages of the latent PatchGAN.")
    disc_in_channels: int = Field(256, ge=1, description="Latent channels (set to the model's embed_dim).")
