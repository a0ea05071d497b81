"""Blend weights of several style references, torch-free: the settings check them and the SGA module uses them."""

from __future__ import annotations

from collections.abc import Sequence

from quantart_cli.core.errors import UsageError

__all__ = ["check_style_weights", "normalize_weights"]


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


def check_style_weights(weights: Sequence[float] | None, masked: Sequence[bool]) -> tuple[float, ...] | None:
    """The blend weights of the paintings without a mask, normalized; None when there are none. Without masks this
    is :func:`normalize_weights` over every painting; with masks ``style_weights``
    gives one weight per painting *without* a mask, in order (a painting with a mask is weighted by its mask)."""
    if not any(masked):
        return normalize_weights(weights, len(masked))
    free = sum(not m for m in masked)
    if weights is not None and len(weights) != free:
        if free == 0:
            raise UsageError("every style image has a mask, so `style_weights` has nothing to blend; leave it out "
                             "(a mask's grey level is its painting's strength).")
        raise UsageError(
            f"`style_weights` has {len(weights)} values, but with masks it weights only the {free} style image(s) "
            "without a mask; give one weight per style image without a mask."
        )
    return normalize_weights(weights, free) if free else None
