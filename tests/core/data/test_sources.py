"""Collecting inputs (quantart_cli.core.data.sources): folders (GIFs too), globs, list files and CSV manifests
(a bad entry named with its line)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import run_cli
from image_files import noise_image, write_image

from quantart_cli.core.data.sources import collect_images
from quantart_cli.core.errors import BadInputError, NotFoundError
from quantart_cli.samples import PAINTINGS_DIR

# -------------------------------------------------------------------------------------- collecting


@pytest.fixture()
def image_tree(tmp_path) -> Path:
    root = tmp_path / "tree"
    for relative in ["z.JPEG", "a/x.jpg", "a/b/c.PNG", "a/b/d.webp", "m.tiff", "n.bmp"]:
        write_image(root / relative, noise_image(8, 8), **({"format": "JPEG"} if relative.endswith("JPEG") else {}))
    write_image(root / ".hidden.jpg")
    write_image(root / ".cache" / "inside.png")
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


STYLE = PAINTINGS_DIR / "munch_the_scream.jpg"
FAST = ["--size", "32", "--device", "cpu"]


# ------------------------------------------------------------------------------------------------- GIF files


def test_a_gif_in_a_folder_is_found_as_it_is_when_named(capsys, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    noise_image(24, 16).save(folder / "a.png")
    noise_image(24, 16, 1).convert("P").save(folder / "b.gif")
    assert [p.name for p in collect_images(folder)] == ["a.png", "b.gif"]
    result = run_cli(capsys, "stylize", str(folder), "--style", str(STYLE), "-o", str(tmp_path / "out"), *FAST)
    assert result.code == 0, result.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_stylized.png", "b_stylized.png"]


# ----------------------------------------------------------------------------------------------- list files


@pytest.fixture
def listed(tmp_path: Path) -> Path:
    """A list file naming two photos of a folder beside it."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(2):
        noise_image(24, 16, index).save(folder / f"p{index}.png")
    listing = tmp_path / "todo.txt"
    listing.write_text("# to stylize\nphotos/p0.png\n\nphotos/p1.png\n")
    return listing


def test_a_missing_list_entry_names_the_list_and_its_line(listed):
    listed.write_text(listed.read_text() + "photos/gone.png\n")
    with pytest.raises(NotFoundError, match=r"gone\.png \(line 5 of .*todo\.txt\)"):
        collect_images(listed)
    empty = listed.parent / "empty"
    empty.mkdir()
    listed.write_text("empty\n")
    with pytest.raises(NotFoundError, match=r"Folder .*empty contains no images .*, listed on line 1 of .*todo\.txt"):
        collect_images(listed)


def test_a_csv_entry_names_the_manifest_and_its_line(tmp_path):
    manifest = tmp_path / "set.csv"
    manifest.write_text("path,label\nmissing.png,a\n")
    with pytest.raises(NotFoundError, match=r"missing\.png \(line 2 of .*set\.csv\)"):
        collect_images(manifest)


def test_stylize_says_it_read_a_list_and_where_a_bad_entry_came_from(capsys, listed, tmp_path):
    (listed.parent / "photos" / "p1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = run_cli(capsys, "stylize", str(listed), "--style", str(STYLE), "-o", str(tmp_path / "out"), *FAST)
    assert result.code == 1
    assert f"{listed} is a list file: 2 images from its lines" in result.err
    warning = next(line for line in result.err.splitlines() if "p1.png" in line)
    assert "line 4 of" in warning and "todo.txt" in warning
    assert (tmp_path / "out" / "p0_stylized.png").is_file()
