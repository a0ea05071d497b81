"""``quantart encode``: images to code indices with a VQGAN, and indices back to images."""

from __future__ import annotations

from pathlib import Path

from quantart_cli.errors import NotBuiltError
from quantart_cli.plugins import RunContext, Stage
from quantart_cli.settings import cli_argument, cli_option
from quantart_stages.common import CheckpointReadingSettings


class EncodeSettings(CheckpointReadingSettings):
    inputs: list[str] = cli_argument("Images, folders or globs (or .safetensors index files with --decode).",
                                     default=[])
    ckpt: Path | None = cli_option(None, "VQGAN checkpoint (native, .safetensors or an original .ckpt).")
    out: Path | None = cli_option(None, "Output folder, or a .safetensors file with --single-file.", short="-o")
    decode: bool = cli_option(False, "Turn index files back into images.", aliases=("--reverse",))
    single_file: bool = cli_option(False, "Write one safetensors file for the whole dataset.")
    batch_size: int = cli_option(8, "Images per batch.", ge=1)
    overwrite: bool = cli_option(False, "Replace existing outputs.")


def run(settings: EncodeSettings, ctx: RunContext) -> int:
    raise NotBuiltError("encode is registered but image encoding is not built yet in this version.")


stage = Stage(
    name="encode",
    help="Encode images to code indices (and decode them back).",
    settings=EncodeSettings,
    run=run,
    description="Example: quantart encode photos/ --ckpt vq.pt --out codes/",
)
