"""The network-free texture and detail measures: known answers, what they ignore (colour) and what they see
(structure, sharpness)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from quantart_cli.core.errors import BadInputError
from quantart_cli.core.metrics.style import color_swd
from quantart_cli.core.metrics.texture import (
    TextureProfiles,
    detail_ratio,
    gradient_energy,
    texture_profile,
    texture_ratio,
    texture_swd,
    texture_swd_between,
)


def _noise(seed: int, size=(96, 128), scale: float = 0.5, smooth: int = 1) -> torch.Tensor:
    """(1, 3, H, W) noise in [-scale, scale] (never clipped), box-blurred ``smooth`` px wide."""
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    if smooth > 1:
        x = F.avg_pool2d(F.pad(x, [smooth // 2] * 4, mode="reflect"), smooth, stride=1)
        x = x / x.abs().max()
    return x * scale


def test_texture_distance_is_zero_for_the_same_image_symmetric_and_from_kept_profiles() -> None:
    a, b = _noise(0), _noise(1, size=(200, 150), smooth=9)
    assert texture_swd(a, a) == 0.0
    assert texture_swd(a, b) == pytest.approx(texture_swd(b, a))
    assert texture_swd_between(texture_profile(a), texture_profile(b)) == texture_swd(a, b)
    kept = TextureProfiles()
    assert kept("a", a) is kept("a", torch.zeros(1, 3, 8, 8))  # made once per key
    assert texture_profile(a).shape == (3, 256, 128)  # levels x quantiles x directions


def test_texture_ignores_a_colour_shift_that_the_colour_distance_sees() -> None:
    a = _noise(2, smooth=5)
    shifted = a + torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)  # stays inside [-1, 1]: no clipping
    assert color_swd(a, shifted) > 0.05
    assert texture_swd(a, shifted) < 1e-6 < texture_swd(a, _noise(3, smooth=5))


def test_texture_ratio_falls_when_the_painting_s_texture_is_added_and_rises_when_blurred() -> None:
    photo = _noise(4, smooth=15)  # smooth shapes
    painting = _noise(5, scale=0.6, smooth=1)  # fine grain everywhere
    assert texture_ratio(photo, photo, painting) == pytest.approx(1.0)
    assert texture_ratio(painting, photo, painting) == 0.0
    grained = (0.5 * photo + 0.5 * painting).clamp(-1, 1)
    blurred = F.avg_pool2d(F.pad(photo, [2] * 4, mode="reflect"), 5, stride=1)
    assert texture_ratio(grained, photo, painting) < 0.8
    assert texture_ratio(blurred, photo, painting) > 1.0


def test_texture_refuses_an_image_too_narrow_for_its_smallest_level() -> None:
    with pytest.raises(BadInputError, match="too narrow"):
        texture_swd(torch.zeros(1, 3, 8, 600), torch.zeros(1, 3, 64, 64))
    with pytest.raises(BadInputError, match="must be a"):
        texture_swd(torch.zeros(2, 3, 64, 64), torch.zeros(1, 3, 64, 64))


def test_gradient_energy_has_a_known_answer_and_is_measured_at_a_fixed_size() -> None:
    ramp = torch.linspace(-1, 1, 256).view(1, 1, 1, 256).expand(1, 3, 100, 256)  # grey, 2/255 per px in [-1, 1]
    # luma rises 1/255 per pixel; Sobel's x kernel (rows 1, 2, 1; columns -1, 0, 1) gives 4 * 2 * 1/255
    assert gradient_energy(ramp) == pytest.approx(8 / 255, rel=1e-9)
    assert gradient_energy(torch.zeros(1, 3, 40, 50)) == 0.0
    texture = _noise(6, size=(128, 160), smooth=3)
    doubled = F.interpolate(texture, scale_factor=2, mode="bicubic", align_corners=False).clamp(-1, 1)
    assert gradient_energy(doubled) == pytest.approx(gradient_energy(texture), rel=0.1)  # both read at 256 px


def test_detail_ratio_falls_with_blur() -> None:
    painting, photo = _noise(7, smooth=3), _noise(8, smooth=3)
    assert detail_ratio(painting, painting) == 1.0
    blurred = [F.avg_pool2d(F.pad(photo, [k // 2] * 4, mode="reflect"), k, stride=1) for k in (3, 7)]
    assert detail_ratio(photo, painting) > detail_ratio(blurred[0], painting) > detail_ratio(blurred[1], painting)
    flat = detail_ratio(photo, torch.full((1, 3, 32, 32), 0.3))
    assert flat != flat  # NaN: no detail to compare with
