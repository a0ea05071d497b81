"""Training datasets: :class:`ImageDataset` (stage 1) and :class:`UnpairedDataset` (stage 2) never crash on a bad file.

How bad files are handled, and why it survives DataLoader workers: at construction every file's
header is opened (cheap, no pixel decode) and files that are empty, not images or above the pixel
limit are dropped with a warning. A file that passes the header check but fails to decode later
(truncated body) is marked in a small shared-memory tensor of flags and replaced by the next
readable item. Because the flags live in shared memory, marks made inside worker processes (fork,
spawn or persistent) are visible to ``dataset.skipped`` in the main process; because each file has
one flag, a file that fails every epoch is counted once and not decoded again. Under DDP each rank
counts its own share.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from quantart_cli.core.data.sources import MAX_WARNINGS, PathLike, Sources, collect_images, select_style_by_genre
from quantart_cli.core.data.transforms import CropMode, ResizeFilter, ResizeMode, check_transform, transform_image
from quantart_cli.core.errors import BadInputError, QuantartError, UsageError
from quantart_cli.core.io.images import load_image, read_image_size
from quantart_cli.core.io.limits import DEFAULT_MAX_PIXELS

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- dataset helpers


def item_rng(seed: int, epoch: int, index: int, stream: str) -> random.Random:
    """A generator fixed by (seed, epoch, index, stream): the same in any worker, after any resume."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}:{stream}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


def shared_zeros(length: int, dtype: torch.dtype) -> torch.Tensor:
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
            level = logging.WARNING if len(rejected) <= MAX_WARNINGS else logging.DEBUG
            logger.log(level, "Skipping %s image: %s", role, exc)
        else:
            readable.append(path)
    if len(rejected) > MAX_WARNINGS:
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
        self.failed = shared_zeros(len(self.paths), torch.uint8)

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


class EpochMixin:
    """Shared-memory epoch number so persistent workers see :meth:`set_epoch` too."""

    _epoch: torch.Tensor

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating an epoch: random choices (pairing, crops, flips) depend on it."""
        self._epoch[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])


# -------------------------------------------------------------------------------------- datasets


class ImageDataset(EpochMixin, Dataset):
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
        resize_filter: ResizeFilter = "opencv-linear",
        seed: int = 0,
        max_items: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        prescan: bool = True,
        recursive: bool = True,
        csv_column: str | None = None,
    ) -> None:
        check_transform(size, resize, crop)
        self.size = size
        self.resize: ResizeMode = resize
        self.crop: CropMode = crop
        self.hflip = hflip
        self.max_scale = max_scale
        self.resize_filter: ResizeFilter = resize_filter
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
        self._epoch = shared_zeros(1, torch.int64)

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
        rng = item_rng(self.seed, self.epoch, index, "image")
        tensor = transform_image(
            image, self.size, resize=self.resize, crop=self.crop, hflip=self.hflip, rng=rng, max_scale=self.max_scale,
            resize_filter=self.resize_filter,
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


class UnpairedDataset(EpochMixin, Dataset):
    """Stage-2 pairs: each content image with a uniformly random style image.

    Items: ``{"content", "style": (3, size, size) float32 in [-1, 1], "content_path", "style_path": str}``.
    Length follows the original: ``min(#content, #style)`` when there is more than one style image,
    else ``#content``. The style drawn for an item depends only on ``(seed, epoch, index)``, so pairing
    is reproducible across workers and resumes and changes per epoch via :meth:`set_epoch`.
    Default transform is the original's squash to ``size x size``; ``resize="shorter-side"`` with
    ``crop="random"``, ``hflip`` and ``max_scale`` (scale jitter, as :class:`ImageDataset`) are options.
    ``style_genre_csv`` + ``style_genre`` select the style
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
        max_scale: float = 1.0,
        resize_filter: ResizeFilter = "opencv-linear",
        style_genre_csv: PathLike | None = None,
        style_genre: str | None = None,
        min_images: int = 1,
        max_items: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        prescan: bool = True,
        recursive: bool = True,
        csv_column: str | None = None,
    ) -> None:
        check_transform(size, resize, crop)
        self.size = size
        self.resize: ResizeMode = resize
        self.crop: CropMode = crop
        self.hflip = hflip
        self.max_scale = max_scale
        self.resize_filter: ResizeFilter = resize_filter
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
        self._epoch = shared_zeros(1, torch.int64)

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
        return item_rng(self.seed, self.epoch, index, "pair").randrange(len(self._style))

    def __getitem__(self, index: int) -> dict[str, object]:
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for a dataset of {self._length} pairs")
        epoch = self.epoch
        content, content_index = self._content.load(index)
        style, style_index = self._style.load(self.style_index(index))
        options = {"resize": self.resize, "crop": self.crop, "hflip": self.hflip, "resize_filter": self.resize_filter,
                   "max_scale": self.max_scale}
        return {
            "content": transform_image(
                content, self.size, rng=item_rng(self.seed, epoch, index, "content"), **options
            ),
            "style": transform_image(style, self.size, rng=item_rng(self.seed, epoch, index, "style"), **options),
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
