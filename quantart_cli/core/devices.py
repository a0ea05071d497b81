"""Device selection (``auto`` picks CUDA when present, then Apple MPS, else the CPU) and the memory order models run
in on it."""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

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


M = TypeVar("M", bound=nn.Module)


def set_memory_format(module: M, channels_last: bool) -> M:
    """Put every 4-D weight of ``module`` (its convolution kernels) in channels-last or in the usual contiguous memory
    order, in place (the values stay the same), and return it.

    The models are plain modules: the memory order is chosen where they run. Inference runs them channels-last: on a
    CPU, oneDNN's convolutions are faster with activations and kernels both in that order (the built-in model
    stylizes a 256 px photo in about 18% less time on one core), and a convolution whose kernel is channels-last
    computes channels-last whatever the order of its input. Results equal the contiguous order's up to float
    rounding. Training runs contiguous, as the original does, unless ``--channels-last``: the other rounding is
    amplified by Adam. The ``state_dict()`` of a channels-last module holds non-contiguous kernels;
    ``save_checkpoint`` copes with them, safetensors' own ``save_file`` wants ``.contiguous()`` copies.
    """
    return module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
