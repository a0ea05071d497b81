"""The checkpoint formats: what a checkpoint holds, its header, and the constants both readers and writers use.

A native checkpoint is one ``torch.save`` file holding plain types and tensors only::

    {"format": "quantart", "format_version": 1, "kind": "vqgan" | "style-transfer",
     "config": <the model's constructor config, JSON-able>, "state_dict": {...},
     "metadata": {"step", "codebook_usage", "created", "quantart_version", ...extras},
     "extra_state_dicts": {name: {...}}}            # optional, e.g. a discriminator

so it loads with ``torch.load(weights_only=True)``. The ``.safetensors`` variant stores the same tensors
flat (``codebook_usage/<name>`` and ``extra_state_dicts/<name>/<key>`` for the non-model ones) and the
rest as JSON strings in the header metadata. Files are recognised by content, never by suffix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch

from quantart_cli.core.config import StyleTransferConfig, VQGANConfig
from quantart_cli.core.errors import BadInputError, NotFoundError
from quantart_cli.core.io.digest import file_sha256

FORMAT_NAME = "quantart"
FORMAT_VERSION = 1
KINDS = ("vqgan", "style-transfer")
NATIVE_SUFFIXES = (".pt", ".pth")
SAFETENSORS_SUFFIX = ".safetensors"

USAGE_PREFIX = "codebook_usage/"
EXTRA_PREFIX = "extra_state_dicts/"
RESERVED_METADATA = ("step", "codebook_usage", "created", "quantart_version")
KIND_NAMES = {"vqgan": "VQGAN", "style-transfer": "style-transfer"}
SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # the limit the safetensors library itself enforces

SourceFormat = Literal["native", "safetensors", "original"]
ModelConfig = VQGANConfig | StyleTransferConfig


@dataclass
class CheckpointHeader:
    """What a checkpoint is, read without materialising its weights (for listings)."""

    kind: str
    config: ModelConfig
    metadata: dict[str, Any]
    source_format: SourceFormat
    path: Path
    format_version: int | None = None


@dataclass
class LoadedCheckpoint:
    """A checkpoint read into memory: the model's config and weights plus everything saved beside them."""

    kind: str
    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    source_format: SourceFormat
    path: Path
    format_version: int | None = None
    extra_state_dicts: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    @cached_property
    def sha256(self) -> str:
        """Full SHA-256 of the file (computed on first use: checkpoints can be large)."""
        return checkpoint_sha256(self.path)

    @property
    def short_hash(self) -> str:
        """First 12 hex digits of ``sha256``, enough to tell checkpoints apart in logs and file names."""
        return self.sha256[:12]

    @property
    def step(self) -> int | None:
        return self.metadata.get("step")

    @property
    def codebook_usage(self) -> dict[str, torch.Tensor] | None:
        return self.metadata.get("codebook_usage")


def existing_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"Checkpoint {path} does not exist.")
    if path.is_dir():
        raise BadInputError(f"{path} is a folder, not a checkpoint file.")
    return path


def checkpoint_sha256(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks so memory stays flat."""
    path = existing_file(path)
    try:
        return file_sha256(path, chunk_size=chunk_size)
    except OSError as err:
        raise BadInputError(f"{path} cannot be read ({err.strerror or err}).") from err


def fmt_shape(shape: torch.Size | tuple[int, ...]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"
