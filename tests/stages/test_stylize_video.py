"""``quantart stylize`` on videos: a clip in, a clip of the same container, frame count, rate and size out (audio
kept); folders mix photos and videos; reruns skip current clips and redo them when the stability changes; a broken
clip in a batch is named and the others are written; without PyAV one sentence names the extra."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from cli_support import assert_one_sentence, run_cli
from PIL import Image
from video_files import hide_pyav, moving_frames, read_all, write_clip

from quantart_cli.core.io import video as video_io
from quantart_cli.core.transfer.video import DEFAULT_STABILITY

pytest.importorskip("av")
pytestmark = pytest.mark.usefixtures("one_thread")


def _style(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "style.png"
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


def test_a_clip_becomes_a_stylized_clip_of_the_same_shape(tmp_path, capsys, tiny_style_transfer):
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(7, 40, 24), fps=Fraction(24000, 1001), audio=True)
    out = tmp_path / "clip_art.mp4"
    args = ["stylize", str(clip), "--style", str(_style(tmp_path)), "--ckpt", str(tiny_style_transfer),
            "--out", str(out), "--device", "cpu", "--json"]
    result = run_cli(capsys, *args)
    assert result.code == 0, result.err
    record = json.loads(result.out.strip().splitlines()[-1])
    assert record["frames"] == 7 and record["stability"] == DEFAULT_STABILITY
    before, after = video_io.video_info(clip), video_io.video_info(out)
    assert (after.width, after.height, after.fps, after.audio) == (40, 24, before.fps, True)
    assert len(read_all(out)) == 7
    assert json.loads(video_io.read_video_note(out))["video"] == {"stability": DEFAULT_STABILITY}

    again = run_cli(capsys, *args)
    assert again.code == 0 and again.out.strip() == ""
    assert "skipping 1 image(s) up to date" in again.err
    other = run_cli(capsys, *args, "--stability", "0")
    assert other.code == 0 and "redoing 1" in other.err
    assert json.loads(video_io.read_video_note(out))["video"] == {"stability": 0.0}


def test_a_folder_mixes_photos_and_videos(tmp_path, capsys, tiny_style_transfer):
    folder = tmp_path / "media"
    folder.mkdir()
    write_clip(folder / "walk.webm", moving_frames(4, 32, 32))
    write_clip(folder / "loop.gif", moving_frames(3, 24, 16))
    Image.fromarray(moving_frames(1, 32, 32)[0]).save(folder / "photo.jpg")
    (folder / "broken.mkv").write_bytes(b"not a video at all")
    out = tmp_path / "out"
    result = run_cli(capsys, "stylize", str(folder), "--style", str(_style(tmp_path)), "--ckpt",
                     str(tiny_style_transfer), "--out", str(out), "--device", "cpu")
    assert result.code == 1
    assert "broken.mkv" in result.err
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["loop_stylized.gif", "photo_stylized.png", "walk_stylized.webm"]
    assert len(read_all(out / "walk_stylized.webm")) == 4
    assert len(read_all(out / "loop_stylized.gif")) == 3
    assert video_io.read_video_note(out / "loop_stylized.gif") is not None


def test_without_pyav_a_clip_is_refused_in_one_sentence(tmp_path, capsys, monkeypatch, tiny_style_transfer):
    clip = write_clip(tmp_path / "clip.mov", moving_frames(2, 16, 16))
    hide_pyav(monkeypatch)
    result = run_cli(capsys, "stylize", str(clip), "--style", str(_style(tmp_path)), "--ckpt",
                     str(tiny_style_transfer), "--out", str(tmp_path / "o"), "--device", "cpu")
    assert result.code == 2
    assert_one_sentence(result.err)
    assert 'quantart needs its optional video packages for clip.mov: pip install "quantart[video]"' in result.err
    assert not (tmp_path / "o").exists()


def test_a_single_output_keeps_the_inputs_kind(tmp_path, capsys, tiny_style_transfer):
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(2, 16, 16))
    photo = tmp_path / "photo.png"
    Image.fromarray(moving_frames(1, 16, 16)[0]).save(photo)
    common = ["--style", str(_style(tmp_path)), "--ckpt", str(tiny_style_transfer), "--device", "cpu"]
    to_png = run_cli(capsys, "stylize", str(clip), "--out", str(tmp_path / "clip.png"), *common)
    assert to_png.code == 2 and "keep the video's container, .mp4" in to_png.err
    assert_one_sentence(to_png.err)
    to_mp4 = run_cli(capsys, "stylize", str(photo), "--out", str(tmp_path / "photo_art.mp4"), *common)
    assert to_mp4.code == 2 and "names a video" in to_mp4.err
    assert not (tmp_path / "photo_art.mp4").exists() and not (tmp_path / "clip.png").exists()


def test_the_stage_default_stability_is_the_core_default():
    from quantart_stages.stylize import StylizeSettings

    assert StylizeSettings.model_fields["stability"].default == DEFAULT_STABILITY
