"""``quantart evaluate``: the colour transfer ranks above identity, both modes agreeing, the CSV/JSON and table
formats, and bad inputs (alphas out of range too) ending in one sentence."""

from __future__ import annotations

import csv
import json
import urllib.error
from pathlib import Path

import pytest
import torch
from cli_support import run_cli

from quantart_cli.core.io.images import image_to_tensor, load_image, save_image_atomic
from quantart_cli.core.metrics.inputs import read_manifest
from quantart_cli.core.metrics.scoring import METRICS
from quantart_cli.core.metrics.style import mean_std_color_transfer
from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR

PHOTOS = sorted(CONTENT_DIR.glob("*.jpg"))
PAINTINGS = sorted(PAINTINGS_DIR.glob("*.jpg"))[:3]


def _one_sentence(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


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


STYLE = PAINTINGS_DIR / "munch_the_scream.jpg"


def _one_error(err: str) -> None:
    assert "Traceback" not in err and "ValidationError" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err


# --- alphas out of range are refused before the model loads ---------------------------------------------------------


def test_evaluate_refuses_an_alpha_out_of_range_in_one_sentence_before_loading_the_model(capsys, monkeypatch):
    from quantart_cli.core.io import checkpoints

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded for settings that cannot run")

    monkeypatch.setattr(checkpoints, "load_model", no_model)
    for alphas in ("0,2", "-0.5"):
        result = run_cli(capsys, "evaluate", "--content", str(CONTENT_DIR / "lhq_1.jpg"), "--style", str(STYLE),
                         "--alpha", alphas, "--networks", "off", "--device", "cpu")
        assert result.code == 2, result.err
        assert "--alpha" in result.err and "between 0 and 1" in result.err
        _one_error(result.err)
