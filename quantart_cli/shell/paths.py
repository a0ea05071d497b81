"""Where quantart keeps things, through platformdirs: user config (presets, defaults), cache, runs.

Each can be moved with an environment variable (QUANTART_CONFIG_DIR, QUANTART_CACHE_DIR,
QUANTART_RUNS_DIR), which is also how tests keep away from the user's real folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "quantart"


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    cache_dir: Path
    runs_dir: Path

    @property
    def user_presets_dir(self) -> Path:
        """User presets live in ``<config_dir>/presets/<stage>/NAME.toml``."""
        return self.config_dir / "presets"

    @property
    def user_config_file(self) -> Path:
        """Optional user defaults (e.g. ``ckpt = "..."`` for stylize), TOML with one table per stage."""
        return self.config_dir / "config.toml"

    def as_dict(self) -> dict[str, Path]:
        return {
            "config": self.config_dir,
            "presets": self.user_presets_dir,
            "user-config": self.user_config_file,
            "cache": self.cache_dir,
            "runs": self.runs_dir,
        }


def _from_env(var: str, default: str) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else Path(default)


def get_paths() -> Paths:
    return Paths(
        config_dir=_from_env("QUANTART_CONFIG_DIR", platformdirs.user_config_dir(APP_NAME, appauthor=False)),
        cache_dir=_from_env("QUANTART_CACHE_DIR", platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
        runs_dir=_from_env("QUANTART_RUNS_DIR", platformdirs.user_data_dir(APP_NAME, appauthor=False) + "/runs"),
    )
