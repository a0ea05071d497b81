"""SHA-256 of a file, read in chunks so memory stays flat (checkpoints, stylize recipes, code files)."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """Hex digest of the file's bytes; an unreadable file raises its ``OSError``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
