"""Mixed precision: which precisions a device can train in, and the autocast context for each."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from quantart_cli.core.errors import UsageError

# ---------------------------------------------------------------------------------------- precision


def check_precision(device: torch.device, precision: str) -> None:
    """Refuse precisions the device cannot train in, with one sentence."""
    if precision not in ("fp32", "bf16", "fp16"):
        raise UsageError(f"Unknown precision {precision!r}; use fp32, bf16 or fp16.")
    if precision == "fp16" and device.type != "cuda":
        raise UsageError(
            "--precision fp16 needs a CUDA GPU (it relies on a CUDA gradient scaler); "
            f"use bf16 or fp32 on {device.type}."
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError("--precision bf16 is not supported by this GPU; use fp16 or fp32.")


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
