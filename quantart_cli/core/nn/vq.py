"""Vector quantizer (taming ``VectorQuantizer2``), parameter ``embedding`` kept.

The nearest-code search is exact (squared L2 as ``||z||^2 + ||e||^2 - 2 z.e``, argmin, ties to the
lowest index) and runs in fp32 even under autocast: bf16 distances pick wrong codes. Rows are
searched in chunks so the distance buffer never exceeds ``max_search_elements`` (a 16384-code book
on a 64x64 latent would otherwise need a 268 MB matrix).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quantart_cli.core.config import QuantizerConfig
from quantart_cli.core.errors import BadInputError

#: Default bound on the elements of one distance buffer (64 MiB in fp32).
MAX_SEARCH_ELEMENTS = 2**24


class QuantizerInfo(NamedTuple):
    """What a quantizer pass chose: ``indices`` (B, h, w) int64, ``usage`` (n_embed,) int64 counts."""

    indices: Tensor
    usage: Tensor


def nearest_code_indices(vectors: Tensor, codebook: Tensor, max_search_elements: int = MAX_SEARCH_ELEMENTS) -> Tensor:
    """Index of the nearest code (squared L2) for each row of ``vectors`` (N, D); fp32, chunked rows."""
    vectors = vectors.float()
    codebook = codebook.float()
    n_rows, n_codes = vectors.shape[0], codebook.shape[0]
    code_sq = codebook.pow(2).sum(dim=1)
    codebook_t = codebook.t()
    rows_per_chunk = max(1, max_search_elements // n_codes)
    indices = torch.empty(n_rows, dtype=torch.long, device=vectors.device)
    for start in range(0, n_rows, rows_per_chunk):
        chunk = vectors[start : start + rows_per_chunk]
        # Same evaluation order as the original, (|z|^2 + |e|^2) - 2 z.e, so near-ties resolve alike.
        distances = chunk.pow(2).sum(dim=1, keepdim=True) + code_sq
        distances.sub_(chunk @ codebook_t, alpha=2.0)
        indices[start : start + rows_per_chunk] = distances.argmin(dim=1)
    return indices


def code_usage(indices: Tensor, n_codes: int) -> Tensor:
    """How often each code occurs in ``indices`` (int64, length ``n_codes``), without a host sync."""
    flat = indices.reshape(-1).long()
    if flat.is_cuda and torch.are_deterministic_algorithms_enabled():
        return torch.bincount(flat, minlength=n_codes)
    counts = torch.zeros(n_codes, dtype=torch.long, device=flat.device)
    return counts.index_add_(0, flat, torch.ones_like(flat))


class VectorQuantizer(nn.Module):
    """Maps each latent vector (B, embed_dim, h, w) to its nearest codebook entry.

    Options beyond the original (off by default, see :class:`QuantizerConfig`): ``l2_normalize``
    searches and returns unit-norm codes (cosine codebook); ``code_dim`` searches in a
    low-dimensional code space reached through 1x1 convs ``project_in`` / ``project_out``.
    """

    def __init__(self, config: QuantizerConfig | None = None, max_search_elements: int = MAX_SEARCH_ELEMENTS) -> None:
        super().__init__()
        config = QuantizerConfig() if config is None else config
        self.config = config
        self.n_embed = config.n_embed
        self.embed_dim = config.embed_dim
        self.beta = config.beta
        self.legacy_loss = config.legacy_loss
        self.l2_normalize = config.l2_normalize
        self.projected = config.code_dim is not None
        self.code_dim = config.code_dim if config.code_dim is not None else config.embed_dim
        self.max_search_elements = max_search_elements
        self.embedding = nn.Embedding(self.n_embed, self.code_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / self.n_embed, 1.0 / self.n_embed)
        if self.projected:
            self.project_in = nn.Conv2d(self.embed_dim, self.code_dim, kernel_size=1)
            self.project_out = nn.Conv2d(self.code_dim, self.embed_dim, kernel_size=1)

    def codebook(self) -> Tensor:
        """The codes searched and returned, fp32 (unit norm with ``l2_normalize``)."""
        weight = self.embedding.weight.float()
        return F.normalize(weight, dim=1) if self.l2_normalize else weight

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, QuantizerInfo]:
        """Quantize ``z``; returns (straight-through z_q, VQ loss, info). All fp32, autocast or not."""
        if z.dim() != 4 or z.shape[1] != self.embed_dim:
            raise BadInputError(
                f"quantizer expects a latent of shape (B, {self.embed_dim}, h, w), got {tuple(z.shape)}"
            )
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            if self.projected:
                z = self.project_in(z)
            tokens = z.permute(0, 2, 3, 1)  # (B, h, w, d): the original's row order
            codebook = self.codebook()
            if self.l2_normalize:
                tokens = F.normalize(tokens, dim=-1)
            batch, height, width, dim = tokens.shape
            with torch.no_grad():
                indices = nearest_code_indices(tokens.reshape(-1, dim), codebook, self.max_search_elements)
            indices = indices.view(batch, height, width)
            z_q = F.embedding(indices, codebook)
            loss = self.loss(tokens, z_q)
            z_q = tokens + (z_q - tokens).detach()  # straight-through estimator
            z_q = z_q.permute(0, 3, 1, 2)
            if self.projected:
                z_q = self.project_out(z_q)
            usage = code_usage(indices, self.n_embed)
        return z_q, loss, QuantizerInfo(indices, usage)

    def loss(self, z: Tensor, z_q: Tensor) -> Tensor:
        """Codebook + commitment loss; ``legacy_loss`` puts beta on the codebook term like the original."""
        commitment = torch.mean((z_q.detach() - z) ** 2)
        codebook = torch.mean((z_q - z.detach()) ** 2)
        if self.legacy_loss:
            return commitment + self.beta * codebook
        return self.beta * commitment + codebook

    def lookup(self, indices: Tensor) -> Tensor:
        """Code indices (B, h, w) -> quantized latent (B, embed_dim, h, w)."""
        if indices.dim() != 3:
            raise BadInputError(f"code indices must have shape (B, h, w), got {tuple(indices.shape)}")
        if indices.dtype.is_floating_point:
            raise BadInputError(f"code indices must be integers, got {indices.dtype}")
        if indices.device.type == "cpu" and indices.numel() > 0:  # on an accelerator this check would sync
            low, high = int(indices.min()), int(indices.max())
            if low < 0 or high >= self.n_embed:
                raise BadInputError(f"code indices must lie in [0, {self.n_embed - 1}], got values in [{low}, {high}]")
        z_q = F.embedding(indices.long(), self.codebook()).permute(0, 3, 1, 2)
        if self.projected:
            z_q = self.project_out(z_q)
        return z_q
