"""Codebook figures (quantart_cli.core.codebook.stats) on hand-made books: usage, nearest neighbours,
near duplicates, and large books staying fast and bounded."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from quantart_cli.core.codebook.stats import (
    codebook_stats,
    near_duplicates,
    nearest_neighbours,
    usage_order,
    usage_stats,
)
from quantart_cli.core.errors import BadInputError, UsageError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_usage_figures_exact() -> None:
    stats = usage_stats(torch.tensor([6, 2, 2, 0]), top=10)
    entropy = -(0.6 * math.log(0.6) + 2 * 0.2 * math.log(0.2))
    assert stats.total == 10 and stats.used == 3 and stats.dead == 1
    assert stats.dead_share == 0.25
    assert stats.entropy_nats == pytest.approx(entropy, rel=1e-12)
    assert stats.entropy_bits == pytest.approx(entropy / math.log(2), rel=1e-12)
    assert stats.perplexity == pytest.approx(math.exp(entropy), rel=1e-12)
    assert stats.perplexity_share == pytest.approx(math.exp(entropy) / 4, rel=1e-12)
    assert [(t.code, t.count) for t in stats.top] == [(0, 6), (1, 2), (2, 2)]  # dead codes never listed
    assert stats.top[0].share == pytest.approx(0.6)

    uniform = usage_stats(torch.full((16,), 5))
    assert uniform.perplexity == pytest.approx(16.0, rel=1e-12) and uniform.dead == 0
    assert uniform.entropy_bits == pytest.approx(4.0, rel=1e-12)
    single = usage_stats(torch.tensor([0, 0, 7, 0]), top=2)
    assert single.perplexity == 1.0 and single.entropy_nats == 0.0 and single.dead_share == 0.75
    assert [t.code for t in single.top] == [2]
    empty = usage_stats(torch.zeros(3, dtype=torch.long))
    assert empty.perplexity == 0.0 and empty.dead == 3 and empty.top == []
    assert usage_order(torch.tensor([1, 5, 0, 5])).tolist() == [1, 3, 0, 2]
    with pytest.raises(BadInputError):
        usage_stats(torch.tensor([1, -1]))


def test_nearest_neighbours_on_known_geometry() -> None:
    # Points on a line at 0, 1, 3, 7, 15: each one's nearest neighbour and distance are known.
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [7.0, 0.0], [15.0, 0.0]]) + torch.tensor([5.0, -2.0])
    nn = nearest_neighbours(codes, max_block_elements=6)  # one row per chunk
    assert nn.indices.tolist() == [1, 0, 1, 2, 3]
    assert nn.distances.tolist() == [1.0, 1.0, 2.0, 4.0, 8.0]
    summary = nn.summary()
    assert (summary.min, summary.median, summary.max) == (1.0, 2.0, 8.0)
    assert summary.mean == pytest.approx(3.2)
    assert summary.std == pytest.approx(math.sqrt(np.var([1, 1, 2, 4, 8])))

    # A 6x5 grid with spacing 0.5 in 3-D: every nearest-neighbour distance is 0.5.
    grid = torch.stack(torch.meshgrid(torch.arange(6.0), torch.arange(5.0), indexing="ij"), -1).reshape(-1, 2) * 0.5
    grid = torch.cat([grid, torch.ones(30, 1)], dim=1)
    stats = codebook_stats(grid, max_block_elements=64)
    assert stats.size == 30 and stats.dim == 3
    assert stats.nearest_neighbour.min == pytest.approx(0.5) and stats.nearest_neighbour.max == pytest.approx(0.5)
    norms = grid.double().norm(dim=1)
    assert stats.norm.min == pytest.approx(float(norms.min())) and stats.norm.max == pytest.approx(float(norms.max()))
    assert stats.norm.std == pytest.approx(float(norms.std(unbiased=False)))


def test_nearest_neighbours_match_brute_force_in_any_chunking() -> None:
    torch.manual_seed(0)
    codes = torch.randn(300, 16) * 3 + 10
    distances = torch.cdist(codes.double(), codes.double())
    distances.fill_diagonal_(math.inf)
    for block in (1, 300 * 7, 2**24):
        nn = nearest_neighbours(codes, max_block_elements=block)
        assert torch.equal(nn.indices, distances.argmin(dim=1))
        assert torch.allclose(nn.distances.double(), distances.min(dim=1).values, rtol=1e-5)


def test_near_duplicates_found() -> None:
    torch.manual_seed(1)
    codes = torch.randn(64, 8)
    codes[10] = codes[3]  # exact duplicate
    codes[20] = codes[5] + 1e-3  # near copy, distance 1e-3 * sqrt(8)
    found = near_duplicates(codes, max_block_elements=100)  # relative rule, 0.1 x median NN distance
    assert found.rule == "relative" and found.factor == 0.1
    assert found.pairs == 2 and found.codes == 4
    assert [(p.a, p.b) for p in found.closest] == [(3, 10), (5, 20)]
    assert found.closest[0].distance == 0.0
    assert found.closest[1].distance == pytest.approx(1e-3 * math.sqrt(8), rel=1e-4)

    exact_only = near_duplicates(codes, distance=0.0)
    assert exact_only.rule == "absolute" and exact_only.threshold == 0.0
    assert (exact_only.pairs, exact_only.codes) == (1, 2)

    # A cluster of 5 identical codes makes 10 pairs; max_pairs bounds the list, not the count.
    codes[40:45] = codes[40]
    many = near_duplicates(codes, distance=0.01, max_pairs=3)
    assert many.pairs == 2 + 10 and many.codes == 4 + 5 and len(many.closest) == 3
    assert all(p.distance == 0.0 for p in many.closest)
    with pytest.raises(UsageError):
        near_duplicates(codes, distance=-1.0)


def test_large_book_statistics_are_fast_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 16384 x 256 book without data: a few seconds on CPU, no distance block above the bound."""
    torch.manual_seed(0)
    codes = torch.randn(16384, 256)
    largest = 0
    real_addmm = torch.addmm

    def recording_addmm(*args, **kwargs):
        nonlocal largest
        out = real_addmm(*args, **kwargs)
        largest = max(largest, out.numel())
        return out

    monkeypatch.setattr(torch, "addmm", recording_addmm)
    start = time.perf_counter()
    stats = codebook_stats(codes, stored_usage=torch.randint(0, 50, (16384,)))
    elapsed = time.perf_counter() - start
    print(f"16384x256 codebook statistics: {elapsed:.2f} s")
    assert largest <= 2**24
    assert elapsed < 30, f"statistics of a 16384-code book took {elapsed:.1f} s"
    assert stats.size == 16384 and stats.dim == 256
    # Gaussian codes in 256-D: norms near sqrt(256) = 16, nearest neighbours well apart, no duplicates.
    assert 15 < stats.norm.mean < 17 and stats.nearest_neighbour.min > 10
    assert stats.near_duplicates.pairs == 0
    assert stats.stored_usage is not None and stats.stored_usage.total > 0
