"""Sample photos (content/) and paintings (style/) shipped with quantart, for the demo and tests."""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent
CONTENT_DIR = SAMPLES_DIR / "content"
STYLE_DIR = SAMPLES_DIR / "style"
