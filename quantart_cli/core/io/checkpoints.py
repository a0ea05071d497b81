"""Checkpoints: the native ``.pt`` format, ``.safetensors``, and import of original QuantArt/taming files.

A native checkpoint is one ``torch.save`` file holding plain types and tensors only::

    {"format": "quantart", "format_version": 1, "kind": "vqgan" | "style-transfer",
     "config": <the model's constructor config, JSON-able>, "state_dict": {...},
     "metadata": {"step", "codebook_usage", "created", "quantart_version", ...extras},
     "extra_state_dicts": {name: {...}}}            # optional, e.g. a discriminator

so it loads with ``torch.load(weights_only=True)``. The ``.safetensors`` variant stores the same tensors
flat (``codebook_usage/<name>`` and ``extra_state_dicts/<name>/<key>`` for the non-model ones) and the
rest as JSON strings in the header metadata. Files are recognised by content, never by suffix.
Original Lightning ``.ckpt`` files are imported on the fly (see ``checkpoint_import``); they may hold
pickled objects and are only fully unpickled with ``trust=True``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import pickle
import secrets
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ValidationError
from torch import nn
from torch.overrides import TorchFunctionMode

from quantart_cli import __version__
from quantart_cli.core.config import StyleTransferConfig, VQGANConfig
from quantart_cli.core.errors import BadInputError, NotFoundError, QuantartError, UnsafeCheckpointError, UsageError
from quantart_cli.core.io.original import (
    find_original_state_dict,
    import_original_state_dict,
    is_tensor_dict,
    lenient_pickle_module,
    looks_like_original_state_dict,
)

logger = logging.getLogger(__name__)

FORMAT_NAME = "quantart"
FORMAT_VERSION = 1
KINDS = ("vqgan", "style-transfer")
NATIVE_SUFFIXES = (".pt", ".pth")
SAFETENSORS_SUFFIX = ".safetensors"
TRUST_FLAG = "--trust-checkpoint"

_USAGE_PREFIX = "codebook_usage/"
_EXTRA_PREFIX = "extra_state_dicts/"
_RESERVED_METADATA = ("step", "codebook_usage", "created", "quantart_version")
_KIND_NAMES = {"vqgan": "VQGAN", "style-transfer": "style-transfer"}
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # the limit the safetensors library itself enforces

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


# --- public API ------------------------------------------------------------------------------------------


def checkpoint_sha256(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks so memory stays flat."""
    path = _existing_file(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(chunk_size):
                digest.update(chunk)
    except OSError as err:
        raise BadInputError(f"{path} cannot be read ({err.strerror or err}).") from err
    return digest.hexdigest()


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    step: int | None = None,
    codebook_usage: Mapping[str, torch.Tensor] | None = None,
    extra: Mapping[str, Any] | None = None,
    extra_state_dicts: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    """Write ``model`` (a VQGAN or StyleTransfer) atomically; ``.safetensors`` suffix selects that format.

    ``extra`` is free-form JSON-able metadata; ``extra_state_dicts`` holds non-model weights (e.g. the
    discriminator) that training wants back on resume.
    """
    model = _unwrap(model)
    config = getattr(model, "config", None)
    if not isinstance(config, (VQGANConfig, StyleTransferConfig)):
        raise TypeError(f"save_checkpoint needs a quantart model with a .config, got {type(model).__name__}")
    metadata = _new_metadata(step=step, codebook_usage=codebook_usage, extra=extra)
    return _write(
        Path(path),
        kind=config.kind,
        config=config,
        state_dict=model.state_dict(),
        metadata=metadata,
        extra_state_dicts=extra_state_dicts or {},
    )


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    expected_kind: str | None = None,
    trust: bool = False,
) -> LoadedCheckpoint:
    """Read a native, safetensors or original checkpoint and check that its weights fit its config.

    ``expected_kind`` ("vqgan" or "style-transfer") rejects the other kind with a clear message.
    ``trust=True`` allows full unpickling of original files that the weights-only loader refuses.
    """
    if expected_kind is not None and expected_kind not in KINDS:
        raise ValueError(f"expected_kind must be one of {KINDS}, got {expected_kind!r}")
    path = _existing_file(path)
    device = _check_device(device)
    container = _sniff(path)
    if container == "safetensors":
        ckpt = _load_safetensors(path, device)
    else:
        # Memory-mapped (zip files only): pages are read on use, and copy-on-write keeps the file intact.
        obj = _torch_load(path, device=device, trust=trust, mmap=container == "zip" and _private_mmap())
        ckpt = _interpret_torch_object(obj, path)
    _check_kind(ckpt.kind, expected_kind, path)
    origin = "the config inferred from its shapes" if ckpt.source_format == "original" else "its config"
    check_state_dict_fits(ckpt.config, ckpt.state_dict, source=str(path), config_origin=origin)
    return ckpt


def load_model(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    expected_kind: str | None = None,
    trust: bool = False,
) -> nn.Module:
    """Build the checkpoint's model on ``device``, load its weights strictly, and return it in eval mode."""
    ckpt = load_checkpoint(path, device=device, expected_kind=expected_kind, trust=trust)
    # The checkpoint is private here, so its tensors can become the parameters without a copy.
    return _materialise(ckpt, _check_device(device), share=True)


def model_from_checkpoint(ckpt: LoadedCheckpoint, *, device: str | torch.device = "cpu") -> nn.Module:
    """Build and fill the model of an already loaded checkpoint (eval mode; ``ckpt`` is left untouched)."""
    return _materialise(ckpt, _check_device(device), share=False)


def convert_checkpoint(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, trust: bool = False
) -> LoadedCheckpoint:
    """Rewrite ``src`` (any readable format, originals included) as ``dst``; the suffix of ``dst`` picks
    the format (.pt/.pth native, .safetensors). Returns the checkpoint that was read."""
    dst = Path(dst)
    if dst.suffix.lower() not in (*NATIVE_SUFFIXES, SAFETENSORS_SUFFIX):
        raise UsageError(f"Cannot tell the output format from the name {dst.name}; use a .pt or .safetensors file.")
    ckpt = load_checkpoint(src, trust=trust)
    metadata = dict(ckpt.metadata)
    metadata.setdefault("step", None)
    metadata.setdefault("codebook_usage", None)
    if not metadata.get("created"):
        metadata["created"] = _now_iso()
    metadata["quantart_version"] = __version__
    metadata["converted_from"] = {
        "file": ckpt.path.name,
        "sha256": ckpt.sha256,
        "format": ckpt.source_format,
    }
    _check_jsonable(metadata, what="checkpoint metadata", skip=("codebook_usage",))
    _write(
        dst,
        kind=ckpt.kind,
        config=ckpt.config,
        state_dict=ckpt.state_dict,
        metadata=metadata,
        extra_state_dicts=ckpt.extra_state_dicts,
    )
    return ckpt


def read_checkpoint_header(path: str | os.PathLike[str], *, trust: bool = False) -> CheckpointHeader:
    """Kind, config and metadata of a checkpoint without reading its weights into memory.

    safetensors: the JSON header only. Native .pt: memory-mapped, so tensors are never read.
    Original files: config inferred from shapes (their pickles obey the same ``trust`` rule).
    """
    path = _existing_file(path)
    container = _sniff(path)
    if container == "safetensors":
        header, _ = _read_safetensors_header(path)
        meta = header.get("__metadata__") or {}
        if meta.get("format") == FORMAT_NAME:
            kind, config, metadata, version = _parse_safetensors_metadata(meta, path)
            usage_names = [k[len(_USAGE_PREFIX) :] for k in header if k.startswith(_USAGE_PREFIX)]
            metadata["codebook_usage"] = usage_names or None  # names only: the counts are tensors
            return CheckpointHeader(kind, config, metadata, "safetensors", path, version)
        try:
            shapes = {k: torch.empty(v["shape"], device="meta") for k, v in header.items() if k != "__metadata__"}
        except (RuntimeError, TypeError, ValueError) as err:
            raise BadInputError(f"{path} is a corrupt safetensors file (impossible tensor shapes).") from err
        ckpt = _import_original(shapes, path, lightning_meta={"imported_from": "safetensors-state-dict"})
        return CheckpointHeader(ckpt.kind, ckpt.config, ckpt.metadata, "original", path, None)
    obj = _torch_load(path, device=torch.device("cpu"), trust=trust, mmap=container == "zip" and _private_mmap())
    ckpt = _interpret_torch_object(obj, path)
    return CheckpointHeader(ckpt.kind, ckpt.config, ckpt.metadata, ckpt.source_format, path, ckpt.format_version)


def build_model(config: ModelConfig) -> nn.Module:
    """The model a config describes (random weights, train mode)."""
    from quantart_cli.core import models  # deferred: models imports the nn kernels, not needed for headers

    if isinstance(config, VQGANConfig):
        return models.VQGAN(config)
    if isinstance(config, StyleTransferConfig):
        return models.StyleTransfer(config)
    raise TypeError(f"not a model config: {type(config).__name__}")


def check_state_dict_fits(
    config: ModelConfig,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    config_origin: str = "its config",
) -> None:
    """Raise BadInputError naming the first key whose presence or shape disagrees with ``config``.

    The reference model is built on the meta device, so this costs no memory and no initialisation.
    """
    with torch.device("meta"), _SkipRandomInitOnMeta():
        expected = build_model(config).state_dict()
    for key, tensor in expected.items():
        got = state_dict.get(key)
        if got is None:
            raise BadInputError(f"{source} does not fit {config_origin}: it lacks {key}, which the model needs.")
        if tuple(got.shape) != tuple(tensor.shape):
            raise BadInputError(
                f"{source} does not fit {config_origin}: {key} has shape {_fmt_shape(got.shape)} "
                f"but the model needs {_fmt_shape(tensor.shape)}."
            )
    for key in state_dict:
        if key not in expected:
            raise BadInputError(f"{source} does not fit {config_origin}: it has {key}, which the model does not have.")


def _materialise(ckpt: LoadedCheckpoint, device: torch.device, *, share: bool) -> nn.Module:
    with torch.device("meta"), _SkipRandomInitOnMeta():
        model = build_model(ckpt.config)
    expected = model.state_dict()
    if not all(name in expected for name, _ in model.named_buffers()) or _has_plain_tensor_attributes(model):
        # A non-persistent buffer or tensor attribute needs the value its constructor computes.
        with torch.device(device):
            model = build_model(ckpt.config)
        model.load_state_dict(ckpt.state_dict, strict=True)
        return model.eval()
    # Every tensor comes from the checkpoint: skip random initialisation (about 1 s for f16 on CPU).
    same_layout = all(
        (t := ckpt.state_dict[k]).dtype == ref.dtype and t.device == device and t.is_contiguous()
        for k, ref in expected.items()
    )
    if share and same_layout:
        model.load_state_dict(ckpt.state_dict, strict=True, assign=True)  # no copy, half the peak memory
    else:
        model = model.to_empty(device=device)
        model.load_state_dict(ckpt.state_dict, strict=True)
    return model.eval()


def _has_plain_tensor_attributes(model: nn.Module) -> bool:
    return any(isinstance(value, torch.Tensor) for module in model.modules() for value in vars(module).values())


class _SkipRandomInitOnMeta(TorchFunctionMode):
    """Makes random initialisers no-ops on meta tensors.

    Meta tensors hold no data, so nothing is lost; but ``normal_`` on meta is implemented in Python and
    its first use imports torch._dynamo (1-4 s), which would make every checkpoint load slow.
    """

    _INITIALISERS = frozenset({"normal_", "uniform_"})

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in self._INITIALISERS:
            target = args[0] if args else kwargs.get("tensor", kwargs.get("self"))  # nn.init passes by keyword
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


# --- reading -----------------------------------------------------------------------------------------------


def _existing_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"Checkpoint {path} does not exist.")
    if path.is_dir():
        raise BadInputError(f"{path} is a folder, not a checkpoint file.")
    return path


def _check_device(device: str | torch.device) -> torch.device:
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


def _private_mmap() -> bool:
    """Whether torch.load(mmap=True) maps copy-on-write here (MAP_SHARED would let in-place edits reach the
    file; Windows has neither flag and would lock the file against replacement)."""
    try:
        import mmap

        return torch.serialization.get_default_mmap_options() == mmap.MAP_PRIVATE
    except (AttributeError, ImportError):
        return False


def _sniff(path: Path) -> Literal["zip", "pickle", "safetensors"]:
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
        if header_len <= _SAFETENSORS_MAX_HEADER:
            if 8 + header_len > size:
                raise BadInputError(f"{path} is a truncated safetensors file (its header runs past the end).")
            return "safetensors"
    raise BadInputError(f"{path} is not a checkpoint: it is neither a PyTorch file nor a safetensors file.")


def _torch_load(path: Path, *, device: torch.device, trust: bool, mmap: bool = False) -> Any:
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
                f"if you trust where it came from, load it with {TRUST_FLAG}.",
                hint="Convert it once with --trust-checkpoint to a .pt or .safetensors file that loads safely.",
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
        raise BadInputError(f"{path} could not be unpickled even as a trusted file ({type(err).__name__}).") from (
            refusal if isinstance(err, pickle.UnpicklingError) else err
        )


def _load_by_content(path: Path, **kwargs: Any) -> Any:
    """``torch.load`` that goes by the bytes: given a path ending in .safetensors, torch hands it to the
    safetensors reader whatever it holds, so such a (mislabeled) PyTorch file is passed as an open file."""
    if os.fspath(path).endswith(SAFETENSORS_SUFFIX):
        with open(path, "rb") as handle:
            return torch.load(handle, **{**kwargs, "mmap": False})
    return torch.load(path, **kwargs)


def _interpret_torch_object(obj: Any, path: Path) -> LoadedCheckpoint:
    if isinstance(obj, Mapping) and "format" in obj:
        if obj.get("format") != FORMAT_NAME:
            raise BadInputError(f"{path} is a {str(obj.get('format'))[:40]!r} file, not a quantart checkpoint.")
        return _parse_native(obj, path)
    found = find_original_state_dict(obj)
    if found is None:
        raise BadInputError(f"{path} is not a quantart checkpoint: it holds {_describe(obj)}.")
    state_dict, lightning_meta = found
    return _import_original(state_dict, path, lightning_meta=lightning_meta)


def _import_original(
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


def _read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
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


def _load_safetensors(path: Path, device: torch.device) -> LoadedCheckpoint:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    header, _ = _read_safetensors_header(path)
    try:
        tensors = load_file(path, device=str(device))
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise BadInputError(f"{path} is a corrupt safetensors file and cannot be read.") from err
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT_NAME:
        if looks_like_original_state_dict(tensors):
            return _import_original(tensors, path, lightning_meta={"imported_from": "safetensors-state-dict"})
        raise BadInputError(
            f"{path} is a safetensors file but neither a quantart checkpoint nor an original QuantArt state dict."
        )
    kind, config, metadata, version = _parse_safetensors_metadata(meta, path)
    state_dict: dict[str, torch.Tensor] = {}
    usage: dict[str, torch.Tensor] = {}
    extras: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if key.startswith(_USAGE_PREFIX):
            usage[key[len(_USAGE_PREFIX) :]] = tensor
        elif key.startswith(_EXTRA_PREFIX):
            name, _, inner = key[len(_EXTRA_PREFIX) :].partition("/")
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


def _parse_safetensors_metadata(meta: Mapping[str, str], path: Path) -> tuple[str, ModelConfig, dict[str, Any], int]:
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


def _check_kind(kind: str, expected_kind: str | None, path: Path) -> None:
    if expected_kind is None or kind == expected_kind:
        return
    got, want = _KIND_NAMES[kind], _KIND_NAMES[expected_kind]
    raise BadInputError(
        f"{path} is a {got} checkpoint but a {want} checkpoint was expected here.",
        hint="Stage-1 VQGAN checkpoints come from train-vq; style-transfer checkpoints from train-sga.",
    )


# --- writing -----------------------------------------------------------------------------------------------


def _write(
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
        atomic_write(path, lambda tmp: _write_safetensors(tmp, kind, config, state, metadata, extras))
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
        atomic_write(path, lambda tmp: torch.save(obj, tmp))
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
        tensors[_USAGE_PREFIX + name] = value
    for name, sd in extras.items():
        for key, value in sd.items():
            tensors[f"{_EXTRA_PREFIX}{name}/{key}"] = value
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


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temp file in the destination folder, fsync, then rename over ``path``.

    A crash leaves either the old file or the new one, never half a checkpoint.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise QuantartError(f"Cannot create the folder {path.parent} ({err.strerror or err}).") from err
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb"):  # created with the user's umask, unlike mkstemp's 0600
            pass
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise QuantartError(f"Cannot write checkpoint {path} ({err.strerror or err}).") from err
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        reason = _safetensors_io_reason(err)
        if reason is not None:  # safetensors reports a full disk as its own error type, not OSError
            raise QuantartError(f"Cannot write checkpoint {path} ({reason}).") from err
        raise
    _fsync_dir(path.parent)


def _safetensors_io_reason(err: BaseException) -> str | None:
    """The OS reason inside a safetensors I/O failure ("No space left on device"), else None."""
    if type(err).__name__ != "SafetensorError":
        return None
    text = str(err)
    marker = "I/O error: "
    if marker not in text:
        return None
    return text.split(marker, 1)[1].split(" (os error", 1)[0].strip() or text


_atomic_write = atomic_write  # the name training.py imports


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable on POSIX; not possible (nor needed) on Windows.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_metadata(
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
        "created": _now_iso(),
        "quantart_version": __version__,
    }
    for key, value in (extra or {}).items():
        if key in _RESERVED_METADATA:
            raise ValueError(f"extra metadata key {key!r} is reserved; pass it as an argument instead")
        metadata[key] = value
    _check_jsonable(metadata, what="checkpoint metadata", skip=("codebook_usage",))
    return metadata


def _check_jsonable(metadata: Mapping[str, Any], *, what: str, skip: tuple[str, ...] = ()) -> None:
    # JSON-able keeps native files loadable with weights_only and fits the safetensors header.
    try:
        json.dumps({k: v for k, v in metadata.items() if k not in skip}, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must be JSON-able plain types: {err}") from err


# --- small helpers -----------------------------------------------------------------------------------------


def _unwrap(model: nn.Module) -> nn.Module:
    """Reach the quantart model inside DDP / torch.compile wrappers."""
    while not hasattr(model, "config"):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            break
        model = inner
    return model


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _fmt_shape(shape: torch.Size | tuple[int, ...]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a single tensor of shape {_fmt_shape(obj.shape)}"
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
