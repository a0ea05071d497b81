"""Style-Guided Attention (QuantArt's ``model_x2y``): maps a content latent toward a style latent.

Each of the blocks runs ResnetBlock -> self-attention -> cross-attention to the style reference;
the same reference latent feeds every block. Several references can be blended (see
:mod:`quantart_cli.core.nn.attention`: per-reference attention outputs mixed with normalized weights),
and a reference's keys/values can be prepared once and reused, e.g. across the tiles of a large
photo so every tile attends to the same full reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor, nn

from quantart_cli.core.blend import normalize_weights
from quantart_cli.core.errors import UsageError
from quantart_cli.core.nn.attention import AttentionContext, AttnBlock
from quantart_cli.core.nn.blocks import ResnetBlock


class PreparedReference(NamedTuple):
    """Per-block keys/values of one or more style references and their normalized blend weights."""

    contexts: tuple[tuple[AttentionContext, ...], ...]  # [block][reference]
    weights: tuple[float, ...]


class SGABlock(nn.Module):
    """``res_block`` -> ``self_attn_block`` -> ``attn_block`` (cross-attention to the reference)."""

    def __init__(self, channels: int, residual: bool = True, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.res_block = ResnetBlock(channels, channels, dropout=0.0, padding_mode=padding_mode)
        self.self_attn_block = AttnBlock(channels, residual=residual)
        self.attn_block = AttnBlock(channels, residual=residual)

    def forward(
        self,
        x: Tensor,
        reference: Tensor | AttentionContext | Sequence[Tensor | AttentionContext],
        weights: Sequence[float] | None = None,
    ) -> Tensor:
        h = self.self_attn_block(self.res_block(x))
        return self.attn_block(h, reference, weights)


def _as_list(reference: Tensor | Sequence[Tensor]) -> list[Tensor]:
    items = [reference] if isinstance(reference, Tensor) else list(reference)
    if not items:
        raise UsageError("style transfer needs at least one style reference")
    return items


class StyleGuidedAttention(nn.Module):
    """``blocks.{i}`` of :class:`SGABlock`, all ``channels`` wide (= embed_dim).

    ``padding_mode`` is the resnet blocks' convolution padding: ``"zeros"`` as the original, or ``"replicate"``,
    which gives the module no way to tell an image's border from its inside (with zeros it can, and a model
    trained on small crops can learn to draw a frame along the border).
    """

    def __init__(self, channels: int, num_blocks: int = 6, residual: bool = True, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.channels = channels
        self.residual = residual
        self.blocks = nn.ModuleList(
            SGABlock(channels, residual=residual, padding_mode=padding_mode) for _ in range(num_blocks)
        )

    def prepare_reference(
        self, reference: Tensor | Sequence[Tensor], weights: Sequence[float] | None = None
    ) -> PreparedReference:
        """Compute every block's keys/values for the reference latent(s) once."""
        references = _as_list(reference)
        mix = normalize_weights(weights, len(references))
        contexts = tuple(tuple(block.attn_block.reference_context(ref) for ref in references) for block in self.blocks)
        return PreparedReference(contexts, mix)

    def forward(
        self,
        x: Tensor,
        reference: Tensor | Sequence[Tensor] | PreparedReference,
        weights: Sequence[float] | None = None,
    ) -> Tensor:
        """Content latent (B, C, h, w) + reference latent(s) (B or 1, C, h', w') -> (B, C, h, w)."""
        if isinstance(reference, PreparedReference):
            if weights is not None:
                raise UsageError("pass style weights to prepare_reference, not with a prepared reference")
            if len(reference.contexts) != len(self.blocks):
                raise UsageError(
                    f"prepared reference has {len(reference.contexts)} blocks, this module has {len(self.blocks)}"
                )
            for block, contexts in zip(self.blocks, reference.contexts, strict=True):
                x = block(x, contexts, reference.weights)
            return x
        references = _as_list(reference)
        for block in self.blocks:
            x = block(x, references, weights)
        return x
