"""The built-in style-transfer model that ships inside the package (docs/model-card.md).

``builtin.safetensors`` holds a small QuantArt model (photo VQGAN encoder side, art VQGAN, SGA module)
trained by ``scripts/train_builtin_model.sh`` on the project's training set. ``quantart stylize`` uses it
when no ``--ckpt`` is given. Importing this module does not import torch.
"""

from __future__ import annotations

from pathlib import Path

from quantart_cli.core.errors import NotFoundError

__all__ = ["BUILTIN_MODEL", "BUILTIN_MODEL_NAME", "builtin_model_path", "load_builtin_model"]

#: Where the built-in model's weights live inside the installed package.
BUILTIN_MODEL = Path(__file__).with_name("builtin.safetensors")

#: How messages and ``--help`` name it.
BUILTIN_MODEL_NAME = "the built-in model (quantart_cli/core/weights/builtin.safetensors, see docs/model-card.md)"


def builtin_model_path() -> Path:
    """Path of the built-in model's weights; :class:`NotFoundError` when the installation lacks them."""
    if not BUILTIN_MODEL.is_file():
        raise NotFoundError(
            f"The built-in model {BUILTIN_MODEL} is missing from this installation; reinstall quantart, "
            "or pass --ckpt MODEL.pt."
        )
    return BUILTIN_MODEL


def load_builtin_model(device="cpu"):
    """The built-in :class:`~quantart_cli.core.models.StyleTransfer`, in eval mode on ``device``."""
    from quantart_cli.core.io.checkpoints import load_model

    return load_model(builtin_model_path(), device=device, expected_kind="style-transfer").eval()
