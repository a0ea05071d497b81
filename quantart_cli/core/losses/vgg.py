"""Losses on VGG19 features (the bundled ImageNet weights of :mod:`quantart_cli.core.nn.vgg`, no download).

- :class:`VGGPerceptualDistance`: a perceptual reconstruction distance for stage 1, the role LPIPS plays in the
  original: per layer, features normalised to unit length over channels, squared differences averaged over
  positions, summed over layers (LPIPS' "baseline" form: no learned heads).
- :func:`mean_std_style_loss` and :func:`feature_content_loss`: the image-space style and content terms of stage 2
  (AdaIN's definitions: MSE of channel means and standard deviations at relu1_1..relu4_1; MSE of relu4_1 features).
- :func:`sliced_style_loss`: the other style term, the whole distribution of feature vectors at each of those
  layers (the sliced Wasserstein loss of Heitz et al., CVPR 2021), not only its first two moments.

Features are taken on the network's Caffe scale divided by 127.5, i.e. as if the input were in [-1, 1] units
(ReLU and max pooling commute with a positive scale, so this is exactly a rescaled network).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import get_args

import torch
from torch import Tensor, nn

from quantart_cli.core.losses.config import ImageStyleKind
from quantart_cli.core.losses.sliced import random_directions, sliced_wasserstein
from quantart_cli.core.nn.vgg import VGG19Features, load_vgg19

__all__ = [
    "CONTENT_LAYER",
    "PERCEPTUAL_LAYERS",
    "STYLE_LAYERS",
    "VGGPerceptualDistance",
    "VGGTerms",
    "feature_content_loss",
    "mean_std_style_loss",
    "sliced_style_loss",
]

#: Layers of the perceptual distance (one per block, as LPIPS uses VGG16's).
PERCEPTUAL_LAYERS = ("relu1_2", "relu2_2", "relu3_2", "relu4_2")
#: Layers of the style statistics and of the content term (AdaIN's choice).
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
CONTENT_LAYER = "relu4_1"

FEATURE_SCALE = 1.0 / 127.5
_NORM_EPS = 1e-10
_STD_EPS = 1e-5


def _scaled(features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {name: value.float() * FEATURE_SCALE for name, value in features.items()}


def _unit(x: Tensor) -> Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True) + _NORM_EPS).sqrt()


class VGGPerceptualDistance(nn.Module):
    """``forward(x, y)`` -> per-sample distance (B, 1, 1, 1) between images in [-1, 1], like LPIPS' output."""

    def __init__(self, vgg: VGG19Features | None = None, layers: Sequence[str] = PERCEPTUAL_LAYERS) -> None:
        super().__init__()
        self.layers = tuple(layers)
        self.vgg = vgg if vgg is not None else load_vgg19(self.layers[-1])

    def train(self, mode: bool = True) -> VGGPerceptualDistance:  # noqa: ARG002 - frozen: always eval
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        both = self.vgg(torch.cat([x, y]), self.layers)
        total = x.new_zeros((x.shape[0], 1, 1, 1), dtype=torch.float32)
        for name in self.layers:
            fx, fy = both[name].float().chunk(2)
            total = total + (_unit(fx) - _unit(fy)).pow(2).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
        return total


def _mean_std(x: Tensor) -> tuple[Tensor, Tensor]:
    flat = x.flatten(2)
    return flat.mean(dim=-1), (flat.var(dim=-1, unbiased=False) + _STD_EPS).sqrt()


def mean_std_style_loss(output: Mapping[str, Tensor], target: Mapping[str, Tensor],
                        layers: Sequence[str] = STYLE_LAYERS) -> Tensor:
    """Sum over ``layers`` of MSE(channel means) + MSE(channel stds), features of the same batch size."""
    out, ref = _scaled({k: output[k] for k in layers}), _scaled({k: target[k] for k in layers})
    total = torch.zeros((), device=next(iter(out.values())).device)
    for name in layers:
        mean_o, std_o = _mean_std(out[name])
        mean_t, std_t = _mean_std(ref[name])
        total = total + (mean_o - mean_t).pow(2).mean() + (std_o - std_t).pow(2).mean()
    return total


def sliced_style_loss(output: Mapping[str, Tensor], target: Mapping[str, Tensor], step: int,
                      layers: Sequence[str] = STYLE_LAYERS) -> Tensor:
    """Sum over ``layers`` of the squared-difference sliced Wasserstein distance between the output's and the
    target's feature vectors (as many random directions as the layer has channels, drawn anew for each ``step`` and
    layer), features of the same batch size paired by index."""
    out, ref = _scaled({k: output[k] for k in layers}), _scaled({k: target[k] for k in layers})
    total = torch.zeros((), device=next(iter(out.values())).device)
    for salt, name in enumerate(layers, start=1):
        channels = out[name].shape[1]
        directions = random_directions(step, channels, channels, salt=salt)
        total = total + sliced_wasserstein(out[name].flatten(2), ref[name].flatten(2), directions, power=2)
    return total


def feature_content_loss(output: Mapping[str, Tensor], target: Mapping[str, Tensor],
                         layer: str = CONTENT_LAYER) -> Tensor:
    """MSE between the ``layer`` features of the output and of the content image."""
    return (output[layer].float() - target[layer].float()).mul(FEATURE_SCALE).pow(2).mean()


class VGGTerms(nn.Module):
    """Stage 2's image-space terms on one frozen VGG19 up to relu4_1: style (vs the painting) and content (vs the
    photo); ``forward(output, painting, photo, step)`` -> (style, content), the targets without gradient.
    ``style``: "mean_std" (:func:`mean_std_style_loss`) or "sliced" (:func:`sliced_style_loss`, whose random
    directions depend on the step)."""

    def __init__(self, vgg: VGG19Features | None = None, style: ImageStyleKind = "mean_std") -> None:
        super().__init__()
        kinds = get_args(ImageStyleKind)
        if style not in kinds:
            raise ValueError(f"unknown image style term {style!r}: one of {', '.join(map(repr, kinds))}")
        self.vgg = vgg if vgg is not None else load_vgg19("relu4_1")
        self.style = style
        self.layers = tuple(dict.fromkeys((*STYLE_LAYERS, CONTENT_LAYER)))

    def train(self, mode: bool = True) -> VGGTerms:  # noqa: ARG002 - frozen: always eval
        return super().train(False)

    def forward(self, output: Tensor, painting: Tensor, photo: Tensor, step: int = 0) -> tuple[Tensor, Tensor]:
        out = self.vgg(output, self.layers)
        with torch.no_grad():
            targets = self.vgg(torch.cat([painting, photo]), self.layers)
        style_t = {k: v[: painting.shape[0]] for k, v in targets.items()}
        content_t = {k: v[painting.shape[0]:] for k, v in targets.items()}
        style = sliced_style_loss(out, style_t, step) if self.style == "sliced" else mean_std_style_loss(out, style_t)
        return style, feature_content_loss(out, content_t)
