"""Input collection and training datasets.

- :func:`collect_images` turns what a user typed (files, folders, globs, list files, CSV manifests)
  into a sorted, de-duplicated list of image paths, or raises NotFoundError naming what is missing.
- :class:`ImageDataset` (stage 1) and :class:`UnpairedDataset` (stage 2) never crash on a bad file.

How bad files are handled, and why it survives DataLoader workers: at construction every file's
header is opened (cheap, no pixel decode) and files that are empty, not images or above the pixel
limit are dropped with a warning. A file that passes the header check but fails to decode later
(truncated body) is marked in a small shared-memory tensor of flags and replaced by the next
readable item. Because the flags live in shared memory, marks made inside worker processes (fork,
spawn or persistent) are visible to ``dataset.skipped`` in the main process; because each file has
one flag, a file that fails every epoch is counted once and not decoded again. Under DDP each rank
counts its own share.

Single-image loading, tensor conversion, padding and saving live in :mod:`quantart_cli.core.io.images` and
are re-exported here.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import logging
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, TextIO

import torch
from PIL import Image
from torch.utils.data import Dataset

from quantart_cli.core.errors import BadInputError, NotFoundError, QuantartError, UsageError
from quantart_cli.core.io.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    SAVE_FORMATS,
    Padding,
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

__all__ = [
    "CSV_PATH_COLUMNS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "LIST_SUFFIXES",
    "SAVE_FORMATS",
    "ImageDataset",
    "Padding",
    "UnpairedDataset",
    "collect_images",
    "crop_padding",
    "image_to_tensor",
    "load_image",
    "load_image_tensor",
    "pad_to_multiple",
    "read_image_size",
    "save_image_atomic",
    "select_style_by_genre",
    "tensor_to_image",
    "to_rgb",
    "transform_image",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
Sources = PathLike | Iterable[PathLike]
ResizeMode = Literal["shorter-side", "squash"]
CropMode = Literal["center", "random"]

#: Suffixes read as "one path per line" list files.
LIST_SUFFIXES: frozenset[str] = frozenset({".txt", ".lst", ".list"})
#: Column names tried, in order, when a CSV manifest's path column is not given.
CSV_PATH_COLUMNS: tuple[str, ...] = ("path", "filename", "file", "image")

_GLOB_CHARS = set("*?[")
_MAX_NAMED = 5  # how many offending paths an error message lists before "and N more"
_MAX_WARNINGS = 10  # individual "skipping" warnings before switching to debug level


# ------------------------------------------------------------------------------------ collecting


def _name_some(paths: Sequence[object]) -> str:
    named = ", ".join(str(p) for p in paths[:_MAX_NAMED])
    return named if len(paths) <= _MAX_NAMED else f"{named} and {len(paths) - _MAX_NAMED} more"


def _normalise_extensions(extensions: Iterable[str]) -> frozenset[str]:
    return frozenset(ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in extensions)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _scan_folder(root: Path, recursive: bool, extensions: frozenset[str]) -> list[Path]:
    """Image files under ``root`` (hidden files and folders skipped), sorted by relative path."""
    found: list[tuple[tuple[str, ...], Path]] = []
    if not recursive:
        for entry in os.scandir(root):
            if not _is_hidden(entry.name) and entry.is_file() and Path(entry.name).suffix.lower() in extensions:
                found.append(((entry.name,), root / entry.name))
        return [path for _, path in sorted(found)]
    visited: set[tuple[int, int]] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in visited:  # a symlink loop
            subfolders[:] = []
            continue
        visited.add((stat.st_dev, stat.st_ino))
        subfolders[:] = sorted(name for name in subfolders if not _is_hidden(name))
        relative = Path(folder).relative_to(root).parts
        for name in files:
            if not _is_hidden(name) and Path(name).suffix.lower() in extensions:
                found.append(((*relative, name), Path(folder) / name))
    return [path for _, path in sorted(found)]


def _read_list_file(list_path: Path) -> list[str]:
    """Entries of a one-path-per-line list; blank lines and ``#`` comments ignored."""
    try:
        text = list_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"List file {list_path} is not UTF-8 text.") from exc
    except OSError as exc:
        raise BadInputError(f"List file {list_path} cannot be read ({exc.strerror or exc}).") from exc
    entries = [line.strip() for line in text.splitlines()]
    entries = [entry for entry in entries if entry and not entry.startswith("#")]
    if not entries:
        raise BadInputError(f"List file {list_path} lists no images.")
    return entries


def _open_csv(csv_path: Path) -> tuple[csv.DictReader, TextIO]:
    """A DictReader on ``csv_path`` (delimiter sniffed among , ; tab) and the handle to close."""
    try:
        handle = open(csv_path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise BadInputError(f"CSV file {csv_path} cannot be read ({exc.strerror or exc}).") from exc
    try:
        sample = handle.read(8192)
        handle.seek(0)
    except (UnicodeDecodeError, OSError) as exc:
        handle.close()
        raise BadInputError(f"CSV file {csv_path} is not readable UTF-8 text ({exc}).") from exc
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample.splitlines()[0] if sample else "", ",;\t")
    except csv.Error:
        dialect = csv.excel
    return csv.DictReader(handle, dialect=dialect), handle


def _find_column(header: Sequence[str], wanted: Sequence[str], csv_path: Path, purpose: str) -> str:
    by_key = {name.strip().casefold(): name for name in header if name}
    for name in wanted:
        if name.strip().casefold() in by_key:
            return by_key[name.strip().casefold()]
    raise BadInputError(
        f"CSV file {csv_path} has no {purpose} column (looked for {', '.join(wanted)}; "
        f"it has {', '.join(header) or 'no header'})."
    )


def _read_csv_manifest(csv_path: Path, column: str | None) -> list[str]:
    reader, handle = _open_csv(csv_path)
    with handle:
        try:
            chosen = _find_column(reader.fieldnames or [], [column] if column else CSV_PATH_COLUMNS, csv_path, "path")
            entries = [(row.get(chosen) or "").strip() for row in reader]
        except csv.Error as exc:
            raise BadInputError(f"CSV file {csv_path} is malformed ({exc}).") from exc
        except UnicodeDecodeError as exc:
            raise BadInputError(f"CSV file {csv_path} is not UTF-8 text.") from exc
    entries = [entry for entry in entries if entry]
    if not entries:
        raise BadInputError(f"CSV file {csv_path} lists no images in column {chosen!r}.")
    return entries


def _resolve(
    raw: str,
    base: Path | None,
    *,
    manifests: bool,
    recursive: bool,
    extensions: frozenset[str],
    csv_column: str | None,
    missing: list[str],
) -> list[Path]:
    """Expand one user item (file, folder, glob, list, CSV); missing ones are appended to ``missing``."""
    path = Path(raw).expanduser()
    if base is not None and not path.is_absolute():
        # List entries are relative to the list's folder; the original's lists were relative to the
        # working directory, so fall back to that when the list-relative path does not exist.
        if not (base / path).exists() and path.exists():
            logger.debug("Entry %s found relative to the working directory, not to %s", raw, base)
        else:
            path = base / path
    if path.is_dir():
        files = _scan_folder(path, recursive, extensions)
        if not files:
            raise NotFoundError(
                f"Folder {path} contains no images (looked{' recursively' if recursive else ''} for "
                f"{', '.join(sorted(extensions))})."
            )
        return files
    if path.is_file():
        suffix = path.suffix.lower()
        if manifests and suffix in LIST_SUFFIXES:
            entries = _read_list_file(path)
        elif manifests and suffix == ".csv":
            entries = _read_csv_manifest(path, csv_column)
        else:
            return [path]  # named explicitly: loading decides whether it is an image
        files: list[Path] = []
        for entry in entries:
            files.extend(
                _resolve(
                    entry,
                    path.parent,
                    manifests=False,
                    recursive=recursive,
                    extensions=extensions,
                    csv_column=None,
                    missing=missing,
                )
            )
        return files
    if _GLOB_CHARS & set(raw):
        pattern = str(path)
        matches: list[Path] = []
        for match in sorted(glob.glob(pattern, recursive=True)):
            candidate = Path(match)
            if candidate.is_dir():
                matches.extend(_scan_folder(candidate, recursive, extensions))
            elif candidate.suffix.lower() in extensions:
                matches.append(candidate)
        if not matches:
            raise NotFoundError(f"No images match the pattern {raw}.")
        return matches
    missing.append(str(path))
    return []


def collect_images(
    items: Sources,
    recursive: bool = True,
    *,
    csv_column: str | None = None,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
) -> list[Path]:
    """Resolve files, folders, glob patterns, list files and CSV manifests to image paths.

    - a folder: image files by suffix (``extensions``, case-insensitive), recursively unless
      ``recursive=False``, hidden files/folders skipped, sorted by relative path;
    - a glob (``*``, ``?``, ``[``; ``**`` recurses): matching image files, folders expanded;
    - a ``.txt``/``.lst``/``.list`` file: one path per line relative to the list's folder, blank lines
      and ``#`` comments ignored;
    - a ``.csv`` file: the ``csv_column`` column (default: first of ``path, filename, file, image``),
      relative to the CSV's folder;
    - any other file: taken as an image whatever its suffix.

    Order follows ``items``; duplicates (same absolute path) are kept once. Raises NotFoundError naming
    missing paths, empty folders and globs that match nothing.
    """
    if isinstance(items, str | os.PathLike):
        items = [items]
    allowed = _normalise_extensions(extensions)
    missing: list[str] = []
    collected: list[Path] = []
    for item in items:
        collected.extend(
            _resolve(
                os.fspath(item),
                None,
                manifests=True,
                recursive=recursive,
                extensions=allowed,
                csv_column=csv_column,
                missing=missing,
            )
        )
    if missing:
        noun = "input does" if len(missing) == 1 else "inputs do"
        raise NotFoundError(f"{len(missing)} {noun} not exist: {_name_some(missing)}.")
    unique: dict[str, Path] = {}
    for path in collected:
        unique.setdefault(os.path.normcase(os.path.abspath(path)), path)
    if not unique:
        raise NotFoundError("No input images were given.")
    return list(unique.values())


def select_style_by_genre(style_folder: PathLike, genre_csv: PathLike, genre: str) -> list[Path]:
    """Style files ``style_folder/<filename>`` for the rows of a WikiArt (Painter-by-Numbers)
    ``train_info.csv`` whose ``genre`` equals ``genre`` (case-insensitive), in CSV order."""
    folder = Path(style_folder).expanduser()
    csv_path = Path(genre_csv).expanduser()
    if not folder.is_dir():
        raise NotFoundError(f"Style folder {folder} does not exist or is not a folder.")
    if not csv_path.is_file():
        raise NotFoundError(f"Genre CSV {csv_path} does not exist.")
    reader, handle = _open_csv(csv_path)
    wanted = genre.strip().casefold()
    genres: Counter[str] = Counter()
    selected: list[Path] = []
    with handle:
        try:
            header = reader.fieldnames or []
            file_column = _find_column(header, ("filename", "file", "path"), csv_path, "filename")
            genre_column = _find_column(header, ("genre",), csv_path, "genre")
            for row in reader:
                value = (row.get(genre_column) or "").strip()
                name = (row.get(file_column) or "").strip()
                if not value or not name:
                    continue
                genres[value] += 1
                if value.casefold() == wanted:
                    selected.append(folder / name)
        except csv.Error as exc:
            raise BadInputError(f"CSV file {csv_path} is malformed ({exc}).") from exc
        except UnicodeDecodeError as exc:
            raise BadInputError(f"CSV file {csv_path} is not UTF-8 text.") from exc
    if not selected:
        common = ", ".join(name for name, _ in genres.most_common(10)) or "none"
        raise BadInputError(f"No rows of {csv_path} have genre {genre!r} (most common genres: {common}).")
    missing = [path for path in selected if not path.is_file()]
    if missing:
        raise NotFoundError(
            f"{len(missing)} of the {len(selected)} {genre!r} files listed in {csv_path} are not in {folder}: "
            f"{_name_some(missing)}."
        )
    return selected


# ----------------------------------------------------------------------------------- transforms


def _check_transform(size: int, resize: str, crop: str) -> None:
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
) -> torch.Tensor:
    """Resize, crop and optionally flip an RGB image to a ``(3, size, size)`` tensor in ``[-1, 1]``.

    ``shorter-side``: shorter side to ``size`` (bilinear; PIL antialiases when shrinking), then a
    centre or random ``size`` crop. ``squash``: straight to ``size x size`` (aspect not kept), crop is
    a no-op. ``hflip`` flips with probability 0.5. ``rng`` drives the random choices.

    ``max_scale`` > 1 (scale jitter, ``shorter-side`` only): the shorter side goes to ``size * s`` with
    ``s`` uniform in [1, max_scale] (never beyond the image's own size when that is larger than
    ``size``), so crops show the image at several scales; a model trained on small crops then also
    knows the scale of full-resolution photos.
    """
    _check_transform(size, resize, crop)
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
    elif width <= height:
        target = (side, max(side, round(height * side / width)))
    else:
        target = (max(side, round(width * side / height)), side)
    if target != image.size:
        image = image.resize(target, Image.Resampling.BILINEAR)
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


# ------------------------------------------------------------------------------- dataset helpers


def _item_rng(seed: int, epoch: int, index: int, stream: str) -> random.Random:
    """A generator fixed by (seed, epoch, index, stream): the same in any worker, after any resume."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}:{stream}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


def _shared_zeros(length: int, dtype: torch.dtype) -> torch.Tensor:
    """A tensor in shared memory, so writes from DataLoader workers reach the main process."""
    tensor = torch.zeros(length, dtype=dtype)
    try:
        tensor.share_memory_()
    except (RuntimeError, OSError) as exc:  # e.g. no /dev/shm: counts from workers are then lost
        logger.warning("Shared memory unavailable (%s); skipped-file counts from workers may be incomplete.", exc)
    return tensor


def _prescan(paths: Sequence[Path], max_pixels: int | None, role: str) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Split ``paths`` into files whose header opens and (path, reason) for the others."""
    readable: list[Path] = []
    rejected: list[tuple[Path, str]] = []
    for path in paths:
        try:
            read_image_size(path, max_pixels=max_pixels)
        except QuantartError as exc:
            rejected.append((path, str(exc)))
            level = logging.WARNING if len(rejected) <= _MAX_WARNINGS else logging.DEBUG
            logger.log(level, "Skipping %s image: %s", role, exc)
        else:
            readable.append(path)
    if len(rejected) > _MAX_WARNINGS:
        logger.warning("Skipped %d unreadable %s images in total.", len(rejected), role)
    return readable, rejected


class _ImagePool:
    """Readable paths of one role plus shared flags for files that failed to decode later."""

    def __init__(
        self,
        sources: Sources,
        role: str,
        *,
        min_images: int,
        max_pixels: int | None,
        prescan: bool,
        recursive: bool,
        csv_column: str | None,
        paths: Sequence[Path] | None = None,
    ) -> None:
        self.role = role
        self.max_pixels = max_pixels
        found = list(paths) if paths is not None else collect_images(sources, recursive, csv_column=csv_column)
        if prescan:
            self.paths, self.rejected = _prescan(found, max_pixels, role)
        else:
            self.paths, self.rejected = found, []
        if len(self.paths) < min_images:
            raise BadInputError(
                f"Only {len(self.paths)} of {len(found)} {role} images are readable; at least {min_images} "
                f"{'is' if min_images == 1 else 'are'} needed."
            )
        self.failed = _shared_zeros(len(self.paths), torch.uint8)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> tuple[Image.Image, int]:
        """The image at ``index`` or, if it cannot be decoded, the next readable one (wrapping)."""
        count = len(self.paths)
        for step in range(count):
            candidate = (index + step) % count
            if self.failed[candidate]:
                continue  # known bad: do not pay for decoding it again
            try:
                return load_image(self.paths[candidate], max_pixels=self.max_pixels), candidate
            except QuantartError as exc:
                self.failed[candidate] = 1
                logger.warning("Skipping %s image: %s", self.role, exc)
        raise BadInputError(f"None of the {count} {self.role} images could be decoded.")

    @property
    def skipped_paths(self) -> list[Path]:
        late = torch.nonzero(self.failed).flatten().tolist()
        return [path for path, _ in self.rejected] + [self.paths[i] for i in late]

    @property
    def skipped(self) -> int:
        return len(self.rejected) + int(self.failed.sum())


class _EpochMixin:
    """Shared-memory epoch number so persistent workers see :meth:`set_epoch` too."""

    _epoch: torch.Tensor

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating an epoch: random choices (pairing, crops, flips) depend on it."""
        self._epoch[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])


# -------------------------------------------------------------------------------------- datasets


class ImageDataset(_EpochMixin, Dataset):
    """Stage-1 images: ``{"image": (3, size, size) float32 in [-1, 1], "path": str, "index": int}``.

    Defaults reproduce the original's transform (shorter side to ``size``, centre crop, no flip).
    Unreadable files are skipped (see the module docstring); ``skipped`` / ``summary()`` count them.
    ``path`` and ``index`` name the file actually returned, which differs from the requested index
    only when a substitute was used. Random crops/flips are fixed by ``(seed, epoch, index)``.
    """

    def __init__(
        self,
        sources: Sources,
        size: int = 256,
        resize: ResizeMode = "shorter-side",
        crop: CropMode = "center",
        hflip: bool = False,
        min_images: int = 1,
        *,
        max_scale: float = 1.0,
        seed: int = 0,
        max_items: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        prescan: bool = True,
        recursive: bool = True,
        csv_column: str | None = None,
    ) -> None:
        _check_transform(size, resize, crop)
        self.size = size
        self.resize: ResizeMode = resize
        self.crop: CropMode = crop
        self.hflip = hflip
        self.max_scale = max_scale
        self.seed = seed
        self._pool = _ImagePool(
            sources,
            "training",
            min_images=min_images,
            max_pixels=max_pixels,
            prescan=prescan,
            recursive=recursive,
            csv_column=csv_column,
        )
        self._length = len(self._pool) if max_items is None else min(max_items, len(self._pool))
        self._epoch = _shared_zeros(1, torch.int64)

    @property
    def paths(self) -> list[Path]:
        """Files that passed the header scan, in dataset order."""
        return self._pool.paths

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, object]:
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for a dataset of {self._length} images")
        image, actual = self._pool.load(index)
        rng = _item_rng(self.seed, self.epoch, index, "image")
        tensor = transform_image(
            image, self.size, resize=self.resize, crop=self.crop, hflip=self.hflip, rng=rng, max_scale=self.max_scale
        )
        return {"image": tensor, "path": str(self._pool.paths[actual]), "index": actual}

    @property
    def skipped(self) -> int:
        """Files dropped at the header scan plus files that failed to decode so far (any worker)."""
        return self._pool.skipped

    @property
    def skipped_paths(self) -> list[Path]:
        return self._pool.skipped_paths

    def summary(self) -> dict[str, int]:
        """Counts for a run summary: ``{"images": ..., "skipped": ...}``."""
        return {"images": self._length, "skipped": self.skipped}


class UnpairedDataset(_EpochMixin, Dataset):
    """Stage-2 pairs: each content image with a uniformly random style image.

    Items: ``{"content", "style": (3, size, size) float32 in [-1, 1], "content_path", "style_path": str}``.
    Length follows the original: ``min(#content, #style)`` when there is more than one style image,
    else ``#content``. The style drawn for an item depends only on ``(seed, epoch, index)``, so pairing
    is reproducible across workers and resumes and changes per epoch via :meth:`set_epoch`.
    Default transform is the original's squash to ``size x size``; ``resize="shorter-side"`` with
    ``crop="random"`` and ``hflip`` are options. ``style_genre_csv`` + ``style_genre`` select the style
    files of one WikiArt genre from the single style folder (see :func:`select_style_by_genre`).
    """

    def __init__(
        self,
        content_sources: Sources,
        style_sources: Sources,
        size: int = 256,
        seed: int = 0,
        *,
        resize: ResizeMode = "squash",
        crop: CropMode = "center",
        hflip: bool = False,
        style_genre_csv: PathLike | None = None,
        style_genre: str | None = None,
        min_images: int = 1,
        max_items: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        prescan: bool = True,
        recursive: bool = True,
        csv_column: str | None = None,
    ) -> None:
        _check_transform(size, resize, crop)
        self.size = size
        self.resize: ResizeMode = resize
        self.crop: CropMode = crop
        self.hflip = hflip
        self.seed = seed
        common = {
            "min_images": min_images,
            "max_pixels": max_pixels,
            "prescan": prescan,
            "recursive": recursive,
            "csv_column": csv_column,
        }
        self._content = _ImagePool(content_sources, "content", **common)
        style_paths = None
        if (style_genre_csv is None) != (style_genre is None):
            raise UsageError("The style genre filter needs both a genre CSV and a genre name.")
        if style_genre_csv is not None and style_genre is not None:
            folders = [style_sources] if isinstance(style_sources, str | os.PathLike) else list(style_sources)
            if len(folders) != 1:
                raise UsageError("The style genre filter needs exactly one style folder.")
            style_paths = select_style_by_genre(folders[0], style_genre_csv, style_genre)
        self._style = _ImagePool(style_sources, "style", paths=style_paths, **common)
        count_content, count_style = len(self._content), len(self._style)
        length = min(count_content, count_style) if count_style > 1 else count_content
        self._length = length if max_items is None else min(max_items, length)
        self._epoch = _shared_zeros(1, torch.int64)

    @property
    def content_paths(self) -> list[Path]:
        return self._content.paths

    @property
    def style_paths(self) -> list[Path]:
        return self._style.paths

    def __len__(self) -> int:
        return self._length

    def style_index(self, index: int) -> int:
        """The style image drawn for content item ``index`` in the current epoch (before substitution)."""
        return _item_rng(self.seed, self.epoch, index, "pair").randrange(len(self._style))

    def __getitem__(self, index: int) -> dict[str, object]:
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for a dataset of {self._length} pairs")
        epoch = self.epoch
        content, content_index = self._content.load(index)
        style, style_index = self._style.load(self.style_index(index))
        options = {"resize": self.resize, "crop": self.crop, "hflip": self.hflip}
        return {
            "content": transform_image(
                content, self.size, rng=_item_rng(self.seed, epoch, index, "content"), **options
            ),
            "style": transform_image(style, self.size, rng=_item_rng(self.seed, epoch, index, "style"), **options),
            "content_path": str(self._content.paths[content_index]),
            "style_path": str(self._style.paths[style_index]),
        }

    @property
    def skipped(self) -> int:
        """Content plus style files skipped so far (header scan and decode failures in any worker)."""
        return self._content.skipped + self._style.skipped

    @property
    def skipped_paths(self) -> list[Path]:
        return self._content.skipped_paths + self._style.skipped_paths

    def summary(self) -> dict[str, int]:
        return {
            "pairs": self._length,
            "content_images": len(self._content),
            "style_images": len(self._style),
            "skipped_content": self._content.skipped,
            "skipped_style": self._style.skipped,
            "skipped": self.skipped,
        }
