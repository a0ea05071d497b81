"""Stylize a grid of photos x paintings x alphas with a model and score it.

:func:`stylization_report` gives the figures the built-in model is held to (docs/model-card.md), from the colour
measures of :mod:`quantart_cli.core.metrics.style` and the texture ones of :mod:`quantart_cli.core.metrics.texture`:
colour distance to the painting relative to the photo's own, how often an output is nearer its own painting than
another, how much two paintings' outputs differ, whether style distance falls as alpha rises, content SSIM,
texture distance relative to the photo's, and detail relative to the painting's.

Used by the stylization test of the built-in model, ``scripts/evaluate_stylization.py`` and
``benchmarks/compare_peers.py``; images are loaded with :func:`load_images` (any size, EXIF orientation applied)
and given to the model as they are unless ``size`` asks for a resize of the longer side.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from quantart_cli.core.errors import BadInputError
from quantart_cli.core.metrics.style import ColourProfiles, luminance_ssim, mean_abs_diff
from quantart_cli.core.metrics.texture import TextureProfiles, gradient_energy, texture_profile, texture_swd_between

if TYPE_CHECKING:
    from quantart_cli.core.models import StyleTransfer

__all__ = [
    "DEFAULT_ALPHAS",
    "StylizationReport",
    "evaluate_stylization",
    "load_images",
    "stylization_report",
    "stylize_grid",
]

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


@dataclass(frozen=True)
class StylizationReport:
    """Figures of a photos x paintings x alphas grid, each averaged over photo x painting pairs.

    ``swd_ratio``: SWD(output at the highest alpha, painting) / SWD(photo, painting), averaged over pairs
    (below 1: the colours moved toward the painting). ``own_painting_rate``: fraction of (photo, painting i,
    painting j != i) where the output for i is nearer painting i than painting j. ``painting_difference``:
    mean absolute difference (0-255) between the outputs of two paintings for the same photo.
    ``swd_by_alpha``: SWD to the painting at each alpha (ascending); ``alpha_monotone``: it falls strictly.
    ``content_ssim``: luminance SSIM of the output at the highest alpha to its photo.
    ``texture_ratio``: texture SWD(output at the highest alpha, painting) / texture SWD(photo, painting)
    (:func:`~quantart_cli.core.metrics.texture.texture_ratio`; below 1: the texture moved toward the painting).
    ``detail``: gradient energy of that output / the painting's (:func:`~quantart_cli.core.metrics.texture.
    detail_ratio`); ``photo_detail``: the same for the photo, the reference it starts from.
    """

    pairs: int
    alphas: tuple[float, ...]
    swd_photo: float
    swd_output: float
    swd_ratio: float
    own_painting_rate: float
    painting_difference: float
    swd_by_alpha: tuple[float, ...]
    alpha_monotone: bool
    content_ssim: float
    texture_ratio: float
    detail: float
    photo_detail: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def stylization_report(
    photos: Mapping[str, Tensor],
    paintings: Mapping[str, Tensor],
    outputs: Mapping[tuple[str, str, float], Tensor],
) -> StylizationReport:
    """Score ``outputs[(photo, painting, alpha)]`` (one per photo x painting x alpha) against its inputs.

    The highest alpha is taken as "full style"; own-painting and difference figures need two paintings.
    """
    if not photos or not paintings:
        raise BadInputError("a stylization report needs at least one photo and one painting")
    alphas = tuple(sorted({alpha for _, _, alpha in outputs}))
    if not alphas:
        raise BadInputError("a stylization report needs stylized outputs")
    missing = [
        key for key in itertools.product(photos, paintings, alphas) if key not in outputs
    ]
    if missing:
        raise BadInputError(f"{len(missing)} outputs are missing, e.g. {missing[0]}")
    full = alphas[-1]
    profiles = ColourProfiles()
    textures = TextureProfiles()
    energy = {("painting", name): gradient_energy(image) for name, image in paintings.items()}
    energy |= {("photo", name): gradient_energy(image) for name, image in photos.items()}

    def swd(kind: str, key: object, image: Tensor, painting: str) -> float:
        return profiles.swd((kind, key), image, ("painting", painting), paintings[painting])

    ratios, swd_photo, ssims, texture_ratios, details, photo_details = [], [], [], [], [], []
    swd_alpha: dict[float, list[float]] = {alpha: [] for alpha in alphas}
    for photo, painting in itertools.product(photos, paintings):
        base = swd("photo", photo, photos[photo], painting)
        for alpha in alphas:
            key = (photo, painting, alpha)
            swd_alpha[alpha].append(swd("output", key, outputs[key], painting))
        swd_photo.append(base)
        ratios.append(swd_alpha[full][-1] / max(base, 1e-12))
        output = outputs[(photo, painting, full)]
        ssims.append(luminance_ssim(output, photos[photo]))
        target = textures(("painting", painting), paintings[painting])
        texture_ratios.append(texture_swd_between(texture_profile(output), target)
                              / max(texture_swd_between(textures(("photo", photo), photos[photo]), target), 1e-12))
        details.append(gradient_energy(output) / max(energy[("painting", painting)], 1e-12))
        photo_details.append(energy[("photo", photo)] / max(energy[("painting", painting)], 1e-12))

    wins, comparisons, differences = 0, 0, []
    names = list(paintings)
    for photo in photos:
        # distance[own][other]: from the output made after painting ``own`` to painting ``other``.
        distance = {
            own: {other: swd("output", (photo, own, full), outputs[(photo, own, full)], other) for other in names}
            for own in names
        }
        for own, other in itertools.permutations(names, 2):
            comparisons += 1
            wins += distance[own][own] < distance[own][other]
        for first, second in itertools.combinations(names, 2):
            differences.append(mean_abs_diff(outputs[(photo, first, full)], outputs[(photo, second, full)]))

    by_alpha = tuple(_mean(swd_alpha[alpha]) for alpha in alphas)
    return StylizationReport(
        pairs=len(ratios),
        alphas=alphas,
        swd_photo=_mean(swd_photo),
        swd_output=by_alpha[-1],
        swd_ratio=_mean(ratios),
        own_painting_rate=wins / comparisons if comparisons else float("nan"),
        painting_difference=_mean(differences) if differences else float("nan"),
        swd_by_alpha=by_alpha,
        alpha_monotone=all(higher < lower for lower, higher in itertools.pairwise(by_alpha)),
        content_ssim=_mean(ssims),
        texture_ratio=_mean(texture_ratios),
        detail=_mean(details),
        photo_detail=_mean(photo_details),
    )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)
