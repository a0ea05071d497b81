"""Stage 1's loss: L1 (+ optional chroma L1) + LPIPS + VQ + hinge PatchGAN with the adaptive weight.

Each loss holds its discriminator and exposes two pure steps of (tensors, global step): a generator
step and a discriminator step. Both return ``(loss, logs)`` where ``logs`` maps every logged term to
a detached 0-dim fp32 tensor (no host sync; call ``.item()`` when reporting). Terms are reduced in
fp32, so the steps work under autocast.

The generator step also runs the discriminator, whose parameters would receive gradients: the training step
runs it with the discriminator frozen (:mod:`quantart_cli.core.train.step`).
"""

from __future__ import annotations

import torch
from torch import nn

from quantart_cli.core.color_space import rgb_to_ycbcr
from quantart_cli.core.losses.config import VQGANLossConfig
from quantart_cli.core.losses.gan import adaptive_gan_weight, adopt_weight, augment_for_discriminator, d_loss_fn
from quantart_cli.core.losses.terms import Logs, scalar, vq_term
from quantart_cli.core.nn.discriminator import NLayerDiscriminator


class VQGANLoss(nn.Module):
    """Stage-1 loss (taming ``VQLPIPSWithDiscriminator``).

    Submodules are named as in the original (``discriminator``, ``perceptual_loss``) so the original
    ``loss.*`` state-dict keys map directly. ``perceptual`` injects a ready LPIPS module (tests share
    one); otherwise one is built when ``perceptual_weight > 0``.
    """

    def __init__(
        self,
        config: VQGANLossConfig | None = None,
        *,
        perceptual: nn.Module | None = None,
        pretrained_backbone: bool = True,
    ) -> None:
        super().__init__()
        self.config = config or VQGANLossConfig()
        self.discriminator = NLayerDiscriminator(
            self.config.disc_in_channels, ndf=self.config.disc_ndf, n_layers=self.config.disc_num_layers
        )
        self._d_loss = d_loss_fn(self.config.disc_loss)
        self.perceptual_loss: nn.Module | None = None
        if self.config.perceptual_weight > 0:
            if perceptual is None:
                perceptual = _build_perceptual(self.config.perceptual_net, pretrained_backbone)
            self.perceptual_loss = perceptual

    def _seen_by_discriminator(self, images: torch.Tensor) -> torch.Tensor:
        images = images.contiguous()
        return augment_for_discriminator(images) if self.config.disc_augment else images

    def disc_factor_at(self, step: int) -> float:
        return adopt_weight(self.config.disc_factor, step, self.config.disc_start)

    def generator_loss(
        self,
        inputs: torch.Tensor,
        reconstructions: torch.Tensor,
        vq_loss: float | torch.Tensor,
        step: int,
        last_layer: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Logs]:
        """Autoencoder step: ``nll + d_weight * disc_factor * g_loss + codebook_weight * vq``.

        ``last_layer`` is the decoder's final conv weight (``decoder.conv_out.weight``); without it the
        adaptive weight is 0. The discriminator runs at every step, as in the original; before ``disc_start`` its
        factor is 0.
        """
        cfg = self.config
        device = inputs.device
        rec = (inputs.float() - reconstructions.float()).abs()
        rec_l1 = rec.mean()
        perceptual = torch.zeros((), device=device)
        if self.perceptual_loss is not None:
            # LPIPS gives one distance per sample, (B, 1, 1, 1), added to every pixel as in the original.
            p_loss = self.perceptual_loss(inputs.contiguous(), reconstructions.contiguous()).float()
            rec = rec + cfg.perceptual_weight * p_loss
            perceptual = p_loss.mean()
        chroma = torch.zeros((), device=device)
        if cfg.chroma_weight > 0:
            # Added to every pixel and channel like the LPIPS distance: (B, 1, H, W) mean chroma error.
            chroma_map = (rgb_to_ycbcr(inputs.float()) - rgb_to_ycbcr(reconstructions.float()))[:, 1:].abs()
            chroma_map = chroma_map.mean(dim=1, keepdim=True)
            rec = rec + cfg.chroma_weight * chroma_map
            chroma = chroma_map.mean()
        nll = rec.mean()

        # As the original: D runs (and its BatchNorm statistics move) and the adaptive weight is computed at every
        # step; before disc_start the factor 0 keeps them out of the loss.
        disc_factor = self.disc_factor_at(step)
        logits_fake = self.discriminator(self._seen_by_discriminator(reconstructions))
        g_loss = -logits_fake.float().mean()
        if disc_factor > 0 or cfg.d_weight_before_start:
            d_weight = adaptive_gan_weight(nll, g_loss, last_layer, cfg.disc_weight)
        else:
            d_weight = torch.zeros((), device=device)

        vq = vq_term(vq_loss, device)
        total = nll + d_weight * disc_factor * g_loss + cfg.codebook_weight * vq
        logs = {
            "total": total,
            "nll": nll,
            "rec_l1": rec_l1,
            "perceptual": perceptual,
            "chroma": chroma,
            "g_loss": g_loss,
            "d_weight": d_weight,
            "disc_factor": scalar(disc_factor, device),
            "vq": vq,
        }
        return total, {k: v.detach() for k, v in logs.items()}

    def discriminator_loss(
        self, inputs: torch.Tensor, reconstructions: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, Logs]:
        """Discriminator step: ``disc_factor * d_loss(D(x), D(x_rec))`` on detached inputs."""
        logits_real = self.discriminator(self._seen_by_discriminator(inputs.detach())).float()
        logits_fake = self.discriminator(self._seen_by_discriminator(reconstructions.detach())).float()
        d_loss = self.disc_factor_at(step) * self._d_loss(logits_real, logits_fake)
        logs = {"d_loss": d_loss, "logits_real": logits_real.mean(), "logits_fake": logits_fake.mean()}
        return d_loss, {k: v.detach() for k, v in logs.items()}


def _build_perceptual(net: str, pretrained: bool) -> nn.Module:
    """LPIPS (downloaded VGG16 backbone) or the bundled VGG19 distance; ``pretrained=False``: random weights."""
    if net == "vgg19":
        from quantart_cli.core.losses.vgg import VGGPerceptualDistance
        from quantart_cli.core.nn.vgg import load_vgg19

        return VGGPerceptualDistance(load_vgg19("relu4_2", pretrained=pretrained))
    from quantart_cli.core.losses.perceptual import build_lpips  # deferred: lpips imports take seconds

    return build_lpips(pretrained_backbone=pretrained)
