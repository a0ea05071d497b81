"""Import of original QuantArt / taming-transformers checkpoints.

The original files are PyTorch Lightning ``.ckpt`` pickles (or bare state dicts) that carry no usable
config, so the config is inferred from tensor shapes. Our models use the original key layout, so
importing is: find the state dict, drop the ``loss.*`` entries (keeping the discriminator aside for
fine-tuning), and infer the constructor config. Whether the result really fits is checked by the
caller against a model built from the inferred config.
"""

from __future__ import annotations

import pickle
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import ValidationError

from quantart_cli.core.config import (
    AutoencoderConfig,
    QuantizerConfig,
    StyleTransferConfig,
    VQGANConfig,
)
from quantart_cli.core.errors import BadInputError

# The original stores no nominal resolution; every shipped config uses 256 and the attention levels
# are derived from it, so any other choice would only rename the same network.
DEFAULT_RESOLUTION = 256

_STAGE2_MARKERS = ("model_x2y.", "encoder_real.", "quant_conv_real.", "quantize_enc.", "quantize_dec.")
_DISCRIMINATOR_PREFIX = "loss.discriminator."


@dataclass
class ImportedState:
    """An original state dict translated to our layout, with the config inferred from its shapes."""

    kind: str
    config: VQGANConfig | StyleTransferConfig
    state_dict: dict[str, torch.Tensor]
    extra_state_dicts: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def is_tensor_dict(obj: object) -> bool:
    """True for a non-empty mapping of str -> tensor (a state dict)."""
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def looks_like_original_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True when the mapping holds an encoder in the taming layout (possibly behind a DDP prefix)."""
    stripped = _strip_wrapper_prefix(state_dict)
    return "encoder.conv_in.weight" in stripped


def find_original_state_dict(obj: object) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Locate the weights in a Lightning checkpoint or a bare state dict.

    Returns (state_dict, lightning_metadata) or None when ``obj`` is neither.
    """
    if not isinstance(obj, Mapping):
        return None
    inner = obj.get("state_dict")
    if isinstance(inner, Mapping) and _is_state_dict_like(inner) and looks_like_original_state_dict(inner):
        meta: dict[str, Any] = {"imported_from": "lightning-checkpoint"}
        for key in ("global_step", "epoch"):
            value = obj.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                meta[key] = value
        version = obj.get("pytorch-lightning_version")
        if isinstance(version, str):
            meta["pytorch_lightning_version"] = version
        return dict(inner), meta
    if _is_state_dict_like(obj) and looks_like_original_state_dict(obj):
        return dict(obj), {"imported_from": "state-dict"}
    return None


def import_original_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, source: str = "the state dict"
) -> ImportedState:
    """Translate an original (stage-1, stage-2 or continuous stage-2) state dict and infer its config.

    ``source`` names the file in error messages.
    """
    state_dict = _strip_wrapper_prefix(state_dict)
    model_state: dict[str, torch.Tensor] = {}
    discriminator: dict[str, torch.Tensor] = {}
    dropped = 0
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            dropped += 1  # Lightning may keep non-tensor extras; they are never weights
        elif key.startswith(_DISCRIMINATOR_PREFIX):
            discriminator[key[len(_DISCRIMINATOR_PREFIX) :]] = value
        elif key.startswith("loss."):
            dropped += 1  # LPIPS/VGG weights: rebuilt from the lpips package when training
        else:
            model_state[key] = value
    config = infer_config(model_state, source=source)
    extras = {"discriminator": discriminator} if discriminator else {}
    metadata: dict[str, Any] = {"dropped_loss_keys": dropped}
    return ImportedState(
        kind=config.kind, config=config, state_dict=model_state, extra_state_dicts=extras, metadata=metadata
    )


def infer_config(
    state_dict: Mapping[str, torch.Tensor], *, source: str = "the state dict"
) -> VQGANConfig | StyleTransferConfig:
    """Infer the full model config of an original-layout state dict (without ``loss.*``) from shapes only.

    Works on meta tensors. Raises BadInputError naming the first missing or inconsistent tensor.
    """
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    try:
        if any(k.startswith(_STAGE2_MARKERS) for k in shapes):
            return _infer_style_transfer(shapes, source)
        return _infer_vqgan(shapes, source)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise BadInputError(
            f"The config inferred from {source} is not valid ({where}: {first.get('msg', 'invalid value')})."
        ) from err


def _infer_vqgan(shapes: dict[str, tuple[int, ...]], source: str) -> VQGANConfig:
    if "quantize.embedding.weight" not in shapes:
        raise BadInputError(
            f"{source} has no codebook (quantize.embedding.weight); only vector-quantized VQGANs can be imported."
        )
    autoencoder = _infer_autoencoder(
        shapes, source, encoder="encoder", quant_conv="quant_conv", decoder="decoder", post_quant_conv="post_quant_conv"
    )
    return VQGANConfig(autoencoder=autoencoder, quantizer=_infer_quantizer(shapes, source, "quantize", "quant_conv"))


def _infer_style_transfer(shapes: dict[str, tuple[int, ...]], source: str) -> StyleTransferConfig:
    has_enc_q = "quantize_enc.embedding.weight" in shapes
    has_dec_q = "quantize_dec.embedding.weight" in shapes
    if has_enc_q != has_dec_q:
        present, absent = ("quantize_enc", "quantize_dec") if has_enc_q else ("quantize_dec", "quantize_enc")
        raise BadInputError(f"{source} has a {present} codebook but no {absent} codebook; it cannot be imported.")
    continuous = not has_enc_q
    content_ae = _infer_autoencoder(shapes, source, encoder="encoder", quant_conv="quant_conv")
    style_ae = _infer_autoencoder(
        shapes,
        source,
        encoder="encoder_real",
        quant_conv="quant_conv_real",
        decoder="decoder",
        post_quant_conv="post_quant_conv",
    )
    if continuous:
        # No codebook is stored; the quantizer config only records the latent width.
        content_q = QuantizerConfig(embed_dim=_require(shapes, "quant_conv.weight", source)[0])
        style_q = QuantizerConfig(embed_dim=_require(shapes, "quant_conv_real.weight", source)[0])
    else:
        content_q = _infer_quantizer(shapes, source, "quantize_enc", "quant_conv")
        style_q = _infer_quantizer(shapes, source, "quantize_dec", "quant_conv_real")
    sga_blocks = _count_indices(shapes, "model_x2y.blocks.")
    if sga_blocks == 0:
        raise BadInputError(f"{source} has no style-transfer blocks (model_x2y.blocks.*); it cannot be imported.")
    return StyleTransferConfig(
        content=VQGANConfig(autoencoder=content_ae, quantizer=content_q),
        style=VQGANConfig(autoencoder=style_ae, quantizer=style_q),
        sga_blocks=sga_blocks,
        continuous=continuous,
    )


def _infer_quantizer(
    shapes: dict[str, tuple[int, ...]], source: str, quantize: str, quant_conv: str
) -> QuantizerConfig:
    n_embed, code_width = _require(shapes, f"{quantize}.embedding.weight", source, ndim=2)
    embed_dim = _require(shapes, f"{quant_conv}.weight", source)[0]
    if code_width != embed_dim:
        raise BadInputError(
            f"{source} has codes of width {code_width} in {quantize}.embedding.weight but {quant_conv} "
            f"produces {embed_dim} channels."
        )
    return QuantizerConfig(n_embed=n_embed, embed_dim=embed_dim)


def _infer_autoencoder(
    shapes: dict[str, tuple[int, ...]],
    source: str,
    *,
    encoder: str,
    quant_conv: str,
    decoder: str | None = None,
    post_quant_conv: str | None = None,
) -> AutoencoderConfig:
    ch, in_channels = _require(shapes, f"{encoder}.conv_in.weight", source, ndim=4)[:2]
    if ch == 0 or in_channels == 0:
        raise BadInputError(f"{source} has an empty {encoder}.conv_in.weight; it cannot be imported.")
    ch_mult: list[int] = []
    while f"{encoder}.down.{len(ch_mult)}.block.0.conv1.weight" in shapes:
        level = len(ch_mult)
        width = shapes[f"{encoder}.down.{level}.block.0.conv1.weight"][0]
        if width % ch:
            raise BadInputError(
                f"{source} has {width} channels at {encoder}.down.{level}, not a multiple of the base width {ch}."
            )
        ch_mult.append(width // ch)
    if not ch_mult:
        raise BadInputError(f"{source} lacks {encoder}.down.0.block.0.conv1.weight; it is not a taming-layout encoder.")
    num_res_blocks = _count_indices(shapes, f"{encoder}.down.0.block.")
    levels = len(ch_mult)
    resolution = max(DEFAULT_RESOLUTION, 2 ** (levels - 1))
    attn_levels = [i for i in range(levels) if f"{encoder}.down.{i}.attn.0.q.weight" in shapes]
    attn_resolutions = tuple(resolution // 2**i for i in attn_levels)

    encoder_out = _require(shapes, f"{encoder}.conv_out.weight", source, ndim=4)[0]
    if decoder is not None:
        z_channels = _require(shapes, f"{decoder}.conv_in.weight", source, ndim=4)[1]
        out_ch = _require(shapes, f"{decoder}.conv_out.weight", source, ndim=4)[0]
    else:
        # No decoder (content side of a stage-2 model): quant_conv reads the encoder output.
        z_channels = _require(shapes, f"{quant_conv}.weight", source, ndim=4)[1]
        out_ch = in_channels
    if encoder_out == z_channels:
        double_z = False
    elif encoder_out == 2 * z_channels:
        double_z = True
    else:
        raise BadInputError(
            f"{source} has {encoder_out} channels at {encoder}.conv_out but a latent of {z_channels} channels; "
            "they do not belong to one autoencoder."
        )
    return AutoencoderConfig(
        ch=ch,
        ch_mult=tuple(ch_mult),
        num_res_blocks=num_res_blocks,
        attn_resolutions=attn_resolutions,
        resolution=resolution,
        in_channels=in_channels,
        out_ch=out_ch,
        z_channels=z_channels,
        double_z=double_z,
    )


def _require(shapes: dict[str, tuple[int, ...]], key: str, source: str, ndim: int | None = None) -> tuple[int, ...]:
    shape = shapes.get(key)
    if shape is None:
        raise BadInputError(f"{source} lacks {key}, which every model of this kind has.")
    if ndim is not None and len(shape) != ndim:
        raise BadInputError(f"{source} has {key} of shape {shape}, expected a {ndim}-dimensional tensor.")
    return shape


def _count_indices(shapes: Mapping[str, object], prefix: str) -> int:
    """Number of consecutive integer children ``prefix{0,1,...}.`` present."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in shapes if (m := pattern.match(k))}
    count = 0
    while count in found:
        count += 1
    return count


def _is_state_dict_like(obj: Mapping[Any, Any]) -> bool:
    return (
        len(obj) > 0 and all(isinstance(k, str) for k in obj) and any(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _strip_wrapper_prefix(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    """Remove a prefix shared by every key that DDP or torch.compile adds (``module.``, ``_orig_mod.``)."""
    for prefix in ("module.", "_orig_mod."):
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


# --- trusted unpickling ------------------------------------------------------------------------------
# Lightning checkpoints pickle objects from packages we do not depend on (pytorch_lightning callbacks,
# omegaconf configs). When the user has said the file is trusted, classes that cannot be imported become
# inert placeholders so the weights can still be read.


class MissingClassPlaceholder:
    """Stands in for a pickled object whose class is not importable here; keeps what it was given.

    Pickle may create it with ``__new__`` only (no ``__init__``), so every store is created on demand.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["args"] = args
        self.__dict__["kwargs"] = kwargs

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("mapping_items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("list_items", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("list_items", []).extend(values)


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (MissingClassPlaceholder,), {"__module__": f"missing:{module}"})


def _lenient_load(file: Any, **kwargs: Any) -> Any:
    return _LenientUnpickler(file, **kwargs).load()


# Passed to torch.load(pickle_module=...) for --trust-checkpoint loads only.
lenient_pickle_module = types.SimpleNamespace(
    __name__="quantart_lenient_pickle", Unpickler=_LenientUnpickler, load=_lenient_load
)
