"""Device selection: ``auto`` picks CUDA when present (then Apple MPS), else the CPU."""

from __future__ import annotations

import torch

from quantart_cli.core.errors import NotFoundError, UsageError


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a usable ``torch.device``, or say why it cannot be used."""
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise NotFoundError("`device=mps` was requested but Apple's MPS backend is not available here; "
                                "use `device=cpu`.")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise NotFoundError(f"`device={name}` was requested but no CUDA device is available; use `device=cpu`.")
        if ":" in name:
            index = int(name.split(":", 1)[1])
            if index >= torch.cuda.device_count():
                raise NotFoundError(
                    f"`device={name}` was requested but only {torch.cuda.device_count()} CUDA device(s) exist."
                )
        return torch.device(name)
    raise UsageError(f"Unknown device {name!r}; allowed values are auto, cpu, cuda, cuda:N and mps.")
