"""Optimizers: the original's Adam betas and learning-rate scaling rule."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

ADAM_BETAS = (0.5, 0.9)


def scaled_lr(base_lr: float, batch_size: int, world_size: int, accumulate: int) -> float:
    """The original's rule: ``lr = base_lr x batch x GPUs x accumulation``."""
    return base_lr * batch_size * world_size * accumulate


def params_with_grad(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


def first_lr(optimizers: Mapping[str, torch.optim.Optimizer]) -> float:
    for optimizer in optimizers.values():
        return float(optimizer.param_groups[0]["lr"])
    return 0.0


def make_adam(params: Iterator[torch.nn.Parameter] | list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with the original's betas (0.5, 0.9)."""
    return torch.optim.Adam(list(params), lr=lr, betas=ADAM_BETAS)
