"""The metrics on pretrained networks (quantart_cli.core.metrics.networks, scored by .scoring): the
Frechet distance against pytorch-fid, the networks with random weights and no download, every metric computed,
missing weights leaving the rest working."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from image_files import random_batch

from quantart_cli.core.metrics import networks as nets
from quantart_cli.core.metrics.scoring import METRICS, Networks, Triple, load_networks, score_triples
from quantart_cli.core.metrics.style import mean_std_color_transfer


def test_frechet_distance_matches_pytorch_fid_and_has_known_answers():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    for n, d in ((5, 64), (40, 32)):  # fewer images than dimensions (our exact path), and more (pytorch-fid's)
        a, b = rng.normal(size=(n, d)), rng.normal(size=(n + 3, d)) * 1.5 + 0.3
        ref = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
        assert nets.frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
        assert nets.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
        assert nets.frechet_distance(a, a + 1.0) == pytest.approx(d, rel=1e-6)  # a pure shift: |mu_a - mu_b|^2
    with pytest.raises(Exception, match="at least 2 images"):
        nets.frechet_distance(rng.normal(size=(1, 8)), rng.normal(size=(3, 8)))


# ------------------------------------------------------------------------- pretrained metrics, random weights


@pytest.fixture(scope="module")
def random_networks() -> Networks:
    torch.manual_seed(0)
    return load_networks("random")


def test_random_networks_need_no_download(random_networks):
    assert random_networks.missing == {}
    assert all(random_networks.has(name) for name in ("lpips", "vgg19", "inception"))


def test_pretrained_metrics_on_known_cases(random_networks):
    a, b = random_batch(1), random_batch(2)
    assert nets.lpips_distance(random_networks.lpips, a, a) == pytest.approx(0.0, abs=1e-6)
    assert nets.lpips_distance(random_networks.lpips, a, b) > 0
    assert nets.vgg_style_loss(random_networks.vgg19, a, a) == pytest.approx(0.0, abs=1e-9)
    assert nets.vgg_style_loss(random_networks.vgg19, a, b + 0.3) > nets.vgg_style_loss(random_networks.vgg19, a, b)
    assert nets.cfsd(random_networks.vgg19, a, a) == pytest.approx(0.0, abs=1e-9)
    whole = nets.cfsd(random_networks.vgg19, a, b)
    assert whole > 0 and nets.cfsd(random_networks.vgg19, a, b, chunk=7) == pytest.approx(whole, rel=1e-9)
    features = nets.inception_features(random_networks.inception, [a, b, random_batch(3, (40, 40))])
    assert features.shape == (3, 2048) and np.isfinite(features).all()


def test_every_metric_is_computed_with_networks(random_networks):
    photos = [random_batch(10), random_batch(11)]
    paintings = [random_batch(20, shift=0.4), random_batch(21, shift=-0.4)]
    triples = [Triple("1", f"p{i}", f"s{j}", f"o{i}{j}", mean_std_color_transfer(p, s), p, s)
               for i, p in enumerate(photos) for j, s in enumerate(paintings)]
    result = score_triples(triples, random_networks)
    assert all(info["available"] for info in result.metrics.values()), result.metrics
    values = result.groups["1"]
    assert all(np.isfinite(values[m.name]) for m in METRICS)
    assert values["art_fid"] == pytest.approx((1 + values["lpips"]) * (1 + values["fid"]))


def test_missing_weights_make_those_metrics_unavailable_and_the_rest_still_work(monkeypatch, tmp_path):
    calls: list[str] = []

    def no_network(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    networks = load_networks("auto")
    assert set(networks.missing) == {"lpips", "vgg19", "inception"} and len(calls) == 3
    for reason in networks.missing.values():
        assert "could not be downloaded: put it in" in reason and reason.count(". ") == 0
    photo, painting = random_batch(4), random_batch(5, shift=0.3)
    output = mean_std_color_transfer(photo, painting)
    result = score_triples([Triple("all", "p", "s", "o", output, photo, painting)], networks)
    assert result.groups["all"]["color_swd"] > 0 and result.groups["all"]["lpips"] is None
    assert not result.metrics["fid"]["available"] and "pt_inception" in result.metrics["fid"]["reason"]
    # the bundled VGG19 needs no download: its metrics are there offline
    for name in ("vgg_style_loss", "vgg_content_loss", "vgg_cfsd"):
        assert result.metrics[name]["available"] and result.groups["all"][name] > 0, name
