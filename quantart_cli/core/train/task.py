"""What the loop trains: the :class:`TrainingTask` protocol, its step context, the callbacks that report
progress, the loop's options and its result."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from quantart_cli.core.precision import autocast_context

# ------------------------------------------------------------------------------------ task protocol


class StepContext:
    """Handed to :meth:`TrainingTask.micro_step`: autocast for forwards, ``backward`` for losses."""

    def __init__(self, device: torch.device, precision: str, scaler: torch.amp.GradScaler, accumulate: int) -> None:
        self.device = device
        self.precision = precision
        self.scaler = scaler
        self.accumulate = accumulate
        self.losses: list[torch.Tensor] = []

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast_context(self.device, self.precision)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of ``loss / accumulate`` (scaled for fp16); call it outside :meth:`autocast`."""
        self.losses.append(loss.detach().float().reshape(()))
        self.scaler.scale(loss / self.accumulate).backward()


class TrainingTask(Protocol):
    """The stage-specific half of training. Methods marked collective run on every rank at the same step."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers in the order they step each iteration (e.g. generator, then discriminator)."""
        ...

    def train(self) -> None:
        """Put the trained modules in training mode."""
        ...

    def micro_step(
        self, batch: Any, step: int, ctx: StepContext, optimizers: tuple[str, ...]
    ) -> Mapping[str, torch.Tensor]:
        """Forward and backward one micro-batch at global ``step`` (0-based) for the losses of ``optimizers``; return
        0-dim detached logs.

        In the ``sequential`` order the loop calls this once per optimizer (in :meth:`optimizers` order) with the
        same batch, each call after the previous optimizers stepped; in the ``joint`` order once with all of them.
        """
        ...

    def no_sync(self) -> contextlib.AbstractContextManager[Any]:
        """Context for micro-batches whose gradients are not synchronised yet (DDP ``no_sync``)."""
        ...

    def before_optimizer_step(self, name: str) -> None:
        """Collective: e.g. average gradients that DDP does not handle."""
        ...

    def after_step(self, step: int) -> None:
        """Collective, after the optimizers stepped (``step`` counts finished steps)."""
        ...

    def metrics(self, step: int) -> dict[str, float]:
        """Collective, at log steps: extra metrics for ``metrics.jsonl`` (e.g. codebook health)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Small extra state for ``state.pt`` (tensors and plain types)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def save_model(self, path: Path, step: int) -> None:
        """Write the native model checkpoint (rank 0 only)."""
        ...

    def load_model(self, path: Path) -> int:
        """Restore weights from a checkpoint written by :meth:`save_model`; return its step."""
        ...

    def write_sample(self, path: Path) -> None:
        """Write a sample image (rank 0 only)."""
        ...


class TrainingCallbacks:
    """Progress hooks (no-ops here); a CLI maps them onto its progress bar. Called on every rank."""

    def on_start(self, start_step: int, total_steps: int) -> None:
        pass

    def on_step(self, step: int, record: dict[str, Any] | None) -> None:
        """After each step; ``record`` is the metrics line at log steps, else None."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        pass

    def on_sample(self, step: int, path: Path) -> None:
        pass

    def on_message(self, text: str) -> None:
        pass


@dataclass
class TrainingResult:
    start_step: int
    final_step: int
    seconds: float
    last_record: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    interrupted: bool = False
