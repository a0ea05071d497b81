"""Sample images shipped with quantart, for the demo, the tests and examples.

``content/`` and ``style/``: two landscape photos and two paintings from the QuantArt release (MIT).
``paintings/``: eight public-domain paintings held out of the built-in model's training (see README.md),
on which the stylization test scores it.
"""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent
CONTENT_DIR = SAMPLES_DIR / "content"
STYLE_DIR = SAMPLES_DIR / "style"
PAINTINGS_DIR = SAMPLES_DIR / "paintings"
