"""The losses built on the bundled VGG19: stage 1's perceptual distance, stage 2's image-space style and
content terms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from image_files import smooth_batch

from quantart_cli.core.losses.config import StyleTransferLossConfig, VQGANLossConfig
from quantart_cli.core.losses.style_transfer import StyleTransferLoss
from quantart_cli.core.losses.vgg import (
    VGGPerceptualDistance,
    VGGTerms,
    feature_content_loss,
    mean_std_style_loss,
    sliced_style_loss,
)
from quantart_cli.core.losses.vqgan import VQGANLoss
from quantart_cli.core.nn.vgg import load_vgg19


@pytest.fixture(scope="module")
def vgg():
    return load_vgg19("relu4_2")


def test_perceptual_distance_ranks_blur_above_faint_noise(vgg):
    distance = VGGPerceptualDistance(vgg)
    x = smooth_batch(2, size=64)
    blurred = F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
    noisy = x + 0.01 * torch.randn_like(x)
    same, d_blur, d_noise = distance(x, x), distance(x, blurred), distance(x, noisy)
    assert same.shape == (2, 1, 1, 1) and float(same.abs().max()) < 1e-6
    assert bool((d_blur > 5 * d_noise).all()), (d_blur.flatten(), d_noise.flatten())


def test_style_and_content_terms_are_zero_for_the_target_and_grow_away_from_it(vgg):
    x, other = smooth_batch(3), smooth_batch(4)
    fx, fo = vgg(x, ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]), vgg(other, ["relu1_1", "relu2_1", "relu3_1",
                                                                             "relu4_1"])
    assert float(mean_std_style_loss(fx, fx)) == 0.0 and float(feature_content_loss(fx, fx)) == 0.0
    assert float(mean_std_style_loss(fx, fo)) > 0 and float(feature_content_loss(fx, fo)) > 0


def test_stage1_loss_builds_the_vgg19_distance_and_uses_it():
    loss = VQGANLoss(VQGANLossConfig(perceptual_net="vgg19", perceptual_weight=1.0, disc_start=0))
    assert isinstance(loss.perceptual_loss, VGGPerceptualDistance)
    x = smooth_batch(5, size=32)
    rec = (x + 0.2 * torch.randn_like(x)).requires_grad_(True)
    total, logs = loss.generator_loss(x, rec, 0.0, step=0)
    assert float(logs["perceptual"]) > 0 and float(logs["nll"]) > float(logs["rec_l1"])
    total.backward()
    assert rec.grad is not None and float(rec.grad.abs().sum()) > 0


def test_stage2_image_terms_need_images_and_are_logged():
    loss = StyleTransferLoss(StyleTransferLossConfig(disc_in_channels=8, image_style_weight=1.0,
                                                     image_content_weight=0.5), pretrained_vgg=False)
    assert loss.uses_images
    q = torch.randn(2, 8, 16, 16)
    with pytest.raises(ValueError, match="decoded output"):
        loss.generator_loss(q, q, q, 0.0, step=0)
    out = (smooth_batch(6, size=32)).requires_grad_(True)
    references = (smooth_batch(7, size=32), smooth_batch(8, size=32))
    total, logs = loss.generator_loss(q, q, q, 0.0, step=0, images=(out, *references))
    assert float(logs["image_style"]) > 0 and float(logs["image_content"]) > 0
    total.backward()
    assert float(out.grad.abs().sum()) > 0
    assert not StyleTransferLoss(StyleTransferLossConfig(disc_in_channels=8)).uses_images


def test_sliced_style_term_sees_the_distribution_that_means_and_stds_miss(vgg):
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
    fx = vgg(smooth_batch(3), layers)
    # Same channel means and stds, another distribution: each channel's values reflected about its mean.
    flipped = {k: 2 * v.mean(dim=(2, 3), keepdim=True) - v for k, v in fx.items()}
    shuffled = {k: v.flatten(2)[:, :, torch.randperm(v[0, 0].numel(), generator=torch.Generator().manual_seed(1))]
                for k, v in fx.items()}
    assert float(mean_std_style_loss(flipped, fx)) < 1e-6
    assert float(sliced_style_loss(flipped, fx, step=0)) > 1e-3
    assert float(sliced_style_loss(fx, fx, step=0)) == 0.0
    assert float(sliced_style_loss(shuffled, {k: v.flatten(2) for k, v in fx.items()}, step=0)) < 1e-9
    assert float(sliced_style_loss(flipped, fx, step=0)) != float(sliced_style_loss(flipped, fx, step=1))


def test_stage2_style_kind_picks_the_term_and_unknown_kinds_are_refused():
    loss = StyleTransferLoss(StyleTransferLossConfig(disc_in_channels=8, image_style_weight=1.0,
                                                     image_style_kind="sliced"), pretrained_vgg=False)
    assert loss.image_terms.style == "sliced"
    q = torch.randn(2, 8, 16, 16)
    out = smooth_batch(6, size=32).requires_grad_(True)
    total, logs = loss.generator_loss(q, q, q, 0.0, step=4, images=(out, smooth_batch(7, size=32),
                                                                     smooth_batch(8, size=32)))
    assert float(logs["image_style"]) > 0
    total.backward()
    assert float(out.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="mean_std"):
        VGGTerms(loss.image_terms.vgg, style="gram")
    with pytest.raises(ValueError):
        StyleTransferLossConfig(image_style_kind="gram")
