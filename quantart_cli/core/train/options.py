"""The shared training loop's knobs, declared once (torch-free).

``train-vq`` and ``train-sga`` inherit these fields into their settings, so ``--help``, presets,
``QUANTART_*`` variables and Python callers of :func:`~quantart_cli.core.train.loop.run_training` see the
same names, defaults and limits.
"""

from __future__ import annotations

from typing import Literal

from quantart_cli.core.options import OptionGroup, cli_option
from quantart_cli.core.precision import Precision

__all__ = ["LoopOptions", "OptimizerOrder", "Precision"]

OptimizerOrder = Literal["sequential", "joint"]


class LoopOptions(OptionGroup):
    """How long and how to train, and how often to log, sample and save."""

    steps: int = cli_option(1000, "Optimizer steps to train.", ge=1)
    accumulate: int = cli_option(1, "Gradient accumulation: micro-batches per optimizer step.", ge=1)
    precision: Precision = cli_option("fp32", "Mixed precision (fp16 uses a GradScaler).")
    grad_clip: float | None = cli_option(None, "Clip the gradient norm to this value.", gt=0)
    seed: int = cli_option(23, "Random seed (the original's default is 23).")
    save_every: int = cli_option(1000, "Save a checkpoint every N steps (and at the end).", ge=1)
    keep_checkpoints: int = cli_option(3, "Older checkpoints kept besides last.pt.", ge=0)
    sample_every: int = cli_option(500, "Write a sample grid PNG every N steps (0: never).", ge=0)
    log_every: int = cli_option(10, "Append to metrics.jsonl every N steps.", ge=1)
    optimizer_order: OptimizerOrder = cli_option(
        "sequential",
        "sequential (the original's order): the generator steps, the batch is run again, then the discriminator "
        "steps on the updated generator's output, and every optimizer steps every batch; joint: one forward for "
        "both (about 20% faster on a CPU; D sees the fakes from before the generator's update and skips its steps "
        "before disc_start).",
    )
