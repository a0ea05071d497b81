"""Shared pytest fixtures (keep this small; tests build their own tiny models)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests use tiny models: one thread is as fast, and several collapse when the cores are shared (OpenMP threads
# spin waiting on each other). Set before torch is imported, so subprocesses inherit it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def isolated_quantart_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own QUANTART_* folders and none of the caller's QUANTART_* settings."""
    for name in list(os.environ):
        if name.startswith("QUANTART_"):
            monkeypatch.delenv(name)
    base = tmp_path_factory.mktemp("quantart-home")
    monkeypatch.setenv("QUANTART_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("QUANTART_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("QUANTART_RUNS_DIR", str(base / "runs"))
    return base


@pytest.fixture
def shared_dir() -> Path:
    """``<repo>/../shared``: spec key lists and golden fixtures from the original code."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared project folder not found at {SHARED_DIR}")
    return SHARED_DIR
