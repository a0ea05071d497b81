"""Video files (quantart_cli.core.io.video): frames streamed through a transform keep their count, rate and size,
the audio is copied, the recipe note is stored, and a failed or interrupted write leaves no file."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from video_files import hide_pyav, moving_frames, read_all, write_clip

from quantart_cli.core.errors import UsageError
from quantart_cli.core.io import video as video_io

pytest.importorskip("av")


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".webm", ".gif"])
def test_a_clip_keeps_its_frames_rate_and_size_and_its_note(tmp_path, suffix):
    source = write_clip(tmp_path / f"clip{suffix}", moving_frames(9, 66, 38), fps=Fraction(25, 2))
    target = tmp_path / "out" / f"clip_art{suffix}"
    seen = []
    count = video_io.transform_video(source, target, lambda frame: 255 - frame, note='{"recipe":1}',
                                     on_frame=lambda: seen.append(1))
    assert count == 9 == len(seen)
    before, after = video_io.video_info(source), video_io.video_info(target)
    assert (after.width, after.height) == (66, 38)
    assert after.fps == before.fps
    frames = read_all(target)
    assert len(frames) == 9
    originals = read_all(source)
    # the transform really was applied (inverted), up to the codec's loss
    assert np.abs(frames[4].astype(int) - (255 - originals[4].astype(int))).mean() < 12
    assert video_io.read_video_note(target) == '{"recipe":1}'
    assert sorted(p.name for p in target.parent.iterdir() if not p.name.endswith(".quantart.json")) == [target.name]


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_the_audio_track_is_copied(tmp_path, suffix):
    source = write_clip(tmp_path / f"talk{suffix}", moving_frames(12), audio=True)
    target = tmp_path / f"talk_art{suffix}"
    video_io.transform_video(source, target, lambda frame: frame)
    import av

    with av.open(str(source)) as a, av.open(str(target)) as b:
        assert b.streams.audio, "the output lost its audio"
        assert b.streams.audio[0].codec_context.name == a.streams.audio[0].codec_context.name
        packets_in = sum(1 for p in a.demux(a.streams.audio[0]) if p.dts is not None)
        packets_out = sum(1 for p in b.demux(b.streams.audio[0]) if p.dts is not None)
    assert packets_out == packets_in


def test_ctrl_c_mid_clip_leaves_no_file_and_keeps_the_old_one(tmp_path):
    source = write_clip(tmp_path / "clip.mp4", moving_frames(10))
    target = tmp_path / "out" / "clip_art.mp4"
    video_io.transform_video(source, target, lambda frame: frame)
    before = target.read_bytes()
    calls = []

    def interrupted(frame):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return 255 - frame

    with pytest.raises(KeyboardInterrupt):
        video_io.transform_video(source, target, interrupted)
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["clip_art.mp4"]
    target.unlink()
    with pytest.raises(KeyboardInterrupt):
        calls.clear()
        video_io.transform_video(source, target, interrupted)
    assert list(target.parent.iterdir()) == []


def test_a_still_gif_is_an_image_and_an_animated_one_a_video(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "still.gif")
    write_clip(tmp_path / "moving.gif", moving_frames(3, 16, 16))
    assert not video_io.is_video(tmp_path / "still.gif")
    assert video_io.is_video(tmp_path / "moving.gif")
    assert video_io.is_video(tmp_path / "x.MP4")
    assert not video_io.is_video(tmp_path / "x.png")


def test_without_pyav_one_sentence_names_the_extra(monkeypatch):
    hide_pyav(monkeypatch)
    with pytest.raises(UsageError) as caught:
        video_io.require_av("clip.mp4")
    assert str(caught.value) == 'quantart needs its optional video packages for clip.mp4: pip install "quantart[video]"'
