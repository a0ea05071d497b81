"""``quantart stylize --style P --mask M``: each mask belongs to the --style before it, outputs record the masks'
SHA-256 (and are redone when a mask changes), the command line writes what the Python API computes, bad masks and
mask lists that do not line up are one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_support import assert_one_sentence, run_cli
from PIL import Image

from quantart_cli.core.io.digest import file_sha256
from quantart_cli.core.io.images import image_to_tensor, load_image, read_image_note, tensor_to_image
from quantart_cli.core.transfer.masks import load_mask
from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR

pytestmark = pytest.mark.usefixtures("one_thread")

PHOTO = CONTENT_DIR / "lhq_1.jpg"
STYLE = PAINTINGS_DIR / "hokusai_great_wave.jpg"
OTHER_STYLE = PAINTINGS_DIR / "sisley_snow_road.jpg"
FAST = ["--size", "48", "--device", "cpu"]


@pytest.fixture
def masks(tmp_path: Path) -> dict[str, Path]:
    left = np.zeros((30, 40), dtype=np.uint8)
    left[:, :20] = 255
    files = {"left": tmp_path / "left.png", "right": tmp_path / "right.png", "white": tmp_path / "white.png"}
    Image.fromarray(left).save(files["left"])
    Image.fromarray(255 - left).save(files["right"])
    Image.new("L", (8, 8), 255).save(files["white"])
    return files


def _stylize(capsys, out: Path, *args: str):
    return run_cli(capsys, "stylize", str(PHOTO), *args, "--out", str(out), *FAST)


def _note(path: Path) -> dict:
    return json.loads(read_image_note(path))


def test_each_mask_belongs_to_the_style_before_it(capsys, masks, tmp_path):
    first = _stylize(capsys, tmp_path / "a.png", "--style", str(STYLE), "--mask", str(masks["left"]),
                     "--style", str(OTHER_STYLE))
    assert first.code == 0, first.err
    assert "2 style image(s) (1 with a mask)" in first.err
    assert _note(tmp_path / "a.png")["masks"] == [file_sha256(masks["left"]), None]
    second = _stylize(capsys, tmp_path / "b.png", "--style", str(STYLE), "--style", str(OTHER_STYLE),
                      "--mask", str(masks["left"]))
    assert second.code == 0, second.err
    assert _note(tmp_path / "b.png")["masks"] == [None, file_sha256(masks["left"])]
    assert _note(tmp_path / "a.png")["styles"] == _note(tmp_path / "b.png")["styles"]


def test_the_command_line_writes_what_the_python_api_computes(capsys, masks, tmp_path):
    from quantart_cli import stylize_images
    from quantart_cli.core.io.checkpoints import load_model
    from quantart_cli.core.weights import builtin_model_path

    result = _stylize(capsys, tmp_path / "out.png", "--style", str(STYLE), "--mask", str(masks["left"]),
                      "--style", str(OTHER_STYLE), "--mask", str(masks["right"]), "--alpha", "0.8")
    assert result.code == 0, result.err
    model = load_model(builtin_model_path(), device="cpu", expected_kind="style-transfer")
    expected = stylize_images(model, image_to_tensor(load_image(PHOTO)),
                              [image_to_tensor(load_image(p)) for p in (STYLE, OTHER_STYLE)],
                              masks=[load_mask(masks["left"]), load_mask(masks["right"])], alpha=0.8, size=48)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), np.asarray(tensor_to_image(expected)))


def test_outputs_are_redone_when_a_mask_changes_and_kept_without_masks(capsys, masks, tmp_path):
    out = tmp_path / "out.png"
    plain = _stylize(capsys, out, "--style", str(STYLE))
    assert plain.code == 0 and "masks" not in _note(out)  # outputs made before masks existed stay up to date
    white = _stylize(capsys, out, "--style", str(STYLE), "--mask", str(masks["white"]))
    assert white.code == 0 and "redoing 1 image" in white.err
    again = _stylize(capsys, out, "--style", str(STYLE), "--mask", str(masks["white"]))
    assert again.code == 0 and "up to date" in again.err
    Image.new("L", (8, 8), 128).save(masks["white"])
    changed = _stylize(capsys, out, "--style", str(STYLE), "--mask", str(masks["white"]))
    assert changed.code == 0 and "redoing 1 image" in changed.err


def test_masks_from_a_preset_line_up_with_the_styles(capsys, masks, tmp_path):
    """A preset, --set or QUANTART_MASK gives the list itself: one entry per style, `none` for no mask."""
    args = ["--style", str(STYLE), "--style", str(OTHER_STYLE)]
    listed = _stylize(capsys, tmp_path / "a.png", *args, "--set", f'mask=["none", "{masks["left"]}"]')
    assert listed.code == 0, listed.err
    assert _note(tmp_path / "a.png")["masks"] == [None, file_sha256(masks["left"])]
    short = _stylize(capsys, tmp_path / "b.png", *args, "--set", f'mask=["{masks["left"]}"]')
    assert short.code == 2
    assert_one_sentence(short.err)
    assert "--mask has 1 entries for 2 style images; give one per style image" in short.err


@pytest.mark.parametrize(("case", "code", "words"), [
    ("text", 1, "is not an image"),
    ("missing", 3, "does not exist"),
    ("before", 2, "--mask belongs to the --style before it"),
    ("weights", 2, "--style-weights has 2 values, but with masks it weights only the 1 style image(s) without"),
])
def test_bad_masks_are_one_sentence(capsys, masks, tmp_path, case, code, words):
    text = tmp_path / "mask.png"
    text.write_text("not an image")
    args = {
        "text": ["--style", str(STYLE), "--mask", str(text)],
        "missing": ["--style", str(STYLE), "--mask", str(tmp_path / "gone.png")],
        "before": ["--mask", str(masks["left"]), "--style", str(STYLE)],
        "weights": ["--style", str(STYLE), "--mask", str(masks["left"]), "--style", str(OTHER_STYLE),
                    "--style-weights", "1,2"],
    }[case]
    result = _stylize(capsys, tmp_path / "out.png", *args)
    assert result.code == code
    assert_one_sentence(result.err)
    assert words in result.err
    assert not (tmp_path / "out.png").exists()


def test_a_mask_is_never_written_over(capsys, masks, tmp_path):
    result = run_cli(capsys, "stylize", str(PHOTO), "--style", str(STYLE), "--mask", str(masks["left"]),
                     "--out", str(masks["left"]), "--overwrite", *FAST)
    assert result.code == 2 and "which this run reads" in result.err
