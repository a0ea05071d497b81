"""Stylize a grid of photos x paintings x alphas with a model and score it (:mod:`quantart_cli.core.metrics.style`).

Used by the stylization test of the built-in model and by ``scripts/evaluate_stylization.py``; images are
loaded with :func:`load_images` (any size, EXIF orientation applied) and given to the model as they are
unless ``size`` asks for a resize of the longer side.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from quantart_cli.core.metrics.style import StylizationReport, stylization_report

if TYPE_CHECKING:
    from quantart_cli.core.models import StyleTransfer

__all__ = ["DEFAULT_ALPHAS", "load_images", "stylize_grid", "evaluate_stylization"]

#: The alphas the built-in model is held to (docs/model-card.md).
DEFAULT_ALPHAS: tuple[float, ...] = (0.0, 0.5, 1.0)


def load_images(paths: Iterable[str | os.PathLike[str]], size: int | None = None) -> dict[str, Tensor]:
    """``{file stem: (1, 3, H, W) tensor in [-1, 1]}``; with ``size`` the longer side is resized to it."""
    from quantart_cli.core.io.images import image_to_tensor, load_image, resize_longer_side

    images: dict[str, Tensor] = {}
    for path in paths:
        tensor = image_to_tensor(load_image(path))
        images[Path(path).stem] = resize_longer_side(tensor, size) if size is not None else tensor
    return images


def stylize_grid(
    model: StyleTransfer,
    photos: Mapping[str, Tensor],
    paintings: Mapping[str, Tensor],
    alphas: Sequence[float] = DEFAULT_ALPHAS,
) -> dict[tuple[str, str, float], Tensor]:
    """``{(photo, painting, alpha): stylized (1, 3, H, W) on the CPU}`` for every combination.

    Each painting is encoded once and each (photo, painting) pair runs through the encoder and the SGA module
    once for all alphas (:meth:`~quantart_cli.core.transfer.engine.Stylizer.sweep`); every output has its
    photo's size.
    """
    from quantart_cli.core.transfer.engine import Stylizer
    from quantart_cli.core.transfer.options import StylizeOptions

    outputs: dict[tuple[str, str, float], Tensor] = {}
    for painting, style in paintings.items():
        stylizer = Stylizer(model, [style], StylizeOptions(alpha=max(alphas)))
        for photo, content in photos.items():
            for alpha, out in zip(alphas, stylizer.sweep(content, alphas), strict=True):
                outputs[(photo, painting, alpha)] = out.image.cpu()
    return outputs


def evaluate_stylization(
    model: StyleTransfer,
    photos: Mapping[str, Tensor],
    paintings: Mapping[str, Tensor],
    alphas: Sequence[float] = DEFAULT_ALPHAS,
) -> tuple[StylizationReport, dict[tuple[str, str, float], Tensor]]:
    """Stylize the grid and score it; returns the report and the outputs."""
    outputs = stylize_grid(model, photos, paintings, alphas)
    return stylization_report(photos, paintings, outputs), outputs
