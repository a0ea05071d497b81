"""Adversarial terms: hinge and vanilla discriminator losses, the delayed start and the adaptive GAN weight."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from quantart_cli.core.losses.config import DiscLossKind

ADAPTIVE_WEIGHT_EPS = 1e-4
ADAPTIVE_WEIGHT_MAX = 1e4

#: Differentiable augmentation: shift by up to this fraction of each side, erase a square of this fraction.
AUGMENT_SHIFT = 0.125
AUGMENT_CUTOUT = 0.5


def augment_for_discriminator(x: Tensor) -> Tensor:
    """Differentiable augmentation of a batch the discriminator is about to see (Zhao et al., 2020): each sample
    is shifted by a random whole number of pixels (up to 1/8 of each side, zeros fill in) and a random square of
    half the side is erased. Gradients flow through to ``x``; with few training images this keeps the
    discriminator from memorising them, which otherwise makes the generator draw artefacts."""
    b, _, h, w = x.shape
    device = x.device
    dy = torch.randint(-int(h * AUGMENT_SHIFT), int(h * AUGMENT_SHIFT) + 1, (b, 1, 1), device=device)
    dx = torch.randint(-int(w * AUGMENT_SHIFT), int(w * AUGMENT_SHIFT) + 1, (b, 1, 1), device=device)
    rows = torch.arange(h, device=device).view(1, h, 1) - dy  # source row of each output row
    cols = torch.arange(w, device=device).view(1, 1, w) - dx
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    flat = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(b, 1, h * w).expand(-1, x.shape[1], -1)
    shifted = x.flatten(2).gather(2, flat).view_as(x) * inside.unsqueeze(1).to(x.dtype)
    ch, cw = max(1, int(h * AUGMENT_CUTOUT)), max(1, int(w * AUGMENT_CUTOUT))
    cy = torch.randint(0, h - ch + 1, (b, 1, 1), device=device)
    cx = torch.randint(0, w - cw + 1, (b, 1, 1), device=device)
    r = torch.arange(h, device=device).view(1, h, 1)
    c = torch.arange(w, device=device).view(1, 1, w)
    erased = (r >= cy) & (r < cy + ch) & (c >= cx) & (c < cx + cw)
    return shifted * (~erased).unsqueeze(1).to(x.dtype)


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
