"""The network-free stylization measures: what they return on known cases, and that they tell good from bad."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from image_files import random_batch

from quantart_cli.core.errors import BadInputError
from quantart_cli.core.metrics.grid import load_images, stylization_report
from quantart_cli.core.metrics.style import (
    color_histogram_distance,
    color_swd,
    luminance_ssim,
    mean_abs_diff,
    mean_std_color_transfer,
)
from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR


def _image(seed: int, size=(3, 48, 40)) -> torch.Tensor:
    return torch.rand(size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_swd_is_zero_for_the_same_colours_and_symmetric() -> None:
    a, b = _image(0), _image(1)
    assert color_swd(a, a) == 0.0
    assert color_swd(a, b) == pytest.approx(color_swd(b, a))
    # The same colours rearranged (a permutation of the pixels) are the same distribution.
    shuffled = a.reshape(3, -1)[:, torch.randperm(a[0].numel())].reshape(a.shape)
    assert color_swd(a, shuffled) == pytest.approx(0.0, abs=1e-12)


def test_kept_colour_profiles_give_exactly_the_distance() -> None:
    from quantart_cli.core.metrics.style import color_quantiles, swd_between

    a, b = _image(3), _image(4, (3, 300, 200))  # b is over SWD_MAX_PIXELS: its fixed pixel subset is used
    assert swd_between(color_quantiles(a), color_quantiles(b)) == color_swd(a, b)
    assert color_quantiles(a).shape == (256, 64)


def test_swd_compares_images_of_different_sizes_and_grows_with_a_colour_shift() -> None:
    a = _image(2)
    bigger = F.interpolate(a[None], scale_factor=2, mode="nearest")[0]
    assert color_swd(a, bigger) < 1e-3
    shifted = [color_swd(a, (a + d).clamp(-1, 1)) for d in (0.1, 0.3, 0.6)]
    assert shifted[0] < shifted[1] < shifted[2]
    # A uniform shift of 0.2 in [0, 1] units along every channel, well inside the range, moves every
    # projection by 0.2 * |sum of its direction|: the SWD is of that order.
    grey = torch.zeros(3, 16, 16)
    assert 0.05 < color_swd(grey, grey + 0.4) < 0.4


def test_ssim_is_one_for_the_same_image_and_falls_with_noise() -> None:
    a = _image(3, (3, 64, 64))
    assert luminance_ssim(a, a) == pytest.approx(1.0)
    noisy = [luminance_ssim(a, (a + s * _image(4, (3, 64, 64))).clamp(-1, 1)) for s in (0.1, 0.5)]
    assert 1.0 > noisy[0] > noisy[1]
    with pytest.raises(BadInputError, match="at least 11x11"):
        luminance_ssim(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))


def test_mean_abs_diff_is_in_grey_levels() -> None:
    black, white = -torch.ones(3, 4, 4), torch.ones(3, 4, 4)
    assert mean_abs_diff(black, white) == pytest.approx(255.0)
    with pytest.raises(BadInputError, match="same size"):
        mean_abs_diff(black, torch.ones(3, 4, 5))


@pytest.fixture(scope="module")
def real_images():
    photos = load_images(sorted(CONTENT_DIR.glob("*.jpg")))
    paintings = load_images(sorted(PAINTINGS_DIR.glob("*.jpg"))[:4], size=256)
    return photos, paintings


def _grid(photos, paintings, transfer):
    return {
        (p, s, a): (1 - a) * photos[p] + a * transfer(photos[p], paintings[s])
        for p in photos
        for s in paintings
        for a in (0.0, 0.5, 1.0)
    }


@pytest.mark.slow
def test_report_passes_a_colour_transfer_and_fails_the_photo_and_the_pasted_painting(real_images) -> None:
    photos, paintings = real_images
    transferred = stylization_report(photos, paintings, _grid(photos, paintings, mean_std_color_transfer))
    assert transferred.swd_ratio < 0.7 and transferred.own_painting_rate >= 0.85
    assert transferred.alpha_monotone and transferred.content_ssim > 0.5
    assert transferred.painting_difference > 6

    unchanged = stylization_report(photos, paintings, _grid(photos, paintings, lambda p, s: p))
    assert unchanged.swd_ratio == pytest.approx(1.0) and unchanged.painting_difference == 0
    assert not unchanged.alpha_monotone
    assert unchanged.texture_ratio == pytest.approx(1.0) and unchanged.detail == pytest.approx(unchanged.photo_detail)

    def paste(photo, painting):
        return F.interpolate(painting, size=photo.shape[-2:], mode="bilinear", align_corners=False, antialias=True)

    pasted = stylization_report(photos, paintings, _grid(photos, paintings, paste))
    assert pasted.swd_ratio < 0.2 and pasted.content_ssim < 0.3
    assert pasted.texture_ratio < 0.5 and pasted.detail > 0.8  # the painting's own patches, a little resampled


def test_report_refuses_an_incomplete_grid(real_images) -> None:
    photos, paintings = real_images
    outputs = _grid(photos, paintings, mean_std_color_transfer)
    outputs.pop(next(iter(outputs)))
    with pytest.raises(BadInputError, match="missing"):
        stylization_report(photos, paintings, outputs)


def test_colour_histogram_distance_has_known_answers():
    image = random_batch(0)
    assert color_histogram_distance(image, image) == pytest.approx(0.0, abs=1e-9)
    assert color_histogram_distance(image, torch.flip(image, dims=[-1])) == pytest.approx(0.0, abs=1e-9)
    near, far = color_histogram_distance(image, image + 0.1), color_histogram_distance(image, image + 0.5)
    assert 0 < near < far <= 1
    black, white = -torch.ones(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    assert color_histogram_distance(black, white) == pytest.approx(1.0)
    assert luminance_ssim(image, image) == pytest.approx(1.0)
