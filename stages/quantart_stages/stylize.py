"""``quantart stylize``: the main job, a photo restyled after one or more paintings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import model_validator

from quantart_cli.errors import NotBuiltError
from quantart_cli.plugins import RunContext, Stage
from quantart_cli.settings import cli_argument, cli_option
from quantart_stages.common import CheckpointReadingSettings


class StylizeSettings(CheckpointReadingSettings):
    content: list[str] = cli_argument("Content images, folders or globs.", default=[])
    style: list[Path] = cli_option([], "Style (reference) image; repeat to blend several.", short="-s")
    style_weights: list[float] | None = cli_option(None, "Blend weights of the --style images, e.g. 0.7,0.3.",
                                                  comma_list=True)
    ckpt: Path | None = cli_option(None, "Style-transfer checkpoint (or set QUANTART_CKPT).")
    continuous_ckpt: Path | None = cli_option(None, "Continuous model (train-sga --continuous) for --visual-fidelity.")
    alpha: float = cli_option(1.0, "Style fidelity: 0 = content decoded by the art decoder, 1 = full style.",
                              ge=0.0, le=1.0)
    visual_fidelity: float = cli_option(1.0, "Visual fidelity: 1 = quantized path, 0 = continuous path.",
                                        ge=0.0, le=1.0)
    out: Path | None = cli_option(None, "Output file (one input) or folder.", short="-o")
    suffix: str = cli_option("_stylized", "Appended to each output's file name.")
    format: Literal["png", "jpg", "webp", "same"] = cli_option("png", "Output image format.")
    overwrite: bool = cli_option(False, "Replace existing outputs (default: skip files already done).")
    preserve_color: bool = cli_option(False, "Keep the content's colours (luminance-only transfer).")
    size: int | None = cli_option(None, "Resize the longer side to this many pixels first.", ge=16)
    tiling: Literal["auto", "always", "never"] = cli_option("auto", "Tiled encode/decode for large images.")
    tile: int = cli_option(512, "Tile size in pixels (multiple of 16).", ge=64, multiple_of=16)
    overlap: int = cli_option(64, "Tile overlap in pixels (multiple of 16).", ge=0, multiple_of=16)
    json_output: bool = cli_option(False, "Print one JSON line per output with timings.", flag="--json")

    @model_validator(mode="after")
    def _weights_match_styles(self) -> StylizeSettings:
        if self.style_weights is not None and self.style and len(self.style_weights) != len(self.style):
            raise ValueError(
                f"--style-weights has {len(self.style_weights)} values for {len(self.style)} --style images"
            )
        if self.overlap * 2 >= self.tile:
            raise ValueError("--overlap must be less than half of --tile")
        return self


def run(settings: StylizeSettings, ctx: RunContext) -> int:
    raise NotBuiltError("stylize is registered but style transfer is not built yet in this version.")


stage = Stage(
    name="stylize",
    help="Stylize photos after a painting (the main job).",
    settings=StylizeSettings,
    run=run,
    description="Example: quantart stylize photo.jpg --style monet.jpg --alpha 0.8 --ckpt landscape2art.pt",
)
