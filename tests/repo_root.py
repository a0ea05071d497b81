"""Where the repository is, for tests at any depth of tests/ (they import this instead of counting parents)."""

from __future__ import annotations

from pathlib import Path

#: The repository's root folder (the one holding pyproject.toml).
REPO = Path(__file__).resolve().parents[1]
