"""Stage 2's loss: reverse (content) term, style mean/std statistics, VQ and the latent GAN terms; optionally
image-space terms on the decoded output (not in the original): style and content on VGG19 features, and the
painting's colour distribution.

Like :class:`~quantart_cli.core.losses.vqgan.VQGANLoss`: a generator and a discriminator step, each
returning ``(loss, logs)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quantart_cli.core.losses.color import color_directions, color_distribution_loss
from quantart_cli.core.losses.config import StyleTransferLossConfig
from quantart_cli.core.losses.gan import adopt_weight, d_loss_fn
from quantart_cli.core.losses.terms import Logs, scalar, vq_term
from quantart_cli.core.nn.discriminator import NLayerDiscriminator

STYLE_STD_EPS = 1e-5


def style_statistics(latent: torch.Tensor, eps: float = STYLE_STD_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel spatial mean and std ``sqrt(unbiased var + eps)`` in fp32, each ``(B, C)``."""
    if latent.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) latent, got shape {tuple(latent.shape)}")
    flat = latent.float().flatten(2)
    if flat.shape[-1] < 2:
        raise ValueError("style statistics need at least 2 spatial positions (unbiased variance)")
    return flat.mean(dim=-1), (flat.var(dim=-1, unbiased=True) + eps).sqrt()


class StyleTransferLoss(nn.Module):
    """Stage-2 loss (QuantArt ``VQLPIPS_Ref``), all terms on ``(B, embed_dim, h, w)`` latents.

    Real samples for the latent discriminator are the quantized style latents ``quant_ref``; fakes
    are the stylized latents ``quant_y``. The GAN weight is the constant ``disc_weight`` (the
    original defines but never uses an adaptive weight here).
    """

    def __init__(self, config: StyleTransferLossConfig | None = None, *, pretrained_vgg: bool = True) -> None:
        super().__init__()
        self.config = config or StyleTransferLossConfig()
        self.discriminator = NLayerDiscriminator(
            self.config.disc_in_channels, ndf=self.config.disc_ndf, n_layers=self.config.disc_num_layers
        )
        self._d_loss = d_loss_fn(self.config.disc_loss)
        self.image_terms: nn.Module | None = None
        if self.config.image_style_weight > 0 or self.config.image_content_weight > 0:
            from quantart_cli.core.losses.vgg import VGGTerms
            from quantart_cli.core.nn.vgg import load_vgg19

            self.image_terms = VGGTerms(load_vgg19("relu4_1", pretrained=pretrained_vgg),
                                        style=self.config.image_style_kind)

    @property
    def uses_images(self) -> bool:
        """Whether the generator loss needs the decoded output, the painting and the photo as images."""
        cfg = self.config
        return cfg.image_style_weight > 0 or cfg.image_content_weight > 0 or cfg.image_color_weight > 0

    def disc_factor_at(self, step: int) -> float:
        return adopt_weight(self.config.disc_factor, step, self.config.disc_start)

    def generator_loss(
        self,
        quant_y: torch.Tensor,
        quant_x: torch.Tensor,
        quant_ref: torch.Tensor,
        vq_loss: float | torch.Tensor,
        step: int,
        images: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, Logs]:
        """SGA step: reverse (content) + VQ + style (mean/std matching) + constant-weight GAN term, plus the image
        terms when their weights are set: ``images`` is (decoded output, painting, photo), all in [-1, 1].

        ``vq_loss`` is the style quantizer's loss on the SGA output (0 for the continuous variant).
        """
        cfg = self.config
        device = quant_y.device
        reverse = F.mse_loss(quant_y.float(), quant_x.detach().float())
        mean_y, std_y = style_statistics(quant_y)
        mean_ref, std_ref = style_statistics(quant_ref.detach())
        style_mean = F.mse_loss(mean_y, mean_ref)
        style_std = F.mse_loss(std_y, std_ref)
        style = style_mean + style_std

        disc_factor = self.disc_factor_at(step)  # D runs at every step, as in the original (0 before disc_start)
        g_loss = -self.discriminator(quant_y.contiguous()).float().mean()

        vq = vq_term(vq_loss, device)
        image_style = image_content = image_color = torch.zeros((), device=device)
        if self.uses_images:
            if images is None:
                raise ValueError("the image-space terms need (decoded output, painting, photo) images")
            if self.image_terms is not None:
                image_style, image_content = self.image_terms(*images, step=step)
            if cfg.image_color_weight > 0:
                image_color = color_distribution_loss(images[0], images[1], color_directions(step))
        total = (
            cfg.reverse_weight * reverse
            + cfg.codebook1_weight * vq
            + cfg.style_weight * style
            + cfg.disc_weight * disc_factor * g_loss
            + cfg.image_style_weight * image_style
            + cfg.image_content_weight * image_content
            + cfg.image_color_weight * image_color
        )
        logs = {
            "total": total,
            "reverse": reverse,
            "style": style,
            "style_mean": style_mean,
            "style_std": style_std,
            "vq": vq,
            "g_loss": g_loss,
            "disc_factor": scalar(disc_factor, device),
        }
        if self.image_terms is not None:
            logs |= {"image_style": image_style, "image_content": image_content}
        if cfg.image_color_weight > 0:
            logs |= {"image_color": image_color}
        return total, {k: v.detach() for k, v in logs.items()}

    def discriminator_loss(
        self, quant_ref: torch.Tensor, quant_y: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, Logs]:
        """Latent discriminator step: ``disc_factor * d_loss(D(sg quant_ref), D(sg quant_y))``."""
        logits_real = self.discriminator(quant_ref.contiguous().detach()).float()
        logits_fake = self.discriminator(quant_y.contiguous().detach()).float()
        d_loss = self.disc_factor_at(step) * self._d_loss(logits_real, logits_fake)
        logs = {"d_loss": d_loss, "logits_real": logits_real.mean(), "logits_fake": logits_fake.mean()}
        return d_loss, {k: v.detach() for k, v in logs.items()}
