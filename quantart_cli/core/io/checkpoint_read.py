"""Reading checkpoint files: sniffing the format from the bytes, the weights-only or trusted unpickle,
safetensors headers, and turning what was read into a :class:`~.checkpoint_format.LoadedCheckpoint`."""

from __future__ import annotations

import json
import logging
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ValidationError

from quantart_cli.core.config import StyleTransferConfig, VQGANConfig
from quantart_cli.core.errors import BadInputError, UnsafeCheckpointError, UsageError
from quantart_cli.core.io.checkpoint_format import (
    EXTRA_PREFIX,
    FORMAT_NAME,
    FORMAT_VERSION,
    KIND_NAMES,
    KINDS,
    SAFETENSORS_MAX_HEADER,
    SAFETENSORS_SUFFIX,
    USAGE_PREFIX,
    LoadedCheckpoint,
    ModelConfig,
    fmt_shape,
)
from quantart_cli.core.io.original import (
    find_original_state_dict,
    import_original_state_dict,
    is_tensor_dict,
    lenient_pickle_module,
    looks_like_original_state_dict,
)

logger = logging.getLogger(__name__)


# --- reading -----------------------------------------------------------------------------------------------


def check_device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise UsageError(f"{device!r} is not a valid torch device.") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"Device {device} was requested but no CUDA GPU is available.")
        if device.index is None:  # tensors report "cuda:N"; compare like with like
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def private_mmap() -> bool:
    """Whether torch.load(mmap=True) maps copy-on-write here (MAP_SHARED would let in-place edits reach the
    file; Windows has neither flag and would lock the file against replacement)."""
    try:
        import mmap

        return torch.serialization.get_default_mmap_options() == mmap.MAP_PRIVATE
    except (AttributeError, ImportError):
        return False


def sniff(path: Path) -> Literal["zip", "pickle", "safetensors"]:
    """Recognise the container from its first bytes: zip (torch.save), legacy pickle, or safetensors."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as err:
        raise BadInputError(f"{path} cannot be read ({err.strerror or err}).") from err
    if size == 0:
        raise BadInputError(f"{path} is empty (0 bytes), not a checkpoint.")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle PROTO opcode
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if header_len <= SAFETENSORS_MAX_HEADER:
            if 8 + header_len > size:
                raise BadInputError(f"{path} is a truncated safetensors file (its header runs past the end).")
            return "safetensors"
    raise BadInputError(f"{path} is not a checkpoint: it is neither a PyTorch file nor a safetensors file.")


def torch_load(path: Path, *, device: torch.device, trust: bool, mmap: bool = False) -> Any:
    """torch.load with weights_only first; full unpickling only when trusted. Never leaks torch errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol/version chatter from the weights-only unpickler
            return _load_by_content(path, map_location=device, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "weights only load failed" not in str(err).lower():
            raise BadInputError(f"{path} is truncated or corrupt and cannot be read.") from err
        if not trust:
            raise UnsafeCheckpointError(
                f"{path} contains pickled Python objects that can run arbitrary code when loaded; "
                "if you trust where it came from, load it with `trust_checkpoint=true`.",
                hint="Convert it once with `trust_checkpoint=true` to a .pt or .safetensors file that loads safely.",
            ) from err
        refusal = err
    except Exception as err:  # the weights-only loader runs no foreign code: any failure means a damaged file
        raise BadInputError(f"{path} is truncated or corrupt and cannot be read.") from err
    logger.warning("Unpickling %s with full Python object support because it is trusted.", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _load_by_content(path, map_location=device, weights_only=False, pickle_module=lenient_pickle_module)
    except Exception as err:  # arbitrary code ran; anything can fail, and it must not surface as a traceback
        detail = str(err).strip()[:120] or "no detail"
        raise BadInputError(f"{path} could not be unpickled even as a trusted file ({detail}).") from (
            refusal if isinstance(err, pickle.UnpicklingError) else err
        )


def _load_by_content(path: Path, **kwargs: Any) -> Any:
    """``torch.load`` that goes by the bytes: given a path ending in .safetensors, torch hands it to the
    safetensors reader whatever it holds, so such a (mislabeled) PyTorch file is passed as an open file."""
    if os.fspath(path).endswith(SAFETENSORS_SUFFIX):
        with open(path, "rb") as handle:
            return torch.load(handle, **{**kwargs, "mmap": False})
    return torch.load(path, **kwargs)


def interpret_torch_object(obj: Any, path: Path) -> LoadedCheckpoint:
    if isinstance(obj, Mapping) and "format" in obj:
        if obj.get("format") != FORMAT_NAME:
            raise BadInputError(f"{path} is a {str(obj.get('format'))[:40]!r} file, not a quantart checkpoint.")
        return _parse_native(obj, path)
    found = find_original_state_dict(obj)
    if found is None:
        raise BadInputError(f"{path} is not a quantart checkpoint: it holds {_describe(obj)}.")
    state_dict, lightning_meta = found
    return import_original(state_dict, path, lightning_meta=lightning_meta)


def import_original(
    state_dict: Mapping[str, torch.Tensor], path: Path, *, lightning_meta: dict[str, Any]
) -> LoadedCheckpoint:
    imported = import_original_state_dict(state_dict, source=str(path))
    metadata: dict[str, Any] = {
        "step": lightning_meta.get("global_step"),
        "codebook_usage": None,
        "created": None,
        "quantart_version": None,
        "imported": {**lightning_meta, **imported.metadata},
    }
    logger.info("Imported original checkpoint %s as a %s model.", path, imported.kind)
    return LoadedCheckpoint(
        kind=imported.kind,
        config=imported.config,
        state_dict=imported.state_dict,
        metadata=metadata,
        source_format="original",
        path=path,
        extra_state_dicts=imported.extra_state_dicts,
    )


def _parse_native(obj: Mapping[str, Any], path: Path) -> LoadedCheckpoint:
    version = obj.get("format_version")
    _check_format_version(version, path)
    kind = obj.get("kind")
    config = _parse_config(kind, obj.get("config"), path)
    state_dict = obj.get("state_dict")
    if not is_tensor_dict(state_dict):
        raise BadInputError(f"{path} is a damaged quantart checkpoint: its state_dict is missing or not tensors.")
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise BadInputError(f"{path} is a damaged quantart checkpoint: its metadata is not a dict.")
    metadata = dict(metadata)
    usage = metadata.get("codebook_usage")
    if usage is not None and not is_tensor_dict(usage):
        raise BadInputError(f"{path} is a damaged quantart checkpoint: its codebook_usage is not tensors.")
    extras = obj.get("extra_state_dicts") or {}
    if not isinstance(extras, Mapping) or not all(isinstance(k, str) and is_tensor_dict(v) for k, v in extras.items()):
        raise BadInputError(f"{path} is a damaged quantart checkpoint: its extra_state_dicts are not state dicts.")
    return LoadedCheckpoint(
        kind=kind,
        config=config,
        state_dict=dict(state_dict),
        metadata=metadata,
        source_format="native",
        path=path,
        format_version=version,
        extra_state_dicts={k: dict(v) for k, v in extras.items()},
    )


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """Parse the JSON header and check that every tensor lies inside the file (detects truncation)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
    except (OSError, ValueError) as err:
        raise BadInputError(f"{path} is a corrupt safetensors file (unreadable header).") from err
    if not isinstance(header, dict):
        raise BadInputError(f"{path} is a corrupt safetensors file (its header is not a JSON object).")
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            data_end = max(data_end, int(entry["data_offsets"][1]))
            _ = list(entry["shape"])
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise BadInputError(f"{path} is a corrupt safetensors file (bad entry for {name}).") from err
    if 8 + header_len + data_end > size:
        raise BadInputError(
            f"{path} is a truncated safetensors file ({size} bytes, needs {8 + header_len + data_end})."
        )
    return header, header_len


def load_safetensors(path: Path, device: torch.device) -> LoadedCheckpoint:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    header, _ = read_safetensors_header(path)
    try:
        tensors = load_file(path, device=str(device))
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise BadInputError(f"{path} is a corrupt safetensors file and cannot be read.") from err
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT_NAME:
        if looks_like_original_state_dict(tensors):
            return import_original(tensors, path, lightning_meta={"imported_from": "safetensors-state-dict"})
        raise BadInputError(
            f"{path} is a safetensors file but neither a quantart checkpoint nor an original QuantArt state dict."
        )
    kind, config, metadata, version = parse_safetensors_metadata(meta, path)
    state_dict: dict[str, torch.Tensor] = {}
    usage: dict[str, torch.Tensor] = {}
    extras: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if key.startswith(USAGE_PREFIX):
            usage[key[len(USAGE_PREFIX) :]] = tensor
        elif key.startswith(EXTRA_PREFIX):
            name, _, inner = key[len(EXTRA_PREFIX) :].partition("/")
            extras.setdefault(name, {})[inner] = tensor
        else:
            state_dict[key] = tensor
    metadata["codebook_usage"] = usage or None
    return LoadedCheckpoint(
        kind=kind,
        config=config,
        state_dict=state_dict,
        metadata=metadata,
        source_format="safetensors",
        path=path,
        format_version=version,
        extra_state_dicts=extras,
    )


def parse_safetensors_metadata(meta: Mapping[str, str], path: Path) -> tuple[str, ModelConfig, dict[str, Any], int]:
    try:
        version = int(meta.get("format_version", ""))
    except ValueError as err:
        raise BadInputError(f"{path} is a damaged quantart checkpoint: its format_version is not a number.") from err
    _check_format_version(version, path)
    try:
        config_dict = json.loads(meta.get("config", ""))
        metadata = json.loads(meta.get("metadata", "{}"))
    except ValueError as err:
        raise BadInputError(
            f"{path} is a damaged quantart checkpoint: its config or metadata is not valid JSON."
        ) from err
    if not isinstance(metadata, dict):
        raise BadInputError(f"{path} is a damaged quantart checkpoint: its metadata is not a JSON object.")
    kind = meta.get("kind")
    return kind, _parse_config(kind, config_dict, path), metadata, version  # type: ignore[return-value]


def _check_format_version(version: Any, path: Path) -> None:
    if not isinstance(version, int) or isinstance(version, bool):
        raise BadInputError(f"{path} is a damaged quantart checkpoint: it has no valid format_version.")
    if version > FORMAT_VERSION:
        raise BadInputError(
            f"{path} uses checkpoint format version {version}, but this quantart reads up to version "
            f"{FORMAT_VERSION}; upgrade quantart to read it."
        )
    if version < 1:
        raise BadInputError(f"{path} has an unsupported checkpoint format version {version}.")


def _parse_config(kind: Any, config: Any, path: Path) -> ModelConfig:
    if kind not in KINDS:
        raise BadInputError(f"{path} has an unknown model kind {str(kind)[:40]!r} (known: {', '.join(KINDS)}).")
    if not isinstance(config, Mapping):
        raise BadInputError(f"{path} is a damaged quantart checkpoint: its config is missing.")
    if config.get("kind", kind) != kind:
        raise BadInputError(f"{path} is a damaged quantart checkpoint: its kind and its config's kind disagree.")
    cls = VQGANConfig if kind == "vqgan" else StyleTransferConfig
    try:
        return cls.model_validate(dict(config))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise BadInputError(
            f"{path} has a config this quantart cannot use ({where}: {first.get('msg', 'invalid')})."
        ) from err


def check_kind(kind: str, expected_kind: str | None, path: Path) -> None:
    if expected_kind is None or kind == expected_kind:
        return
    got, want = KIND_NAMES[kind], KIND_NAMES[expected_kind]
    raise BadInputError(
        f"{path} is a {got} checkpoint but a {want} checkpoint was expected here.",
        hint="Stage-1 VQGAN checkpoints come from train-vq; style-transfer checkpoints from train-sga.",
    )



def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a single tensor of shape {fmt_shape(obj.shape)}"
    if isinstance(obj, Mapping):
        if not obj:
            return "an empty dict"
        if isinstance(obj.get("state_dict"), Mapping):
            return "a Lightning-style checkpoint of some other model (its state_dict has no encoder.conv_in.weight)"
        keys = [str(k) for k in list(obj)[:5]]
        more = ", ..." if len(obj) > 5 else ""
        if is_tensor_dict(obj):
            return f"a state dict of {len(obj)} tensors of some other model (first keys: {', '.join(keys)}{more})"
        return f"a dict with keys {', '.join(keys)}{more}, none of which a checkpoint has"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return f"a {type(obj).__name__}"
