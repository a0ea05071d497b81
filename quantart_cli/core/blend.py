"""Blend weights of several style references, torch-free: the settings check them and the SGA module uses them."""

from __future__ import annotations

from collections.abc import Sequence

from quantart_cli.core.errors import UsageError

__all__ = ["normalize_weights"]


def normalize_weights(weights: Sequence[float] | None, count: int) -> tuple[float, ...]:
    """Blend weights for ``count`` references, scaled to sum 1 (equal weights when None)."""
    if weights is None:
        return (1.0 / count,) * count
    values = tuple(float(w) for w in weights)
    if len(values) != count:
        raise UsageError(f"`style_weights` has {len(values)} values for {count} style images; give one weight per "
                         "style image.")
    if any(w < 0 for w in values) or sum(values) <= 0:
        raise UsageError(f"`style_weights` must be non-negative and not all zero, got {list(values)}")
    total = sum(values)
    return tuple(w / total for w in values)
