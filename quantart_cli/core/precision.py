"""Arithmetic precision: which precisions a device can run a job in, and the autocast context for each.

``fp32`` is plain float32. ``bf16`` and ``fp16`` run the networks under ``torch.autocast``: convolutions and
matrix products in the lower precision, while what needs float32 stays there (the vector quantizer's
nearest-code search always runs in float32, see :mod:`quantart_cli.core.nn.vq`). Torch-free at import, so the
option groups can name :data:`Precision`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Literal

from quantart_cli.core.errors import UsageError

if TYPE_CHECKING:
    import torch

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")


def check_precision(device: torch.device, precision: str, *, training: bool = True) -> None:
    """Refuse precisions the device cannot run (train, or with ``training=False`` stylize) in, with one sentence."""
    if precision not in PRECISIONS:
        raise UsageError(f"Unknown precision {precision!r}; use fp32, bf16 or fp16.")
    if precision == "fp16" and device.type != "cuda":
        why = "it relies on a CUDA gradient scaler" if training else "CPUs run float16 convolutions slowly"
        raise UsageError(f"--precision fp16 needs a CUDA GPU ({why}); use bf16 or fp32 on {device.type}.")
    import torch

    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError("--precision bf16 is not supported by this GPU; use fp16 or fp32.")


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for bf16 / fp16 on ``device``; nothing for fp32."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
