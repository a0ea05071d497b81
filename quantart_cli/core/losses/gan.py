"""Adversarial terms: hinge and vanilla discriminator losses, the delayed start and the adaptive GAN weight."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from quantart_cli.core.losses.config import DiscLossKind

ADAPTIVE_WEIGHT_EPS = 1e-4
ADAPTIVE_WEIGHT_MAX = 1e4




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


def d_loss_fn(kind: DiscLossKind) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    try:
        return _D_LOSSES[kind]
    except KeyError:
        raise ValueError(f"unknown disc_loss {kind!r}; expected one of {sorted(_D_LOSSES)}") from None
