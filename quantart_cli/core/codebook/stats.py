"""Codebook statistics: geometry (norms, nearest neighbours, near-duplicates) and usage (perplexity, entropy).

Everything runs on the codebook's device in bounded chunks, so a 16384-code book never needs its full
16384 x 16384 distance matrix (1 GiB in fp32): the nearest-neighbour search runs over row chunks and the
near-duplicate pass over upper-triangular tiles of the candidate codes, each block at most
``max_block_elements`` entries.

Definitions (see docs/inspect-codebook.md):

- distances are Euclidean (L2) between code vectors as the quantizer searches them;
- a code's *nearest-neighbour distance* is its distance to the closest *other* code; the reported value is
  recomputed exactly as ``||e_i - e_nn||`` (the Gram-matrix search only picks the neighbour);
- two codes are *near-duplicates* when their distance is ``<= threshold``; the threshold is either
  ``factor x median nearest-neighbour distance`` (rule ``relative``, default factor 0.1) or an absolute
  distance (rule ``absolute``). Exact duplicates always count, even with a threshold of 0;
- usage: with counts ``c`` and ``p = c / sum(c)``: entropy ``H = -sum p ln p`` (nats; bits = H / ln 2),
  perplexity ``exp(H)`` (1 when one code is used, ``n`` when all are used evenly), dead codes have ``c = 0``.
  An empty histogram (no tokens) has entropy 0 and perplexity 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quantart_cli.core.config import QuantizerConfig, StyleTransferConfig, VQGANConfig
from quantart_cli.core.devices import set_memory_format
from quantart_cli.core.errors import BadInputError, UsageError

#: Bound on the entries of one pairwise-distance tile (64 MiB in fp32, 128 MiB in fp64).
MAX_BLOCK_ELEMENTS = 2**24
#: Default near-duplicate threshold, as a fraction of the median nearest-neighbour distance.
DEFAULT_DUPLICATE_FACTOR = 0.1

DuplicateRule = Literal["relative", "absolute"]


@dataclass(frozen=True)
class Summary:
    """min / mean / median / max / std (population) of a set of non-negative values."""

    min: float
    mean: float
    median: float
    max: float
    std: float


@dataclass(frozen=True)
class NearestNeighbours:
    """Per-code nearest other code (``indices``) and the exact distance to it (``distances``), both (n,)."""

    indices: Tensor
    distances: Tensor

    def summary(self) -> Summary:
        return summarize(self.distances)


@dataclass(frozen=True)
class DuplicatePair:
    a: int
    b: int
    distance: float


@dataclass(frozen=True)
class NearDuplicates:
    """Code pairs closer than ``threshold``: how many pairs, how many codes take part, the closest ones."""

    rule: DuplicateRule
    factor: float | None
    threshold: float
    pairs: int
    codes: int
    closest: list[DuplicatePair]


@dataclass(frozen=True)
class TopCode:
    code: int
    count: int
    share: float


@dataclass(frozen=True)
class UsageStats:
    """Figures of one usage histogram (token counts per code)."""

    total: int
    used: int
    dead: int
    dead_share: float
    entropy_nats: float
    entropy_bits: float
    perplexity: float
    perplexity_share: float  # perplexity / size: 1.0 when every code is used evenly
    top: list[TopCode]


@dataclass
class CodebookStats:
    """Everything known about one codebook; ``to_dict`` gives the JSON form (schema in the docs)."""

    name: str
    role: str
    size: int
    dim: int
    l2_normalize: bool
    norm: Summary
    nearest_neighbour: Summary
    near_duplicates: NearDuplicates
    stored_usage: UsageStats | None = None
    data_usage: UsageStats | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- geometry ------------------------------------------------------------------------------------------------


def _check_codebook(codebook: Tensor) -> Tensor:
    if not isinstance(codebook, Tensor) or codebook.dim() != 2 or codebook.shape[0] < 2 or codebook.shape[1] < 1:
        shape = tuple(codebook.shape) if isinstance(codebook, Tensor) else type(codebook).__name__
        raise BadInputError(f"a codebook must be a 2-D tensor of at least 2 codes, got {shape}")
    codebook = codebook.detach().float()
    if not torch.isfinite(codebook).all():
        raise BadInputError("the codebook holds NaN or infinite values, so no statistics can be computed")
    return codebook


def summarize(values: Tensor) -> Summary:
    """:class:`Summary` of a 1-D tensor (computed in float64)."""
    v = values.detach().double().reshape(-1)
    if v.numel() == 0:
        return Summary(0.0, 0.0, 0.0, 0.0, 0.0)
    return Summary(
        min=float(v.min()),
        mean=float(v.mean()),
        median=float(torch.quantile(v, 0.5)) if v.numel() <= 2**24 else float(v.median()),
        max=float(v.max()),
        std=float(v.std(unbiased=False)),
    )


def norm_summary(codebook: Tensor) -> Summary:
    """Statistics of the codes' L2 norms."""
    return summarize(_check_codebook(codebook).norm(dim=1))


def _tile_side(n: int, max_block_elements: int) -> int:
    return max(1, min(n, math.isqrt(max(1, max_block_elements))))


def nearest_neighbours(codebook: Tensor, *, max_block_elements: int = MAX_BLOCK_ELEMENTS) -> NearestNeighbours:
    """Nearest other code of every code, searched in row chunks of at most ``max_block_elements`` distances."""
    codes = _check_codebook(codebook)
    n = codes.shape[0]
    # Centering changes no distance but shrinks the norms, and with them the Gram formula's rounding error.
    centred = codes - codes.mean(dim=0, keepdim=True)
    squared = centred.pow(2).sum(dim=1)
    centred_t = centred.t().contiguous()
    indices = torch.empty(n, dtype=torch.long, device=codes.device)
    rows_per_chunk = max(1, max_block_elements // n)
    for start in range(0, n, rows_per_chunk):
        stop = min(n, start + rows_per_chunk)
        # |e_j|^2 - 2 e_i.e_j in one fused op; the row's own |e_i|^2 does not change its argmin.
        partial = torch.addmm(squared[None, :], centred[start:stop], centred_t, alpha=-2.0)
        partial[:, start:stop].fill_diagonal_(math.inf)
        indices[start:stop] = partial.argmin(dim=1)
    exact = (codes - codes[indices]).norm(dim=1)
    return NearestNeighbours(indices, exact)


def duplicate_threshold(
    nn_distances: Tensor, *, factor: float | None = DEFAULT_DUPLICATE_FACTOR, distance: float | None = None
) -> tuple[DuplicateRule, float | None, float]:
    """(rule, factor, threshold): an absolute ``distance`` wins; otherwise ``factor x`` the median NN distance."""
    if distance is not None:
        if not math.isfinite(distance) or distance < 0:
            raise UsageError(f"The near-duplicate distance must be a finite number >= 0, got {distance}.")
        return "absolute", None, float(distance)
    factor = DEFAULT_DUPLICATE_FACTOR if factor is None else factor
    if not math.isfinite(factor) or factor < 0:
        raise UsageError(f"The near-duplicate factor must be a finite number >= 0, got {factor}.")
    return "relative", float(factor), float(factor) * summarize(nn_distances).median


def near_duplicates(
    codebook: Tensor,
    neighbours: NearestNeighbours | None = None,
    *,
    factor: float | None = DEFAULT_DUPLICATE_FACTOR,
    distance: float | None = None,
    max_pairs: int = 20,
    max_block_elements: int = MAX_BLOCK_ELEMENTS,
) -> NearDuplicates:
    """Count the code pairs within the threshold (see :func:`duplicate_threshold`) and list the closest.

    Only codes whose nearest neighbour lies within the threshold can be in a pair, so the pairwise pass
    runs over that subset only, in float64 tiles (exact enough to tell duplicates at any threshold).
    """
    codes = _check_codebook(codebook)
    if neighbours is None:
        neighbours = nearest_neighbours(codes, max_block_elements=max_block_elements)
    rule, used_factor, threshold = duplicate_threshold(neighbours.distances, factor=factor, distance=distance)
    # A loose preselection: the fp32 search may have picked a neighbour a rounding error farther away.
    loose = threshold * (1 + 1e-3) + 1e-6 * float(codes.norm(dim=1).max())
    candidates = torch.nonzero(neighbours.distances <= loose).flatten()
    m = candidates.numel()
    if m < 2:
        return NearDuplicates(rule, used_factor, threshold, 0, 0, [])
    subset = codes[candidates].double()
    subset = subset - subset.mean(dim=0, keepdim=True)
    squared = subset.pow(2).sum(dim=1)
    limit = threshold * threshold
    pairs = 0
    involved = torch.zeros(m, dtype=torch.bool, device=codes.device)
    kept_d2 = subset.new_empty(0)
    kept_a = torch.empty(0, dtype=torch.long, device=codes.device)
    kept_b = torch.empty(0, dtype=torch.long, device=codes.device)
    side = _tile_side(m, max_block_elements // 2)
    for i in range(0, m, side):
        rows = subset[i : i + side]
        for j in range(i, m, side):
            tile = rows @ subset[j : j + side].t()
            tile.mul_(-2.0).add_(squared[i : i + side, None]).add_(squared[None, j : j + side]).clamp_(min=0.0)
            # float64 Gram rounding is ~1e-16 of the norms; the slack lets exact duplicates count at threshold 0.
            slack = 1e-12 * (squared[i : i + side, None] + squared[None, j : j + side])
            within = tile <= limit + slack
            if i == j:
                within = torch.triu(within, diagonal=1)
            count = int(within.sum())
            if count == 0:
                continue
            pairs += count
            involved[i : i + side] |= within.any(dim=1)
            involved[j : j + side] |= within.any(dim=0)
            # Only the closest few pairs of a tile can make the list: keep them, never all hits.
            masked = torch.where(within, tile, torch.full_like(tile, math.inf)).flatten()
            d2, flat = torch.topk(masked, min(max_pairs, count), largest=False)
            width = tile.shape[1]
            kept_d2 = torch.cat([kept_d2, d2])
            kept_a = torch.cat([kept_a, flat // width + i])
            kept_b = torch.cat([kept_b, flat % width + j])
            if kept_d2.numel() > max_pairs:
                order = torch.argsort(kept_d2, stable=True)[:max_pairs]
                kept_d2, kept_a, kept_b = kept_d2[order], kept_a[order], kept_b[order]
    order = torch.argsort(kept_d2, stable=True)
    closest = []
    for k in order.tolist():
        a, b = sorted((int(candidates[kept_a[k]]), int(candidates[kept_b[k]])))
        closest.append(DuplicatePair(a, b, float((codes[a].double() - codes[b].double()).norm())))
    closest.sort(key=lambda p: (p.distance, p.a, p.b))
    return NearDuplicates(rule, used_factor, threshold, pairs, int(involved.sum()), closest)


# --- usage ---------------------------------------------------------------------------------------------------


def usage_entropy(counts: Tensor) -> float:
    """Entropy ``H = -sum p ln p`` in nats of a usage histogram (token counts per code); 0 when it has no tokens."""
    c = counts.detach().to("cpu", torch.float64)
    total = float(c.sum())
    if total <= 0:
        return 0.0
    p = c[c > 0] / total
    return max(float(-(p * p.log()).sum()), 0.0)  # a single used code gives -0.0


def perplexity(counts: Tensor) -> float:
    """``exp(H)`` of a usage histogram: 1 when one code takes every token, ``n`` when ``n`` codes share them evenly,
    0 when it has no tokens. Training logs it (``perplexity``, ``perplexity_y``) as inspect-codebook reports it."""
    return math.exp(usage_entropy(counts)) if float(counts.detach().sum()) > 0 else 0.0


def usage_stats(counts: Tensor, *, top: int = 10) -> UsageStats:
    """Figures of a usage histogram ``counts`` (n,) of non-negative token counts per code."""
    if not isinstance(counts, Tensor) or counts.dim() != 1 or counts.numel() == 0:
        shape = tuple(counts.shape) if isinstance(counts, Tensor) else type(counts).__name__
        raise BadInputError(f"usage counts must be a non-empty 1-D tensor, got {shape}")
    c = counts.detach().to("cpu", torch.float64)
    if not torch.isfinite(c).all() or (c < 0).any():
        raise BadInputError("usage counts must be finite and non-negative")
    n = c.numel()
    total = float(c.sum())
    dead = int((c == 0).sum())
    entropy, exp_entropy = usage_entropy(c), perplexity(c)
    k = min(max(top, 0), n - dead)
    order = torch.argsort(-c, stable=True)[:k]  # most used first, ties to the lower index
    top_codes = [TopCode(int(i), int(c[i]), float(c[i]) / total) for i in order.tolist()]
    return UsageStats(
        total=int(round(total)),
        used=n - dead,
        dead=dead,
        dead_share=dead / n,
        entropy_nats=entropy,
        entropy_bits=entropy / math.log(2),
        perplexity=exp_entropy,
        perplexity_share=exp_entropy / n,
        top=top_codes,
    )


def usage_order(counts: Tensor) -> Tensor:
    """Code indices by usage, most used first; ties (unused codes included) in index order."""
    return torch.argsort(-counts.detach().to("cpu", torch.float64), stable=True)


# --- all together --------------------------------------------------------------------------------------------


def codebook_stats(
    codebook: Tensor,
    *,
    name: str = "quantize",
    role: str = "codebook",
    l2_normalize: bool = False,
    stored_usage: Tensor | None = None,
    data_usage: Tensor | None = None,
    duplicate_factor: float | None = DEFAULT_DUPLICATE_FACTOR,
    duplicate_distance: float | None = None,
    top: int = 10,
    max_block_elements: int = MAX_BLOCK_ELEMENTS,
) -> CodebookStats:
    """Geometry of ``codebook`` (n, dim) on its own device plus the figures of any usage histograms given."""
    codes = _check_codebook(codebook)
    n, dim = codes.shape
    for what, usage in (("stored", stored_usage), ("data", data_usage)):
        if usage is not None and usage.numel() != n:
            raise BadInputError(f"the {what} usage of {name} has {usage.numel()} counts but the codebook has {n} codes")
    neighbours = nearest_neighbours(codes, max_block_elements=max_block_elements)
    duplicates = near_duplicates(
        codes, neighbours, factor=duplicate_factor, distance=duplicate_distance, max_pairs=top,
        max_block_elements=max_block_elements,
    )
    return CodebookStats(
        name=name,
        role=role,
        size=n,
        dim=dim,
        l2_normalize=l2_normalize,
        norm=norm_summary(codes),
        nearest_neighbour=neighbours.summary(),
        near_duplicates=duplicates,
        stored_usage=None if stored_usage is None else usage_stats(stored_usage.reshape(-1), top=top),
        data_usage=None if data_usage is None else usage_stats(data_usage.reshape(-1), top=top),
    )


# --- codebooks of a model ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodebookSpec:
    """One quantizer of a checkpoint: its attribute ``name``, its ``role`` and its config."""

    name: str
    role: str
    quantizer: QuantizerConfig


def checkpoint_codebooks(config: VQGANConfig | StyleTransferConfig) -> list[CodebookSpec]:
    """The codebooks a model config has: VQGAN ``quantize`` (role "codebook"); style transfer
    ``quantize_enc`` (role "content") and ``quantize_dec`` (role "style"); none when continuous."""
    if isinstance(config, VQGANConfig):
        return [CodebookSpec("quantize", "codebook", config.quantizer)]
    if config.continuous:
        return []
    return [
        CodebookSpec("quantize_enc", "content", config.content.quantizer),
        CodebookSpec("quantize_dec", "style", config.style.quantizer),
    ]


def codebook_from_state_dict(state_dict: dict[str, Tensor], spec: CodebookSpec) -> Tensor:
    """The codes the quantizer searches, straight from the weights (unit norm for an ``l2_normalize`` book)."""
    key = f"{spec.name}.embedding.weight"
    weight = state_dict.get(key)
    if weight is None:
        raise BadInputError(f"the checkpoint has no {key}, so its {spec.role} codebook cannot be read")
    weight = weight.detach().float()
    return F.normalize(weight, dim=1) if spec.quantizer.l2_normalize else weight


def count_dataset_usage(
    model: nn.Module,
    batches: Iterable[Tensor],
    *,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Tensor]:
    """Encode image batches (B, 3, H, W in [-1, 1]) and count code usage per quantizer name.

    A VQGAN fills ``quantize``. A style-transfer model encodes every image with both of its encoders:
    the content side (``encoder``, ``quant_conv``, ``quantize_enc``) counts into ``quantize_enc`` and the
    style side (``encoder_real``, ``quant_conv_real``, ``quantize_dec``) into ``quantize_dec``.
    """
    from quantart_cli.core.models import VQGAN, StyleTransfer
    from quantart_cli.core.nn.vq import code_usage

    set_memory_format(model, True)  # as inference runs
    if isinstance(model, VQGAN):
        encoders: dict[str, Callable[[Tensor], Tensor | None]] = {"quantize": model.encode_to_indices}
    elif isinstance(model, StyleTransfer) and not model.config.continuous:
        encoders = {"quantize_enc": lambda x: model.encode_content(x)[1],
                    "quantize_dec": lambda x: model.encode_style(x)[1]}
    else:
        raise BadInputError("this model has no codebook to count usage of (a continuous style-transfer model)")
    counts = {name: torch.zeros(getattr(model, name).n_embed, dtype=torch.long, device=device) for name in encoders}
    with torch.inference_mode():
        for batch in batches:
            batch = batch.to(device)
            for name, encode in encoders.items():
                indices = encode(batch)
                counts[name] += code_usage(indices, counts[name].numel())
            if on_batch is not None:
                on_batch(batch.shape[0])
    return counts
