"""``quantart train-sga``: stage 2, the Style-Guided Attention module between two frozen VQGANs."""

from __future__ import annotations

from pathlib import Path

from quantart_cli.errors import NotBuiltError
from quantart_cli.loss_config import StyleTransferLossConfig
from quantart_cli.plugins import RunContext, Stage
from quantart_cli.settings import cli_option
from quantart_stages.common import TrainingSettings


class TrainSGASettings(TrainingSettings):
    batch_size: int = cli_option(8, "Content/style pairs per step on each device.", ge=1)
    content_vq: Path | None = cli_option(None, "Stage-1 checkpoint of the content (photo) domain.")
    style_vq: Path | None = cli_option(None, "Stage-1 checkpoint of the style (art) domain.")
    content_data: list[Path] = cli_option([], "Content images: folder, list file or CSV (repeatable).")
    style_data: list[Path] = cli_option([], "Style images: folder, list file or CSV (repeatable).")
    style_genre_csv: Path | None = cli_option(None, "WikiArt train_info.csv to filter style images by genre.")
    style_genre: str | None = cli_option(None, "Genre kept from --style-genre-csv, e.g. landscape.")
    continuous: bool = cli_option(False, "Train the continuous (non-quantized) variant for the visual-fidelity knob.")
    cache: Path | None = cli_option(None, "Encode both datasets once into this folder and train from the latents.")
    sga_blocks: int = cli_option(6, "Style-Guided Attention blocks.", ge=1)
    use_residual: bool = cli_option(True, "Residual connections in the SGA attention blocks.")
    loss: StyleTransferLossConfig = StyleTransferLossConfig()


def run(settings: TrainSGASettings, ctx: RunContext) -> int:
    raise NotBuiltError("train-sga is registered but style-transfer training is not built yet in this version.")


stage = Stage(
    name="train-sga",
    help="Train the style-transfer (SGA) module between two VQGANs (stage 2).",
    settings=TrainSGASettings,
    run=run,
    description=(
        "Example: quantart train-sga --preset landscape2art --content-vq photo_vq.pt --style-vq art_vq.pt "
        "--content-data ~/lhq --style-data ~/wikiart"
    ),
)
