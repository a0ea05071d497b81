"""`quantart demo`: the whole pipeline on the packaged samples (few steps here; the real demo trains longer)."""

from __future__ import annotations

import pytest
from cli_support import run_cli
from PIL import Image

from quantart_cli.checkpoint import read_checkpoint_header

pytestmark = pytest.mark.slow


def test_demo_writes_checkpoints_images_and_a_contact_sheet(capsys, tmp_path):
    out = tmp_path / "demo"
    result = run_cli(capsys, "--device", "cpu", "demo", "--out", str(out), "--vq-steps", "2", "--sga-steps", "2",
                     "--alphas", "0.5,1")
    assert result.code == 0, result.err
    assert result.out.strip() == str(out / "contact_sheet.png")  # stdout: the result only
    assert read_checkpoint_header(out / "vq-photo" / "last.pt").kind == "vqgan"
    assert read_checkpoint_header(out / "vq-art" / "last.pt").kind == "vqgan"
    assert read_checkpoint_header(out / "sga" / "last.pt").kind == "style-transfer"
    stylized = sorted(p.name for p in (out / "stylized").glob("*.png"))
    assert len(stylized) == 2 * 2 * 2 and "lhq_1_wikiart_2_alpha0.5.png" in stylized
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.size == (4 * 192, 28 + 4 * 192)  # photo, painting, 2 alphas; 2 photos x 2 paintings
    assert "fine-tuned from the photo VQGAN" in result.err and "contact sheet" in result.err


def test_demo_never_writes_into_a_folder_that_holds_something(capsys, tmp_path):
    (tmp_path / "keep.txt").write_text("someone's file")
    result = run_cli(capsys, "demo", "--out", str(tmp_path))
    assert result.code == 2 and "not an empty folder" in result.err
    assert (tmp_path / "keep.txt").read_text() == "someone's file"
