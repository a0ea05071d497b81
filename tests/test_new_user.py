"""What a new user trips over (issue 17): each case failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import run_cli
from PIL import Image

from quantart_cli.core.io.images import read_image_note
from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR

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


def test_equal_names_in_subfolders_keep_their_folders(capsys, photos, tmp_path):
    out = tmp_path / "out"
    result = _stylize(capsys, str(photos), "--style", str(STYLE), "-o", str(out), *FAST)
    assert result.code == 0, result.err
    assert set(_outputs(out)) == {"lhq_1_stylized.png", "lhq_2_stylized.png", "trip/lhq_1_stylized.png"}


def test_global_switches_work_after_the_subcommand(capsys, photos, tmp_path):
    quiet = _stylize(capsys, str(photos / "lhq_1.jpg"), "--style", str(STYLE), "-o", str(tmp_path / "a"), *FAST,
                     "--quiet")
    assert quiet.code == 0 and quiet.err == ""
    debug = run_cli(capsys, "stages", "--debug")
    assert debug.code == 0 and "stylize" in debug.out


def _tiny_run(capsys, tmp_path: Path, *extra: str):
    return run_cli(capsys, "train-vq", "--preset", "tiny", "--data", str(CONTENT_DIR), "--size", "32",
                   "--batch-size", "2", "--workers", "0", "--sample-every", "0", "--device", "cpu",
                   "--out", str(tmp_path / "run"), *extra)


def test_resume_alone_continues_with_the_recorded_settings(capsys, tmp_path):
    first = _tiny_run(capsys, tmp_path, "--steps", "2")
    assert first.code == 0, first.err
    assert (tmp_path / "run" / "settings.toml").is_file()
    resumed = run_cli(capsys, "train-vq", "--resume", str(tmp_path / "run"), "--steps", "4", "--quiet")
    assert resumed.code == 0, resumed.err
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 4
    conflict = run_cli(capsys, "train-vq", "--resume", str(tmp_path / "run"), "--steps", "6", "--size", "64")
    assert conflict.code == 2 and "--size" in conflict.err and "started with 32" in conflict.err
    assert conflict.err.count("error:") == 1


def test_encode_takes_a_size(capsys, tmp_path, tiny_vq_checkpoint):
    out = tmp_path / "codes"
    result = run_cli(capsys, "encode", str(CONTENT_DIR / "lhq_1.jpg"), "--ckpt", str(tiny_vq_checkpoint), "--out",
                     str(out), "--size", "48", "--device", "cpu")
    assert result.code == 0, result.err
    from quantart_cli.core.io.codes import load_code_file

    record = load_code_file(next(out.glob("*.safetensors"))).records[0]
    assert max(record.width, record.height) == 48


@pytest.fixture
def tiny_vq_checkpoint(tmp_path: Path) -> Path:
    from quantart_cli.core.config import tiny_vqgan_config
    from quantart_cli.core.io.checkpoints import save_checkpoint
    from quantart_cli.core.models import VQGAN

    return save_checkpoint(VQGAN(tiny_vqgan_config()), tmp_path / "vq.pt")


def test_help_is_rendered_each_time_and_writes_nothing(capsys, isolated_quantart_env):
    """Issue 27: no --help cache; the help is rendered from the stages' settings and nothing lands on disk."""
    from quantart_cli.shell import entry

    before = sorted(isolated_quantart_env.rglob("*"))
    assert entry.main(["stylize", "--help"]) == 0
    assert "--alpha" in capsys.readouterr().out
    assert sorted(isolated_quantart_env.rglob("*")) == before
