"""The built-in style-transfer model that ships inside the package (docs/model-card.md).

``builtin.safetensors`` holds a small QuantArt model (photo VQGAN encoder side, art VQGAN, SGA module)
trained by ``scripts/train_builtin_model.sh`` on the project's training set. ``quantart stylize`` uses it
when no ``--ckpt`` is given; ``quantart encode --ckpt builtin:art`` / ``builtin:photo`` use its two VQGANs
(:func:`load_builtin_vqgan`). Importing this module does not import torch.
"""

from __future__ import annotations

from pathlib import Path

from quantart_cli.core.errors import NotFoundError, UsageError

__all__ = [
    "BUILTIN_MODEL",
    "BUILTIN_MODEL_NAME",
    "BUILTIN_VQGANS",
    "builtin_model_path",
    "builtin_vqgan_sha256",
    "load_builtin_model",
    "load_builtin_vqgan",
]

#: Where the built-in model's weights live inside the installed package.
BUILTIN_MODEL = Path(__file__).with_name("builtin.safetensors")

#: How messages and ``--help`` name it.
BUILTIN_MODEL_NAME = "the built-in model (quantart_cli/core/weights/builtin.safetensors, see docs/model-card.md)"


def builtin_model_path() -> Path:
    """Path of the built-in model's weights; :class:`NotFoundError` when the installation lacks them."""
    if not BUILTIN_MODEL.is_file():
        raise NotFoundError(
            f"The built-in model {BUILTIN_MODEL} is missing from this installation; reinstall quantart, "
            "or pass `ckpt=MODEL.pt`."
        )
    return BUILTIN_MODEL


def load_builtin_model(device="cpu"):
    """The built-in :class:`~quantart_cli.core.models.StyleTransfer`, in eval mode on ``device``."""
    from quantart_cli.core.io.checkpoints import load_model

    return load_model(builtin_model_path(), device=device, expected_kind="style-transfer").eval()


#: The names that stand for the built-in model's VQGANs where a VQGAN checkpoint is asked for (``encode --ckpt``):
#: name -> part. ``art`` is the art VQGAN whole (it encodes and decodes); ``photo`` is the photo VQGAN's encoder side
#: and codebook only, all the built-in model keeps of it (it never decodes a photo), so it encodes but cannot decode.
BUILTIN_VQGANS = {"builtin:art": "art", "builtin:photo": "photo"}


def _part(part: str) -> str:
    part = BUILTIN_VQGANS.get(part, part)
    if part not in ("art", "photo"):
        raise UsageError(f"The built-in model has an art and a photo VQGAN (builtin:art, builtin:photo), not {part!r}.")
    return part


def load_builtin_vqgan(part: str, device="cpu"):
    """The built-in model's ``art`` or ``photo`` VQGAN (``builtin:art`` / ``builtin:photo`` too) as a
    :class:`~quantart_cli.core.models.VQGAN` in eval mode on ``device``, sharing the built-in model's weights.

    The art VQGAN is whole. The photo VQGAN has no ``post_quant_conv`` and ``decoder`` (None): the built-in model
    keeps only its encoder side, so it encodes images to codes, and decoding them raises :class:`UsageError`.
    """
    from quantart_cli.core.models import VQGAN

    part = _part(part)
    model = load_builtin_model(device)
    vqgan = VQGAN(model.config.style if part == "art" else model.config.content)
    if part == "art":
        vqgan.encoder, vqgan.quant_conv, vqgan.quantize = model.encoder_real, model.quant_conv_real, model.quantize_dec
        vqgan.post_quant_conv, vqgan.decoder = model.post_quant_conv, model.decoder
    else:
        vqgan.encoder, vqgan.quant_conv, vqgan.quantize = model.encoder, model.quant_conv, model.quantize_enc
        vqgan.post_quant_conv, vqgan.decoder = None, None
    return vqgan.to(device).eval()


def builtin_vqgan_sha256(part: str) -> str:
    """What code files made with a built-in VQGAN record as their checkpoint's SHA-256: that of the built-in model's
    file and the part's name together, so codes of one part are never taken for codes of the other (both codebooks
    have 512 entries)."""
    import hashlib

    from quantart_cli.core.io.digest import file_sha256

    return hashlib.sha256(f"{file_sha256(builtin_model_path())} {_part(part)}".encode()).hexdigest()
