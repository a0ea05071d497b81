"""Where the golden files of the original code are: copies in tests/fixtures/ (so a plain clone runs every
golden test), or others named by an environment variable (golden files made the same way from other
images, seeds or learning rates)."""

from __future__ import annotations

import os
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: Key lists of the original checkpoints (``spec/*_keys.txt`` of the facts sheet).
SPEC_KEYS = FIXTURES / "spec"


def golden_file(variable: str, name: str) -> Path:
    """``$variable`` when set, else ``tests/fixtures/<name>``. Read at import: tests clear QUANTART_* later."""
    return Path(os.environ.get(variable) or FIXTURES / name)


def golden_files(variable: str, names: list[str]) -> list[Path]:
    """The files ``$variable`` names (several separated by ``os.pathsep``), else ``tests/fixtures/<name>`` each."""
    value = os.environ.get(variable)
    if value:
        return [Path(part) for part in value.split(os.pathsep) if part]
    return [FIXTURES / name for name in names]


#: Forward pass of the original (stage 1 and stage 2 outputs): QUANTART_GOLDEN.
FORWARD = golden_file("QUANTART_GOLDEN", "quantart_reference_small.pt")
#: Four training steps of the original (stage 1 and stage 2; the seed-40 copy carries stage 1 only):
#: QUANTART_GOLDEN_TRAIN_STEPS, one file or several separated by os.pathsep.
TRAIN_STEPS = golden_files("QUANTART_GOLDEN_TRAIN_STEPS",
                           ["quantart_train_steps_small.pt", "quantart_train_steps_seed40_stage1.pt"])
