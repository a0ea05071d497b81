"""`quantart demo`: the built-in model on the packaged samples, and with --train the whole pipeline (the slow tier);
the counting of its steps with stand-ins for the stages (fast)."""

from __future__ import annotations

import pytest
from cli_support import run_cli
from PIL import Image

from quantart_cli.core.io.checkpoints import read_checkpoint_header

TILE, TITLE, LABEL, GAP = 160, 26, 18, 12
PANEL = TITLE + 5 * (TILE + LABEL) + GAP  # header + 2 photo rows + 2 alpha-strip rows


@pytest.mark.slow
def test_demo_stylizes_with_the_builtin_model(capsys, tmp_path):
    out = tmp_path / "demo"
    result = run_cli(capsys, "--device", "cpu", "demo", "--out", str(out))
    assert result.code == 0, result.err
    assert result.out.strip() == str(out / "contact_sheet.png")  # stdout: the result only
    stylized = sorted(p.name for p in (out / "stylized").glob("*.png"))
    # 2 photos x 8 paintings at alpha 1, plus the strip's alphas 0 and 0.5 after the first painting.
    assert len(stylized) == 2 * 8 + 2 * 2
    assert "lhq_1_hokusai_great_wave_alpha1.png" in stylized and "lhq_2_gauguin_te_fare_alpha0.5.png" in stylized
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.size == (9 * TILE, PANEL)
    with Image.open(out / "stylized" / "lhq_1_hokusai_great_wave_alpha1.png") as image:
        assert image.size == (512, 512)  # the 256 px samples stylized at 512 px, where strokes show
    with Image.open(out / "closeup.png") as closeup:  # 2 photos x 2 paintings, photo | painting | result
        assert closeup.size == (3 * 512, 4 * 512)
    assert not (out / "sga").exists()  # nothing trained without --train
    assert "built-in model" in result.err and "contact sheet" in result.err


@pytest.mark.slow
def test_demo_train_adds_a_labelled_tiny_model_panel(capsys, tmp_path):
    out = tmp_path / "demo"
    result = run_cli(capsys, "--device", "cpu", "demo", "--out", str(out), "--train", "--vq-steps", "2",
                     "--sga-steps", "2", "--alphas", "0,1", "--size", "128")
    assert result.code == 0, result.err
    with Image.open(out / "stylized" / "lhq_1_hokusai_great_wave_alpha1.png") as image:
        assert image.size == (128, 128)  # --size: the built-in model's results at 128 px
    with Image.open(out / "closeup.png") as closeup:
        assert closeup.size == (3 * 128, 4 * 128)
    assert read_checkpoint_header(out / "vq-photo" / "last.pt").kind == "vqgan"
    assert read_checkpoint_header(out / "vq-art" / "last.pt").kind == "vqgan"
    assert read_checkpoint_header(out / "sga" / "last.pt").kind == "style-transfer"
    tiny = sorted(p.name for p in (out / "stylized-tiny").glob("*.png"))
    assert len(tiny) == 2 * 2 + 2  # 2 photos x 2 paintings at alpha 1, plus the strip's alpha 0
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.size == (9 * TILE, 2 * PANEL)
    assert "fine-tuned from the photo VQGAN" in result.err


@pytest.mark.slow
def test_demo_never_writes_into_a_folder_that_holds_something(capsys, tmp_path):
    (tmp_path / "keep.txt").write_text("someone's file")
    result = run_cli(capsys, "demo", "--out", str(tmp_path))
    assert result.code == 2 and "not an empty folder" in result.err
    assert (tmp_path / "keep.txt").read_text() == "someone's file"


@pytest.mark.slow
def test_demo_refuses_an_alpha_outside_0_1(capsys, tmp_path):
    result = run_cli(capsys, "demo", "--out", str(tmp_path / "d"), "--alphas", "0,1.5")
    assert result.code == 2 and "[0, 1]" in result.err
    assert not (tmp_path / "d").exists()


# --- counting the steps, with stand-ins for the stages (fast) -------------------------------------------------------


@pytest.mark.parametrize("train", [False, True])
def test_the_demo_counts_its_steps_right(capsys, tmp_path, monkeypatch, train):
    """Issue 25: `demo --train` counted [6/5]. Each stage is replaced by a stand-in: only the counting is checked
    here (the tests above run the real demo, in the slow tier)."""
    from quantart_stages import demo, train_sga, train_vq

    for module in (train_vq, train_sga):
        monkeypatch.setattr(module, "run", lambda settings, ctx: 0)
    monkeypatch.setattr(demo, "_stylize", lambda *args, **kwargs: 0)
    monkeypatch.setattr(demo, "_contact_sheet", lambda *args, **kwargs: 0)
    monkeypatch.setattr(demo, "_closeup_sheet", lambda *args, **kwargs: 0)
    result = run_cli(capsys, "demo", "--out", str(tmp_path / "demo"), "--device", "cpu",
                     *(["--train"] if train else []))
    assert result.code == 0, result.err
    counters = [line.split("]")[0] + "]" for line in result.err.splitlines() if line.startswith("[")]
    total = 7 if train else 3
    assert counters == [f"[{n}/{total}]" for n in range(1, total + 1)]
