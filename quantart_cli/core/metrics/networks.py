"""Stylization measures that need pretrained networks: LPIPS content distance, VGG style loss, CFSD, FID.

The networks are the field's usual ones, so figures compare with published tables:

- **LPIPS** (``lpips`` package, AlexNet backbone, as ArtFID computes its content distance): output vs photo.
- **Style loss** (VGG19, ImageNet weights from torchvision): the mean/std loss of Huang & Belongie (AdaIN),
  summed over relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1: for each layer the mean squared difference of
  the per-channel means plus that of the per-channel standard deviations, output vs painting.
- **CFSD** (content feature structural distance, Chung et al. 2024, StyleID): VGG19 relu3_1 features of
  output and photo, each position's similarities to every other (features divided by the channel count)
  turned into a softmax distribution; the sum over positions of KL(photo || output).
- **FID** (``pytorch-fid``: the TF-Inception weights every FID paper uses, pool3 features, inputs resized to
  299 px): stylized set vs painting set, from the features' means and covariances.

Images are (1, 3, H, W) tensors in [-1, 1]. Each ``build_*`` takes ``pretrained=False`` for randomly
initialised networks that need no download (tests); otherwise a failed download is one sentence
(:func:`~quantart_cli.core.io.pretrained.build_pretrained`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quantart_cli.core.errors import BadInputError
from quantart_cli.core.io.pretrained import build_pretrained, quiet_construction

__all__ = [
    "FID_MIN_IMAGES",
    "VGGFeatures",
    "build_fid_inception",
    "build_lpips_alex",
    "build_vgg19",
    "cfsd",
    "frechet_distance",
    "inception_features",
    "lpips_distance",
    "vgg_style_loss",
]

#: torchvision ``vgg19().features`` index of each ReLU the style loss and CFSD read.
VGG19_RELUS = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu5_1": 29}
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CFSD_LAYER = "relu3_1"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
#: FID needs at least this many images in each set (a covariance of one sample is undefined).
FID_MIN_IMAGES = 2


class VGGFeatures(nn.Module):
    """VGG19's convolutional part up to relu5_1, frozen; returns the ReLU outputs :data:`VGG19_RELUS` names."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.features = features[: max(VGG19_RELUS.values()) + 1]
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor, layers: Sequence[str] = STYLE_LAYERS) -> dict[str, Tensor]:
        wanted = {VGG19_RELUS[name]: name for name in layers}
        h = ((x + 1) / 2 - self.mean) / self.std
        out: dict[str, Tensor] = {}
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in wanted:
                out[wanted[index]] = h
                if len(out) == len(wanted):
                    break
        return out


def build_vgg19(pretrained: bool = True) -> VGGFeatures:
    from torchvision.models import VGG19_Weights, vgg19

    if not pretrained:
        return VGGFeatures(vgg19(weights=None).features)
    weights = VGG19_Weights.IMAGENET1K_V1
    return build_pretrained(lambda: VGGFeatures(vgg19(weights=weights).features), url=weights.url,
                            needed_by="The style loss and CFSD (VGG19)")


def build_lpips_alex(pretrained: bool = True) -> nn.Module:
    from quantart_cli.core.losses.perceptual import build_lpips

    return build_lpips(pretrained_backbone=pretrained, net="alex")


def build_fid_inception(pretrained: bool = True) -> nn.Module:
    """pytorch-fid's ``InceptionV3`` returning the 2048-d pool3 features, in eval mode."""
    from pytorch_fid import inception as fid

    if pretrained:
        net = build_pretrained(lambda: fid.InceptionV3([fid.InceptionV3.DEFAULT_BLOCK_INDEX]),
                               url=fid.FID_WEIGHTS_URL, needed_by="FID")
        return net.eval()
    original = fid.fid_inception_v3
    fid.fid_inception_v3 = _random_fid_inception  # the same network, randomly initialised: no download
    try:
        with quiet_construction():
            net = fid.InceptionV3([fid.InceptionV3.DEFAULT_BLOCK_INDEX])
    finally:
        fid.fid_inception_v3 = original
    return net.eval()


def _random_fid_inception() -> nn.Module:
    """pytorch-fid's FID Inception architecture (torchvision's Inception3 with the FID blocks), untrained."""
    from pytorch_fid import inception as fid
    from torchvision.models.inception import Inception3

    net = Inception3(num_classes=1008, aux_logits=False, init_weights=True)
    net.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid.FIDInceptionE_1(1280)
    net.Mixed_7c = fid.FIDInceptionE_2(2048)
    return net


# ------------------------------------------------------------------------------------------- measures


def _to_size_of(x: Tensor, like: Tensor) -> Tensor:
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False, antialias=True)


def _device_of(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


@torch.inference_mode()
def lpips_distance(net: nn.Module, output: Tensor, photo: Tensor) -> float:
    """LPIPS between the output and its photo (the photo resized to the output's size if they differ)."""
    device = _device_of(net)
    output = output.to(device)
    return float(net(output, _to_size_of(photo.to(device), output)).mean())


@torch.inference_mode()
def vgg_style_loss(vgg: VGGFeatures, output: Tensor, painting: Tensor) -> float:
    """AdaIN's mean/std style loss over :data:`STYLE_LAYERS` (any two sizes compare)."""
    device = _device_of(vgg)
    ours, theirs = vgg(output.to(device)), vgg(painting.to(device))
    total = 0.0
    for name in STYLE_LAYERS:
        a, b = ours[name].flatten(2), theirs[name].flatten(2)
        total += float(F.mse_loss(a.mean(-1), b.mean(-1)) + F.mse_loss(a.std(-1), b.std(-1)))
    return total


@torch.inference_mode()
def cfsd(vgg: VGGFeatures, output: Tensor, photo: Tensor, *, chunk: int = 2048) -> float:
    """Content feature structural distance: sum over relu3_1 positions of KL(photo's similarity row ||
    output's), rows computed ``chunk`` at a time so memory stays bounded at any size."""
    device = _device_of(vgg)
    output = output.to(device)
    f_out = _positions(vgg(output, (CFSD_LAYER,))[CFSD_LAYER])
    f_photo = _positions(vgg(_to_size_of(photo.to(device), output), (CFSD_LAYER,))[CFSD_LAYER])
    total = 0.0
    for start in range(0, f_out.shape[0], chunk):
        log_q = torch.log_softmax(f_out[start : start + chunk] @ f_out.t(), dim=-1)
        log_p = torch.log_softmax(f_photo[start : start + chunk] @ f_photo.t(), dim=-1)
        total += float((log_p.exp() * (log_p - log_q)).sum())
    return total


def _positions(features: Tensor) -> Tensor:
    """(1, C, H, W) -> (H * W, C) divided by C (the scaling StyleID's CFSD uses), in float64 for the sums."""
    channels = features.shape[1]
    return features[0].flatten(1).t().double() / channels


@torch.inference_mode()
def inception_features(net: nn.Module, images: Sequence[Tensor]) -> np.ndarray:
    """(N, 2048) pool3 features of images in [-1, 1] (pytorch-fid resizes each to 299 px itself)."""
    device = _device_of(net)
    rows = [net(((image.to(device) + 1) / 2).clamp(0, 1))[0].flatten(1).double().cpu() for image in images]
    return torch.cat(rows).numpy()


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two feature sets: ``|mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2))``.

    With at least as many images as feature dimensions this is pytorch-fid's ``calculate_frechet_distance``.
    With fewer (every small evaluation: the 2048 x 2048 product is then singular, and its ``sqrtm`` takes
    half a minute on a laptop) the trace term is computed exactly from the small product instead: with
    ``S_a = A A^T`` and ``S_b = B B^T``, ``Tr((S_a S_b)^(1/2))`` is the sum of the singular values of ``A^T B``.
    """
    for features in (features_a, features_b):
        if len(features) < FID_MIN_IMAGES:
            raise BadInputError(f"FID needs at least {FID_MIN_IMAGES} images in each set, got {len(features)}")
    features_a, features_b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    mu_a, mu_b = features_a.mean(axis=0), features_b.mean(axis=0)
    if min(len(features_a), len(features_b)) >= features_a.shape[1]:
        from pytorch_fid.fid_score import calculate_frechet_distance

        sigma_a, sigma_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
        with quiet_construction():  # it prints a note when it regularises a singular product
            return float(calculate_frechet_distance(mu_a, sigma_a, mu_b, sigma_b))
    a = (features_a - mu_a).T / np.sqrt(len(features_a) - 1)  # S_a = a @ a.T
    b = (features_b - mu_b).T / np.sqrt(len(features_b) - 1)
    trace_sqrt = np.linalg.svd(a.T @ b, compute_uv=False).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2.0 * trace_sqrt)
