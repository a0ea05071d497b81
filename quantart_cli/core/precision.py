"""Arithmetic precision: which precisions a device can run a job in, and the autocast context for each.

``fp32`` is plain float32. ``bf16`` and ``fp16`` run the networks under ``torch.autocast``: convolutions and
matrix products in the lower precision, while what needs float32 stays there (the vector quantizer's
nearest-code search always runs in float32, see :mod:`quantart_cli.core.nn.vq`). Torch-free at import, so the
option groups can name :data:`Precision`.

On a CPU, bf16 is only fast where the CPU computes bfloat16 itself (AVX-512 BF16, AMX, Arm's BF16 extension:
:func:`cpu_has_native_bf16`); elsewhere torch emulates it, several times slower than float32, so stylizing picks
float32 there (:func:`stylize_precision`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from quantart_cli.core.errors import UsageError

if TYPE_CHECKING:
    import torch

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")

#: Where Linux lists the CPU's instruction-set flags.
CPUINFO = Path("/proc/cpuinfo")
#: Flags (x86 ``flags``, Arm ``Features``) of CPUs that compute bfloat16 themselves.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
#: The one-line note when bf16 is asked for on a CPU without them.
BF16_ON_SLOW_CPU = ("bf16 runs several times slower than fp32 on this CPU (it has no AVX-512 BF16, AMX or Arm "
                    "BF16 instructions), so fp32 is used")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware: torch says so, or the Linux flags list AVX-512 BF16, AMX
    BF16 or Arm BF16. False where neither can tell (bf16 is then not known to be fast)."""
    return _torch_reports_bf16() or bool(_cpu_flags() & NATIVE_BF16_FLAGS)


def _torch_reports_bf16() -> bool:
    import torch

    probe = getattr(getattr(torch, "cpu", None), "_is_avx512_bf16_supported", None)  # x86 only; private in torch
    try:
        return bool(probe()) if probe is not None else False
    except Exception:  # a torch without the probe, or one that cannot answer here
        return False


def _cpu_flags() -> set[str]:
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def stylize_precision(device: torch.device, precision: str) -> tuple[str, str | None]:
    """The precision stylizing runs in, and the note to show when it is not the one asked for: bf16 on a CPU
    without native bf16 (:func:`cpu_has_native_bf16`) runs as fp32, which is faster there than emulated bf16."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        return "fp32", BF16_ON_SLOW_CPU
    return precision, None


def check_precision(device: torch.device, precision: str, *, training: bool = True) -> None:
    """Refuse precisions the device cannot run (train, or with ``training=False`` stylize) in, with one sentence."""
    if precision not in PRECISIONS:
        raise UsageError(f"Unknown precision {precision!r}; use fp32, bf16 or fp16.")
    if precision == "fp16" and device.type != "cuda":
        why = "it relies on a CUDA gradient scaler" if training else "CPUs run float16 convolutions slowly"
        raise UsageError(f"`precision=fp16` needs a CUDA GPU ({why}); use bf16 or fp32 on {device.type}.")
    import torch

    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError("`precision=bf16` is not supported by this GPU; use fp16 or fp32.")


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for bf16 / fp16 on ``device``; nothing for fp32."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
