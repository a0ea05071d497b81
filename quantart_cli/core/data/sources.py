"""Finding images: :func:`collect_images` turns what a user typed (files, folders, globs, list files, CSV
manifests) into a sorted, de-duplicated list of image paths, or raises NotFoundError naming what is missing (an
entry of a list file with the list and its line); :func:`select_style_by_genre` picks WikiArt paintings of one
genre."""

from __future__ import annotations

import csv
import glob
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from quantart_cli.core.errors import BadInputError, NotFoundError, QuantartError, UsageError
from quantart_cli.core.io.images import IMAGE_EXTENSIONS
from quantart_cli.core.io.limits import is_web_address, web_address_sentence

logger = logging.getLogger(__name__)


PathLike = str | os.PathLike[str]
Sources = PathLike | Iterable[PathLike]


#: Suffixes read as "one path per line" list files.
LIST_SUFFIXES: frozenset[str] = frozenset({".txt", ".lst", ".list"})
#: Column names tried, in order, when a CSV manifest's path column is not given.
CSV_PATH_COLUMNS: tuple[str, ...] = ("path", "filename", "file", "image")

_GLOB_CHARS = set("*?[")
_MAX_NAMED = 5  # how many offending paths an error message lists before "and N more"
MAX_WARNINGS = 10  # individual "skipping" warnings before switching to debug level


# ------------------------------------------------------------------------------------ collecting


@dataclass(frozen=True)
class ListedAt:
    """Where a list file or CSV manifest named an image (``str()``: ``line 4 of photos.txt``)."""

    list_file: Path
    line: int

    def __str__(self) -> str:
        return f"line {self.line} of {self.list_file}"


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


def _read_list_file(list_path: Path) -> list[tuple[int, str]]:
    """(line number, entry) of a one-path-per-line list; blank lines and ``#`` comments ignored."""
    try:
        text = list_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"List file {list_path} is not UTF-8 text.") from exc
    except OSError as exc:
        raise BadInputError(f"List file {list_path} cannot be read ({exc.strerror or exc}).") from exc
    entries = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)]
    entries = [(number, entry) for number, entry in entries if entry and not entry.startswith("#")]
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


def _read_csv_manifest(csv_path: Path, column: str | None) -> list[tuple[int, str]]:
    """(line number, entry) of the path column of a CSV manifest; empty cells ignored."""
    reader, handle = _open_csv(csv_path)
    with handle:
        try:
            chosen = _find_column(reader.fieldnames or [], [column] if column else CSV_PATH_COLUMNS, csv_path, "path")
            entries = [(reader.line_num, (row.get(chosen) or "").strip()) for row in reader]
        except csv.Error as exc:
            raise BadInputError(f"CSV file {csv_path} is malformed ({exc}).") from exc
        except UnicodeDecodeError as exc:
            raise BadInputError(f"CSV file {csv_path} is not UTF-8 text.") from exc
    entries = [(number, entry) for number, entry in entries if entry]
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
    listed: dict[Path, ListedAt] | None,
) -> list[Path]:
    """Expand one user item (file, folder, glob, list, CSV); missing ones are appended to ``missing``, and the
    images a list names are recorded in ``listed`` with where the list named them."""
    if is_web_address(raw) and not Path(raw).exists():
        raise UsageError(web_address_sentence(raw) + ".")
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
        for line, entry in entries:
            where = ListedAt(path, line)
            known_missing = len(missing)
            try:
                found = _resolve(entry, path.parent, manifests=False, recursive=recursive, extensions=extensions,
                                 csv_column=None, missing=missing, listed=None)
            except QuantartError as err:
                raise type(err)(f"{str(err).rstrip('.')}, listed on {where}.", hint=err.hint) from err
            if len(missing) > known_missing:
                missing[-1] = f"{missing[-1]} ({where})"
            if listed is not None:
                for image in found:
                    listed.setdefault(image, where)
            files.extend(found)
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
    listed: dict[Path, ListedAt] | None = None,
) -> list[Path]:
    """Resolve files, folders, glob patterns, list files and CSV manifests to image paths.

    - a folder: image files by suffix (``extensions``, case-insensitive), recursively unless
      ``recursive=False``, hidden files/folders skipped, sorted by relative path;
    - a glob (``*``, ``?``, ``[``; ``**`` recurses): matching image files, folders expanded;
    - a ``.txt``/``.lst``/``.list`` file: one path per line relative to the list's folder, blank lines
      and ``#`` comments ignored;
    - a ``.csv`` file: the ``csv_column`` column (default: first of ``path, filename, file, image``),
      relative to the CSV's folder;
    - any other file: taken as an image whatever its suffix;
    - a web address (``https://...``): refused with UsageError (download it first).

    Order follows ``items``; duplicates (same absolute path) are kept once. Raises NotFoundError naming
    missing paths, empty folders and globs that match nothing; for an entry of a list or manifest it adds the
    list and the line (``photos/gone.png (line 5 of todo.txt)``). With ``listed`` given, each image a list or
    manifest named is recorded there with where (:class:`ListedAt`), for notes and per-image errors.
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
                listed=listed,
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


def list_notes(listed: dict[Path, ListedAt]) -> list[str]:
    """One sentence per list file or CSV manifest that :func:`collect_images` read (``listed``), saying it was read
    as one and how many images it gave: a ``.txt`` given as an input is a list, which a user should see."""
    counts = Counter(where.list_file for where in listed.values())
    notes = []
    for list_file, count in counts.items():
        images = f"{count} image{'' if count == 1 else 's'}"
        if list_file.suffix.lower() == ".csv":
            notes.append(f"{list_file} is a CSV manifest: {images} from its path column")
        else:
            notes.append(f"{list_file} is a list file: {images} from its lines (a .txt, .lst or .list input names "
                         "one image, folder or glob per line)")
    return notes


def with_listing(message: str, where: ListedAt | None) -> str:
    """``message`` about an image, with where a list named it (``..., listed on line 4 of photos.txt.``)."""
    return message if where is None else f"{message.rstrip('.')}, listed on {where}."


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
