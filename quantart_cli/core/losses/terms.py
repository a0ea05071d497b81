"""What both losses share: the logs they return (detached 0-dim fp32 tensors) and the VQ term."""

from __future__ import annotations

import torch

Logs = dict[str, torch.Tensor]


def scalar(value: float | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float32, device=device).detach()


def vq_term(vq_loss: float | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(vq_loss, torch.Tensor):
        return vq_loss.float().mean()
    return torch.tensor(float(vq_loss), dtype=torch.float32, device=device)
