"""``quantart train-vq``: stage 1, a VQGAN codebook (taming-transformers VQGAN with the QuantArt recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from quantart_cli.config import VQGANConfig
from quantart_cli.errors import NotBuiltError
from quantart_cli.plugins import RunContext, Stage
from quantart_cli.settings import cli_option
from quantart_stages.common import TrainingSettings


class VQGANLossSettings(BaseModel):
    """Stage-1 loss (VQLPIPSWithDiscriminator of the original)."""

    model_config = ConfigDict(extra="forbid")
    codebook_weight: float = Field(1.0, ge=0)
    perceptual_weight: float = Field(1.0, ge=0, description="LPIPS weight; 0 skips LPIPS.")
    disc_weight: float = Field(0.8, ge=0)
    disc_factor: float = Field(1.0, ge=0)
    disc_start: int = Field(10000, ge=0, description="Step at which the GAN loss starts.")
    disc_loss: Literal["hinge", "vanilla"] = "hinge"
    disc_ndf: int = Field(64, ge=1)
    disc_num_layers: int = Field(3, ge=0)


class TrainVQSettings(TrainingSettings):
    data: list[Path] = cli_option([], "Training images: folder (recursive), list file or CSV manifest (repeatable).")
    init_from: Path | None = cli_option(None, "Fine-tune from this VQGAN checkpoint (native or original).")
    restart_dead_codes: bool = cli_option(False, "Re-seed unused codes from recent encoder outputs.")
    dead_code_window: int = cli_option(200, "Steps over which code usage is counted for health and restarts.", ge=1)
    model: VQGANConfig = VQGANConfig()
    loss: VQGANLossSettings = VQGANLossSettings()


def run(settings: TrainVQSettings, ctx: RunContext) -> int:
    raise NotBuiltError("train-vq is registered but VQGAN training is not built yet in this version.")


stage = Stage(
    name="train-vq",
    help="Train a VQGAN codebook (stage 1).",
    settings=TrainVQSettings,
    run=run,
    description="Example: quantart train-vq --preset wikiart --data ~/datasets/wikiart",
)
