"""What a user still trips over (issue 25): each case failed before its fix."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from cli_support import run_cli
from PIL import Image
from tiny_models import seeded_style_transfer, tiny_st_config

from quantart_cli.core import precision
from quantart_cli.core.io.images import read_image_note, save_image_atomic
from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR

STYLE = PAINTINGS_DIR / "munch_the_scream.jpg"
FAST = ["--size", "32", "--device", "cpu"]


def _stylize(capsys, *args: str):
    return run_cli(capsys, "stylize", *args)


def _stamps(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error(err: str) -> None:
    assert "Traceback" not in err and "ValidationError" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err


# ------------------------------------------------- 1: a folder stylized into itself, photos in subfolders


def test_a_folder_stylized_into_itself_twice_leaves_out_earlier_outputs_in_subfolders(capsys, photos):
    first = _stylize(capsys, str(photos), "--style", str(STYLE), "-o", str(photos), *FAST)
    assert first.code == 0, first.err
    assert (photos / "trip" / "lhq_1_stylized.png").is_file() and (photos / "lhq_2_stylized.png").is_file()
    before = _stamps(photos)
    again = _stylize(capsys, str(photos), "--style", str(STYLE), "-o", str(photos), *FAST)
    assert again.code == 0, again.err
    assert "leaving out 3 input(s)" in again.err and "skipping 3 image(s) up to date" in again.err
    assert _stamps(photos) == before  # nothing written, no x_stylized_stylized.png anywhere


# ------------------------------------------------------------------ 2: --format same with BMP and TIFF inputs


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


def test_notes_round_trip_in_every_format_quantart_writes(tmp_path):
    image = Image.new("RGB", (8, 6), (1, 2, 3))
    for suffix in (".png", ".jpg", ".webp", ".bmp", ".tif", ".tiff"):
        path = save_image_atomic(image, tmp_path / f"x{suffix}", note='{"recipe":1}')
        assert read_image_note(path) == '{"recipe":1}', suffix
        plain = save_image_atomic(image, tmp_path / f"plain{suffix}")
        assert read_image_note(plain) is None, suffix
    # written again without a note, a BMP loses its recipe too
    save_image_atomic(image, tmp_path / "x.bmp")
    assert read_image_note(tmp_path / "x.bmp") is None
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


# ------------------------------------------------------------------ 3: bf16 on a CPU without bf16 instructions


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "_torch_reports_bf16", lambda: False)
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    for text, native in (
        ("processor : 0\nflags : fpu sse avx2 fma\n", False),
        ("flags\t: fpu avx512f avx512bw avx512_vnni\n", False),
        ("flags\t: fpu avx512f avx512_bf16\n", True),
        ("flags\t: fpu amx_tile amx_bf16\n", True),
        ("Features\t: fp asimd sve bf16 i8mm\n", True),
    ):
        cpuinfo.write_text(text)
        assert precision.cpu_has_native_bf16() is native, text
    cpuinfo.unlink()
    assert precision.cpu_has_native_bf16() is False  # nothing to read: not known to be fast


def _tiny_model():
    from quantart_cli.core.config import tiny_vqgan_config

    return seeded_style_transfer(tiny_st_config(tiny_vqgan_config()), 0).eval()


def test_bf16_without_native_bf16_runs_fp32_with_a_note_in_python(monkeypatch):
    from quantart_cli.core.transfer.engine import Stylizer
    from quantart_cli.core.transfer.options import StylizeOptions

    model = _tiny_model()
    gen = torch.Generator().manual_seed(1)
    content, style = torch.rand(1, 3, 32, 48, generator=gen) * 2 - 1, torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1
    exact = Stylizer(model, [style], StylizeOptions(alpha=0.7))(content).image
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match=r"fp32") as caught:
        slow_cpu = Stylizer(model, [style], StylizeOptions(alpha=0.7, precision="bf16"))
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert slow_cpu.options.precision == "fp32"
    assert torch.equal(slow_cpu(content).image, exact)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast_cpu = Stylizer(model, [style], StylizeOptions(alpha=0.7, precision="bf16"))
    assert fast_cpu.options.precision == "bf16"
    assert not torch.equal(fast_cpu(content).image, exact)  # bf16 really ran


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


def test_bf16_without_native_bf16_runs_fp32_in_serve(monkeypatch, tmp_path):
    from quantart_stages import serve

    from quantart_cli.shell.console import Console
    from quantart_cli.shell.paths import get_paths
    from quantart_cli.shell.plugins import RunContext
    from quantart_cli.shell.settings import resolve_settings

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    resolved = resolve_settings(serve.ServeSettings, stage="serve", flags={"device": "cpu", "precision": "bf16"},
                                environ={})
    notes: list[str] = []
    console = Console(quiet=True)
    monkeypatch.setattr(console, "info", notes.append)
    ctx = RunContext(console=console, paths=get_paths(), resolved=resolved, stage_name="serve")
    studio = serve.Studio(resolved.settings, ctx, tmp_path)
    assert studio.options(alpha=0.5).precision == "fp32"
    assert len(notes) == 1 and "fp32" in notes[0]


# ---------------------------------------------------------------- 4: evaluate refuses bad alphas before loading


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


# ------------------------------------------------------------------------- 5: --resume of a missing folder


@pytest.mark.parametrize("stage", ["train-vq", "train-sga"])
def test_resume_of_a_missing_folder_says_so(capsys, tmp_path, stage):
    missing = run_cli(capsys, stage, "--resume", str(tmp_path / "no-such-run"))
    assert missing.code == 3, missing.err
    assert "no-such-run" in missing.err and "does not exist" in missing.err and "needs --" not in missing.err
    _one_error(missing.err)
    (tmp_path / "empty").mkdir()
    empty = run_cli(capsys, stage, "--resume", str(tmp_path / "empty"))
    assert empty.code == 3 and "no training run" in empty.err and "needs --" not in empty.err, empty.err
    _one_error(empty.err)


# --------------------------------------------------------------------- 8: every file follows the user's umask


def test_every_file_quantart_writes_follows_the_umask(capsys, tmp_path, photos):
    from quantart_cli.core.config import tiny_vqgan_config
    from quantart_cli.core.io.atomic import atomic_write
    from quantart_cli.core.io.checkpoints import save_checkpoint
    from quantart_cli.core.models import VQGAN

    def replaced_privately(tmp: Path) -> None:  # what safetensors does: its own file, mode 0600, renamed over tmp
        private = tmp.with_name(tmp.name + ".own")
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.replace(private, tmp)

    old = os.umask(0o027)
    try:
        vq = save_checkpoint(VQGAN(tiny_vqgan_config()), tmp_path / "vq.safetensors")
        written = [vq, save_checkpoint(VQGAN(tiny_vqgan_config()), tmp_path / "vq.pt"),
                   save_image_atomic(Image.new("RGB", (4, 4)), tmp_path / "x.png"),
                   atomic_write(tmp_path / "private.bin", replaced_privately)]
        encoded = run_cli(capsys, "encode", str(photos / "lhq_1.jpg"), "--ckpt", str(vq), "--out",
                          str(tmp_path / "codes"), "--device", "cpu")
        assert encoded.code == 0, encoded.err
        written += list((tmp_path / "codes").glob("*.safetensors"))
    finally:
        os.umask(old)
    assert len(written) == 5
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in written}
    assert set(modes.values()) == {oct(0o640)}, modes
