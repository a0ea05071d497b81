"""Checkpoints: save, load, convert and inspect model files (the one API every stage uses).

The file formats are described in :mod:`.checkpoint_format`; reading is :mod:`.checkpoint_read`, writing
:mod:`.checkpoint_write`. Original Lightning ``.ckpt`` files are imported on the fly (:mod:`.original`); they
may hold pickled objects and are only fully unpickled with ``trust=True``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from quantart_cli import __version__
from quantart_cli.core.config import StyleTransferConfig, VQGANConfig
from quantart_cli.core.errors import BadInputError, UsageError
from quantart_cli.core.io.checkpoint_format import (
    FORMAT_NAME,
    KINDS,
    NATIVE_SUFFIXES,
    SAFETENSORS_SUFFIX,
    USAGE_PREFIX,
    CheckpointHeader,
    LoadedCheckpoint,
    ModelConfig,
    existing_file,
    fmt_shape,
)
from quantart_cli.core.io.checkpoint_read import (
    check_device,
    check_kind,
    import_original,
    interpret_torch_object,
    load_safetensors,
    parse_safetensors_metadata,
    private_mmap,
    read_safetensors_header,
    sniff,
    torch_load,
)
from quantart_cli.core.io.checkpoint_write import check_jsonable, new_metadata, now_iso, unwrap, write_checkpoint_file

# --- public API ------------------------------------------------------------------------------------------



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
    model = unwrap(model)
    config = getattr(model, "config", None)
    if not isinstance(config, (VQGANConfig, StyleTransferConfig)):
        raise TypeError(f"save_checkpoint needs a quantart model with a .config, got {type(model).__name__}")
    metadata = new_metadata(step=step, codebook_usage=codebook_usage, extra=extra)
    return write_checkpoint_file(
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
    path = existing_file(path)
    device = check_device(device)
    container = sniff(path)
    if container == "safetensors":
        ckpt = load_safetensors(path, device)
    else:
        # Memory-mapped (zip files only): pages are read on use, and copy-on-write keeps the file intact.
        obj = torch_load(path, device=device, trust=trust, mmap=container == "zip" and private_mmap())
        ckpt = interpret_torch_object(obj, path)
    check_kind(ckpt.kind, expected_kind, path)
    origin = "the config inferred from its shapes" if ckpt.source_format == "original" else "its config"
    check_state_dict_fits(ckpt.config, ckpt.state_dict, source=str(path), config_origin=origin)
    check_finite_weights(ckpt.state_dict, path)
    return ckpt


def check_finite_weights(state_dict: Mapping[str, torch.Tensor], path: Path) -> None:
    """Refuse weights with NaN or Inf (a diverged or damaged run): they only make black or garbage images."""
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            kind = "NaN" if bool(torch.isnan(tensor).any()) else "infinite"
            raise BadInputError(
                f"{path} holds {kind} weights (first in {name}): it comes from a diverged or damaged run and "
                "cannot be used; take an earlier checkpoint of that run."
            )


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
    return _materialise(ckpt, check_device(device), share=True)


def model_from_checkpoint(ckpt: LoadedCheckpoint, *, device: str | torch.device = "cpu") -> nn.Module:
    """Build and fill the model of an already loaded checkpoint (eval mode; ``ckpt`` is left untouched)."""
    return _materialise(ckpt, check_device(device), share=False)


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
        metadata["created"] = now_iso()
    metadata["quantart_version"] = __version__
    metadata["converted_from"] = {
        "file": ckpt.path.name,
        "sha256": ckpt.sha256,
        "format": ckpt.source_format,
    }
    check_jsonable(metadata, what="checkpoint metadata", skip=("codebook_usage",))
    write_checkpoint_file(
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
    path = existing_file(path)
    container = sniff(path)
    if container == "safetensors":
        header, _ = read_safetensors_header(path)
        meta = header.get("__metadata__") or {}
        if meta.get("format") == FORMAT_NAME:
            kind, config, metadata, version = parse_safetensors_metadata(meta, path)
            usage_names = [k[len(USAGE_PREFIX) :] for k in header if k.startswith(USAGE_PREFIX)]
            metadata["codebook_usage"] = usage_names or None  # names only: the counts are tensors
            return CheckpointHeader(kind, config, metadata, "safetensors", path, version)
        try:
            shapes = {k: torch.empty(v["shape"], device="meta") for k, v in header.items() if k != "__metadata__"}
        except (RuntimeError, TypeError, ValueError) as err:
            raise BadInputError(f"{path} is a corrupt safetensors file (impossible tensor shapes).") from err
        ckpt = import_original(shapes, path, lightning_meta={"imported_from": "safetensors-state-dict"})
        return CheckpointHeader(ckpt.kind, ckpt.config, ckpt.metadata, "original", path, None)
    obj = torch_load(path, device=torch.device("cpu"), trust=trust, mmap=container == "zip" and private_mmap())
    ckpt = interpret_torch_object(obj, path)
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
                f"{source} does not fit {config_origin}: {key} has shape {fmt_shape(got.shape)} "
                f"but the model needs {fmt_shape(tensor.shape)}."
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
