"""Image files (quantart_cli.core.io.images): bad files, mode conversions, tensors, padding, atomic
saves, the recipe note in every format. Every image is generated in tmp_path."""

from __future__ import annotations

import os
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from image_files import noise_image, truncated_jpeg, write_image
from PIL import Image

from quantart_cli.core.errors import BadInputError, NotFoundError, UsageError, WriteError
from quantart_cli.core.io.images import (
    crop_padding,
    image_bit_depth,
    image_to_tensor,
    load_image,
    load_image_tensor,
    pad_to_multiple,
    read_image_note,
    read_image_size,
    save_image_atomic,
    tensor_to_image,
    to_rgb,
)

# ----------------------------------------------------------------------------------------- helpers


def _png_header(width: int, height: int) -> bytes:
    """A syntactically valid PNG with only IHDR and IEND: declares a size, holds no pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------- bad files


def test_truncated_jpeg_is_bad_input_naming_the_file(tmp_path):
    path = truncated_jpeg(tmp_path / "cut.jpg")
    assert read_image_size(path) == (64, 64)  # the header alone is fine
    with pytest.raises(BadInputError, match="cut.jpg.*truncated or corrupt"):
        load_image(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("noise.jpg", bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), "not an image"),
        ("empty.png", b"", "empty file"),
        ("text.png", b"this is not a png, just text\n" * 20, "not an image"),
    ],
)
def test_non_images_are_bad_input(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    for reader in (load_image, read_image_size):
        with pytest.raises(BadInputError, match=message) as info:
            reader(path)
        assert name in str(info.value)


def test_missing_file_and_folder_paths(tmp_path):
    with pytest.raises(NotFoundError, match="nothere.png"):
        load_image(tmp_path / "nothere.png")
    with pytest.raises(BadInputError, match="is a folder"):
        load_image(tmp_path)


def test_decompression_bomb_header_refused(tmp_path):
    huge = tmp_path / "bomb.png"
    huge.write_bytes(_png_header(100_000, 100_000))  # 10 gigapixels: above PIL's own hard limit
    with pytest.raises(BadInputError, match="bomb.png"):
        load_image(huge)
    just_over = tmp_path / "over.png"
    just_over.write_bytes(_png_header(15_000, 12_000))  # 180 MP, just above the ~179 MP default
    with pytest.raises(BadInputError, match="over.png is too large to open safely"):
        read_image_size(just_over)
    # 100 MP: PIL only warns (above 89 MP); a 50 MP limit refuses it with our message and no stray warning.
    large = tmp_path / "large.png"
    large.write_bytes(_png_header(10_000, 10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BadInputError, match="large.png is 10000x10000 .100.0 megapixels., above the limit of 50.0"):
            read_image_size(large, max_pixels=50_000_000)


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    target = tmp_path / "page.png"
    target.write_bytes(_png_header(4096, 4096))  # our 16.7 MP use-case passes the default
    assert read_image_size(target) == (4096, 4096)
    small = write_image(tmp_path / "small.png", noise_image(20, 20))
    with pytest.raises(BadInputError, match="above the limit"):
        load_image(small, max_pixels=399)
    assert load_image(small, max_pixels=400).size == (20, 20)
    wide = tmp_path / "wide.png"
    wide.write_bytes(_png_header(20_000, 15_000))  # 300 MP: beyond PIL's default, allowed when asked for
    assert read_image_size(wide, max_pixels=400_000_000) == (20_000, 15_000)
    assert read_image_size(wide, max_pixels=None) == (20_000, 15_000)


def test_loader_never_enables_truncated_loading(tmp_path):
    from PIL import ImageFile

    truncated_jpeg(tmp_path / "cut.jpg")
    with pytest.raises(BadInputError):
        load_image(tmp_path / "cut.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# ------------------------------------------------------------------------------ mode conversions


def _pixel(image: Image.Image, xy=(0, 0)) -> tuple[int, int, int]:
    assert image.mode == "RGB"
    return image.getpixel(xy)


def test_alpha_is_composited_over_white(tmp_path):
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(10, 20, 30, 0), (10, 20, 30, 255), (0, 0, 0, 128)])
    loaded = load_image(write_image(tmp_path / "rgba.png", rgba))
    assert [_pixel(loaded, (x, 0)) for x in range(3)] == [(255, 255, 255), (10, 20, 30), (127, 127, 127)]
    la = Image.new("LA", (2, 1))
    la.putdata([(40, 0), (40, 255)])
    loaded = load_image(write_image(tmp_path / "la.png", la))
    assert [_pixel(loaded, (x, 0)) for x in range(2)] == [(255, 255, 255), (40, 40, 40)]


def test_palette_transparency_and_plain_palette(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([200, 0, 0, 0, 0, 200] + [0] * 762)
    palette.putdata([0, 1])
    assert [_pixel(load_image(write_image(tmp_path / "p.png", palette)), (x, 0)) for x in range(2)] == [
        (200, 0, 0),
        (0, 0, 200),
    ]
    loaded = load_image(write_image(tmp_path / "pt.png", palette, transparency=0))
    assert [_pixel(loaded, (x, 0)) for x in range(2)] == [(255, 255, 255), (0, 0, 200)]
    gif = load_image(write_image(tmp_path / "pt.gif", palette, transparency=0))
    assert _pixel(gif, (0, 0)) == (255, 255, 255)


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 32896, 65535]], dtype=np.uint16)
    source = Image.fromarray(values)
    assert source.mode == "I;16"
    loaded = load_image(write_image(tmp_path / "g16.png", source))
    assert [_pixel(loaded, (x, 0))[0] for x in range(4)] == [0, 4, 128, 255]


def test_int32_and_float_modes(tmp_path):
    wide = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32), mode="I")
    assert [_pixel(load_image(write_image(tmp_path / "i.tif", wide)), (x, 0))[0] for x in range(3)] == [0, 128, 255]
    eight_bit = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32), mode="I")
    assert [_pixel(to_rgb(eight_bit), (x, 0))[0] for x in range(3)] == [0, 100, 255]
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert [_pixel(load_image(write_image(tmp_path / "f.tif", unit)), (x, 0))[0] for x in range(3)] == [0, 128, 255]
    stretched = Image.fromarray(np.array([[-2.0, 0.0, 2.0]], dtype=np.float32), mode="F")
    assert [_pixel(to_rgb(stretched), (x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_bilevel_greyscale_and_cmyk(tmp_path):
    bilevel = Image.new("1", (2, 1))
    bilevel.putdata([0, 1])
    assert [_pixel(load_image(write_image(tmp_path / "b.png", bilevel)), (x, 0)) for x in range(2)] == [
        (0, 0, 0),
        (255, 255, 255),
    ]
    grey = Image.new("L", (1, 1), 77)
    assert _pixel(load_image(write_image(tmp_path / "l.png", grey))) == (77, 77, 77)
    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putdata([(0, 0, 0, 0), (0, 0, 0, 255)])
    for name in ("c.tif", "c.jpg"):
        loaded = load_image(write_image(tmp_path / name, cmyk, **({"quality": 100} if name.endswith("jpg") else {})))
        white, black = _pixel(loaded, (0, 0)), _pixel(loaded, (1, 0))
        assert min(white) >= 250 and max(black) <= 5, (name, white, black)


@pytest.mark.parametrize("mode", ["RGBa", "La", "PA", "RGBX", "YCbCr", "I;16B", "HSV"])
def test_to_rgb_handles_unusual_modes(mode):
    converted = to_rgb(Image.new(mode, (3, 2)))
    assert converted.mode == "RGB" and converted.size == (3, 2)


def test_exif_orientation_is_applied(tmp_path):
    source = Image.new("RGB", (40, 20), (0, 0, 255))
    source.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = write_image(tmp_path / "rotated.jpg", source, exif=exif.tobytes(), quality=95)
    loaded = load_image(path)
    assert loaded.size == (20, 40)
    top, bottom = _pixel(loaded, (10, 5)), _pixel(loaded, (10, 35))
    assert top[0] > 200 and top[2] < 50  # the left half is now on top
    assert bottom[2] > 200 and bottom[0] < 50
    assert load_image(path, exif_orientation=False).size == (40, 20)


# ----------------------------------------------------------------------------- tensor conversion


def test_tensor_round_trip_is_exact_for_every_level():
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = Image.fromarray(np.stack([levels, levels.T, 255 - levels], axis=-1), mode="RGB")
    tensor = image_to_tensor(image)
    assert tensor.shape == (1, 3, 16, 16) and tensor.dtype == torch.float32
    assert tensor.min().item() == -1.0 and tensor.max().item() == 1.0
    assert image_to_tensor(image, batch=False).shape == (3, 16, 16)
    assert np.array_equal(np.asarray(tensor_to_image(tensor)), np.asarray(image))
    overshoot = tensor_to_image(torch.full((3, 2, 2), 1.7, requires_grad=True).to(torch.bfloat16))
    assert _pixel(overshoot) == (255, 255, 255)
    assert tensor_to_image(torch.zeros(1, 4, 4)).mode == "L"
    with pytest.raises(ValueError, match="batch of 2"):
        tensor_to_image(torch.zeros(2, 3, 4, 4))


def test_load_image_tensor(tmp_path):
    path = write_image(tmp_path / "x.png", Image.new("RGB", (5, 3), (0, 255, 51)))
    tensor = load_image_tensor(path)
    assert tensor.shape == (1, 3, 3, 5)
    assert torch.allclose(tensor[0, :, 0, 0], torch.tensor([-1.0, 1.0, 51 / 127.5 - 1]))


# ------------------------------------------------------------------------------------------ padding


@pytest.mark.parametrize("shape", [(1, 3, 17, 33), (2, 3, 16, 16), (3, 31, 1), (1, 3, 1, 1), (3, 5, 40)])
@pytest.mark.parametrize("mode", ["reflect", "replicate", "constant"])
def test_pad_crop_round_trip(shape, mode):
    torch.manual_seed(0)
    x = torch.randn(shape)
    padded, padding = pad_to_multiple(x, 16, mode)
    assert padded.shape[-2] % 16 == 0 and padded.shape[-1] % 16 == 0
    assert padded.shape[-2] - x.shape[-2] < 16 and padded.shape[-1] - x.shape[-1] < 16
    assert padded.shape[:-2] == x.shape[:-2]
    assert sum(padding[:2]) == padded.shape[-1] - x.shape[-1]
    assert abs(padding[0] - padding[1]) <= 1 and abs(padding[2] - padding[3]) <= 1
    assert torch.equal(crop_padding(padded, padding), x)


def test_reflect_falls_back_to_replicate_for_tiny_images():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)  # padded to 16x16: 7 rows above, far more than 2
    padded, padding = pad_to_multiple(x, 16, "reflect")
    assert padding == (6, 7, 7, 7)
    assert torch.equal(padded[..., 0, 0], x[..., 0, 0])  # replicated corner, not reflected
    wide = torch.arange(40.0).reshape(1, 1, 1, 40)  # width 40 -> 48 reflects; height 1 -> 16 replicates
    padded, padding = pad_to_multiple(wide, 16, "reflect")
    assert padding == (4, 4, 7, 8)
    assert torch.equal(padded[0, 0, 0, :4], torch.tensor([4.0, 3.0, 2.0, 1.0]))
    assert torch.equal(padded[0, 0, :, 4], torch.zeros(16))
    unchanged, none = pad_to_multiple(torch.zeros(1, 3, 32, 16))
    assert none == (0, 0, 0, 0) and unchanged.shape == (1, 3, 32, 16)
    with pytest.raises(ValueError):
        pad_to_multiple(torch.zeros(4, 4))


# ------------------------------------------------------------------------------------- atomic save


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".JPEG", ".webp", ".bmp", ".tif"])
def test_save_formats_and_no_temporary_files(tmp_path, suffix):
    image = noise_image(32, 24)
    target = save_image_atomic(image, tmp_path / "out" / f"result{suffix}")
    assert _listing(tmp_path / "out") == [f"result{suffix}"]
    with Image.open(target) as reread:
        expected = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF"}
        assert reread.format == expected[suffix.lower()] and reread.size == (32, 24)
    if suffix in (".png", ".bmp", ".tif"):
        assert np.array_equal(np.asarray(load_image(target)), np.asarray(image))


def test_save_quality_tensor_input_and_errors(tmp_path):
    image = noise_image(64, 64)
    low = save_image_atomic(image, tmp_path / "low.jpg", quality=20)
    high = save_image_atomic(image, tmp_path / "high.jpg", quality=95)
    assert low.stat().st_size < high.stat().st_size
    lossless = save_image_atomic(image, tmp_path / "exact.webp", lossless=True)
    assert np.array_equal(np.asarray(load_image(lossless)), np.asarray(image))
    tensor = image_to_tensor(image)
    from_tensor = save_image_atomic(tensor, tmp_path / "t.png")
    assert np.array_equal(np.asarray(load_image(from_tensor)), np.asarray(image))
    rgba = save_image_atomic(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), tmp_path / "a.jpg")
    assert _pixel(load_image(rgba)) == (255, 255, 255)
    with pytest.raises(UsageError, match="unsupported image suffix"):
        save_image_atomic(image, tmp_path / "out.gifx")
    with pytest.raises(UsageError, match="quality"):
        save_image_atomic(image, tmp_path / "q.jpg", quality=0)


def test_failed_save_keeps_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = save_image_atomic(Image.new("RGB", (8, 8), (1, 2, 3)), tmp_path / "keep.png")
    before = target.read_bytes()

    def half_then_fail(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_then_fail)
    with pytest.raises(WriteError, match="keep.png.*No space left"):
        save_image_atomic(Image.new("RGB", (8, 8)), target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert _listing(tmp_path) == ["keep.png"]


def test_concurrent_writers_and_reader_never_see_a_partial_file(tmp_path):
    target = tmp_path / "shared.png"
    images = [noise_image(96, 96, seed) for seed in range(4)]
    save_image_atomic(images[0], target)
    expected = {np.asarray(image).tobytes() for image in images}
    failures: list[str] = []
    seen: set[bytes] = set()
    stop = threading.Event()

    def write(seed: int) -> None:
        for _ in range(10):
            save_image_atomic(images[seed], target)

    def read() -> None:
        while not stop.is_set():
            try:
                pixels = np.asarray(load_image(target)).tobytes()
            except Exception as exc:  # noqa: BLE001 - any error here is a test failure
                failures.append(repr(exc))
                return
            if pixels not in expected:
                failures.append("read an image no writer wrote")
            seen.add(pixels)

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(seed,)) for seed in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join()
    assert failures == []
    assert seen and _listing(tmp_path) == ["shared.png"]
    assert np.asarray(load_image(target)).tobytes() in expected


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


# ------------------------------------------------------------------------------------ 16 bits per channel


def _read16(path: Path) -> np.ndarray:
    """The samples of a 16-bit file as an independent decoder (OpenCV: libpng, libtiff) reads them, RGB order."""
    cv2 = pytest.importorskip("cv2", reason="the dev extra's opencv-python-headless is the reference decoder")
    samples = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert samples is not None and samples.dtype == np.uint16, path
    return samples[:, :, ::-1] if samples.ndim == 3 else samples


def _levels_tensor(levels: np.ndarray) -> torch.Tensor:
    """A (3, H, W) tensor whose exact 16-bit levels are ``levels`` (H, W, 3)."""
    return torch.from_numpy(levels.astype(np.float32) / 32767.5 - 1.0).permute(2, 0, 1)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
def test_sixteen_bit_files_keep_every_float_level(tmp_path, suffix):
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 65536, (37, 53, 3), dtype=np.uint16)
    levels[0, :3] = [[0, 0, 0], [65535, 65535, 65535], [1, 257, 65534]]
    tensor = _levels_tensor(levels)
    tensor[:, 1, 0] = torch.tensor([-1.5, 1.5, 0.0])  # out of range: clamped, not wrapped
    levels[1, 0] = [0, 65535, 32768]
    path = save_image_atomic(tensor, tmp_path / f"deep{suffix}", note='{"recipe":1}', bit_depth=16)
    assert np.array_equal(_read16(path), levels)
    assert image_bit_depth(path) == 16 and read_image_note(path) == '{"recipe":1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"deep{suffix}"]
    # every other reader of the file (PIL, so quantart itself) sees an 8-bit image of it
    assert np.array_equal(np.asarray(load_image(path)), (levels >> 8).astype(np.uint8))


def test_sixteen_bit_png_header_and_a_smooth_gradient_has_more_than_256_levels(tmp_path):
    ramp = torch.linspace(-1.0, 1.0, 1000).repeat(3, 4, 1)  # (3, 4, 1000)
    path = save_image_atomic(ramp, tmp_path / "ramp.png", bit_depth=16)
    header = path.read_bytes()[:26]
    assert header[12:16] == b"IHDR" and struct.unpack(">II", header[16:24]) == (1000, 4)
    assert (header[24], header[25]) == (16, 2)  # bit depth 16, colour type RGB
    samples = _read16(path)
    assert len(np.unique(samples[..., 0])) == 1000
    eight = save_image_atomic(ramp, tmp_path / "ramp8.png")
    assert eight.read_bytes()[24] == 8 and len(np.unique(np.asarray(load_image(eight))[..., 0])) == 256


def test_sixteen_bit_from_pil_images_and_greyscale(tmp_path):
    image = noise_image(9, 7)
    path = save_image_atomic(image, tmp_path / "up.png", bit_depth=16)
    assert np.array_equal(_read16(path), np.asarray(image).astype(np.uint16) * 257)
    grey = np.array([[0, 1, 4660, 65535]], dtype=np.uint16)
    for suffix in (".png", ".tif"):
        kept = save_image_atomic(Image.fromarray(grey), tmp_path / f"grey{suffix}", bit_depth=16)
        assert np.array_equal(_read16(kept), grey), suffix
    from_tensor = save_image_atomic(torch.tensor([[[-1.0, 1.0]]]), tmp_path / "g.png", bit_depth=16)
    assert from_tensor.read_bytes()[24:26] == bytes([16, 0]) and np.array_equal(_read16(from_tensor), [[0, 65535]])


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".webp", ".bmp"])
def test_sixteen_bits_are_refused_for_formats_that_store_eight(tmp_path, suffix):
    with pytest.raises(UsageError, match="stores 8 bits per channel"):
        save_image_atomic(torch.zeros(3, 4, 4), tmp_path / f"x{suffix}", bit_depth=16)
    with pytest.raises(UsageError, match="`bit_depth` must be 8 or 16"):
        save_image_atomic(torch.zeros(3, 4, 4), tmp_path / "x.png", bit_depth=12)
    assert list(tmp_path.iterdir()) == []


def test_failed_sixteen_bit_save_keeps_old_file(tmp_path, monkeypatch):
    from quantart_cli.core.io import sixteen_bit

    target = save_image_atomic(torch.zeros(3, 8, 8), tmp_path / "keep.png", bit_depth=16)
    before = target.read_bytes()

    def half_then_fail(handle, *args, **kwargs):
        handle.write(b"\x89PNG\r\n\x1a\n partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sixteen_bit, "write_png16", half_then_fail)
    with pytest.raises(WriteError, match="keep.png.*No space left"):
        save_image_atomic(torch.ones(3, 8, 8), target, bit_depth=16)
    assert target.read_bytes() == before and _listing(tmp_path) == ["keep.png"]


def test_image_bit_depth_of_inputs(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="the dev extra's opencv-python-headless writes the reference files")
    deep = np.full((4, 5, 3), 4660, dtype=np.uint16)
    for name in ("rgb16.png", "rgb16.tif"):
        assert cv2.imwrite(str(tmp_path / name), deep)
        assert image_bit_depth(tmp_path / name) == 16, name
    grey16 = write_image(tmp_path / "g16.png", Image.fromarray(np.zeros((3, 3), dtype=np.uint16)))
    assert image_bit_depth(grey16) == 16
    for name in ("rgb8.png", "rgb8.tif", "rgb8.jpg", "rgb8.webp", "rgb8.bmp"):
        assert image_bit_depth(write_image(tmp_path / name, noise_image(4, 4))) == 8, name
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert image_bit_depth(tmp_path / "junk.png") == 8 and image_bit_depth(tmp_path / "missing.png") == 8
