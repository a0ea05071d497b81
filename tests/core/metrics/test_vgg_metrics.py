"""The measures on the bundled VGG19 (style loss, content loss, CFSD): offline, zero for the same image, in the
right order on real images, the same with and without kept features, and CFSD's similarity matrix kept small."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from quantart_cli.core.metrics.grid import load_images
from quantart_cli.core.metrics.style import mean_std_color_transfer
from quantart_cli.core.metrics.vgg_metrics import CFSD_MAX_PIXELS, BundledVGGMetrics, build_bundled_vgg19, cfsd_shape
from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR


@pytest.fixture(scope="module")
def metrics() -> BundledVGGMetrics:
    return BundledVGGMetrics(build_bundled_vgg19())  # the installed weights: no download


@pytest.fixture(scope="module")
def images():
    photo = load_images([sorted(CONTENT_DIR.glob("*.jpg"))[0]], size=128)
    painting = load_images([PAINTINGS_DIR / "munch_the_scream.jpg"], size=128)
    return next(iter(photo.values())), next(iter(painting.values()))


def test_the_same_image_scores_zero(metrics, images) -> None:
    photo, _ = images
    assert metrics.score(photo, photo, photo) == {"style_loss": 0.0, "content_loss": 0.0, "cfsd": 0.0}


def test_the_measures_rank_a_colour_transfer_a_blur_and_the_pasted_painting(metrics, images) -> None:
    photo, painting = images
    pasted = F.interpolate(painting, size=photo.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    blurred = F.avg_pool2d(F.pad(photo, [1] * 4, mode="reflect"), 3, stride=1)
    score = {name: metrics.score(out, photo, painting, photo_key="p", painting_key="s")
             for name, out in (("photo", photo), ("transfer", mean_std_color_transfer(photo, painting)),
                               ("blur", blurred), ("pasted", pasted), ("flipped", photo.flip(-1)))}
    assert score["pasted"]["style_loss"] < score["photo"]["style_loss"]
    assert score["transfer"]["style_loss"] < score["photo"]["style_loss"]
    for metric in ("content_loss", "cfsd"):  # the photo's layout: kept by a blur, lost by a flip or the painting
        assert 0 == score["photo"][metric] < score["blur"][metric] < score["flipped"][metric]
        assert score["blur"][metric] < score["pasted"][metric]


def test_kept_features_give_the_same_figures(metrics, images) -> None:
    photo, painting = images
    output = mean_std_color_transfer(photo, painting)
    fresh = BundledVGGMetrics(metrics.vgg).score(output, photo, painting)
    kept = BundledVGGMetrics(metrics.vgg)
    kept.score(photo, photo, painting, photo_key="p", painting_key="s")  # fills what is kept
    assert kept.score(output, photo, painting, photo_key="p", painting_key="s") == pytest.approx(fresh, rel=1e-6)


def test_cfsd_compares_at_most_4096_positions_and_keeps_the_aspect() -> None:
    for height, width in ((512, 512), (2000, 3000), (300, 1200)):
        h, w = cfsd_shape(height, width)
        assert h * w <= CFSD_MAX_PIXELS and (h // 4) * (w // 4) <= 4096
        assert h / w == pytest.approx(height / width, rel=0.02)
    assert cfsd_shape(100, 80) == (100, 80)  # small images are not enlarged


def test_random_weights_need_no_file() -> None:
    vgg = build_bundled_vgg19(pretrained=False)
    out = BundledVGGMetrics(vgg).score(torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 32, 32) * 0.5,
                                       torch.zeros(1, 3, 40, 24))
    assert set(out) == {"style_loss", "content_loss", "cfsd"} and all(v == v for v in out.values())
