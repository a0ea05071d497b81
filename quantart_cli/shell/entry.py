"""The console script: ``--help`` answers from a cache, everything else goes to the Typer app.

Rendering help needs Typer, rich, pydantic and every stage's settings model: about half a second on a laptop,
too slow for a command people type ``--help`` on all the time. The rendered text depends only on what is
installed, the arguments and the terminal, so it is kept in the cache folder under a key made of exactly those
(the quantart version, the installed stages and their distributions' versions, the modification times of the
package's own source files, the arguments, the terminal width, whether the output is a terminal, and the
colour variables); a later identical call prints it without importing any of them.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from pathlib import Path
from typing import Any

HELP_FLAGS = frozenset({"--help", "-h"})
CACHE_FOLDER = "help"
_COLOUR_VARIABLES = ("NO_COLOR", "FORCE_COLOR", "TERM", "COLUMNS", "LINES", "QUANTART_NO_PLUGINS")


def main(argv: list[str] | None = None) -> int:
    """``quantart`` itself. With ``argv`` given (tests) returns the exit code instead of exiting."""
    args = list(sys.argv[1:] if argv is None else argv)
    code = _cached_help(args) if _asks_for_help(args) else None
    if code is None:
        from quantart_cli.shell.app import main as app_main

        code = app_main(args)
    if argv is None:
        sys.exit(code)
    return code


def _asks_for_help(args: list[str]) -> bool:
    return "--" not in args and any(a in HELP_FLAGS for a in args)


def _cached_help(args: list[str]) -> int | None:
    """Print the cached help for ``args`` (0), or render it, cache it and print it (the app's code)."""
    try:
        path = _cache_file(args)
    except Exception:  # never let the cache stand between a user and the help text
        return None
    if path.is_file():
        try:
            sys.stdout.write(path.read_text(encoding="utf-8"))
            sys.stdout.flush()
            return 0
        except (OSError, UnicodeDecodeError):
            pass
    from quantart_cli.shell.app import main as app_main

    tee = _Tee(sys.stdout)
    sys.stdout = tee  # type: ignore[assignment]
    try:
        code = app_main(args)
    finally:
        sys.stdout = tee.target
    if code == 0 and tee.text:
        try:
            from quantart_cli.core.io.atomic import atomic_write

            text = tee.text
            atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what="help cache")
        except Exception:
            pass  # a read-only cache folder: help still works, just not faster
    return code


class _Tee(io.TextIOBase):
    """Writes through to the real stdout (a terminal stays a terminal for rich) and keeps a copy."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self._parts: list[str] = []

    def write(self, text: str | bytes) -> int:  # type: ignore[override]
        if isinstance(text, bytes):  # click writes bytes to streams it cannot tell the encoding of
            text = text.decode(self.encoding, errors="replace")
        self._parts.append(text)
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")

    @property
    def text(self) -> str:
        return "".join(self._parts)


def _cache_file(args: list[str]) -> Path:
    from importlib import metadata

    from quantart_cli import __version__
    from quantart_cli.shell.paths import get_paths

    digest = hashlib.sha256()
    for part in _key_parts(args, __version__, metadata):
        digest.update(part.encode("utf-8", errors="replace") + b"\0")
    return get_paths().cache_dir / CACHE_FOLDER / f"{digest.hexdigest()[:32]}.txt"


def _key_parts(args: list[str], version: str, metadata: Any) -> list[str]:
    import shutil

    parts = [version, *args, str(shutil.get_terminal_size().columns), str(sys.stdout.isatty())]
    parts += [f"{name}={os.environ.get(name, '')}" for name in _COLOUR_VARIABLES]
    for entry in sorted(metadata.entry_points(group="quantart.stages"), key=lambda e: e.name):
        dist = getattr(entry, "dist", None)
        parts.append(f"{entry.name}={entry.value}@{dist.version if dist else ''}")
    for package in ("quantart_cli", "quantart_stages", "quantart_presets"):
        parts += _source_stamps(package)
    config = os.environ.get("QUANTART_CONFIG_DIR", "")
    parts.append(f"config={config}")
    return parts


def _source_stamps(package: str) -> list[str]:
    """Modification times of a package's .py and preset files (an editable install changes under our feet)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return [package]
    stamps = []
    for root in spec.submodule_search_locations:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d != "__pycache__" and d != "weights"]
            for name in files:
                if name.endswith((".py", ".toml")):
                    stamp = os.stat(os.path.join(folder, name)).st_mtime_ns
                    stamps.append(f"{os.path.relpath(os.path.join(folder, name), root)}:{stamp}")
    return sorted(stamps)
