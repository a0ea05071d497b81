"""``quantart train-vq``: stage 1, a VQGAN codebook (taming-transformers VQGAN with the QuantArt recipe)."""

from __future__ import annotations

from pathlib import Path

from quantart_cli.config import VQGANConfig
from quantart_cli.errors import NotBuiltError
from quantart_cli.loss_config import VQGANLossConfig
from quantart_cli.plugins import RunContext, Stage
from quantart_cli.settings import cli_option
from quantart_stages.common import TrainingSettings


class TrainVQSettings(TrainingSettings):
    data: list[Path] = cli_option([], "Training images: folder (recursive), list file or CSV manifest (repeatable).")
    init_from: Path | None = cli_option(None, "Fine-tune from this VQGAN checkpoint (native or original).")
    restart_dead_codes: bool = cli_option(False, "Re-seed unused codes from recent encoder outputs.")
    dead_code_window: int = cli_option(200, "Steps over which code usage is counted for health and restarts.", ge=1)
    model: VQGANConfig = VQGANConfig()
    loss: VQGANLossConfig = VQGANLossConfig()


def run(settings: TrainVQSettings, ctx: RunContext) -> int:
    raise NotBuiltError("train-vq is registered but VQGAN training is not built yet in this version.")


stage = Stage(
    name="train-vq",
    help="Train a VQGAN codebook (stage 1).",
    settings=TrainVQSettings,
    run=run,
    description="Example: quantart train-vq --preset wikiart --data ~/datasets/wikiart",
)
