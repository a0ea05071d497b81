"""What the loop trains: the :class:`TrainingTask` protocol and the :class:`StepContext` a step runs under (the step
itself is :mod:`.step`), the callbacks that report progress, and the loop's result."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from quantart_cli.core.precision import autocast_context
from quantart_cli.core.train.optim import params_with_grad

if TYPE_CHECKING:
    from quantart_cli.core.train.step import Adversary, Generator

# ------------------------------------------------------------------------------------ task protocol


class StepContext:
    """What a step runs under: autocast for forwards, ``backward`` for losses (each kept in ``losses`` for the finite
    check), ``step`` for optimizers (gradients unscaled and clipped to ``grad_clip``)."""

    def __init__(self, device: torch.device, precision: str, scaler: torch.amp.GradScaler, accumulate: int,
                 grad_clip: float | None = None) -> None:
        self.device = device
        self.precision = precision
        self.scaler = scaler
        self.accumulate = accumulate
        self.grad_clip = grad_clip
        self.losses: list[torch.Tensor] = []

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast_context(self.device, self.precision)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of ``loss / accumulate`` (scaled for fp16); call it outside :meth:`autocast`."""
        self.losses.append(loss.detach().float().reshape(()))
        self.scaler.scale(loss / self.accumulate).backward()

    def step(self, optimizer: torch.optim.Optimizer, before: Callable[[], None] | None = None) -> None:
        """Step ``optimizer`` on its gradients, after ``before()`` (e.g. averaging them over ranks); an optimizer
        without gradients (the joint order's discriminator before ``disc_start``) is skipped."""
        if not params_with_grad(optimizer):
            return
        if before is not None:
            before()
        if self.grad_clip is not None:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params_with_grad(optimizer), self.grad_clip)
        self.scaler.step(optimizer)


class TrainingTask(Protocol):
    """A generator trained against a discriminator: what :func:`~quantart_cli.core.train.step.train_step` and the loop
    need of a stage. Methods marked collective run on every rank at the same step."""

    generator: Generator
    adversary: Adversary

    def train(self) -> None:
        """Put the trained modules in training mode."""
        ...

    def forward(self, batch: Any, ctx: StepContext) -> Any:
        """The generator's output for a micro-batch (under autocast; without gradients in D's own pass)."""
        ...

    def generator_loss(self, batch: Any, out: Any, step: int, ctx: StepContext) -> tuple[torch.Tensor,
                                                                                         Mapping[str, torch.Tensor]]:
        """The generator's loss on :meth:`forward`'s output at global ``step`` (0-based) and its 0-dim detached logs;
        called once per micro-batch, on the forward that trains the generator."""
        ...

    def discriminator_inputs(self, batch: Any, out: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(real samples, fakes) D compares, for a micro-batch and :meth:`forward`'s output on it."""
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
