"""What ``quantart stylize`` writes and what it leaves alone: outputs carry their recipe and are redone only
when it changes, files quantart did not write are never replaced, nor anything the run reads; folders keep their
layout, also when stylized into themselves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import assert_one_sentence, require_stylize, run_cli, subprocess_env
from PIL import Image

from quantart_cli.core.io.images import image_bit_depth, read_image_note, save_image_atomic
from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR

pytestmark = pytest.mark.usefixtures("one_thread")

STYLE = PAINTINGS_DIR / "munch_the_scream.jpg"
OTHER_STYLE = PAINTINGS_DIR / "hokusai_great_wave.jpg"
FAST = ["--size", "32", "--device", "cpu"]


def _stylize(capsys, *args: str):
    return run_cli(capsys, "stylize", *args)


def _outputs(out: Path) -> dict[str, float]:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in sorted(out.rglob("*.png"))}


def test_missing_style_or_checkpoint_fails_even_when_outputs_exist(capsys, photos, tmp_path):
    out = tmp_path / "out"
    assert _stylize(capsys, str(photos), "--style", str(STYLE), "-o", str(out), *FAST).code == 0
    missing_style = _stylize(capsys, str(photos), "--style", str(tmp_path / "nope.jpg"), "-o", str(out), *FAST)
    assert missing_style.code == 3 and "nope.jpg" in missing_style.err
    missing_ckpt = _stylize(capsys, str(photos), "--style", str(STYLE), "--ckpt", str(tmp_path / "no.pt"), "-o",
                            str(out), *FAST)
    assert missing_ckpt.code == 3 and "no.pt" in missing_ckpt.err


def test_outputs_are_redone_when_what_made_them_changes(capsys, photos, tmp_path):
    out = tmp_path / "out"
    first = _stylize(capsys, str(photos), "--style", str(STYLE), "-o", str(out), *FAST)
    assert first.code == 0, first.err
    made = _outputs(out)
    note = json.loads(read_image_note(out / "lhq_1_stylized.png"))
    assert note["options"]["alpha"] == 1.0 and len(note["styles"]) == 1 and len(note["model"]) == 64

    again = _stylize(capsys, str(photos), "--style", str(STYLE), "-o", str(out), *FAST)
    assert again.code == 0 and _outputs(out) == made and "up to date" in again.err
    for change in (["--alpha", "0.5"], ["--style", str(OTHER_STYLE)]):
        args = ["--style", str(STYLE), *change] if change[0] == "--alpha" else change
        redone = _stylize(capsys, str(photos), *args, "-o", str(out), *FAST)
        assert redone.code == 0 and "redoing" in redone.err, redone.err
        assert all(_outputs(out)[name] != stamp for name, stamp in made.items())
        made = _outputs(out)
    kept = _stylize(capsys, str(photos), "--style", str(STYLE), "-o", str(out), "--skip-existing", *FAST)
    assert kept.code == 0 and _outputs(out) == made


def test_a_file_quantart_did_not_write_is_left_alone(capsys, photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    Image.new("RGB", (8, 8)).save(out / "lhq_1_stylized.png")
    refused = _stylize(capsys, str(photos / "lhq_1.jpg"), "--style", str(STYLE), "-o", str(out), *FAST)
    assert refused.code == 2 and "did not write" in refused.err
    replaced = _stylize(capsys, str(photos / "lhq_1.jpg"), "--style", str(STYLE), "-o", str(out), "--overwrite", *FAST)
    assert replaced.code == 0 and read_image_note(out / "lhq_1_stylized.png") is not None


def test_equal_names_in_subfolders_keep_their_folders(capsys, photos, tmp_path):
    out = tmp_path / "out"
    result = _stylize(capsys, str(photos), "--style", str(STYLE), "-o", str(out), *FAST)
    assert result.code == 0, result.err
    assert set(_outputs(out)) == {"lhq_1_stylized.png", "lhq_2_stylized.png", "trip/lhq_1_stylized.png"}


def _stamps(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


# --- a folder stylized into itself, photos in subfolders ------------------------------------------------------------


def test_a_folder_stylized_into_itself_twice_leaves_out_earlier_outputs_in_subfolders(capsys, photos):
    first = _stylize(capsys, str(photos), "--style", str(STYLE), "-o", str(photos), *FAST)
    assert first.code == 0, first.err
    assert (photos / "trip" / "lhq_1_stylized.png").is_file() and (photos / "lhq_2_stylized.png").is_file()
    before = _stamps(photos)
    again = _stylize(capsys, str(photos), "--style", str(STYLE), "-o", str(photos), *FAST)
    assert again.code == 0, again.err
    assert "leaving out 3 input(s)" in again.err and "skipping 3 image(s) up to date" in again.err
    assert _stamps(photos) == before  # nothing written, no x_stylized_stylized.png anywhere


# --- --format same with BMP and TIFF inputs -------------------------------------------------------------------------


@pytest.fixture
def odd_formats(tmp_path: Path) -> Path:
    folder = tmp_path / "scans"
    folder.mkdir()
    source = sorted(CONTENT_DIR.glob("*.jpg"))
    Image.open(source[0]).resize((48, 32)).save(folder / "a.bmp")
    Image.open(source[1]).resize((40, 32)).save(folder / "b.tif")
    Image.open(source[0]).resize((32, 40)).save(folder / "c.tiff")
    return folder


def test_format_same_outputs_in_bmp_and_tiff_carry_their_recipe(capsys, odd_formats, tmp_path):
    out = tmp_path / "out"
    args = [str(odd_formats), "--style", str(STYLE), "-o", str(out), "--format", "same", *FAST]
    first = _stylize(capsys, *args)
    assert first.code == 0, first.err
    outputs = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert outputs == ["a_stylized.bmp", "b_stylized.tif", "c_stylized.tiff"]
    for name in outputs:
        note = json.loads(read_image_note(out / name))
        assert note["options"]["alpha"] == 1.0 and len(note["input"]) == 64
    made = _stamps(out)
    again = _stylize(capsys, *args)
    assert again.code == 0, again.err
    assert "skipping 3 image(s) up to date" in again.err and _stamps(out) == made
    redone = _stylize(capsys, *args, "--alpha", "0.5")
    assert redone.code == 0 and "redoing 3 image(s)" in redone.err, redone.err
    assert all(json.loads(read_image_note(out / name))["options"]["alpha"] == 0.5 for name in outputs)


def test_a_bmp_quantart_did_not_write_is_left_alone_even_beside_a_recipe(capsys, odd_formats, tmp_path):
    out = tmp_path / "out"
    args = [str(odd_formats / "a.bmp"), "--style", str(STYLE), "-o", str(out), "--format", "same", *FAST]
    assert _stylize(capsys, *args).code == 0
    Image.new("RGB", (48, 32), (10, 200, 30)).save(out / "a_stylized.bmp")  # the user's own file, same name
    mine = (out / "a_stylized.bmp").read_bytes()
    assert read_image_note(out / "a_stylized.bmp") is None
    refused = _stylize(capsys, *args)
    assert refused.code == 2 and "did not write" in refused.err
    assert (out / "a_stylized.bmp").read_bytes() == mine


def test_two_stylize_runs_into_one_folder_write_whole_images(capsys, tmp_path, small_images, tiny_style_transfer):
    require_stylize(capsys, tmp_path, small_images, tiny_style_transfer)
    out = tmp_path / "shared"
    args = [sys.executable, "-m", "quantart_cli", "stylize", str(small_images), "--style",
            str(small_images / "img_1.png"), "--ckpt", str(tiny_style_transfer), "--out", str(out), "--device", "cpu",
            "--overwrite"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env())
             for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    outputs = sorted(out.iterdir())
    assert [p for p in outputs if p.name.endswith(".tmp")] == []
    assert len(outputs) == 4
    for path in outputs:
        with Image.open(path) as image:
            image.load()


# --- outputs never hit what a run reads (issue 18) ------------------------------------------------------------------


def test_stylize_never_writes_over_its_own_input_style_or_checkpoint(capsys, tmp_path, small_images,
                                                                     tiny_style_transfer):
    style = small_images / "img_0.png"
    before = {p.name: p.read_bytes() for p in small_images.iterdir()}
    for extra in (["--suffix", "", "--format", "same", "--overwrite"], ["--suffix", "", "--format", "same"]):
        result = run_cli(capsys, "stylize", str(small_images), "--style", str(style), "--ckpt",
                         str(tiny_style_transfer), "--out", str(small_images), "--device", "cpu", *extra)
        assert result.code == 2 and "which this run reads" in result.err, result.err
        assert_one_sentence(result.err)
    onto_ckpt = run_cli(capsys, "stylize", str(small_images / "img_1.png"), "--style", str(style), "--ckpt",
                        str(tiny_style_transfer), "--out", str(tiny_style_transfer.with_suffix(".png")), "--device",
                        "cpu")
    assert onto_ckpt.code == 0  # a different file: fine
    assert {p.name: p.read_bytes() for p in small_images.iterdir()} == before


def test_stylize_suffix_cannot_leave_the_output_folder(capsys, tmp_path, small_images, tiny_style_transfer):
    result = run_cli(capsys, "stylize", str(small_images / "img_1.png"), "--style", str(small_images / "img_0.png"),
                     "--ckpt", str(tiny_style_transfer), "--out", str(tmp_path / "out"), "--suffix", "/../../escaped",
                     "--device", "cpu")
    assert result.code == 2 and "--suffix" in result.err
    assert not list(tmp_path.parent.glob("**/escaped*"))


# --- --bit-depth 16 (issue 28) ---------------------------------------------------------------------------------------


def _header_bit_depth(path: Path) -> int:
    """The bit depth a PNG declares in its IHDR chunk (byte 24 of the file)."""
    header = path.read_bytes()[:26]
    assert header[12:16] == b"IHDR", path
    return header[24]


def _samples16(path: Path):
    cv2 = pytest.importorskip("cv2", reason="the dev extra's opencv-python-headless is the reference decoder")
    samples = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert samples is not None and samples.dtype.itemsize == 2, path
    return samples


@pytest.fixture
def smooth_photo(tmp_path: Path) -> Path:
    from image_files import smooth_images

    return smooth_images(tmp_path / "smooth", 1, size=(64, 96)) / "img_0.png"


def test_bit_depth_16_writes_a_16_bit_png_with_more_than_256_levels(capsys, smooth_photo, tmp_path):
    out = tmp_path / "out"
    args = [str(smooth_photo), "--style", str(STYLE), "-o", str(out), "--device", "cpu"]
    first = _stylize(capsys, *args, "--bit-depth", "16", "--json")
    assert first.code == 0, first.err
    target = out / "img_0_stylized.png"
    assert json.loads(first.out)["bit_depth"] == 16
    assert _header_bit_depth(target) == 16
    samples = _samples16(target)
    assert samples.shape == (64, 96, 3)
    assert min(len(set(samples[..., c].ravel().tolist())) for c in range(3)) > 256
    assert json.loads(read_image_note(target))["bit_depth"] == 16

    stamp = target.stat().st_mtime_ns
    again = _stylize(capsys, *args, "--bit-depth", "16")
    assert again.code == 0 and "up to date" in again.err and target.stat().st_mtime_ns == stamp
    eight = _stylize(capsys, *args, "--bit-depth", "8")
    assert eight.code == 0 and "redoing 1 image(s)" in eight.err, eight.err
    assert _header_bit_depth(target) == 8 and "bit_depth" not in json.loads(read_image_note(target))
    stamp = target.stat().st_mtime_ns
    default = _stylize(capsys, *args)  # 8 bits is the default: that output is up to date
    assert default.code == 0 and "up to date" in default.err and target.stat().st_mtime_ns == stamp
    sixteen = _stylize(capsys, *args, "--bit-depth", "16")
    assert sixteen.code == 0 and "redoing 1 image(s)" in sixteen.err and _header_bit_depth(target) == 16


def test_an_8_bit_output_is_the_same_file_with_or_without_bit_depth_8(capsys, smooth_photo, tmp_path):
    args = [str(smooth_photo), "--style", str(STYLE), "--device", "cpu", "--json"]
    plain = _stylize(capsys, *args, "-o", str(tmp_path / "plain"))
    explicit = _stylize(capsys, *args, "-o", str(tmp_path / "explicit"), "--bit-depth", "8")
    assert plain.code == explicit.code == 0, plain.err + explicit.err
    assert "bit_depth" not in json.loads(plain.out)
    files = [tmp_path / name / "img_0_stylized.png" for name in ("plain", "explicit")]
    assert files[0].read_bytes() == files[1].read_bytes()
    assert _header_bit_depth(files[0]) == 8 and "bit_depth" not in json.loads(read_image_note(files[0]))


@pytest.mark.parametrize("extra", [["--format", "jpg"], ["--format", "webp"], ["-o", "single.jpg"]])
def test_bit_depth_16_is_refused_for_formats_that_store_8_bits(capsys, monkeypatch, smooth_photo, tmp_path, extra):
    monkeypatch.chdir(tmp_path)
    result = _stylize(capsys, str(smooth_photo), "--style", str(STYLE), "--bit-depth", "16", *extra, *FAST)
    assert result.code == 2 and "--bit-depth 16 needs PNG or TIFF outputs" in result.err, result.err
    assert "stores 8 bits per channel" in result.err
    assert_one_sentence(result.err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smooth"]  # nothing written


def test_format_same_keeps_16_bit_inputs_16_bit(capsys, tmp_path):
    folder = tmp_path / "scans"
    levels = np.linspace(0, 65535, 40 * 48 * 3).reshape(40, 48, 3).astype(np.uint16)
    deep = torch.from_numpy(levels / 32767.5 - 1.0).float().permute(2, 0, 1)
    save_image_atomic(deep, folder / "deep.png", bit_depth=16)
    save_image_atomic(deep, folder / "deep.tif", bit_depth=16)
    Image.fromarray(levels[..., 0]).save(folder / "grey.png")  # 16-bit greyscale (PIL mode I;16)
    Image.open(sorted(CONTENT_DIR.glob("*.jpg"))[0]).resize((48, 32)).save(folder / "flat.png")
    Image.open(sorted(CONTENT_DIR.glob("*.jpg"))[0]).resize((48, 32)).save(folder / "photo.jpg")
    out = tmp_path / "out"
    args = [str(folder), "--style", str(STYLE), "-o", str(out), "--format", "same", *FAST]
    first = _stylize(capsys, *args)
    assert first.code == 0, first.err
    depths = {p.name: image_bit_depth(p) for p in sorted(out.iterdir())}
    assert depths == {"deep_stylized.png": 16, "deep_stylized.tif": 16, "flat_stylized.png": 8,
                      "grey_stylized.png": 16, "photo_stylized.jpg": 8}
    assert _samples16(out / "deep_stylized.tif").shape == (27, 32, 3)  # 48x40 at --size 32
    assert _header_bit_depth(out / "grey_stylized.png") == 16
    made = _stamps(out)
    again = _stylize(capsys, *args)
    assert again.code == 0 and "skipping 5 image(s) up to date" in again.err and _stamps(out) == made
    eight = _stylize(capsys, *args, "--bit-depth", "8")
    assert eight.code == 0 and "redoing 3 image(s)" in eight.err, eight.err
    assert {p.name: image_bit_depth(p) for p in sorted(out.iterdir())} == dict.fromkeys(depths, 8)
    refused = _stylize(capsys, *args, "--bit-depth", "16")
    assert refused.code == 2 and "photo_stylized.jpg would be a JPEG" in refused.err, refused.err
