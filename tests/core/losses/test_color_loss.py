"""Stage 2's colour-distribution term: compares palettes, not layouts, and trains only the output."""

from __future__ import annotations

import pytest
import torch
from image_files import smooth_batch

from quantart_cli.core.losses.color import color_directions, color_distribution_loss
from quantart_cli.core.losses.config import StyleTransferLossConfig
from quantart_cli.core.losses.style_transfer import StyleTransferLoss


def _shuffled(images: torch.Tensor, seed: int) -> torch.Tensor:
    b, c, h, w = images.shape
    order = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed))
    return images.flatten(2)[:, :, order].reshape(b, c, h, w)


def test_directions_are_unit_vectors_fixed_by_the_step():
    first, again, other = color_directions(7), color_directions(7), color_directions(8)
    assert first.shape == (32, 3) and torch.allclose(first.norm(dim=1), torch.ones(32))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_the_same_palette_in_another_layout_costs_nothing_another_palette_does():
    painting = smooth_batch(1, size=32)
    directions = color_directions(0)
    assert float(color_distribution_loss(_shuffled(painting, 3), painting, directions)) == pytest.approx(0, abs=1e-6)
    greyed = painting.mean(dim=1, keepdim=True).expand_as(painting)
    shifted = (painting + 0.3).clamp(-1, 1)
    grey_cost = float(color_distribution_loss(greyed, painting, directions))
    assert grey_cost > 0.02
    assert float(color_distribution_loss(shifted, painting, directions)) > 0.1
    # A half-way mix is nearer than the grey version: the term has somewhere to go.
    assert float(color_distribution_loss((greyed + painting) / 2, painting, directions)) < grey_cost


def test_pairs_by_batch_index_and_resamples_a_painting_of_another_size():
    a, b = smooth_batch(2, size=32), smooth_batch(3, size=32)
    directions = color_directions(1)
    both = color_distribution_loss(torch.cat([a, b]), torch.cat([a, b]), directions)
    swapped = color_distribution_loss(torch.cat([a, b]), torch.cat([b, a]), directions)
    assert float(both) == pytest.approx(0, abs=1e-6) and float(swapped) > 0.01
    larger = torch.nn.functional.interpolate(a, scale_factor=2, mode="nearest")  # every pixel four times
    assert float(color_distribution_loss(a, larger, directions)) < 0.01
    with pytest.raises(ValueError, match="B, 3, H, W"):
        color_distribution_loss(a[:, :1], a, directions)


def test_stage2_colour_term_alone_needs_no_vgg_and_trains_the_output_only():
    loss = StyleTransferLoss(StyleTransferLossConfig(disc_in_channels=8, image_color_weight=2.0), pretrained_vgg=False)
    assert loss.uses_images and loss.image_terms is None
    q = torch.randn(2, 8, 16, 16)
    with pytest.raises(ValueError, match="decoded output"):
        loss.generator_loss(q, q, q, 0.0, step=0)
    out = smooth_batch(6, size=32).requires_grad_(True)
    painting = smooth_batch(7, size=32).requires_grad_(True)
    photo = smooth_batch(8, size=32)
    plain = StyleTransferLoss(StyleTransferLossConfig(disc_in_channels=8))
    plain.discriminator.load_state_dict(loss.discriminator.state_dict())
    without, _ = plain.generator_loss(q, q, q, 0.0, step=0)
    total, logs = loss.generator_loss(q, q, q, 0.0, step=0, images=(out, painting, photo))
    assert float(logs["image_color"]) > 0 and "image_style" not in logs
    assert float(total.detach() - without.detach()) == pytest.approx(2.0 * float(logs["image_color"]), rel=1e-5)
    total.backward()
    assert float(out.grad.abs().sum()) > 0 and painting.grad is None
