"""The knobs of one stylization, declared once (torch-free).

:class:`StylizeOptions` is what the engine validates and reads; ``quantart stylize`` inherits these very
fields into its settings, so ``--help``, presets, ``QUANTART_*`` variables, ``--print-config`` and Python
callers all see the same names, defaults, limits and help texts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from quantart_cli.core.errors import UsageError
from quantart_cli.core.options import OptionGroup, cli_option
from quantart_cli.core.precision import Precision

__all__ = ["DEFAULT_TILE_MEMORY_GIB", "NormStats", "StylizeOptions", "TilingMode", "check_visual_fidelity"]

TilingMode = Literal["auto", "always", "never"]
NormStats = Literal["image", "tile"]
#: GiB of whole-image buffers exact tiling may keep alive at once, by default.
DEFAULT_TILE_MEMORY_GIB = 4.0


class StylizeOptions(OptionGroup):
    """How to stylize: the paper's two fidelity knobs, colour preservation, sizes and tiling.

    The decoded latent is ``visual_fidelity * (alpha * zq_y + (1 - alpha) * zq_c) + (1 - visual_fidelity) *
    (alpha * z_y + (1 - alpha) * z_c)`` (see :mod:`quantart_cli.core.transfer.engine`). Invalid values raise
    pydantic's ``ValidationError`` (a ``ValueError``) naming the field and the limit.
    """

    alpha: float = cli_option(
        1.0, "Style fidelity: 0 = content decoded by the art decoder, 1 = full style.", ge=0.0, le=1.0
    )
    visual_fidelity: float = cli_option(
        1.0, "Visual fidelity: 1 = quantized path, 0 = continuous path.", ge=0.0, le=1.0
    )
    style_weights: list[float] | None = cli_option(
        None, "Blend weights of the --style images, e.g. 0.7,0.3.", comma_list=True
    )
    preserve_color: bool = cli_option(False, "Keep the content's colours (luminance-only transfer).")
    size: int | None = cli_option(
        None, "Resize the longer side to this many pixels first (the output gets that size).", ge=16
    )
    style_size: int | None = cli_option(None, "Resize each style image's longer side to this many pixels first.", ge=16)
    tiling: TilingMode = cli_option(
        "auto", "Tiled encode/decode: auto tiles images whose longer side exceeds --tile-threshold (1024 px)."
    )
    tile: int = cli_option(512, "Tile size in pixels (multiple of 16).", ge=16, multiple_of=16)
    overlap: int = cli_option(
        128, "Tile overlap in pixels, blended (multiple of 16; --tile-norm tile only).", ge=0, multiple_of=16
    )
    tile_norm: NormStats = cli_option(
        "image",
        "GroupNorm in tiles: image-wide statistics (as untiled but for float rounding, which can change a few codes "
        "and so small patches) or per tile (one pass, colours may shift).",
    )
    tile_memory: float = cli_option(
        DEFAULT_TILE_MEMORY_GIB,
        "GiB of whole-image buffers exact tiling may keep; less memory means more recomputation.",
        ge=0.0,
    )
    tile_threshold: int = cli_option(
        1024, "--tiling auto tiles an image whose padded longer side exceeds this many pixels.", ge=16, hidden=True
    )
    precision: Precision = cli_option(
        "fp32",
        "Arithmetic of the networks: fp32, or bf16 (faster only where the hardware computes bfloat16: about 1.8x "
        "on CPUs with AVX-512 BF16; a CPU without it runs fp32 instead, with a note; pixels differ by a few grey "
        "levels) or fp16 (CUDA only).",
    )
    query_chunk_size: int | None = cli_option(
        None, "Queries per attention chunk in the SGA module (default: chosen to bound memory).", ge=1, hidden=True
    )

    @model_validator(mode="after")
    def _overlap_fits_the_tile(self) -> StylizeOptions:
        if self.tile_norm == "tile" and self.overlap * 2 >= self.tile:
            raise ValueError("`overlap` must be less than half of `tile` with `tile_norm=tile`")
        return self

    def tiles(self, height: int, width: int) -> bool:
        """Whether an image of this (padded) size is encoded and decoded in tiles: the tiling policy, in one place."""
        if self.tiling == "auto":
            return max(height, width) > self.tile_threshold
        return self.tiling == "always"

    @property
    def buffer_bytes(self) -> int:
        """:attr:`tile_memory` in bytes."""
        return int(self.tile_memory * 1024**3)


def check_visual_fidelity(visual_fidelity: float, has_continuous_model: bool) -> None:
    """``visual_fidelity`` below 1 mixes in a continuous model's latents, so it needs one (the one check, made by
    the session before any weight is read and by the engine for direct callers)."""
    if visual_fidelity < 1.0 and not has_continuous_model:
        raise UsageError(
            f"`visual_fidelity={visual_fidelity:g}` needs `continuous_ckpt`, a continuous model (train-sga with "
            "`continuous=true`); without one leave `visual_fidelity` at 1."
        )
