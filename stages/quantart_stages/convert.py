"""``quantart convert``: import an original QuantArt/taming checkpoint, or switch between .pt and .safetensors."""

from __future__ import annotations

from pathlib import Path

from quantart_cli.plugin import RunContext, Stage, UsageError, cli_argument, cli_option
from quantart_stages.common import CheckpointReadingSettings


class ConvertSettings(CheckpointReadingSettings):
    source: Path | None = cli_argument("Checkpoint to read: native .pt, .safetensors, or an original .ckpt.",
                                       default=None)
    target: Path | None = cli_argument("File to write: .pt (native) or .safetensors.", default=None)
    overwrite: bool = cli_option(False, "Replace TARGET if it exists.")


def run(settings: ConvertSettings, ctx: RunContext) -> int:
    if settings.source is None or settings.target is None:
        raise UsageError("convert needs SOURCE and TARGET, e.g. quantart convert vqgan_wikiart.ckpt wikiart.pt")
    if settings.target.suffix not in (".pt", ".safetensors"):
        raise UsageError(f"TARGET must end in .pt or .safetensors, got {settings.target.name}.")
    if settings.target.exists() and not settings.overwrite:
        raise UsageError(f"{settings.target} exists; pass --overwrite to replace it.")
    from quantart_cli.core.io.checkpoints import convert_checkpoint, read_checkpoint_header

    convert_checkpoint(settings.source, settings.target, trust=settings.trust_checkpoint)
    header = read_checkpoint_header(settings.target)
    ctx.console.info(f"wrote a {header.kind} checkpoint ({header.source_format}) from {settings.source}")
    ctx.console.result(str(settings.target))
    return 0


stage = Stage(
    name="convert",
    help="Import an original QuantArt/taming checkpoint or convert between .pt and .safetensors.",
    settings=ConvertSettings,
    run=run,
    description="Example: quantart convert logs/landscape2art/checkpoints/last.ckpt landscape2art.pt",
)
