"""Sample grids written during training."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def save_image_rows(rows: Sequence[torch.Tensor], path: Path, *, pad: int = 2) -> Path:
    """Write batches of images in [-1, 1] as a grid PNG, one batch per row, with white borders (atomically)."""
    from quantart_cli.core.io.images import save_image_atomic

    lines = []
    for row in rows:
        tiles = [torch.nn.functional.pad(image, (pad, pad, pad, pad), value=1.0) for image in row.float().cpu()]
        lines.append(torch.cat(tiles, dim=2))
    width = max(line.shape[2] for line in lines)
    lines = [torch.nn.functional.pad(line, (0, width - line.shape[2]), value=1.0) for line in lines]
    return save_image_atomic(torch.cat(lines, dim=1).clamp(-1, 1), path)
