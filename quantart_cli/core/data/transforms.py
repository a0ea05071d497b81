"""The training transforms: resize (shorter side or squash), crop (centre or random), scale jitter, flips."""

from __future__ import annotations

import random
from typing import Literal

import numpy as np
import torch
from PIL import Image

from quantart_cli.core.errors import UsageError
from quantart_cli.core.io.images import image_to_tensor

ResizeMode = Literal["shorter-side", "squash"]
ResizeFilter = Literal["opencv-linear", "antialias"]
CropMode = Literal["center", "random"]


# ----------------------------------------------------------------------------------- transforms


def resize_opencv_linear(image: Image.Image, width: int, height: int) -> Image.Image:
    """``cv2.resize(array, (width, height), interpolation=cv2.INTER_LINEAR)`` on an 8-bit RGB image, bit for bit.

    The original's data classes resize with albumentations, which calls exactly that: bilinear with half-pixel
    centres and no antialiasing, on uint8 with OpenCV's fixed-point arithmetic (11-bit coefficients, and the
    rounding of its vectorised vertical pass). Reproduced here in numpy so training sees the original's pixels
    without OpenCV installed; ``tests/core/data/test_transforms.py`` checks it against OpenCV itself.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.int64)
    src_h, src_w = pixels.shape[:2]
    x0, x1, cx0, cx1 = _linear_taps(src_w, width)
    y0, y1, cy0, cy1 = _linear_taps(src_h, height)
    rows = pixels[:, x0] * cx0[None, :, None] + pixels[:, x1] * cx1[None, :, None]  # horizontal pass, x2048
    top = np.clip(rows[y0] >> 4, -32768, 32767)  # vertical pass as OpenCV's SIMD code: int16 lanes, >> 16, >> 2
    bottom = np.clip(rows[y1] >> 4, -32768, 32767)
    mixed = ((top * cy0[:, None, None]) >> 16) + ((bottom * cy1[:, None, None]) >> 16)
    out = np.clip((mixed + 2) >> 2, 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="RGB")


def _linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and 11-bit fixed-point weights of OpenCV's INTER_LINEAR along one axis."""
    scale = src / dst
    position = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    fraction = (position - first).astype(np.float32)
    before = first < 0
    fraction[before], first[before] = 0.0, 0
    after = first >= src - 1
    fraction[after], first[after] = 0.0, src - 1
    # each weight rounded on its own (saturate_cast<short>, half to even), so the pair may not sum to 2048
    weight_first = np.rint((np.float32(1.0) - fraction) * np.float32(2048)).astype(np.int64)
    weight_second = np.rint(fraction * np.float32(2048)).astype(np.int64)
    return first, np.minimum(first + 1, src - 1), weight_first, weight_second


def resize_image(image: Image.Image, width: int, height: int, resize_filter: ResizeFilter) -> Image.Image:
    """Resize with the chosen filter: ``opencv-linear`` (the original's) or ``antialias`` (PIL's bilinear, which
    averages every source pixel when shrinking: smoother downscales, not the original's pixels)."""
    if (width, height) == image.size:
        return image
    if resize_filter == "opencv-linear":
        return resize_opencv_linear(image, width, height)
    return image.resize((width, height), Image.Resampling.BILINEAR)


def check_transform(size: int, resize: str, crop: str) -> None:
    if size < 1:
        raise UsageError(f"Image size must be positive, got {size}.")
    if resize not in ("shorter-side", "squash"):
        raise UsageError(f"Resize mode must be 'shorter-side' or 'squash', got {resize!r}.")
    if crop not in ("center", "random"):
        raise UsageError(f"Crop mode must be 'center' or 'random', got {crop!r}.")


def transform_image(
    image: Image.Image,
    size: int,
    *,
    resize: ResizeMode = "shorter-side",
    crop: CropMode = "center",
    hflip: bool = False,
    rng: random.Random | None = None,
    max_scale: float = 1.0,
    resize_filter: ResizeFilter = "opencv-linear",
) -> torch.Tensor:
    """Resize, crop and optionally flip an RGB image to a ``(3, size, size)`` tensor in ``[-1, 1]``.

    As the original's data classes (albumentations): ``shorter-side`` is SmallestMaxSize (the shorter side to
    ``size``, the other scaled and rounded as Python rounds) then a centre or random ``size`` crop; ``squash`` is
    Resize(size, size) (aspect not kept; the crop is a no-op). Resizing is OpenCV's INTER_LINEAR unless
    ``resize_filter="antialias"``. ``hflip`` (after the crop) flips with probability 0.5. ``rng`` drives the
    random choices.

    ``max_scale`` > 1 (scale jitter, ``shorter-side`` only): the shorter side goes to ``size * s`` with
    ``s`` uniform in [1, max_scale] (never beyond the image's own size when that is larger than
    ``size``), so crops show the image at several scales; a model trained on small crops then also
    knows the scale of full-resolution photos.
    """
    check_transform(size, resize, crop)
    if max_scale < 1.0:
        raise UsageError(f"max_scale must be at least 1, got {max_scale}.")
    rng = rng or random.Random(0)
    width, height = image.size
    side = size
    if max_scale > 1.0 and resize == "shorter-side":
        ceiling = min(max_scale * size, max(size, min(width, height)))
        side = round(size + rng.random() * (ceiling - size))
    if resize == "squash":
        target = (size, size)
    else:
        scale = side / min(width, height)  # albumentations' SmallestMaxSize: round(dim * scale) per side
        target = (max(side, round(width * scale)), max(side, round(height * scale)))
    image = resize_image(image, *target, resize_filter)
    width, height = image.size
    if crop == "random":
        left, top = rng.randint(0, width - size), rng.randint(0, height - size)
    else:
        left, top = (width - size) // 2, (height - size) // 2
    if (left, top, width, height) != (0, 0, size, size):
        image = image.crop((left, top, left + size, top + size))
    if hflip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image_to_tensor(image, batch=False)
