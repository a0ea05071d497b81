"""Writing checkpoint files (native ``.pt`` or ``.safetensors``), always through :func:`.atomic.atomic_write`."""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quantart_cli import __version__
from quantart_cli.core.io.atomic import atomic_write
from quantart_cli.core.io.checkpoint_format import (
    EXTRA_PREFIX,
    FORMAT_NAME,
    FORMAT_VERSION,
    RESERVED_METADATA,
    SAFETENSORS_SUFFIX,
    USAGE_PREFIX,
    ModelConfig,
)

logger = logging.getLogger(__name__)


# --- writing -----------------------------------------------------------------------------------------------


def write_checkpoint_file(
    path: Path,
    *,
    kind: str,
    config: ModelConfig,
    state_dict: Mapping[str, torch.Tensor],
    metadata: dict[str, Any],
    extra_state_dicts: Mapping[str, Mapping[str, torch.Tensor]],
) -> Path:
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    extras = {name: {k: v.detach().cpu() for k, v in sd.items()} for name, sd in extra_state_dicts.items()}
    usage = metadata.get("codebook_usage")
    if usage is not None:
        metadata = {**metadata, "codebook_usage": {k: v.detach().cpu().to(torch.int64) for k, v in usage.items()}}
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        atomic_write(
            path, lambda tmp: _write_safetensors(tmp, kind, config, state, metadata, extras), what="checkpoint"
        )
    else:
        obj: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "config": config.model_dump(mode="json"),
            "state_dict": state,
            "metadata": metadata,
        }
        if extras:
            obj["extra_state_dicts"] = extras
        atomic_write(path, lambda tmp: torch.save(obj, tmp), what="checkpoint")
    logger.info("Saved %s checkpoint to %s.", kind, path)
    return path


def _write_safetensors(
    tmp: Path,
    kind: str,
    config: ModelConfig,
    state: dict[str, torch.Tensor],
    metadata: dict[str, Any],
    extras: dict[str, dict[str, torch.Tensor]],
) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if "/" in key:
            raise ValueError(f"state-dict key {key!r} contains '/', which safetensors checkpoints reserve")
        tensors[key] = value
    usage = metadata.get("codebook_usage") or {}
    for name, value in usage.items():
        tensors[USAGE_PREFIX + name] = value
    for name, sd in extras.items():
        for key, value in sd.items():
            tensors[f"{EXTRA_PREFIX}{name}/{key}"] = value
    header_meta = {k: v for k, v in metadata.items() if k != "codebook_usage"}
    header_meta["codebook_usage"] = sorted(usage) or None
    save_file(
        _unshare(tensors),
        tmp,
        metadata={
            "format": FORMAT_NAME,
            "format_version": str(FORMAT_VERSION),
            "kind": kind,
            "config": json.dumps(config.model_dump(mode="json")),
            "metadata": json.dumps(header_meta),
        },
    )


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights, views); give each its own contiguous copy."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        ptr = value.untyped_storage().data_ptr() if value.numel() else 0
        if (ptr and ptr in seen) or not value.is_contiguous() or value.untyped_storage().nbytes() != value.nbytes:
            value = value.clone().contiguous()
        if ptr:
            seen.add(ptr)
        out[key] = value
    return out



def new_metadata(
    *, step: int | None, codebook_usage: Mapping[str, torch.Tensor] | None, extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        raise TypeError(f"step must be an int or None, got {type(step).__name__}")
    if codebook_usage is not None and not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in codebook_usage.items()
    ):
        raise TypeError("codebook_usage must map quantizer names to tensors")
    metadata: dict[str, Any] = {
        "step": step,
        "codebook_usage": dict(codebook_usage) if codebook_usage else None,
        "created": now_iso(),
        "quantart_version": __version__,
    }
    for key, value in (extra or {}).items():
        if key in RESERVED_METADATA:
            raise ValueError(f"extra metadata key {key!r} is reserved; pass it as an argument instead")
        metadata[key] = value
    check_jsonable(metadata, what="checkpoint metadata", skip=("codebook_usage",))
    return metadata


def check_jsonable(metadata: Mapping[str, Any], *, what: str, skip: tuple[str, ...] = ()) -> None:
    # JSON-able keeps native files loadable with weights_only and fits the safetensors header.
    try:
        json.dumps({k: v for k, v in metadata.items() if k not in skip}, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must be JSON-able plain types: {err}") from err


# --- small helpers -----------------------------------------------------------------------------------------


def unwrap(model: nn.Module) -> nn.Module:
    """Reach the quantart model inside DDP / torch.compile wrappers."""
    while not hasattr(model, "config"):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            break
        model = inner
    return model


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
