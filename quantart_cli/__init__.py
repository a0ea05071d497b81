"""quantart: high-fidelity image style transfer in a quantized latent space (QuantArt, CVPR 2023).

The models, losses and checkpoint helpers are importable without the CLI::

    from quantart_cli import VQGAN, StyleTransfer, load_checkpoint, stylize_images

Heavy modules (torch) are imported on first attribute access, so ``import quantart_cli`` stays cheap and
``quantart --help`` answers at once.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "VQGAN": "quantart_cli.core.models",
    "StyleTransfer": "quantart_cli.core.models",
    "load_checkpoint": "quantart_cli.core.io.checkpoints",
    "load_model": "quantart_cli.core.io.checkpoints",
    "save_checkpoint": "quantart_cli.core.io.checkpoints",
    "VQGANConfig": "quantart_cli.core.config",
    "StyleTransferConfig": "quantart_cli.core.config",
    "QuantartError": "quantart_cli.core.errors",
    "StylizeOptions": "quantart_cli.core.transfer.options",
    "stylize_images": "quantart_cli.core.transfer.engine",
    "StylizeSession": "quantart_cli.core.transfer.session",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'quantart_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
