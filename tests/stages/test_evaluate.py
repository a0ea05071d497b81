"""``quantart evaluate`` and its metrics: known answers on synthetic images, the pretrained metrics with random
weights and no network, both modes agreeing, the CSV/JSON formats, and bad inputs ending in one sentence."""

from __future__ import annotations

import csv
import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import run_cli

from quantart_cli.core.io.images import image_to_tensor, load_image, save_image_atomic
from quantart_cli.core.metrics import networks as nets
from quantart_cli.core.metrics.inputs import read_manifest
from quantart_cli.core.metrics.scoring import METRICS, Networks, Triple, load_networks, score_triples
from quantart_cli.core.metrics.style import color_histogram_distance, luminance_ssim, mean_std_color_transfer
from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR

PHOTOS = sorted(CONTENT_DIR.glob("*.jpg"))
PAINTINGS = sorted(PAINTINGS_DIR.glob("*.jpg"))[:3]


def _image(seed: int, size: tuple[int, int] = (48, 64), shift: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 3, *size, generator=generator) * 1.6 - 0.8 + shift).clamp(-1, 1)


def _one_sentence(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------------ network-free metrics


def test_colour_histogram_distance_has_known_answers():
    image = _image(0)
    assert color_histogram_distance(image, image) == pytest.approx(0.0, abs=1e-9)
    assert color_histogram_distance(image, torch.flip(image, dims=[-1])) == pytest.approx(0.0, abs=1e-9)
    near, far = color_histogram_distance(image, image + 0.1), color_histogram_distance(image, image + 0.5)
    assert 0 < near < far <= 1
    black, white = -torch.ones(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    assert color_histogram_distance(black, white) == pytest.approx(1.0)
    assert luminance_ssim(image, image) == pytest.approx(1.0)


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
    a, b = _image(1), _image(2)
    assert nets.lpips_distance(random_networks.lpips, a, a) == pytest.approx(0.0, abs=1e-6)
    assert nets.lpips_distance(random_networks.lpips, a, b) > 0
    assert nets.vgg_style_loss(random_networks.vgg19, a, a) == pytest.approx(0.0, abs=1e-9)
    assert nets.vgg_style_loss(random_networks.vgg19, a, b + 0.3) > nets.vgg_style_loss(random_networks.vgg19, a, b)
    assert nets.cfsd(random_networks.vgg19, a, a) == pytest.approx(0.0, abs=1e-9)
    whole = nets.cfsd(random_networks.vgg19, a, b)
    assert whole > 0 and nets.cfsd(random_networks.vgg19, a, b, chunk=7) == pytest.approx(whole, rel=1e-9)
    features = nets.inception_features(random_networks.inception, [a, b, _image(3, (40, 40))])
    assert features.shape == (3, 2048) and np.isfinite(features).all()


def test_every_metric_is_computed_with_networks(random_networks):
    photos = [_image(10), _image(11)]
    paintings = [_image(20, shift=0.4), _image(21, shift=-0.4)]
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
    photo, painting = _image(4), _image(5, shift=0.3)
    output = mean_std_color_transfer(photo, painting)
    result = score_triples([Triple("all", "p", "s", "o", output, photo, painting)], networks)
    assert result.groups["all"]["color_swd"] > 0 and result.groups["all"]["lpips"] is None
    assert not result.metrics["fid"]["available"] and "pt_inception" in result.metrics["fid"]["reason"]
    # the bundled VGG19 needs no download: its metrics are there offline
    for name in ("vgg_style_loss", "vgg_content_loss", "vgg_cfsd"):
        assert result.metrics[name]["available"] and result.groups["all"][name] > 0, name


# --------------------------------------------------------------------------------------------------- CLI


def _baseline_manifest(folder: Path, kind: str) -> Path:
    """Outputs of an identity "stylization" (output = photo) or a mean/std colour transfer, with a manifest."""
    folder.mkdir(parents=True)
    lines = ["stylized,content,style"]
    for photo in PHOTOS:
        for painting in PAINTINGS:
            content = image_to_tensor(load_image(photo))
            output = content if kind == "identity" else mean_std_color_transfer(content,
                                                                                image_to_tensor(load_image(painting)))
            name = f"{photo.stem}__{painting.stem}.png"
            save_image_atomic(output, folder / name)
            lines.append(f"{name},{photo},{painting}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder / "manifest.csv"


def test_colour_transfer_ranks_better_than_identity_on_the_colour_metrics(capsys, tmp_path):
    scores = {}
    for kind in ("identity", "transfer"):
        manifest = _baseline_manifest(tmp_path / kind, kind)
        result = run_cli(capsys, "evaluate", "--manifest", str(manifest), "--size", "128", "--networks", "off",
                         "--json")
        assert result.code == 0, result.err
        scores[kind] = json.loads(result.out)
    identity, transfer = scores["identity"]["groups"]["all"], scores["transfer"]["groups"]["all"]
    for metric in ("color_swd", "swd_ratio", "color_hist"):
        assert transfer[metric] < identity[metric], metric
    assert identity["swd_ratio"] == pytest.approx(1.0) and identity["content_ssim"] == pytest.approx(1.0)
    assert identity["texture_ratio"] == pytest.approx(1.0) and identity["detail"] == identity["photo_detail"] > 0
    assert transfer["texture_ratio"] > 0 and transfer["detail"] > 0  # network-free: there with --networks off
    assert transfer["painting_dependence"] > identity["painting_dependence"] == 0.0
    metrics = scores["transfer"]["metrics"]
    assert list(metrics) == [m.name for m in METRICS]
    for name, info in metrics.items():
        assert set(info) == {"direction", "unit", "level", "available", "reason", "description"}, name
        assert info["direction"] in {"lower", "higher", "reference"}
    assert metrics["color_swd"]["direction"] == "lower" and metrics["content_ssim"]["direction"] == "higher"
    assert not metrics["lpips"]["available"] and "--networks off" in metrics["lpips"]["reason"]


def test_stylizing_mode_matches_scoring_its_saved_outputs(capsys, tmp_path):
    styles = [arg for painting in PAINTINGS[:2] for arg in ("--style", str(painting))]
    common = ["--size", "96", "--networks", "off", "--json", "--device", "cpu"]
    direct = run_cli(capsys, "evaluate", "--content", str(CONTENT_DIR), *styles, "--alpha", "0.5,1",
                     "--save-stylized", str(tmp_path / "out"), "--out", str(tmp_path / "rows.csv"), *common)
    assert direct.code == 0, direct.err
    manifest = tmp_path / "out" / "manifest.csv"
    rows = read_manifest(manifest)
    assert len(rows) == len(PHOTOS) * 2 * 2 and {r.group for r in rows} == {"0.5", "1"}
    again = run_cli(capsys, "evaluate", "--manifest", str(manifest), *common)
    assert again.code == 0, again.err
    first, second = json.loads(direct.out), json.loads(again.out)
    assert first["groups"] == second["groups"]
    assert list(first["groups"]) == ["0.5", "1"]
    with open(tmp_path / "rows.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    assert {"group", "content", "style", "stylized", "color_swd", "content_ssim", "lpips"} <= set(table[0])
    assert table[0]["lpips"] == ""  # unavailable is an empty cell, not a made-up number


def test_table_output_names_direction_and_limit_caps_pairs(capsys, tmp_path):
    result = run_cli(capsys, "evaluate", "--content", str(PHOTOS[0]), "--style", str(PAINTINGS_DIR), "--limit", "2",
                     "--size", "64", "--networks", "off", "--per-image", "--device", "cpu")
    assert result.code == 0, result.err
    assert "color_swd" in result.out and "lower is better" in result.out and "higher is better" in result.out
    assert "per pair" in result.out
    assert result.out.count(PHOTOS[0].stem) == 2  # two pairs, one row each


def test_the_table_says_which_weights_made_each_network_figure(capsys, tmp_path, monkeypatch):
    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    manifest = _baseline_manifest(tmp_path / "t", "transfer")
    result = run_cli(capsys, "evaluate", "--manifest", str(manifest), "--size", "48")
    assert result.code == 0, result.err
    rows = {line.split()[1]: line for line in result.out.splitlines() if line.startswith("│")}
    for name in ("vgg_style_loss", "vgg_content_loss", "vgg_cfsd"):
        assert "bundled VGG19, offline" in rows[name] and "n/a" not in rows[name], rows[name]
    assert "n/a" in rows["style_loss"] and "torchvision VGG19 metrics unavailable" in result.err


def test_deterministic(capsys, tmp_path):
    manifest = _baseline_manifest(tmp_path / "t", "transfer")
    runs = [run_cli(capsys, "evaluate", "--manifest", str(manifest), "--size", "64", "--networks", "off", "--json")
            for _ in range(2)]
    assert runs[0].out == runs[1].out


@pytest.mark.parametrize(
    ("make", "args", "expected"),
    [
        (lambda d: None, ["--manifest", "{d}/none.csv"], "does not exist"),
        (lambda d: (d / "m.csv").write_text("output,photo\na.png,b.jpg\n"), ["--manifest", "{d}/m.csv"],
         "needs the columns stylized, content, style"),
        (lambda d: (d / "m.csv").write_text("stylized,content,style\n"), ["--manifest", "{d}/m.csv"], "no rows"),
        (lambda d: (d / "m.csv").write_text(f"stylized,content,style\nmissing.png,{PHOTOS[0]},{PAINTINGS[0]}\n"),
         ["--manifest", "{d}/m.csv"], "Row 2 of"),
        (lambda d: (d / "empty").mkdir(), ["--content", "{d}/empty", "--style", str(PAINTINGS[0])], "empty"),
        (lambda d: ((d / "docs").mkdir(), (d / "docs" / "a.txt").write_text("x")),
         ["--content", "{d}/docs", "--style", str(PAINTINGS[0])], "docs"),
        (lambda d: None, ["--content", str(PHOTOS[0])], "needs --content and --style"),
        (lambda d: None, [], "needs --content and --style"),
        (lambda d: None, ["--content", str(PHOTOS[0]), "--style", str(PAINTINGS[0]), "--manifest", "x.csv"],
         "not both"),
        (lambda d: None, ["--content", str(PHOTOS[0]), "--style", str(PAINTINGS[0]), "--out", "{d}/rows.json"],
         "ending in .csv"),
        (lambda d: None, ["--stylized", "{d}"], "--stylized needs --manifest"),
    ],
    ids=["no-manifest", "bad-header", "no-rows", "missing-file", "empty-folder", "no-images", "no-style", "nothing",
         "both-modes", "out-not-csv", "stylized-alone"],
)
def test_bad_inputs_end_in_one_sentence(capsys, tmp_path, make, args, expected):
    make(tmp_path)
    argv = [a.replace("{d}", str(tmp_path)) for a in args]
    result = run_cli(capsys, "evaluate", *argv, "--networks", "off", "--device", "cpu")
    assert result.code != 0
    assert expected in _one_sentence(result.err)


def test_evaluate_does_not_replace_files_without_overwrite(capsys, tmp_path):
    manifest = _baseline_manifest(tmp_path / "t", "identity")
    rows = tmp_path / "rows.csv"
    rows.write_text("mine\n")
    common = ["--size", "32", "--networks", "off"]
    refused = run_cli(capsys, "evaluate", "--manifest", str(manifest), "--out", str(rows), *common)
    assert refused.code == 2 and "--overwrite" in _one_sentence(refused.err) and rows.read_text() == "mine\n"
    replaced = run_cli(capsys, "evaluate", "--manifest", str(manifest), "--out", str(rows), "--overwrite", *common)
    assert replaced.code == 0
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    refused = run_cli(capsys, "evaluate", "--content", str(PHOTOS[0]), "--style", str(PAINTINGS[0]),
                      "--save-stylized", str(busy), *common, "--device", "cpu")
    assert refused.code == 2 and "not empty" in refused.err
