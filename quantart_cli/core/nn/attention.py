"""Single-head spatial attention of taming / QuantArt (``AttnBlock``), self and cross.

Built on ``torch.nn.functional.scaled_dot_product_attention`` (scale C^-0.5, the original's), with
three extensions the original lacks:

- the reference of a cross-attention may have any spatial size (the original reshapes it to the
  query's size, so content and style had to match);
- queries can run in chunks, so the score buffer stays bounded even when a fused kernel is not
  available (a 4096 px photo has a 65536-token latent);
- several references can be blended: each reference gets its own attention output (same queries,
  its own keys/values) and the outputs are mixed with weights normalized to sum 1, before
  ``proj_out``. With one reference, or weights (1, 0, ...), this is exactly the single-reference
  block. Keys/values can be precomputed once per reference (:meth:`AttnBlock.reference_context`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quantart_cli.core.blend import normalize_weights
from quantart_cli.core.errors import BadInputError, UsageError
from quantart_cli.core.nn.blocks import NORM_GROUPS, can_modify_inplace, normalize

#: Automatic query chunking keeps ``batch * query_chunk * reference_tokens`` at or below this.
MAX_SCORE_ELEMENTS = 2**25


class AttentionContext(NamedTuple):
    """Keys and values of one reference, token-major: each ``(B, M, C)``."""

    keys: Tensor
    values: Tensor


Reference = Tensor | AttentionContext
References = Reference | Sequence[Reference]


def to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> contiguous (B, H*W, C) (SDPA's fused kernels want it); free for channels-last."""
    return x.flatten(2).transpose(1, 2).contiguous()


def from_tokens(tokens: Tensor, height: int, width: int, like: Tensor) -> Tensor:
    """(B, H*W, C) -> (B, C, H, W) in the memory format of ``like`` (channels-last stays a view)."""
    batch, _, channels = tokens.shape
    out = tokens.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
    if like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous():
        return out
    return out.contiguous()


def attend(queries: Tensor, keys: Tensor, values: Tensor, query_chunk_size: int | None = None) -> Tensor:
    """softmax(Q K^T / sqrt(C)) V for token-major (B, N, C) / (B, M, C) tensors, queries in chunks.

    ``query_chunk_size`` None picks chunks so that at most :data:`MAX_SCORE_ELEMENTS` scores exist
    at once; a positive int forces that chunk size.
    """
    batch, n_queries, _ = queries.shape
    if keys.shape[0] != batch:
        if keys.shape[0] != 1:
            raise BadInputError(
                f"reference batch size {keys.shape[0]} does not match content batch size {batch}; use 1 or {batch}"
            )
        keys = keys.expand(batch, -1, -1)
        values = values.expand(batch, -1, -1)
    n_keys = keys.shape[1]
    if query_chunk_size is None:
        chunk = max(1, MAX_SCORE_ELEMENTS // max(1, batch * n_keys))
    else:
        if query_chunk_size < 1:
            raise UsageError(f"query_chunk_size must be a positive number of tokens, got {query_chunk_size}")
        chunk = query_chunk_size
    # A head axis of 1 keeps SDPA on its fused 4-D kernels.
    q = queries.unsqueeze(1)
    k = keys.unsqueeze(1)
    v = values.unsqueeze(1)
    if chunk >= n_queries:
        return F.scaled_dot_product_attention(q, k, v).squeeze(1)
    out = q.new_empty(batch, 1, n_queries, values.shape[-1])
    for start in range(0, n_queries, chunk):
        stop = min(start + chunk, n_queries)
        out[:, :, start:stop] = F.scaled_dot_product_attention(q[:, :, start:stop], k, v)
    return out.squeeze(1)


class AttnBlock(nn.Module):
    """norm -> q, k, v (1x1 convs) -> single-head attention -> proj_out (1x1) -> (+ x).

    Self-attention when called with ``x`` alone; cross-attention when given ``context``: keys and
    values then come from the reference, normalized by this block's own ``norm``.
    """

    def __init__(
        self, channels: int, residual: bool = True, query_chunk_size: int | None = None, norm_groups: int = NORM_GROUPS
    ) -> None:
        super().__init__()
        self.channels = channels
        self.residual = residual
        self.query_chunk_size = query_chunk_size
        self.norm = normalize(channels, norm_groups)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def reference_context(self, reference: Tensor) -> AttentionContext:
        """Keys and values of a reference feature map (B, C, H', W'); reusable across calls."""
        if reference.dim() != 4 or reference.shape[1] != self.channels:
            raise BadInputError(
                f"reference latent must have shape (B, {self.channels}, H, W), got {tuple(reference.shape)}"
            )
        h = self.norm(reference)
        return AttentionContext(to_tokens(self.k(h)), to_tokens(self.v(h)))

    def forward(self, x: Tensor, context: References | None = None, weights: Sequence[float] | None = None) -> Tensor:
        """Attend from ``x`` to itself, or to one or several references blended by ``weights``."""
        height, width = x.shape[-2:]
        h = self.norm(x)
        queries = to_tokens(self.q(h))
        if context is None:
            contexts = [AttentionContext(to_tokens(self.k(h)), to_tokens(self.v(h)))]
        else:
            items = [context] if isinstance(context, (Tensor, AttentionContext)) else list(context)
            if not items:
                raise UsageError("cross-attention needs at least one style reference")
            contexts = [c if isinstance(c, AttentionContext) else self.reference_context(c) for c in items]
        mix = normalize_weights(weights, len(contexts))
        mixed: Tensor | None = None
        for ctx, weight in zip(contexts, mix, strict=True):
            if weight == 0.0:
                continue
            out = attend(queries, ctx.keys, ctx.values, self.query_chunk_size)
            if weight != 1.0:
                out = out * weight
            mixed = out if mixed is None else mixed + out
        assert mixed is not None  # normalize_weights guarantees one positive weight
        out = self.proj_out(from_tokens(mixed, height, width, x))
        if not self.residual:
            return out
        if can_modify_inplace(out):
            return out.add_(x)
        return x + out


def set_query_chunk_size(module: nn.Module, query_chunk_size: int | None) -> None:
    """Set ``query_chunk_size`` on every :class:`AttnBlock` inside ``module`` (None: automatic)."""
    for child in module.modules():
        if isinstance(child, AttnBlock):
            child.query_chunk_size = query_chunk_size
