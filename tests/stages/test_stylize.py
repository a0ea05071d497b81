"""``quantart stylize``: writing, skipping and overwriting outputs, JSON lines, the model from the
environment or the user config, tiling options; bad inputs and checkpoints (a batch goes on past them, NaN
weights, --max-pixels, names that are not UTF-8); the notes it prints (transparency, bf16 run as fp32)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import assert_one_sentence, run_cli
from image_files import noise_image
from PIL import Image
from tiny_models import seeded_style_transfer, tiny_preset_vq_config, tiny_st_config

from quantart_cli.core import precision
from quantart_cli.core.config import tiny_vqgan_config
from quantart_cli.core.io.checkpoints import save_checkpoint
from quantart_cli.core.io.images import read_image_note
from quantart_cli.core.models import VQGAN, StyleTransfer
from quantart_cli.core.transfer.options import StylizeOptions
from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_model(seed: int, continuous: bool = False) -> StyleTransfer:
    return seeded_style_transfer(tiny_st_config(tiny_vqgan_config(), continuous=continuous), seed).eval()


@pytest.fixture(scope="module")
def model() -> StyleTransfer:
    return _tiny_model(0)


def _one_channel_per_group_model() -> StyleTransfer:
    """The shape of the ``tiny`` presets: 32 latent channels, so each GroupNorm of the SGA module (32 groups) holds
    one channel, which a 1x1 latent cannot normalize."""
    return seeded_style_transfer(tiny_st_config(tiny_preset_vq_config()), 0).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, model: StyleTransfer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stylize")
    rng = np.random.default_rng(0)
    photos = root / "photos"
    photos.mkdir()
    for name, size in (("a.png", (37, 45)), ("b.jpg", (32, 32))):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(photos / name)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / "style.png")
    (root / "notes.jpg").write_text("not an image, just text")
    good = (photos / "a.png").read_bytes()
    (root / "broken.png").write_bytes(good[: len(good) // 2])
    save_checkpoint(model, root / "st.pt")
    torch.manual_seed(0)
    save_checkpoint(VQGAN(tiny_vqgan_config()), root / "vq.pt")
    return {
        "root": root,
        "photos": photos,
        "style": root / "style.png",
        "ckpt": root / "st.pt",
        "vq": root / "vq.pt",
        "text": root / "notes.jpg",
        "broken": root / "broken.png",
    }


def test_cli_writes_skips_and_overwrites(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = (
        "stylize",
        str(files["photos"]),
        "--style",
        str(files["style"]),
        "--ckpt",
        str(files["ckpt"]),
        "--out",
        str(out),
        "--alpha",
        "0.8",
    )
    first = run_cli(capsys, *args)
    assert first.code == 0, first.err
    written = sorted(Path(line) for line in first.out.split())
    assert written == [out / "a_stylized.png", out / "b_stylized.png"]
    assert Image.open(out / "a_stylized.png").size == (45, 37)
    mtime = (out / "a_stylized.png").stat().st_mtime_ns
    again = run_cli(capsys, *args)
    assert again.code == 0 and again.out == "" and "skipping 2" in again.err
    assert (out / "a_stylized.png").stat().st_mtime_ns == mtime
    forced = run_cli(capsys, *args, "--overwrite", "--format", "same", "--suffix", "-x")
    assert forced.code == 0
    assert sorted(Path(line).name for line in forced.out.split()) == ["a-x.png", "b-x.jpg"]
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_cli_json_lines_and_single_file_out(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path
) -> None:
    target = tmp_path / "one.webp"
    result = run_cli(
        capsys,
        "stylize",
        str(files["photos"] / "a.png"),
        "-s",
        str(files["style"]),
        "-s",
        str(files["style"]),
        "--style-weights",
        "0.7,0.3",
        "--ckpt",
        str(files["ckpt"]),
        "--out",
        str(target),
        "--json",
        "--preserve-color",
    )
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["output"] == str(target) and (record["width"], record["height"]) == (45, 37)
    assert record["seconds"]["total"] > 0 and {"encode", "sga", "decode"} <= set(record["seconds"])
    assert Image.open(target).size == (45, 37)


def test_cli_model_from_environment_and_user_config(
    capsys: pytest.CaptureFixture[str],
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    isolated_quantart_env: Path,
) -> None:
    content = str(files["photos"] / "b.jpg")
    monkeypatch.setenv("QUANTART_CKPT", str(files["ckpt"]))
    from_env = run_cli(capsys, "stylize", content, "--style", str(files["style"]), "--out", str(tmp_path / "e"))
    assert from_env.code == 0, from_env.err
    monkeypatch.delenv("QUANTART_CKPT")
    config = isolated_quantart_env / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[stylize]\nckpt = "{files["ckpt"].as_posix()}"\n')
    from_config = run_cli(capsys, "stylize", content, "--style", str(files["style"]), "--out", str(tmp_path / "c"))
    assert from_config.code == 0, from_config.err
    assert Path(from_config.out.strip()).is_file()
    # A relative path is taken from the config file's folder, and --print-config says where a value came from.
    (config.parent / "models").mkdir()
    (config.parent / "models" / "m.pt").write_bytes(files["ckpt"].read_bytes())
    config.write_text('[stylize]\nckpt = "models/m.pt"\nalpha = 0.5\n')
    shown = run_cli(capsys, "stylize", content, "--style", str(files["style"]), "--print-config")
    assert shown.code == 0, shown.err
    ckpt_line = next(line for line in shown.out.splitlines() if line.startswith("ckpt ="))
    assert str(config.parent / "models" / "m.pt") in ckpt_line and f"config ({config})" in ckpt_line
    relative = run_cli(capsys, "stylize", content, "--style", str(files["style"]), "--out", str(tmp_path / "r"))
    assert relative.code == 0, relative.err


BAD_INPUTS = {
    "missing content": (["{root}/nope.png", "--style", "{style}", "--ckpt", "{ckpt}"], 3, "does not exist"),
    "not an image": (["{text}", "--style", "{style}", "--ckpt", "{ckpt}"], 1, "not an image"),
    "corrupt image": (["{broken}", "--style", "{style}", "--ckpt", "{ckpt}"], 1, "truncated or corrupt"),
    "corrupt style": (["{photos}", "--style", "{broken}", "--ckpt", "{ckpt}"], 1, "truncated or corrupt"),
    "missing style file": (["{photos}", "--style", "{root}/nope.png", "--ckpt", "{ckpt}"], 3, "does not exist"),
    "vqgan checkpoint": (["{photos}", "--style", "{style}", "--ckpt", "{vq}"], 1, "VQGAN checkpoint"),
    "missing checkpoint file": (["{photos}", "--style", "{style}", "--ckpt", "{root}/none.pt"], 3, "none.pt"),
    "no --style": (["{photos}", "--ckpt", "{ckpt}"], 2, "needs --style"),
    "no content": (["--style", "{style}", "--ckpt", "{ckpt}"], 2, "at least one content"),
    "visual fidelity alone": (
        ["{photos}", "--style", "{style}", "--ckpt", "{ckpt}", "--visual-fidelity", "0.5"],
        2,
        "continuous-ckpt",
    ),
    "alpha out of range": (["{photos}", "--style", "{style}", "--ckpt", "{ckpt}", "--alpha", "1.5"], 2, "alpha"),
    "negative tile memory": (
        ["{photos}", "--style", "{style}", "--ckpt", "{ckpt}", "--tile-memory", "-1"],
        2,
        "--tile-memory",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_cli_bad_inputs_give_one_sentence(
    case: str, capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path
) -> None:
    template, code, phrase = BAD_INPUTS[case]
    names = {k: str(v) for k, v in files.items()}
    args = [part.format(**names) for part in template]
    result = run_cli(capsys, "stylize", *args, "--out", str(tmp_path / "out"))
    assert result.code == code, result.err
    assert phrase in result.err
    assert "Traceback" not in result.err
    assert result.out == ""
    error_lines = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1


def test_cli_batch_with_one_bad_image_writes_the_others(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path
) -> None:
    result = run_cli(
        capsys,
        "stylize",
        str(files["photos"] / "b.jpg"),
        str(files["broken"]),
        "--style",
        str(files["style"]),
        "--ckpt",
        str(files["ckpt"]),
        "--out",
        str(tmp_path),
    )
    assert result.code == 1
    assert result.out.strip() == str(tmp_path / "b_stylized.png")
    assert "1 of 2 content images could not be stylized" in result.err


def test_cli_batch_with_a_tiny_photo_and_a_one_channel_per_group_model(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path
) -> None:
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (7, 5), (200, 40, 40)).save(tiny)
    ckpt = save_checkpoint(_one_channel_per_group_model(), tmp_path / "tiny-model.pt")
    result = run_cli(capsys, "stylize", str(tiny), str(files["photos"] / "b.jpg"), "--style", str(files["style"]),
                     "--ckpt", str(ckpt), "--out", str(tmp_path / "out"), "--device", "cpu")
    assert result.code == 0, result.err
    assert Image.open(tmp_path / "out" / "tiny_stylized.png").size == (7, 5)
    assert (tmp_path / "out" / "b_stylized.png").is_file()


def test_stylize_knobs_are_declared_once() -> None:
    """The stage inherits the engine's option fields: same names, defaults, limits and help, no copies."""
    from quantart_stages.stylize import StylizeSettings

    engine, cli = StylizeOptions.model_fields, StylizeSettings.model_fields
    for name, field in engine.items():
        assert cli[name].default == field.default and cli[name].metadata == field.metadata, name
        assert cli[name].description == field.description, name
    settings = StylizeSettings(content=["a.jpg"], style=[Path("s.jpg")], alpha=0.3, tile=256, tile_norm="tile",
                               overlap=64)
    assert StylizeOptions.pick(settings) == StylizeOptions(alpha=0.3, tile=256, tile_norm="tile", overlap=64)
    with pytest.raises(ValueError, match="less than half"):
        StylizeOptions(tile=64, overlap=32, tile_norm="tile")


def test_cli_tiling_options_reach_the_engine(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path
) -> None:
    """--tiling always with 64 px tiles on a 150x130 photo: exact tiling (with no buffer memory at all, so every
    statistic comes from recomputation passes) writes what the untiled run writes; per-tile norms do not."""
    photo = tmp_path / "big.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (150, 130, 3), dtype=np.uint8)).save(photo)
    common = ("stylize", str(photo), "--style", str(files["style"]), "--ckpt", str(files["ckpt"]), "--json")
    runs = {
        "untiled": ("--tiling", "never"),
        "exact": ("--tiling", "always", "--tile", "64", "--tile-memory", "0"),
        "per-tile": ("--tiling", "always", "--tile", "64", "--overlap", "16", "--tile-norm", "tile"),
    }
    pixels = {}
    for name, extra in runs.items():
        result = run_cli(capsys, *common, *extra, "--out", str(tmp_path / f"{name}.png"))
        assert result.code == 0, result.err
        assert json.loads(result.out)["tiled"] is (name != "untiled")
        pixels[name] = np.asarray(Image.open(tmp_path / f"{name}.png"), dtype=np.int16)
    assert np.abs(pixels["exact"] - pixels["untiled"]).mean() < 1.0
    assert np.abs(pixels["per-tile"] - pixels["untiled"]).mean() > 1.0


def test_a_checkpoint_with_nan_weights_is_refused_naming_the_tensor(capsys, tmp_path, small_images):
    torch.manual_seed(0)
    config = tiny_st_config()
    model = StyleTransfer(config)
    with torch.no_grad():
        model.decoder.conv_out.weight[0, 0, 0, 0] = float("nan")
    bad = save_checkpoint(model, tmp_path / "diverged.pt")
    result = run_cli(capsys, "stylize", str(small_images / "img_1.png"), "--style", str(small_images / "img_0.png"),
                     "--ckpt", str(bad), "--out", str(tmp_path / "out"), "--device", "cpu")
    assert result.code == 1 and "NaN weights" in result.err and "decoder.conv_out.weight" in result.err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_names_that_are_not_utf8_are_shown_safely(capsys, tmp_path, small_images, tiny_style_transfer):
    odd = os.fsdecode(b"caf\xe9.png")
    shutil_copy = __import__("shutil").copy
    shutil_copy(small_images / "img_1.png", tmp_path / odd)
    result = run_cli(capsys, "stylize", str(tmp_path / odd), "--style", str(small_images / "img_0.png"), "--ckpt",
                     str(tiny_style_transfer), "--out", str(tmp_path / "out"), "--device", "cpu")
    assert result.code == 0, result.err
    assert "caf\\xe9_stylized.png" in result.out


def test_max_pixels_refuses_an_image_before_decoding_it(capsys, tmp_path, small_images, tiny_style_transfer, tiny_vq):
    result = run_cli(capsys, "stylize", str(small_images / "img_1.png"), "--style", str(small_images / "img_0.png"),
                     "--ckpt", str(tiny_style_transfer), "--out", str(tmp_path / "out"), "--max-pixels", "500",
                     "--device", "cpu")
    assert result.code == 1 and "img_0.png" in result.err and "500" in result.err
    assert_one_sentence(result.err)
    encoded = run_cli(capsys, "encode", str(small_images / "img_1.png"), "--ckpt", str(tiny_vq), "--out",
                      str(tmp_path / "codes"), "--max-pixels", "500", "--device", "cpu")
    assert encoded.code != 0 and "500" in encoded.err


STYLE = PAINTINGS_DIR / "munch_the_scream.jpg"
FAST = ["--size", "32", "--device", "cpu"]


def _stylize(capsys, *args: str):
    return run_cli(capsys, "stylize", *args)


def test_a_batch_goes_on_past_bad_images_and_says_which(capsys, photos, tmp_path):
    Image.new("RGB", (7, 5), (200, 30, 30)).save(photos / "tiny.png")  # padded, stylized, cropped back
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    out = tmp_path / "out"
    result = _stylize(capsys, str(photos), "--style", str(STYLE), "-o", str(out), "--device", "cpu")
    assert result.code == 1
    assert "broken.jpg" in result.err and "written" in result.err
    assert "done: 4 written, 0 skipped, 1 failed" in result.err
    assert Image.open(out / "tiny_stylized.png").size == (7, 5)
    assert (out / "lhq_2_stylized.png").is_file() and (out / "trip" / "lhq_1_stylized.png").is_file()


def test_bf16_without_native_bf16_runs_fp32_with_a_note_on_the_command_line(capsys, photos, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    out = tmp_path / "out"
    photo = str(photos / "lhq_1.jpg")
    bf16 = _stylize(capsys, photo, "--style", str(STYLE), "-o", str(out), "--precision", "bf16", *FAST)
    assert bf16.code == 0, bf16.err
    notes = [line for line in bf16.err.splitlines() if "fp32" in line]
    assert len(notes) == 1 and "bf16" in notes[0], bf16.err
    assert "precision" not in json.loads(read_image_note(out / "lhq_1_stylized.png"))["options"]
    fp32 = _stylize(capsys, photo, "--style", str(STYLE), "-o", str(out), *FAST)
    assert fp32.code == 0 and "skipping 1 image(s) up to date" in fp32.err  # the same pixels: made in fp32


# ------------------------------------------------------------------------------------------- transparency


def test_transparency_flattened_onto_white_is_said(capsys, tmp_path):
    clear = noise_image(24, 16, 0, "RGBA")
    clear.putalpha(Image.linear_gradient("L").resize((24, 16)))
    clear.save(tmp_path / "logo.png")
    opaque = noise_image(24, 16, 1, "RGBA")  # an alpha channel, all opaque: nothing is lost
    opaque.save(tmp_path / "opaque.png")
    result = run_cli(capsys, "stylize", str(tmp_path / "logo.png"), str(tmp_path / "opaque.png"), "--style",
                     str(STYLE), "-o", str(tmp_path / "out"), *FAST)
    assert result.code == 0, result.err
    notes = [line for line in result.err.splitlines() if "transparen" in line]
    assert len(notes) == 1 and "logo.png" in notes[0] and "white" in notes[0]
    quiet = run_cli(capsys, "--quiet", "stylize", str(tmp_path / "logo.png"), "--style", str(STYLE), "-o",
                    str(tmp_path / "out2"), *FAST)
    assert quiet.code == 0 and quiet.err == ""


def test_a_transparent_painting_is_said_too(capsys, tmp_path):
    painting = Image.open(STYLE).convert("RGBA")
    painting.putalpha(Image.new("L", painting.size, 0))
    painting.save(tmp_path / "cutout.png")
    result = run_cli(capsys, "stylize", str(CONTENT_DIR / "lhq_1.jpg"), "--style", str(tmp_path / "cutout.png"),
                     "-o", str(tmp_path / "out"), *FAST)
    assert result.code == 0, result.err
    assert any("cutout.png" in line and "white" in line for line in result.err.splitlines())
