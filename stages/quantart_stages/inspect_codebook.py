"""``quantart inspect-codebook``: what a codebook holds and how it is used."""

from __future__ import annotations

from pathlib import Path

from quantart_cli.errors import NotBuiltError
from quantart_cli.plugins import RunContext, Stage
from quantart_cli.settings import cli_argument, cli_option
from quantart_stages.common import CheckpointReadingSettings


class InspectCodebookSettings(CheckpointReadingSettings):
    ckpt: Path | None = cli_argument("Checkpoint: VQGAN or style-transfer, native, safetensors or original.",
                                     default=None)
    data: list[Path] = cli_option([], "Images to encode for usage statistics (folder, list or CSV; repeatable).")
    json_output: bool = cli_option(False, "Print every figure as JSON on stdout.", flag="--json")
    atlas: Path | None = cli_option(None, "Write a PNG grid decoding every code, ordered by usage.")
    plot: Path | None = cli_option(None, "Write a PNG usage histogram / rank plot.")
    top: int = cli_option(10, "How many of the most used codes to list.", ge=1)
    batch_size: int = cli_option(8, "Images per batch when encoding --data.", ge=1)
    size: int = cli_option(256, "Image size for encoding --data (multiple of 16).", ge=16, multiple_of=16)


def run(settings: InspectCodebookSettings, ctx: RunContext) -> int:
    raise NotBuiltError("inspect-codebook is registered but codebook inspection is not built yet in this version.")


stage = Stage(
    name="inspect-codebook",
    help="Show what a codebook holds and how it is used.",
    settings=InspectCodebookSettings,
    run=run,
    description="Example: quantart inspect-codebook vq.pt --data photos/ --atlas atlas.png",
)
