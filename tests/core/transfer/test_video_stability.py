"""Temporal stability of stylized video (quantart_cli.core.transfer.video): still parts of the picture keep the
previous output, moving parts take the new frame; with the built-in model a noisy tripod clip flickers at most half
as much as its frames stylized one by one and stays close to them, and a panning clip follows its motion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from video_files import frame_change, frame_distance, jittered_frames, panning_frames, read_all, write_clip

from quantart_cli.core.transfer.video import DEFAULT_STABILITY, TemporalStabilizer

pytestmark = pytest.mark.usefixtures("one_thread")


def _photo(value: float, size: int = 32) -> torch.Tensor:
    return torch.full((1, 3, size, size), value)


def test_off_gives_the_stylized_frames_unchanged():
    stabilizer = TemporalStabilizer(0.0)
    first, second = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    stabilizer(_photo(0.0), first)
    assert torch.equal(stabilizer(_photo(0.0), second), second)


def test_a_still_picture_keeps_the_previous_output_and_a_moved_one_takes_the_new():
    stabilizer = TemporalStabilizer(0.8)
    old, new = torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 32, 32)
    stabilizer(_photo(0.2), old)
    # the same photo (2% brighter overall: no motion): 80% of the previous output
    still = stabilizer(_photo(0.2) * 1.02 + 0.02, new)
    assert torch.allclose(still, torch.full_like(still, 0.2), atol=0.02)
    # the left quarter of the photo changes a lot: there the new frame's stylization wins whole
    moved_photo = _photo(0.2) * 1.02 + 0.02
    moved_photo[..., :8] = -0.9
    moved = stabilizer(moved_photo, new)
    assert torch.allclose(moved[..., :, :4], torch.ones(1, 3, 32, 4))
    assert moved[..., :, 16:].max() < 0.5


def test_stability_must_stay_below_one():
    with pytest.raises(ValueError, match="stability"):
        TemporalStabilizer(1.0)


def _stylize_clip(stylizer, source, target, stability):
    from quantart_cli.core.io.video import transform_video
    from quantart_cli.core.transfer.video import VideoStylizer

    transform_video(source, target, VideoStylizer(stylizer, stability))
    return read_all(target)


@pytest.mark.slow
def test_the_built_in_model_flickers_half_as_much_on_a_tripod_clip_and_follows_a_pan(tmp_path):
    from PIL import Image

    from quantart_cli.core.io.images import image_to_tensor, load_image
    from quantart_cli.core.transfer.engine import Stylizer
    from quantart_cli.core.weights import load_builtin_model
    from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR

    pytest.importorskip("av")
    model = load_builtin_model(torch.device("cpu"))
    stylizer = Stylizer(model, [image_to_tensor(load_image(PAINTINGS_DIR / "monet_water_lilies_1919.jpg"))])
    photo = Image.open(CONTENT_DIR / "lhq_1.jpg").convert("RGB")

    still = np.asarray(photo.resize((192, 128), Image.BICUBIC))
    source = write_clip(tmp_path / "tripod.mp4", jittered_frames(still, 24), quality=0)
    steady = _stylize_clip(stylizer, source, tmp_path / "steady.mp4", DEFAULT_STABILITY)
    one_by_one = _stylize_clip(stylizer, source, tmp_path / "one_by_one.mp4", 0.0)
    assert len(steady) == len(one_by_one) == 24
    flicker, baseline = frame_change(steady), frame_change(one_by_one)
    distance = float(np.mean(frame_distance(steady, one_by_one)))
    print(f"tripod: frame change {flicker:.2f} levels stable, {baseline:.2f} one by one; {distance:.2f} apart")
    assert flicker <= baseline / 2
    assert distance <= 6

    wide = np.asarray(photo.resize((288, 128), Image.BICUBIC))
    source = write_clip(tmp_path / "pan.mp4", panning_frames(wide, 24, 192), quality=0)
    steady = _stylize_clip(stylizer, source, tmp_path / "pan_steady.mp4", DEFAULT_STABILITY)
    one_by_one = _stylize_clip(stylizer, source, tmp_path / "pan_one_by_one.mp4", 0.0)
    apart = frame_distance(steady, one_by_one)
    print(f"pan: at most {max(apart):.2f} levels from one by one (mean {np.mean(apart):.2f})")
    assert max(apart) <= 10
