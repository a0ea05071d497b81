"""Presets: TOML files of settings, one folder per stage.

Built-in presets are package data of ``quantart_presets`` (``presets/<stage>/<name>.toml``), found through
``importlib.resources`` from a checkout, an editable install or a wheel; a user's own live in
``<config dir>/presets/<stage>/`` and shadow built-in ones of the same name; ``--preset ./mine.toml`` reads any
file. A preset may describe itself in a ``[preset]`` table; every other key must be a setting of the stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from pydantic import BaseModel

from quantart_cli.core.errors import NotFoundError, UsageError
from quantart_cli.shell.fields import check_keys, did_you_mean

PRESET_META_TABLE = "preset"


def builtin_preset_dir(stage: str) -> Path | None:
    """``presets/<stage>/`` inside the installed ``quantart_presets`` package (works from a wheel too)."""
    from importlib import resources

    try:
        root = resources.files("quantart_presets")
    except ModuleNotFoundError:
        return None
    folder = root / stage
    return Path(str(folder)) if folder.is_dir() else None


def list_presets(stage: str, user_dir: Path | None = None) -> dict[str, Path]:
    """Preset name -> file; user presets (config dir) shadow built-in ones of the same name."""
    found: dict[str, Path] = {}
    for folder in (builtin_preset_dir(stage), user_dir / stage if user_dir else None):
        if folder and folder.is_dir():
            for file in sorted(folder.glob("*.toml")):
                found[file.stem] = file
    return found


def find_preset(stage: str, name: str, user_dir: Path | None = None) -> Path:
    """Resolve ``--preset``: a built-in name, then a user preset, else a path to a TOML file."""
    available = list_presets(stage, user_dir)
    if name in available and os.sep not in name and not name.endswith(".toml"):
        return available[name]
    path = Path(name).expanduser()
    if path.suffix == ".toml" or os.sep in name or "/" in name:
        if path.is_file():
            return path
        raise NotFoundError(f"Preset file {path} does not exist.")
    names = ", ".join(sorted(available)) or "none"
    raise UsageError(f"Unknown preset {name!r} for {stage} (available: {names}).{did_you_mean(name, available)}")


def read_toml(path: Path, what: str, unreadable: type[Exception]) -> dict[str, Any]:
    """Parse the TOML file ``path`` (described as ``what`` in errors); a file that cannot be read raises
    ``unreadable``, one that is not TOML a :class:`UsageError`."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise unreadable(f"Cannot read {what} {path}: {err}.") from err
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{what[0].upper()}{what[1:]} {path} is not valid TOML: {err}.") from err


def load_preset(path: Path, model: type[BaseModel]) -> tuple[dict[str, Any], str]:
    """Read a preset TOML; returns (settings data, description). Unknown keys are refused."""
    data = read_toml(path, "preset", NotFoundError)
    meta = data.pop(PRESET_META_TABLE, {})
    if not isinstance(meta, dict) or set(meta) - {"description"}:
        raise UsageError(
            f"Preset {path}: the [{PRESET_META_TABLE}] table may only hold a description "
            "(settings go above it, at the top level or in their own tables)."
        )
    description = str(meta.get("description", ""))
    check_keys(data, model, f"preset {path}")
    return data, description
