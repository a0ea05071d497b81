"""Training losses: VQ + L1/LPIPS + PatchGAN for stage 1, latent content/style/GAN for stage 2.

Each loss holds its discriminator and exposes two pure steps of (tensors, global step): a generator
step and a discriminator step. Both return ``(loss, logs)`` where ``logs`` maps every logged term to
a detached 0-dim fp32 tensor (no host sync; call ``.item()`` when reporting). Terms are reduced in
fp32, so the steps work under autocast.

The generator step also runs the discriminator, whose parameters then receive gradients; zero the
discriminator's gradients before its own step (the shared training loop does).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from quantart_cli.core.color_space import rgb_to_ycbcr
from quantart_cli.core.losses.config import DiscLossKind, StyleTransferLossConfig, VQGANLossConfig
from quantart_cli.core.nn.discriminator import NLayerDiscriminator

__all__ = [
    "StyleTransferLoss",
    "StyleTransferLossConfig",
    "VQGANLoss",
    "VQGANLossConfig",
    "adaptive_gan_weight",
    "adopt_weight",
    "hinge_d_loss",
    "style_statistics",
    "vanilla_d_loss",
]

ADAPTIVE_WEIGHT_EPS = 1e-4
ADAPTIVE_WEIGHT_MAX = 1e4
STYLE_STD_EPS = 1e-5

Logs = dict[str, torch.Tensor]


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))``."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``0.5 * (mean(softplus(-real)) + mean(softplus(fake)))`` (non-saturating BCE on logits)."""
    return 0.5 * (F.softplus(-logits_real.float()).mean() + F.softplus(logits_fake.float()).mean())


_D_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "hinge": hinge_d_loss,
    "vanilla": vanilla_d_loss,
}


def adopt_weight(weight: float, step: int, start: int) -> float:
    """``weight`` from global step ``start`` on, 0 before it."""
    return 0.0 if step < start else weight


def adaptive_gan_weight(
    nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor | None, disc_weight: float = 1.0
) -> torch.Tensor:
    """``disc_weight * clamp(||d nll/dW|| / (||d g_loss/dW|| + 1e-4), 0, 1e4)`` at ``W = last_layer``, detached.

    Balances the GAN gradient against the reconstruction gradient at the decoder's last layer
    (under DDP pass the wrapped module's parameter). Returns 0 when no gradient can be taken (no
    graph: eval, ``torch.no_grad``, or no ``last_layer``) or when the ratio is not finite (fp16
    overflow). Norms are taken in fp32.
    """
    zero = torch.zeros((), device=nll.device, dtype=torch.float32)
    if last_layer is None or not torch.is_grad_enabled() or not (nll.requires_grad and g_loss.requires_grad):
        return zero
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True, allow_unused=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True, allow_unused=True)[0]
    if nll_grad is None or g_grad is None:
        raise ValueError("last_layer does not take part in computing the reconstruction and the GAN loss")
    ratio = nll_grad.float().norm() / (g_grad.float().norm() + ADAPTIVE_WEIGHT_EPS)
    ratio = torch.clamp(ratio, 0.0, ADAPTIVE_WEIGHT_MAX).detach()
    ratio = torch.where(torch.isfinite(ratio), ratio, zero)
    return ratio * disc_weight


def style_statistics(latent: torch.Tensor, eps: float = STYLE_STD_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel spatial mean and std ``sqrt(unbiased var + eps)`` in fp32, each ``(B, C)``."""
    if latent.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) latent, got shape {tuple(latent.shape)}")
    flat = latent.float().flatten(2)
    if flat.shape[-1] < 2:
        raise ValueError("style statistics need at least 2 spatial positions (unbiased variance)")
    return flat.mean(dim=-1), (flat.var(dim=-1, unbiased=True) + eps).sqrt()


def _scalar(value: float | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float32, device=device).detach()


def _vq_term(vq_loss: float | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(vq_loss, torch.Tensor):
        return vq_loss.float().mean()
    return torch.tensor(float(vq_loss), dtype=torch.float32, device=device)


def _d_loss_fn(kind: DiscLossKind) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    try:
        return _D_LOSSES[kind]
    except KeyError:
        raise ValueError(f"unknown disc_loss {kind!r}; expected one of {sorted(_D_LOSSES)}") from None


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
        self._d_loss = _d_loss_fn(self.config.disc_loss)
        self.perceptual_loss: nn.Module | None = None
        if self.config.perceptual_weight > 0:
            if perceptual is None:
                from quantart_cli.core.losses.perceptual import build_lpips  # deferred: lpips imports take seconds

                perceptual = build_lpips(pretrained_backbone=pretrained_backbone)
            self.perceptual_loss = perceptual

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
        adaptive weight is 0. The discriminator is not run while ``step < disc_start``.
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

        disc_factor = self.disc_factor_at(step)
        if disc_factor > 0:
            logits_fake = self.discriminator(reconstructions.contiguous())
            g_loss = -logits_fake.float().mean()
            d_weight = adaptive_gan_weight(nll, g_loss, last_layer, cfg.disc_weight)
        else:
            g_loss = torch.zeros((), device=device)
            d_weight = torch.zeros((), device=device)

        vq = _vq_term(vq_loss, device)
        total = nll + d_weight * disc_factor * g_loss + cfg.codebook_weight * vq
        logs = {
            "total": total,
            "nll": nll,
            "rec_l1": rec_l1,
            "perceptual": perceptual,
            "chroma": chroma,
            "g_loss": g_loss,
            "d_weight": d_weight,
            "disc_factor": _scalar(disc_factor, device),
            "vq": vq,
        }
        return total, {k: v.detach() for k, v in logs.items()}

    def discriminator_loss(
        self, inputs: torch.Tensor, reconstructions: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, Logs]:
        """Discriminator step: ``disc_factor * d_loss(D(x), D(x_rec))`` on detached inputs."""
        logits_real = self.discriminator(inputs.contiguous().detach()).float()
        logits_fake = self.discriminator(reconstructions.contiguous().detach()).float()
        d_loss = self.disc_factor_at(step) * self._d_loss(logits_real, logits_fake)
        logs = {"d_loss": d_loss, "logits_real": logits_real.mean(), "logits_fake": logits_fake.mean()}
        return d_loss, {k: v.detach() for k, v in logs.items()}


class StyleTransferLoss(nn.Module):
    """Stage-2 loss (QuantArt ``VQLPIPS_Ref``), all terms on ``(B, embed_dim, h, w)`` latents.

    Real samples for the latent discriminator are the quantized style latents ``quant_ref``; fakes
    are the stylized latents ``quant_y``. The GAN weight is the constant ``disc_weight`` (the
    original defines but never uses an adaptive weight here).
    """

    def __init__(self, config: StyleTransferLossConfig | None = None) -> None:
        super().__init__()
        self.config = config or StyleTransferLossConfig()
        self.discriminator = NLayerDiscriminator(
            self.config.disc_in_channels, ndf=self.config.disc_ndf, n_layers=self.config.disc_num_layers
        )
        self._d_loss = _d_loss_fn(self.config.disc_loss)

    def disc_factor_at(self, step: int) -> float:
        return adopt_weight(self.config.disc_factor, step, self.config.disc_start)

    def generator_loss(
        self,
        quant_y: torch.Tensor,
        quant_x: torch.Tensor,
        quant_ref: torch.Tensor,
        vq_loss: float | torch.Tensor,
        step: int,
    ) -> tuple[torch.Tensor, Logs]:
        """SGA step: reverse (content) + VQ + style (mean/std matching) + constant-weight GAN term.

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

        disc_factor = self.disc_factor_at(step)
        if disc_factor > 0:
            g_loss = -self.discriminator(quant_y.contiguous()).float().mean()
        else:
            g_loss = torch.zeros((), device=device)

        vq = _vq_term(vq_loss, device)
        total = (
            cfg.reverse_weight * reverse
            + cfg.codebook1_weight * vq
            + cfg.style_weight * style
            + cfg.disc_weight * disc_factor * g_loss
        )
        logs = {
            "total": total,
            "reverse": reverse,
            "style": style,
            "style_mean": style_mean,
            "style_std": style_std,
            "vq": vq,
            "g_loss": g_loss,
            "disc_factor": _scalar(disc_factor, device),
        }
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
