"""What ``quantart evaluate`` scores: a manifest of outputs made by anything, or a model's photo x painting grid.

A manifest is a CSV with the columns ``stylized``, ``content`` and ``style`` (and optionally ``alpha``, which
groups the rows); relative paths are taken from the CSV's folder, or, for ``stylized``, from ``stylized_dir``
when one is given. Both modes load every image at the same size (the longer side resized to ``size``), so
scoring a model's outputs directly and scoring the same outputs saved as PNG through a manifest give the same
numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from quantart_cli.core.errors import BadInputError, NotFoundError
from quantart_cli.core.io.atomic import atomic_write
from quantart_cli.core.io.images import image_to_tensor, load_image, save_image_atomic, tensor_to_image
from quantart_cli.core.io.limits import DEFAULT_MAX_PIXELS
from quantart_cli.core.metrics.scoring import Triple

if TYPE_CHECKING:
    from quantart_cli.core.transfer.session import StylizeSession

__all__ = [
    "MANIFEST_COLUMNS",
    "ManifestRow",
    "ImageCache",
    "alpha_label",
    "read_manifest",
    "stylize_triples",
    "triples_from_manifest",
    "write_manifest",
]

MANIFEST_COLUMNS = ("stylized", "content", "style")
_OPTIONAL_COLUMNS = ("alpha",)
#: The group of manifest rows without an ``alpha`` column.
ALL = "all"


@dataclass(frozen=True)
class ManifestRow:
    stylized: Path
    content: Path
    style: Path
    group: str


def alpha_label(alpha: float) -> str:
    """How an alpha names its group ("1", "0.5")."""
    return f"{alpha:g}"


def read_manifest(path: Path, stylized_dir: Path | None = None) -> list[ManifestRow]:
    """Rows of a manifest CSV; a missing column, an empty manifest or a row naming a missing file is one
    sentence that says which."""
    if not path.is_file():
        raise NotFoundError(f"Manifest {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"Cannot read the manifest {path} ({err}).") from err
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in (reader.fieldnames or [])]
    missing = [c for c in MANIFEST_COLUMNS if c not in header]
    if missing:
        shown = ", ".join(header) if header else "nothing"
        raise BadInputError(
            f"Manifest {path} needs the columns {', '.join(MANIFEST_COLUMNS)} (optionally alpha), "
            f"but its header has {shown}."
        )
    base, outputs = path.parent, stylized_dir if stylized_dir is not None else path.parent
    rows: list[ManifestRow] = []
    for number, raw in enumerate(reader, start=2):
        record = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(record.get(c) for c in MANIFEST_COLUMNS):
            continue  # a blank line
        empty = [c for c in MANIFEST_COLUMNS if not record.get(c)]
        if empty:
            raise BadInputError(f"Row {number} of {path} has no {empty[0]} path.")
        files = {
            "stylized": _resolve(record["stylized"], outputs),
            "content": _resolve(record["content"], base),
            "style": _resolve(record["style"], base),
        }
        for column, file in files.items():
            if not file.is_file():
                raise NotFoundError(f"Row {number} of {path} names the {column} image {file}, which does not exist.")
        group = ALL
        if record.get("alpha"):
            try:
                group = alpha_label(float(record["alpha"]))
            except ValueError as err:
                raise BadInputError(f"Row {number} of {path} has alpha {record['alpha']!r}, not a number.") from err
        rows.append(ManifestRow(group=group, **files))
    if not rows:
        raise BadInputError(f"Manifest {path} has a header but no rows to score.")
    return rows


def _resolve(value: str, base: Path) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def write_manifest(path: Path, rows: Sequence[ManifestRow]) -> Path:
    """A manifest with paths relative to its own folder where possible (absolute otherwise)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*MANIFEST_COLUMNS, "alpha"])
    for row in rows:
        writer.writerow([_relative(row.stylized, path.parent), _relative(row.content, path.parent),
                         _relative(row.style, path.parent), "" if row.group == ALL else row.group])
    text = buffer.getvalue()
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what="manifest")


def _relative(file: Path, folder: Path) -> str:
    try:
        return file.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return str(file.resolve())


class ImageCache:
    """Loads each file once, at the evaluation's size (longer side resized to ``size``; None: as stored)."""

    def __init__(self, size: int | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.size = size
        self.max_pixels = max_pixels
        self._images: dict[Path, Tensor] = {}

    def __call__(self, path: Path) -> Tensor:
        key = path.resolve()
        if key not in self._images:
            self._images[key] = self.prepare(image_to_tensor(load_image(path, max_pixels=self.max_pixels)))
        return self._images[key]

    def prepare(self, image: Tensor) -> Tensor:
        from quantart_cli.core.io.images import resize_longer_side

        return image if self.size is None else resize_longer_side(image, self.size)


def triples_from_manifest(
    rows: Sequence[ManifestRow], size: int | None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[Triple]:
    images = ImageCache(size, max_pixels)
    for row in rows:
        yield Triple(group=row.group, content=str(row.content), style=str(row.style), stylized=str(row.stylized),
                     output=images(row.stylized), photo=images(row.content), painting=images(row.style))


def stylize_triples(
    session: StylizeSession,
    photos: Sequence[Path],
    paintings: Sequence[Path],
    alphas: Sequence[float],
    *,
    size: int | None,
    limit: int | None = None,
    save_to: Path | None = None,
    on_manifest: Callable[[list[ManifestRow]], None] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[Triple]:
    """Stylize every photo x painting pair (the first ``limit`` pairs, photo-major) at each alpha with the
    session's model and options and yield it.

    Each output is rounded to 8 bits per channel, exactly what a saved PNG holds; with ``save_to`` it is
    written there as PNG (``<photo>__<painting>__a<alpha>.png``) and ``on_manifest`` receives the rows of
    the manifest that scores them again.
    """
    pairs = [(p, s) for p in photos for s in paintings]
    if limit is not None:
        pairs = pairs[:limit]
    images = ImageCache(size, max_pixels)
    rows: list[ManifestRow] = []
    for painting in dict.fromkeys(s for _, s in pairs):
        # One encoding of the painting, one of each photo, one SGA pass per pair; a decode per alpha.
        stylizer = session.stylizer([images(painting)], session.with_options(alpha=max(alphas)))
        for photo in [p for p, s in pairs if s == painting]:
            for alpha, result in zip(alphas, stylizer.sweep(images(photo), alphas), strict=True):
                output = image_to_tensor(tensor_to_image(result.image.cpu()))
                target = Path(f"{photo.stem}__{painting.stem}__a{alpha_label(alpha)}.png")
                if save_to is not None:
                    target = save_image_atomic(output, save_to / target)
                    rows.append(ManifestRow(stylized=target, content=photo, style=painting,
                                            group=alpha_label(alpha)))
                yield Triple(group=alpha_label(alpha), content=str(photo), style=str(painting),
                             stylized=str(target), output=output, photo=images(photo), painting=images(painting))
    if save_to is not None and on_manifest is not None:
        on_manifest(rows)
