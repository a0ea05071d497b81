"""Image IO, input collection and datasets. Every image is generated in tmp_path."""

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
from image_files import noise_image
from PIL import Image
from torch.utils.data import DataLoader

from quantart_cli.core.data.datasets import ImageDataset, UnpairedDataset
from quantart_cli.core.data.sources import collect_images, select_style_by_genre
from quantart_cli.core.data.transforms import transform_image
from quantart_cli.core.errors import BadInputError, NotFoundError, UsageError, WriteError
from quantart_cli.core.io.images import (
    crop_padding,
    image_to_tensor,
    load_image,
    load_image_tensor,
    pad_to_multiple,
    read_image_size,
    save_image_atomic,
    tensor_to_image,
    to_rgb,
)

# ----------------------------------------------------------------------------------------- helpers


def _write(path: Path, image: Image.Image | None = None, **save_options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (image or noise_image(24, 16)).save(path, **save_options)
    return path


def _png_header(width: int, height: int) -> bytes:
    """A syntactically valid PNG with only IHDR and IEND: declares a size, holds no pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _truncated_jpeg(path: Path) -> Path:
    _write(path, noise_image(64, 64), quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# ------------------------------------------------------------------------------------- bad files


def test_truncated_jpeg_is_bad_input_naming_the_file(tmp_path):
    path = _truncated_jpeg(tmp_path / "cut.jpg")
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
    small = _write(tmp_path / "small.png", noise_image(20, 20))
    with pytest.raises(BadInputError, match="above the limit"):
        load_image(small, max_pixels=399)
    assert load_image(small, max_pixels=400).size == (20, 20)
    wide = tmp_path / "wide.png"
    wide.write_bytes(_png_header(20_000, 15_000))  # 300 MP: beyond PIL's default, allowed when asked for
    assert read_image_size(wide, max_pixels=400_000_000) == (20_000, 15_000)
    assert read_image_size(wide, max_pixels=None) == (20_000, 15_000)


def test_loader_never_enables_truncated_loading(tmp_path):
    from PIL import ImageFile

    _truncated_jpeg(tmp_path / "cut.jpg")
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
    loaded = load_image(_write(tmp_path / "rgba.png", rgba))
    assert [_pixel(loaded, (x, 0)) for x in range(3)] == [(255, 255, 255), (10, 20, 30), (127, 127, 127)]
    la = Image.new("LA", (2, 1))
    la.putdata([(40, 0), (40, 255)])
    loaded = load_image(_write(tmp_path / "la.png", la))
    assert [_pixel(loaded, (x, 0)) for x in range(2)] == [(255, 255, 255), (40, 40, 40)]


def test_palette_transparency_and_plain_palette(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([200, 0, 0, 0, 0, 200] + [0] * 762)
    palette.putdata([0, 1])
    assert [_pixel(load_image(_write(tmp_path / "p.png", palette)), (x, 0)) for x in range(2)] == [
        (200, 0, 0),
        (0, 0, 200),
    ]
    loaded = load_image(_write(tmp_path / "pt.png", palette, transparency=0))
    assert [_pixel(loaded, (x, 0)) for x in range(2)] == [(255, 255, 255), (0, 0, 200)]
    gif = load_image(_write(tmp_path / "pt.gif", palette, transparency=0))
    assert _pixel(gif, (0, 0)) == (255, 255, 255)


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 32896, 65535]], dtype=np.uint16)
    source = Image.fromarray(values)
    assert source.mode == "I;16"
    loaded = load_image(_write(tmp_path / "g16.png", source))
    assert [_pixel(loaded, (x, 0))[0] for x in range(4)] == [0, 4, 128, 255]


def test_int32_and_float_modes(tmp_path):
    wide = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32), mode="I")
    assert [_pixel(load_image(_write(tmp_path / "i.tif", wide)), (x, 0))[0] for x in range(3)] == [0, 128, 255]
    eight_bit = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32), mode="I")
    assert [_pixel(to_rgb(eight_bit), (x, 0))[0] for x in range(3)] == [0, 100, 255]
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert [_pixel(load_image(_write(tmp_path / "f.tif", unit)), (x, 0))[0] for x in range(3)] == [0, 128, 255]
    stretched = Image.fromarray(np.array([[-2.0, 0.0, 2.0]], dtype=np.float32), mode="F")
    assert [_pixel(to_rgb(stretched), (x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_bilevel_greyscale_and_cmyk(tmp_path):
    bilevel = Image.new("1", (2, 1))
    bilevel.putdata([0, 1])
    assert [_pixel(load_image(_write(tmp_path / "b.png", bilevel)), (x, 0)) for x in range(2)] == [
        (0, 0, 0),
        (255, 255, 255),
    ]
    grey = Image.new("L", (1, 1), 77)
    assert _pixel(load_image(_write(tmp_path / "l.png", grey))) == (77, 77, 77)
    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putdata([(0, 0, 0, 0), (0, 0, 0, 255)])
    for name in ("c.tif", "c.jpg"):
        loaded = load_image(_write(tmp_path / name, cmyk, **({"quality": 100} if name.endswith("jpg") else {})))
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
    path = _write(tmp_path / "rotated.jpg", source, exif=exif.tobytes(), quality=95)
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
    path = _write(tmp_path / "x.png", Image.new("RGB", (5, 3), (0, 255, 51)))
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


# -------------------------------------------------------------------------------------- collecting


@pytest.fixture()
def image_tree(tmp_path) -> Path:
    root = tmp_path / "tree"
    for relative in ["z.JPEG", "a/x.jpg", "a/b/c.PNG", "a/b/d.webp", "m.tiff", "n.bmp"]:
        _write(root / relative, noise_image(8, 8), **({"format": "JPEG"} if relative.endswith("JPEG") else {}))
    _write(root / ".hidden.jpg")
    _write(root / ".cache" / "inside.png")
    (root / "notes.txt").write_text("not a list, inside a folder\n")
    (root / "raw.gifx").write_bytes(b"x")
    return root


def test_folder_recursion_extension_filter_and_hidden_skip(image_tree):
    found = collect_images(image_tree)
    assert [p.relative_to(image_tree).as_posix() for p in found] == [
        "a/b/c.PNG",
        "a/b/d.webp",
        "a/x.jpg",
        "m.tiff",
        "n.bmp",
        "z.JPEG",
    ]
    flat = collect_images(image_tree, recursive=False)
    assert [p.name for p in flat] == ["m.tiff", "n.bmp", "z.JPEG"]
    only_jpeg = collect_images(image_tree, extensions=["jpg", ".JPEG"])
    assert [p.name for p in only_jpeg] == ["x.jpg", "z.JPEG"]


def test_files_globs_and_deduplication(image_tree):
    explicit = image_tree / "raw.gifx"  # named explicitly: taken whatever its suffix
    found = collect_images([image_tree / "a" / "x.jpg", str(image_tree / "**" / "*.PNG"), explicit, image_tree / "a"])
    assert [p.relative_to(image_tree).as_posix() for p in found] == ["a/x.jpg", "a/b/c.PNG", "raw.gifx", "a/b/d.webp"]
    assert collect_images(str(image_tree / "*.bmp")) == [image_tree / "n.bmp"]
    with pytest.raises(NotFoundError, match=r"No images match the pattern .*\*\.gif"):
        collect_images(str(image_tree / "*.gif"))


def test_missing_inputs_and_empty_folder(tmp_path, image_tree):
    with pytest.raises(NotFoundError, match="2 inputs do not exist: .*ghost1.png, .*ghost2"):
        collect_images([image_tree, tmp_path / "ghost1.png", tmp_path / "ghost2"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="Folder .*empty contains no images"):
        collect_images(tmp_path / "empty")
    with pytest.raises(NotFoundError, match="No input images"):
        collect_images([])


def test_list_file(tmp_path, image_tree, monkeypatch):
    absolute = image_tree / "n.bmp"
    listing = image_tree / "lists" / "train.txt"
    listing.parent.mkdir()
    listing.write_text(f"\ufeff# painter-by-numbers subset\n\n../z.JPEG\n  ../a/x.jpg  \n{absolute}\n../a/b\n")
    found = collect_images(listing)
    assert [p.resolve() for p in found] == [
        (image_tree / name).resolve() for name in ["z.JPEG", "a/x.jpg", "n.bmp", "a/b/c.PNG", "a/b/d.webp"]
    ]
    # The original's lists were relative to the working directory: still found when not list-relative.
    monkeypatch.chdir(image_tree)
    legacy = tmp_path / "legacy.txt"
    legacy.write_text("m.tiff\n")
    assert [p.resolve() for p in collect_images(legacy)] == [(image_tree / "m.tiff").resolve()]
    broken = tmp_path / "broken.lst"
    broken.write_text("../tree/z.JPEG\nnope.jpg\n")
    with pytest.raises(NotFoundError, match="1 input does not exist: .*nope.jpg"):
        collect_images(broken)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(BadInputError, match="lists no images"):
        collect_images(empty)


def test_csv_manifest(tmp_path, image_tree):
    manifest = image_tree / "manifest.csv"
    manifest.write_text("id,Filename,label\n1,z.JPEG,a\n2,a/x.jpg,b\n3,,c\n")
    assert [p.relative_to(image_tree).as_posix() for p in collect_images(manifest)] == ["z.JPEG", "a/x.jpg"]
    custom = tmp_path / "custom.csv"
    custom.write_text("image_path;other\ntree/m.tiff;1\n")
    assert [p.name for p in collect_images(custom, csv_column="image_path")] == ["m.tiff"]
    with pytest.raises(BadInputError, match="no path column .*it has image_path, other"):
        collect_images(custom)
    missing = tmp_path / "missing.csv"
    missing.write_text("path\ntree/z.JPEG\ntree/gone.png\n")
    with pytest.raises(NotFoundError, match="gone.png"):
        collect_images(missing)


# ---------------------------------------------------------------------------------------- datasets


@pytest.fixture()
def mixed_folder(tmp_path) -> Path:
    """Three good images, a truncated JPEG (header fine, body cut) and a text file named .jpg."""
    folder = tmp_path / "mixed"
    for index, size in enumerate([(40, 20), (20, 40), (30, 30)]):
        _write(folder / f"good{index}.png", noise_image(*size, seed=index))
    _truncated_jpeg(folder / "good1_cut.jpg")  # sorts between good1 and good2
    (folder / "zz_text.jpg").write_text("hello")
    return folder


def test_dataset_skips_corrupt_files_and_counts_them(mixed_folder):
    dataset = ImageDataset(mixed_folder, size=16)
    assert dataset.skipped == 1  # the text file, at the header scan
    assert len(dataset) == 4
    items = [dataset[i] for i in range(len(dataset))]
    assert dataset.skipped == 2  # the truncated JPEG, at decode time
    assert {Path(p).name for p in dataset.skipped_paths} == {"zz_text.jpg", "good1_cut.jpg"}
    assert [Path(item["path"]).name for item in items] == ["good0.png", "good1.png", "good2.png", "good2.png"]
    assert [item["index"] for item in items] == [0, 1, 3, 3]
    for item in items:
        assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    dataset[2]  # a known-bad file is not decoded (or counted) again
    assert dataset.skipped == 2 and dataset.summary() == {"images": 4, "skipped": 2}


def test_skip_count_survives_dataloader_workers(mixed_folder):
    dataset = ImageDataset(mixed_folder, size=8)
    loader = DataLoader(dataset, batch_size=2, num_workers=2)
    batches = list(loader)
    assert sum(batch["image"].shape[0] for batch in batches) == 4
    assert all(isinstance(path, str) for batch in batches for path in batch["path"])
    assert dataset.skipped == 2


def test_too_few_readable_images(mixed_folder, tmp_path):
    with pytest.raises(BadInputError, match="Only 4 of 5 training images are readable; at least 5 are needed"):
        ImageDataset(mixed_folder, size=8, min_images=5)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"")
    (bad / "b.jpg").write_text("text")
    with pytest.raises(BadInputError, match="Only 0 of 2"):
        ImageDataset(bad)
    only_truncated = tmp_path / "cut"
    _truncated_jpeg(only_truncated / "c.jpg")
    with pytest.raises(BadInputError, match="None of the 1 training images could be decoded"):
        ImageDataset(only_truncated)[0]


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


def test_random_crop_and_flip_are_reproducible(tmp_path):
    folder = tmp_path / "imgs"
    for index in range(4):
        _write(folder / f"{index}.png", noise_image(48, 32, seed=index))
    first = ImageDataset(folder, size=16, crop="random", hflip=True, seed=3)
    second = ImageDataset(folder, size=16, crop="random", hflip=True, seed=3)
    assert all(torch.equal(first[i]["image"], second[i]["image"]) for i in range(4))
    epoch0 = [first[i]["image"] for i in range(4)]
    first.set_epoch(1)
    assert first.epoch == 1
    assert any(not torch.equal(a, first[i]["image"]) for i, a in enumerate(epoch0))
    default = ImageDataset(folder, size=16)  # stage-1 default: deterministic centre crop
    assert torch.equal(default[0]["image"], transform_image(load_image(folder / "0.png"), 16))


@pytest.fixture()
def unpaired(tmp_path) -> tuple[Path, Path]:
    content, style = tmp_path / "content", tmp_path / "style"
    for index in range(6):
        _write(content / f"c{index}.png", noise_image(20, 12, seed=index))
    for index in range(4):
        _write(style / f"s{index}.jpg", noise_image(12, 20, seed=100 + index))
    return content, style


def test_unpaired_lengths_shapes_and_items(unpaired, tmp_path):
    content, style = unpaired
    dataset = UnpairedDataset(content, style, size=8, seed=1)
    assert len(dataset) == 4  # min(6 content, 4 style)
    item = dataset[0]
    assert set(item) == {"content", "style", "content_path", "style_path"}
    assert item["content"].shape == item["style"].shape == (3, 8, 8)
    assert Path(item["content_path"]).name == "c0.png" and Path(item["style_path"]).parent == style
    one_style = UnpairedDataset(content, style / "s0.jpg", size=8)
    assert len(one_style) == 6  # a single style image is repeated over all content
    assert {Path(one_style[i]["style_path"]).name for i in range(6)} == {"s0.jpg"}
    # Squash keeps the whole 20x12 image: the mean colour survives.
    expected_mean = image_to_tensor(load_image(content / "c0.png")).mean()
    assert abs(item["content"].mean() - expected_mean) < 0.05
    assert UnpairedDataset(content, style, size=8, max_items=2).summary()["pairs"] == 2


def test_unpaired_pairing_is_reproducible_per_epoch_and_across_workers(unpaired):
    content, style = unpaired
    make = lambda seed: UnpairedDataset(content, style, size=8, seed=seed)  # noqa: E731
    dataset = make(7)
    pairs = [dataset[i]["style_path"] for i in range(len(dataset))]
    assert pairs == [make(7)[i]["style_path"] for i in range(len(dataset))]
    draws = {seed: [make(seed).style_index(i) for i in range(4)] for seed in range(8)}
    assert len({tuple(d) for d in draws.values()}) > 1  # the seed matters
    per_epoch = []
    for epoch in range(6):
        dataset.set_epoch(epoch)
        per_epoch.append(tuple(dataset.style_index(i) for i in range(4)))
    assert len(set(per_epoch)) > 1  # re-drawn each epoch, as in the original
    dataset.set_epoch(3)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, persistent_workers=True)
    from_workers = [path for batch in loader for path in batch["style_path"]]
    assert from_workers == [str(dataset.style_paths[i]) for i in per_epoch[3]]
    dataset.set_epoch(4)  # persistent workers see the new epoch through shared memory
    from_workers = [path for batch in loader for path in batch["style_path"]]
    assert from_workers == [str(dataset.style_paths[i]) for i in per_epoch[4]]


def test_unpaired_skips_bad_style_and_content(unpaired):
    content, style = unpaired
    _truncated_jpeg(style / "s1.jpg")
    (content / "c9.png").write_text("not an image")
    dataset = UnpairedDataset(content, style, size=8)
    assert dataset.summary()["skipped_content"] == 1
    styles = {Path(dataset[i]["style_path"]).name for i in range(len(dataset))}
    for epoch in range(1, 6):
        dataset.set_epoch(epoch)
        styles |= {Path(dataset[i]["style_path"]).name for i in range(len(dataset))}
    assert "s1.jpg" not in styles
    assert dataset.summary()["skipped_style"] == 1 and dataset.skipped == 2


def test_genre_filter(tmp_path, unpaired):
    content, style = unpaired
    info = tmp_path / "train_info.csv"
    info.write_text(
        "filename,artist,style,genre,date\n"
        "s0.jpg,A,Impressionism,landscape,1890\n"
        "s1.jpg,B,Realism,portrait,1850\n"
        's2.jpg,C,"Romanticism, late",Landscape,1820\n'
        "s3.jpg,D,Cubism,,1910\n"
    )
    selected = select_style_by_genre(style, info, "landscape")
    assert [p.name for p in selected] == ["s0.jpg", "s2.jpg"]
    dataset = UnpairedDataset(content, style, size=8, style_genre_csv=info, style_genre="landscape")
    assert len(dataset) == 2 and [p.name for p in dataset.style_paths] == ["s0.jpg", "s2.jpg"]
    for epoch in range(4):
        dataset.set_epoch(epoch)
        assert {Path(dataset[i]["style_path"]).name for i in range(2)} <= {"s0.jpg", "s2.jpg"}
    with pytest.raises(BadInputError, match="genre 'still life'.*landscape, portrait"):
        select_style_by_genre(style, info, "still life")
    info.write_text("filename,genre\ns0.jpg,landscape\nlost.jpg,landscape\n")
    with pytest.raises(NotFoundError, match="1 of the 2 'landscape' files.*lost.jpg"):
        UnpairedDataset(content, style, style_genre_csv=info, style_genre="landscape")
    with pytest.raises(UsageError, match="both"):
        UnpairedDataset(content, style, style_genre="landscape")


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
