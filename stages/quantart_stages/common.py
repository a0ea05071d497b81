"""Settings shared by several stages (training loop knobs, checkpoint trust)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from quantart_cli.settings import StageSettings, cli_option


class CheckpointReadingSettings(StageSettings):
    trust_checkpoint: bool = cli_option(
        False,
        "Allow a full unpickle of checkpoints that cannot be read safely (only for files from a source you trust).",
    )


class TrainingSettings(CheckpointReadingSettings):
    """Knobs of the shared training loop (training.py), identical for train-vq and train-sga."""

    out: Path | None = cli_option(None, "Run folder (default: a new folder under the runs dir).", short="-o")
    steps: int = cli_option(1000, "Optimizer steps to train.", ge=1)
    batch_size: int = cli_option(5, "Images per step on each device.", ge=1)
    accumulate: int = cli_option(1, "Gradient accumulation: micro-batches per optimizer step.", ge=1)
    base_lr: float = cli_option(4.5e-6, "Base learning rate; lr = base_lr x batch x GPUs x accumulate.", gt=0)
    lr: float | None = cli_option(None, "Absolute learning rate (overrides the base_lr scaling).", gt=0)
    size: int = cli_option(256, "Training image size in pixels (a multiple of 16).", ge=16, multiple_of=16)
    random_crop: bool = cli_option(False, "Random crops instead of the original's centre crop / squash.")
    hflip: bool = cli_option(False, "Random horizontal flips.")
    workers: int = cli_option(2, "DataLoader worker processes.", ge=0)
    precision: Literal["fp32", "bf16", "fp16"] = cli_option("fp32", "Mixed precision (fp16 uses a GradScaler).")
    grad_clip: float | None = cli_option(None, "Clip the gradient norm to this value.", gt=0)
    channels_last: bool = cli_option(False, "Use the channels_last memory format (faster convs on recent GPUs).")
    compile: bool = cli_option(False, "torch.compile the model (opt-in; slow first steps).")
    seed: int = cli_option(23, "Random seed (the original's default is 23).")
    save_every: int = cli_option(1000, "Save a checkpoint every N steps (and at the end).", ge=1)
    keep_checkpoints: int = cli_option(3, "Older checkpoints kept besides last.pt.", ge=0)
    sample_every: int = cli_option(500, "Write a sample grid PNG every N steps (0: never).", ge=0)
    log_every: int = cli_option(10, "Append to metrics.jsonl every N steps.", ge=1)
    resume: Path | None = cli_option(None, "Continue the run in this folder exactly where it stopped.")
