"""Training transforms (quantart_cli.core.data.transforms): values, scale jitter, and the original's
OpenCV resizing and centre crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from image_files import noise_image
from PIL import Image

from quantart_cli.core.data.transforms import transform_image
from quantart_cli.core.errors import UsageError


def test_stage_one_transform_values():
    # 30x10: shorter side already 10, so the centre crop takes columns 10..19 unchanged.
    columns = np.tile(np.arange(30, dtype=np.uint8) * 8, (10, 1))
    image = Image.fromarray(np.stack([columns, np.zeros_like(columns), np.full_like(columns, 255)], -1), "RGB")
    tensor = transform_image(image, 10)
    assert tensor.shape == (3, 10, 10) and tensor.dtype == torch.float32
    expected = torch.from_numpy(np.arange(10, 20) * 8.0 / 127.5 - 1).float()
    assert torch.allclose(tensor[0, 0], expected, atol=1e-6)
    assert torch.all(tensor[1] == -1.0) and torch.all(tensor[2] == 1.0)
    shrunk = transform_image(noise_image(64, 128), 16)  # shorter side 64 -> 16, long side 128 -> 32, crop
    assert shrunk.shape == (3, 16, 16) and shrunk.min() >= -1 and shrunk.max() <= 1
    squashed = transform_image(image, 10, resize="squash")
    assert squashed.shape == (3, 10, 10)
    assert abs(squashed[0].mean().item() - (columns.mean() / 127.5 - 1)) < 0.02  # whole width kept
    with pytest.raises(UsageError):
        transform_image(image, 10, resize="fit")


def test_scale_jitter_crops_at_several_scales_reproducibly():
    import random

    # A left-to-right ramp: the mean of a crop's first row tells how much of the image the crop spans.
    ramp = np.tile(np.linspace(0, 255, 200).astype(np.uint8), (100, 1))
    image = Image.fromarray(np.stack([ramp] * 3, -1), "RGB")
    spans = set()
    for seed in range(20):
        crop = transform_image(image, 32, crop="random", rng=random.Random(seed), max_scale=3.0)
        again = transform_image(image, 32, crop="random", rng=random.Random(seed), max_scale=3.0)
        assert crop.shape == (3, 32, 32) and torch.equal(crop, again)
        spans.add(round(float(crop[0, 0, -1] - crop[0, 0, 0]), 1))
    assert len(spans) > 3  # crops of one image at many zoom levels
    # Never beyond the image's own size: a 100 px short side stays at most 100 px for size 64 and max_scale 4.
    for seed in range(10):
        crop = transform_image(image, 64, crop="random", rng=random.Random(seed), max_scale=4.0)
        assert float(crop[0, 0, -1] - crop[0, 0, 0]) > 0.55  # spans at least 63/199 of the ramp (2.0 wide)
    with pytest.raises(UsageError, match="max_scale"):
        transform_image(image, 32, max_scale=0.5)


# ----------------------------------------------------------------------- the original's resizing (OpenCV)


def _photo_like(seed: int, height: int, width: int) -> Image.Image:
    """Smooth gradients plus noise: every fixed-point rounding case of the resize shows up."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (width + height)], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8))


@pytest.mark.parametrize(("height", "width", "new_w", "new_h"), [
    (287, 512, 456, 256), (512, 435, 256, 301), (341, 512, 384, 256), (300, 300, 256, 256), (97, 131, 61, 45),
    (256, 256, 256, 256), (512, 512, 256, 256), (400, 300, 256, 256),
    (64, 48, 256, 341), (100, 100, 150, 150), (50, 70, 333, 222),
])
def test_resize_is_opencv_inter_linear(height, width, new_w, new_h):
    """Bit for bit when shrinking (training images are larger than the training size). When enlarging, OpenCV's
    x86 wheels hand the work to Intel IPP, whose rounding differs by one grey level on the clamped border rows."""
    cv2 = pytest.importorskip("cv2", reason="the dev extra's opencv-python-headless is the reference")
    from quantart_cli.core.data.transforms import resize_opencv_linear

    image = _photo_like(height * width, height, width)
    ours = np.asarray(resize_opencv_linear(image, new_w, new_h)).astype(int)
    theirs = cv2.resize(np.asarray(image), (new_w, new_h), interpolation=cv2.INTER_LINEAR).astype(int)
    assert ours.shape == theirs.shape
    if new_w <= width and new_h <= height:
        assert np.array_equal(ours, theirs)
    else:
        assert np.abs(ours - theirs).max() <= 1 and (ours != theirs).mean() < 0.01


def test_training_transform_is_the_originals_smallest_max_size_and_centre_crop():
    cv2 = pytest.importorskip("cv2", reason="the dev extra's opencv-python-headless is the reference")
    image = _photo_like(5, 287, 512)
    # albumentations SmallestMaxSize(64) + CenterCrop(64, 64), as taming's ImagePaths, then x / 127.5 - 1
    scale = 64 / 287
    resized = cv2.resize(np.asarray(image), (round(512 * scale), round(287 * scale)), interpolation=cv2.INTER_LINEAR)
    top, left = (resized.shape[0] - 64) // 2, (resized.shape[1] - 64) // 2
    expected = resized[top:top + 64, left:left + 64].astype(np.float32) / 127.5 - 1
    got = transform_image(image, 64).permute(1, 2, 0).numpy()
    assert np.abs(got - expected).max() < 1e-6
    squashed = cv2.resize(np.asarray(image), (64, 64), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 127.5 - 1
    assert np.abs(transform_image(image, 64, resize="squash").permute(1, 2, 0).numpy() - squashed).max() < 1e-6
    smooth = transform_image(image, 64, resize_filter="antialias").permute(1, 2, 0).numpy()
    assert np.abs(smooth - expected).mean() > 1 / 255  # the antialiased filter is the deliberate exception
