"""Stylizing image files: where each output goes, which inputs are earlier outputs, one file in and out.

The stylize stage collects the inputs, builds a :class:`~quantart_cli.core.transfer.engine.Stylizer` and walks
:func:`plan_outputs`' pairs through :func:`stylize_file`, reporting each record as it comes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from quantart_cli.core.errors import QuantartError, UsageError
from quantart_cli.core.io.images import SAVE_FORMATS, image_to_tensor, load_image, save_image_atomic

if TYPE_CHECKING:
    from quantart_cli.core.transfer.engine import Stylizer

__all__ = ["DEFAULT_OUT", "OutputNaming", "is_earlier_output", "plan_outputs", "stylize_file"]

#: Where outputs go when no ``--out`` is given.
DEFAULT_OUT = Path("stylized")

OutputFormat = Literal["png", "jpg", "webp", "same"]


@dataclass(frozen=True)
class OutputNaming:
    """How outputs are named: ``out`` (a folder, or one file), ``suffix`` after the input's stem, the format."""

    out: Path | None = None
    suffix: str = "_stylized"
    format: OutputFormat = "png"

    @property
    def folder(self) -> Path:
        return self.out or DEFAULT_OUT

    def extension(self, source: Path) -> str:
        """``.png`` etc.; ``same`` keeps the input's suffix when it can be written, else PNG."""
        if self.format == "same":
            suffix = source.suffix.lower()
            return suffix if suffix in SAVE_FORMATS else ".png"
        return "." + self.format


def plan_outputs(naming: OutputNaming, inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(input, output) pairs: the input's name plus the suffix in the output folder (or ``out`` itself when it
    names one image file). Two inputs that would write the same file are refused with one sentence."""
    out = naming.folder
    if out.suffix.lower() in SAVE_FORMATS and not out.is_dir():
        if len(inputs) != 1:
            raise UsageError(
                f"--out {out} names one file but there are {len(inputs)} content images; give a folder instead."
            )
        return [(inputs[0], out)]
    pairs: list[tuple[Path, Path]] = []
    claimed: dict[Path, Path] = {}
    for source in inputs:
        target = out / f"{source.stem}{naming.suffix}{naming.extension(source)}"
        if target in claimed:
            raise UsageError(
                f"{source} and {claimed[target]} would both write {target}; stylize them into different --out folders."
            )
        claimed[target] = source
        pairs.append((source, target))
    return pairs


def is_earlier_output(naming: OutputNaming, source: Path) -> bool:
    """An input that a previous run wrote (a folder given as both input and ``--out``): not stylized again."""
    return (
        bool(naming.suffix)
        and source.stem.endswith(naming.suffix)
        and source.parent.resolve() == naming.folder.resolve()
    )


def stylize_file(stylizer: Stylizer, source: Path, target: Path) -> dict[str, Any] | str:
    """Stylize one file and write it atomically; returns its record (input, output, size, tiled, seconds per
    phase), or the error sentence when the input is unusable."""
    start = time.perf_counter()
    try:
        content = image_to_tensor(load_image(source))
    except QuantartError as err:
        return str(err)
    read_seconds = time.perf_counter() - start
    result = stylizer(content)
    start = time.perf_counter()
    save_image_atomic(result.image, target)
    timings = {"read": read_seconds, **result.timings, "write": time.perf_counter() - start}
    timings["total"] = timings["read"] + timings["total"] + timings["write"]
    height, width = result.image.shape[-2:]
    return {
        "input": str(source),
        "output": str(target),
        "width": int(width),
        "height": int(height),
        "tiled": result.tiled,
        "seconds": {k: round(v, 4) for k, v in timings.items()},
    }
