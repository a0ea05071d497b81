"""Single-image input and output: robust loading, tensor conversion, padding and atomic saving.

Loading never relies on process-wide leniency (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off), so a
truncated file is an error, not a silently grey bottom half. Every failure becomes a
:class:`~quantart_cli.core.errors.BadInputError` or :class:`~quantart_cli.core.errors.NotFoundError` with one
sentence naming the file.

Pixel convention: tensors are float32 in ``[-1, 1]`` computed as ``x / 127.5 - 1`` (the original's
normalisation), channels first. Saved with 16 bits per channel (PNG and TIFF only), ``[-1, 1]`` maps to
``0..65535``, so an 8-bit level ``v`` becomes ``257 * v``.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from quantart_cli.core.errors import BadInputError, NotFoundError, UsageError
from quantart_cli.core.io.atomic import atomic_write
from quantart_cli.core.io.limits import DEFAULT_MAX_PIXELS

logger = logging.getLogger(__name__)

__all__ = [
    "FLATTENED_KEY",
    "IMAGE_EXTENSIONS",
    "MIN_LATENT_SIDE",
    "SAVE_FORMATS",
    "SIXTEEN_BIT_FORMATS",
    "BitDepth",
    "Padding",
    "crop_padding",
    "flattened_transparency",
    "image_bit_depth",
    "image_to_tensor",
    "load_image",
    "load_image_tensor",
    "note_sidecar",
    "pad_to_multiple",
    "read_image_size",
    "read_image_note",
    "resize_longer_side",
    "save_image_atomic",
    "tensor_to_image",
    "to_rgb",
]


#: Suffixes (lower case, with dot) that folder and glob collection treat as images (an animated GIF: its first frame).
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})

#: Set to True in the ``info`` of an image :func:`load_image` returned when the file had transparent pixels,
#: which were filled with white (see :func:`flattened_transparency`).
FLATTENED_KEY = "quantart_flattened_transparency"

#: Output suffix -> PIL format name for :func:`save_image_atomic`.
SAVE_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}

#: Bits per channel of a saved image.
BitDepth = Literal[8, 16]

#: The formats of :data:`SAVE_FORMATS` that can store 16 bits per channel (JPEG, WebP and BMP store 8).
SIXTEEN_BIT_FORMATS = frozenset({"PNG", "TIFF"})

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_HIGH_DEPTH_MODES = {"I", "F", "I;16", "I;16L", "I;16B", "I;16N"}

#: (left, right, top, bottom), the order ``torch.nn.functional.pad`` takes for the last two dimensions.
Padding = tuple[int, int, int, int]


# --------------------------------------------------------------------------------------------- loading


def _check_readable_file(path: Path) -> None:
    """Raise the right error for a path that is missing, not a file, unreadable or empty."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise NotFoundError(f"Image {path} does not exist.") from None
    except OSError as exc:
        raise BadInputError(f"Image {path} cannot be accessed ({exc.strerror or exc}).") from exc
    if path.is_dir():
        raise BadInputError(f"Image path {path} is a folder, not an image file.")
    if stat.st_size == 0:
        raise BadInputError(f"Image {path} is an empty file.")
    if not os.access(path, os.R_OK):
        raise BadInputError(f"Image {path} cannot be read (permission denied).")


def _allow_pil_up_to(max_pixels: int | None) -> None:
    """Make sure PIL's process-wide bomb check never fires below our own, per-call limit.

    PIL raises inside ``Image.open`` above ``2 * Image.MAX_IMAGE_PIXELS``; we only ever raise that
    threshold (to honour a larger limit the caller asked for), never lower it.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is None:
        return
    if max_pixels is None:
        Image.MAX_IMAGE_PIXELS = None
    elif max_pixels > 2 * current:
        Image.MAX_IMAGE_PIXELS = (max_pixels + 1) // 2


def _open_checked(path: Path, handle, max_pixels: int | None) -> Image.Image:
    """``Image.open`` on an open file with our pixel limit; header only, pixels not decoded yet."""
    _allow_pil_up_to(max_pixels)
    try:
        with warnings.catch_warnings():
            # Our own limit below decides; PIL's warning would only duplicate the message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # A damaged TIFF/EXIF header makes PIL warn, then cope or fail: either way we report it ourselves.
            warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
            image = Image.open(handle)
    except Image.DecompressionBombError as exc:
        raise BadInputError(f"Image {path} is too large to open safely ({exc}).") from exc
    except Image.UnidentifiedImageError as exc:
        raise BadInputError(f"File {path} is not an image in a format this tool can read.") from exc
    except Exception as exc:  # PIL plugins raise many types on malformed headers
        raise BadInputError(f"Image {path} has a corrupt header ({_detail(exc)}); it cannot be read.") from exc
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise BadInputError(
            f"Image {path} is {width}x{height} ({_pixels(width * height)}), above the limit of "
            f"{_pixels(max_pixels)}; raise `max_pixels` if the file is trusted."
        )
    if width < 1 or height < 1:
        raise BadInputError(f"Image {path} declares an empty size {width}x{height}.")
    return image


def read_image_size(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Return ``(width, height)`` from the file header without decoding pixels (cheap pre-scan).

    Catches missing, empty, non-image and oversized files; a truncated body is only found by
    :func:`load_image`. EXIF orientation is not applied.
    """
    path = Path(path)
    _check_readable_file(path)
    try:
        with open(path, "rb") as handle:
            image = _open_checked(path, handle, max_pixels)
            return image.size
    except OSError as exc:
        raise BadInputError(f"Image {path} cannot be read ({exc}).") from exc


def image_bit_depth(path: str | os.PathLike[str]) -> BitDepth:
    """16 when the file stores more than 8 bits per channel (a 16-bit PNG or TIFF, 16-bit or 32-bit greyscale),
    else 8; read from the header, and 8 for a file that cannot be read (loading it says why)."""
    from quantart_cli.core.io.sixteen_bit import png_bit_depth

    try:
        with open(path, "rb") as handle:
            declared = png_bit_depth(handle.read(25))
            if declared is not None:
                return 16 if declared > 8 else 8
            handle.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image = Image.open(handle)
                if image.mode in _HIGH_DEPTH_MODES:
                    return 16
                if image.format == "TIFF":
                    bits = image.tag_v2.get(258, (8,))
                    bits = bits if isinstance(bits, tuple) else (bits,)
                    return 16 if max(bits, default=8) > 8 else 8
    except Exception:  # PIL plugins raise many types on malformed headers: loading the file reports it
        pass
    return 8


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer / float greyscale to 8-bit ``L``, scaled rather than clipped.

    ``I;16*`` is scaled by 255/65535. ``I`` (no declared bit depth) is taken as 8-bit if its values fit
    in 0..255, as 16-bit if they fit in 0..65535, else stretched min..max. ``F`` is taken as 0..1 or
    0..255 when it fits, else stretched.
    """
    values = np.asarray(image).astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode.startswith("I;16"):
        scaled = values * (255.0 / 65535.0)
    elif image.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif low >= 0.0 and high <= 255.0:
        scaled = values
    elif image.mode == "I" and low >= 0.0 and high <= 65535.0:
        scaled = values * (255.0 / 65535.0)
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """Use the embedded ICC profile when there is one (print CMYK differs a lot from naive inversion)."""
    icc = image.info.get("icc_profile")
    if icc:
        try:
            import io

            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            target = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(image, source, target, outputMode="RGB")
            if converted is not None:
                return converted
        except Exception as exc:  # broken profile or no littlecms: fall back to PIL's formula
            logger.debug("ICC conversion of CMYK image failed (%s); using plain conversion", exc)
    return image.convert("RGB")


def to_rgb(image: Image.Image, *, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: alpha and palette transparency composited over ``background``,
    16-bit and float greyscale scaled to 8 bits, CMYK through its ICC profile when present."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_l(image).convert("RGB")
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    if mode == "La":
        image = image.convert("LA")
    elif mode in ("P", "L", "1", "RGB", "RGBX") and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def _has_transparent_pixels(image: Image.Image) -> bool:
    """Whether converting ``image`` to RGB fills some pixels with the background: an alpha channel below 255
    somewhere, or a palette / colour key marked transparent and used."""
    try:
        if image.mode in _ALPHA_MODES:
            low, _ = image.getchannel("A").getextrema()
            return low < 255
        if "transparency" in image.info and image.mode in ("P", "L", "1"):
            low, _ = image.convert("RGBA").getchannel("A").getextrema()
            return low < 255
    except (ValueError, OSError):
        return False
    return False


def flattened_transparency(image: Image.Image) -> bool:
    """Whether :func:`load_image` filled transparent pixels of this image with white (RGB has no transparency)."""
    return bool(image.info.get(FLATTENED_KEY))


def _detail(exc: BaseException) -> str:
    """PIL's own words, without the exception's class name ("image file is truncated")."""
    return str(exc).strip().rstrip(".") or "no further detail"


def _pixels(count: int) -> str:
    return f"{count / 1e6:.1f} megapixels" if count >= 100_000 else f"{count:,} pixels"


def load_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    exif_orientation: bool = True,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Decode an image file fully into an 8-bit RGB PIL image.

    EXIF orientation is applied, every mode is converted by :func:`to_rgb` (transparent pixels are filled with
    ``background``, white unless told, and :func:`flattened_transparency` then says so), images above ``max_pixels``
    (``None``: no limit) are refused; a limit above PIL's own raises PIL's process-wide threshold to
    match (it is never lowered). Raises NotFoundError for a missing file and BadInputError for an
    empty, truncated, corrupt, non-image or oversized one.
    """
    path = Path(path)
    _check_readable_file(path)
    try:
        with open(path, "rb") as handle:
            image = _open_checked(path, handle, max_pixels)
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
                    image.load()
            except Image.DecompressionBombError as exc:
                raise BadInputError(f"Image {path} is too large to open safely ({exc}).") from exc
            except Exception as exc:  # truncated streams raise OSError, malformed ones anything
                raise BadInputError(
                    f"Image {path} is truncated or corrupt and cannot be decoded ({_detail(exc)})."
                ) from exc
    except OSError as exc:
        raise BadInputError(f"Image {path} cannot be read ({exc}).") from exc
    if exif_orientation:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=UserWarning, module="PIL")  # "Corrupt EXIF data"
                ImageOps.exif_transpose(image, in_place=True)
        except Exception as exc:  # a malformed EXIF block should not lose an otherwise good image
            logger.warning("Ignoring unreadable EXIF orientation of %s (%s).", path, exc)
    try:
        rgb = to_rgb(image, background=background)
    except (ValueError, OSError) as exc:
        raise BadInputError(f"Image {path} uses colour mode {image.mode}, which cannot be converted to RGB.") from exc
    if _has_transparent_pixels(image):
        if rgb is image:
            rgb = rgb.copy()
        rgb.info[FLATTENED_KEY] = True
    return rgb


# ---------------------------------------------------------------------------------- tensor conversion


def image_to_tensor(image: Image.Image, *, batch: bool = True) -> torch.Tensor:
    """RGB PIL image -> float32 tensor in ``[-1, 1]``: ``(1, 3, H, W)``, or ``(3, H, W)`` with ``batch=False``."""
    if image.mode != "RGB":
        image = to_rgb(image)
    # numpy rather than torch ops: no intra-op thread pool, which matters inside DataLoader workers.
    array = np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1))
    array /= 127.5
    array -= 1.0
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if batch else tensor


def load_image_tensor(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    batch: bool = True,
) -> torch.Tensor:
    """:func:`load_image` then :func:`image_to_tensor` (NCHW float32 in ``[-1, 1]`` by default)."""
    return image_to_tensor(load_image(path, max_pixels=max_pixels), batch=batch)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """``(3, H, W)``, ``(1, 3, H, W)`` or single-channel tensor in ``[-1, 1]`` -> 8-bit PIL image.

    Values are clamped, so a decoder's slight overshoot does not wrap around.
    """
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"tensor_to_image takes one image, got a batch of {tensor.shape[0]}")
        tensor = tensor[0]
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 3 or tensor.shape[0] not in (1, 3):
        raise ValueError(f"expected a (3, H, W) or (1, H, W) image tensor, got shape {tuple(tensor.shape)}")
    pixels = ((tensor.detach().to("cpu", torch.float32).clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    array = pixels.permute(1, 2, 0).contiguous().numpy()
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0], mode="L")
    return Image.fromarray(array, mode="RGB")


# ------------------------------------------------------------------------------------------- padding


#: The fewest latent cells per side a model is given: a 1x1 latent cannot be normalized by a GroupNorm whose groups
#: hold one channel each (the ``tiny`` presets' 32 latent channels in 32 groups), so tiny images are padded further.
MIN_LATENT_SIDE = 2


def pad_to_multiple(
    x: torch.Tensor,
    multiple: int = 16,
    mode: Literal["reflect", "replicate", "constant"] = "reflect",
    *,
    min_size: int = 0,
) -> tuple[torch.Tensor, Padding]:
    """Pad the last two dimensions of ``x`` (CHW or NCHW) up to multiples of ``multiple``, and each to at least
    ``min_size`` (rounded up to a multiple too; the model code passes ``MIN_LATENT_SIDE * factor``).

    The padding is split between both sides (the extra pixel goes right/bottom) so content stays
    centred. Reflect padding needs the image to be larger than the pad; along an axis where it is
    not, replicate is used instead. Returns the padded tensor and ``(left, right, top, bottom)``
    for :func:`crop_padding`.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if mode not in ("reflect", "replicate", "constant"):
        raise ValueError(f"mode must be reflect, replicate or constant, got {mode!r}")
    if x.dim() not in (3, 4):
        raise ValueError(f"expected a CHW or NCHW tensor, got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    pad_h = max((-height) % multiple, min_size - height + (-min_size) % multiple)
    pad_w = max((-width) % multiple, min_size - width + (-min_size) % multiple)
    padding: Padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    for pad, size, axis_padding in ((pad_w, width, padding[:2] + (0, 0)), (pad_h, height, (0, 0) + padding[2:])):
        if pad == 0:
            continue
        axis_mode = "replicate" if mode == "reflect" and max(axis_padding) >= size else mode
        x = F.pad(x, axis_padding, mode=axis_mode)
    return x, padding


def resize_longer_side(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (B, C, H, W) so the longer side is ``size`` (bicubic, antialiased), keeping the aspect ratio."""
    height, width = x.shape[-2:]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if (new_h, new_w) == (height, width):
        return x
    out = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    return out.clamp(-1.0, 1.0)


def crop_padding(x: torch.Tensor, padding: Padding) -> torch.Tensor:
    """Undo :func:`pad_to_multiple` (works on any tensor whose last two dims are H, W)."""
    left, right, top, bottom = padding
    height, width = x.shape[-2:]
    return x[..., top : height - bottom, left : width - right]


# -------------------------------------------------------------------------------------------- saving


NOTE_KEY = "quantart"


def _note_options(image_format: str, note: str) -> dict[str, object]:
    if image_format == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_itxt(NOTE_KEY, note)
        return {"pnginfo": info}
    if image_format == "JPEG":
        return {"comment": (NOTE_KEY + ":" + note).encode("utf-8")}
    if image_format == "WEBP":
        return {"xmp": (NOTE_KEY + ":" + note).encode("utf-8")}
    if image_format == "TIFF":
        return {"description": NOTE_KEY + ":" + note}  # the ImageDescription tag (ASCII: notes are JSON)
    return {}  # BMP has no place for text: the note goes into its sidecar (note_sidecar)


def note_sidecar(path: str | os.PathLike[str]) -> Path:
    """Where the note of a BMP file (or an animated GIF, see :mod:`~quantart_cli.core.io.video`) lives: BMP has
    no field for text, so a hidden ``.NAME.quantart.json`` beside
    it holds the note and the SHA-256 of the BMP bytes it was written with. A note whose SHA-256 does not match
    the file (the BMP was replaced by another one of that name) counts as no note."""
    path = Path(path)
    return path.with_name(f".{path.name}.quantart.json")


def _sidecar_note(path: Path) -> str | None:
    from quantart_cli.core.io.digest import file_sha256

    try:
        record = json.loads(note_sidecar(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("note"), str):
        return None
    try:
        matches = file_sha256(path) == record.get("sha256")
    except OSError:
        return None
    return record["note"] if matches else None


def read_image_note(path: str | os.PathLike[str]) -> str | None:
    """The ``note`` :func:`save_image_atomic` stored in an image (None: none, or not a readable image)."""
    try:
        with Image.open(path) as image:
            if image.format == "PNG":
                text = getattr(image, "text", {}) or {}
                return text.get(NOTE_KEY)
            if image.format in ("BMP", "GIF"):  # a GIF's note: a video's, see core/io/video.py
                return _sidecar_note(Path(path))
            if image.format == "TIFF":
                raw = image.tag_v2.get(270)
                raw = raw.encode("utf-8", errors="replace") if isinstance(raw, str) else raw
            else:
                raw = image.info.get("comment") if image.format == "JPEG" else image.info.get("xmp")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    if isinstance(raw, bytes) and raw.startswith(NOTE_KEY.encode() + b":"):
        return raw[len(NOTE_KEY) + 1:].decode("utf-8", errors="replace")
    return None


def save_image_atomic(
    image: Image.Image | torch.Tensor,
    path: str | os.PathLike[str],
    *,
    quality: int = 95,
    lossless: bool = False,
    note: str | None = None,
    bit_depth: BitDepth = 8,
) -> Path:
    """Write ``image`` to ``path`` so readers see either the old file or the complete new one.

    ``note`` is a text stored inside the file (PNG text chunk, JPEG comment, WebP XMP packet, TIFF
    ImageDescription tag) or, for BMP, in its :func:`note_sidecar`; read back by :func:`read_image_note`:
    ``stylize`` records there what made each output. A BMP written without a note loses its sidecar.

    The image goes through :func:`~quantart_cli.core.io.atomic.atomic_write` (a temp file beside ``path``,
    fsynced and renamed; a write failure raises :class:`WriteError`). The format follows the suffix (see
    :data:`SAVE_FORMATS`); ``quality`` applies to JPEG and WebP, ``lossless`` to WebP. A tensor is converted with
    :func:`tensor_to_image`. Returns ``path``.

    ``bit_depth=16`` writes 16 bits per channel, PNG and TIFF only (:data:`SIXTEEN_BIT_FORMATS`; other suffixes
    are refused): a tensor's floats are rounded straight to ``0..65535``, with no 8-bit step; an 8-bit PIL image
    keeps its levels (``257 * v``). See :mod:`quantart_cli.core.io.sixteen_bit` for the writers.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    image_format = SAVE_FORMATS.get(suffix)
    if image_format is None:
        raise UsageError(
            f"Cannot save {path}: unsupported image suffix {path.suffix or '(none)'}; "
            f"use one of {', '.join(sorted(SAVE_FORMATS))}."
        )
    if not 1 <= quality <= 100:
        raise UsageError(f"Image quality must be between 1 and 100, got {quality}.")
    if bit_depth not in (8, 16):
        raise UsageError(f"`bit_depth` must be 8 or 16, got {bit_depth}.")
    if bit_depth == 16:
        return _save_sixteen_bit(image, path, image_format, note)
    if isinstance(image, torch.Tensor):
        image = tensor_to_image(image)
    options: dict[str, object] = {}
    if image_format == "JPEG":
        if image.mode not in ("RGB", "L"):
            image = to_rgb(image)
        options = {"quality": quality, "subsampling": 0 if quality >= 90 else 2}
    elif image_format == "WEBP":
        options = {"quality": quality, "lossless": lossless, "method": 4}
    elif image_format == "BMP" and image.mode not in ("RGB", "L", "1", "P"):
        image = to_rgb(image)
    if note is not None:
        options.update(_note_options(image_format, note))

    if image_format == "BMP":
        return _save_bmp(image, path, note)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            image.save(handle, format=image_format, **options)

    return atomic_write(path, write, what="image")


def _samples16(image: Image.Image | torch.Tensor) -> np.ndarray:
    """(H, W, C) uint16 samples: a tensor's floats in [-1, 1] scaled to 0..65535 (clamped, rounded once); a PIL
    image's 8-bit levels times 257 (``I;16`` greyscale as it is)."""
    if isinstance(image, torch.Tensor):
        tensor = image[0] if image.dim() == 4 and image.shape[0] == 1 else image
        if tensor.dim() == 2:
            tensor = tensor.unsqueeze(0)
        if tensor.dim() != 3 or tensor.shape[0] not in (1, 3):
            raise ValueError(f"expected a (3, H, W) or (1, H, W) image tensor, got shape {tuple(image.shape)}")
        scaled = ((tensor.detach().to("cpu", torch.float32).clamp(-1.0, 1.0) + 1.0) * 32767.5).round()
        return scaled.to(torch.int32).permute(1, 2, 0).numpy().astype(np.uint16)
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(image, dtype=np.uint16)
    if image.mode not in ("RGB", "L"):
        image = to_rgb(image)
    return np.asarray(image, dtype=np.uint16) * np.uint16(257)


def _save_sixteen_bit(image: Image.Image | torch.Tensor, path: Path, image_format: str, note: str | None) -> Path:
    from quantart_cli.core.io.sixteen_bit import write_png16, write_tiff16

    if image_format not in SIXTEEN_BIT_FORMATS:
        raise UsageError(
            f"Cannot save {path} with `bit_depth=16`: {image_format} stores 8 bits per channel; use a .png or "
            ".tif file."
        )
    samples = _samples16(image)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            if image_format == "PNG":
                write_png16(handle, samples, text=None if note is None else (NOTE_KEY, note))
            else:
                write_tiff16(handle, samples, description=None if note is None else NOTE_KEY + ":" + note)

    return atomic_write(path, write, what="image")


def _save_bmp(image: Image.Image, path: Path, note: str | None) -> Path:
    """The BMP, then its sidecar with the note and the SHA-256 of exactly these bytes (or no sidecar)."""
    import hashlib
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="BMP")
    data = buffer.getvalue()
    atomic_write(path, lambda tmp: tmp.write_bytes(data), what="image")
    sidecar = note_sidecar(path)
    if note is None:
        sidecar.unlink(missing_ok=True)
        return path
    record = json.dumps({"note": note, "sha256": hashlib.sha256(data).hexdigest()})
    atomic_write(sidecar, lambda tmp: tmp.write_text(record, encoding="utf-8"), what="recipe sidecar")
    return path
