"""Vector quantizer: exact chunked search, both losses, straight-through, usage, options."""

from __future__ import annotations

import pytest
import torch

from quantart_cli.core.config import QuantizerConfig
from quantart_cli.core.errors import BadInputError
from quantart_cli.core.nn.vq import VectorQuantizer, code_usage, nearest_code_indices


def _original_search(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The original's search on the full distance matrix."""
    d = vectors.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * vectors @ codebook.t()
    return d.argmin(1)


@pytest.mark.parametrize(("rows", "codes", "dim", "limit"), [(300, 64, 8, 100), (1024, 16384, 32, 16384 * 7 + 5)])
def test_chunked_search_equals_full_search(rows, codes, dim, limit):
    torch.manual_seed(0)
    vectors, codebook = torch.randn(rows, dim), torch.randn(codes, dim)
    chunked = nearest_code_indices(vectors, codebook, max_search_elements=limit)
    torch.testing.assert_close(chunked, nearest_code_indices(vectors, codebook, max_search_elements=2**40))
    torch.testing.assert_close(chunked, _original_search(vectors, codebook))
    # Exactness against float64 wherever the best code is not a near-tie.
    d64 = torch.cdist(vectors.double(), codebook.double())
    top2 = d64.topk(2, dim=1, largest=False).values
    clear = (top2[:, 1] - top2[:, 0]) > 1e-4
    assert clear.float().mean() > 0.9
    torch.testing.assert_close(chunked[clear], d64.argmin(1)[clear])


def test_quantizer_chunks_a_large_book_within_the_bound(monkeypatch):
    torch.manual_seed(0)
    vq = VectorQuantizer(QuantizerConfig(n_embed=16384, embed_dim=16), max_search_elements=16384 * 64)
    z = torch.randn(1, 16, 16, 16)  # 256 rows -> 4 chunks of 64
    seen: list[int] = []
    real_argmin = torch.Tensor.argmin

    def spy(self: torch.Tensor, *args, **kwargs):
        seen.append(self.numel())
        return real_argmin(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "argmin", spy)
    _, _, info = vq(z)
    monkeypatch.undo()
    assert seen == [64 * 16384] * 4
    flat = z.permute(0, 2, 3, 1).reshape(-1, 16)
    torch.testing.assert_close(info.indices.reshape(-1), _original_search(flat, vq.embedding.weight.detach()))


def test_ties_go_to_the_lowest_index():
    codebook = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    assert nearest_code_indices(vectors, codebook, max_search_elements=4).tolist() == [0, 1, 0]


def test_codebook_init_range_and_keys():
    vq = VectorQuantizer(QuantizerConfig(n_embed=64, embed_dim=8))
    w = vq.embedding.weight
    assert w.shape == (64, 8) and w.abs().max() <= 1 / 64
    assert set(vq.state_dict()) == {"embedding.weight"}
    projected = VectorQuantizer(QuantizerConfig(n_embed=64, embed_dim=8, code_dim=4))
    assert set(projected.state_dict()) == {
        "embedding.weight",
        "project_in.weight",
        "project_in.bias",
        "project_out.weight",
        "project_out.bias",
    }
    assert projected.embedding.weight.shape == (64, 4)


@pytest.mark.parametrize("legacy", [True, False])
def test_loss_variants_against_hand_computation(legacy):
    vq = VectorQuantizer(QuantizerConfig(n_embed=2, embed_dim=1, beta=0.25, legacy_loss=legacy))
    with torch.no_grad():
        vq.embedding.weight.copy_(torch.tensor([[0.0], [1.0]]))
    z = torch.tensor([0.2, 0.9, 0.4, 1.5]).view(1, 1, 2, 2).requires_grad_(True)
    z_q, loss, info = vq(z)
    # Nearest codes 0, 1, 0, 1: squared errors 0.04, 0.01, 0.16, 0.25 -> mean 0.115.
    assert info.indices.tolist() == [[[0, 1], [0, 1]]]
    torch.testing.assert_close(z_q.detach(), torch.tensor([0.0, 1.0, 0.0, 1.0]).view(1, 1, 2, 2))
    torch.testing.assert_close(loss, torch.tensor(1.25 * 0.115))  # both terms have the same value
    loss.backward()
    # d/dz of the commitment term mean((sg(zq) - z)^2) = 2 (z - zq) / n, weighted 1 (legacy) or beta.
    weight = 1.0 if legacy else 0.25
    expected_z = weight * 2 * (z.detach() - z_q.detach()) / 4
    torch.testing.assert_close(z.grad, expected_z)
    # d/de of the codebook term mean((zq - sg(z))^2), weighted beta (legacy) or 1.
    code_weight = 0.25 if legacy else 1.0
    diff = (z_q.detach() - z.detach()).view(-1)
    expected_e = torch.stack([2 * diff[[0, 2]].sum() / 4, 2 * diff[[1, 3]].sum() / 4]).view(2, 1) * code_weight
    torch.testing.assert_close(vq.embedding.weight.grad, expected_e)


def test_straight_through_gradient_is_identity():
    torch.manual_seed(0)
    vq = VectorQuantizer(QuantizerConfig(n_embed=16, embed_dim=4))
    z = torch.randn(2, 4, 3, 5, requires_grad=True)
    z_q, _, info = vq(z)
    upstream = torch.randn_like(z_q)
    (z_q * upstream).sum().backward()
    torch.testing.assert_close(z.grad, upstream)
    torch.testing.assert_close(z_q.detach(), vq.lookup(info.indices).detach())


def test_usage_counts():
    torch.manual_seed(0)
    vq = VectorQuantizer(QuantizerConfig(n_embed=8, embed_dim=4))
    _, _, info = vq(torch.randn(3, 4, 5, 7))
    assert info.indices.shape == (3, 5, 7) and info.indices.dtype == torch.int64
    assert info.usage.dtype == torch.int64 and info.usage.shape == (8,)
    assert int(info.usage.sum()) == 3 * 5 * 7
    torch.testing.assert_close(info.usage, torch.bincount(info.indices.flatten(), minlength=8))
    assert code_usage(torch.tensor([[2, 2], [7, 0]]), 8).tolist() == [1, 0, 2, 0, 0, 0, 0, 1]


def test_search_stays_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    vq = VectorQuantizer(QuantizerConfig(n_embed=512, embed_dim=16))
    with torch.no_grad():
        vq.embedding.weight.normal_()
    z = torch.randn(2, 16, 8, 8)
    _, _, plain = vq(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_q, loss, info = vq(z)
    assert z_q.dtype == torch.float32 and loss.dtype == torch.float32
    torch.testing.assert_close(info.indices, plain.indices)
    torch.testing.assert_close(info.usage, plain.usage)


@pytest.mark.parametrize("options", [{"l2_normalize": True}, {"code_dim": 4}, {"l2_normalize": True, "code_dim": 4}])
def test_optional_codebooks_train(options):
    torch.manual_seed(0)
    vq = VectorQuantizer(QuantizerConfig(n_embed=32, embed_dim=8, **options))
    encoder = torch.nn.Conv2d(3, 8, 1)
    params = [*vq.parameters(), *encoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    x = torch.randn(4, 3, 6, 6)
    losses = []
    for _ in range(30):
        z = encoder(x)
        z_q, vq_loss, info = vq(z)
        loss = (z_q - z.detach()).pow(2).mean() + vq_loss  # reconstruct the latent through the codes
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in params)
        assert encoder.weight.grad.abs().sum() > 0 and vq.embedding.weight.grad.abs().sum() > 0
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with torch.no_grad():
        z_q, _, info = vq(encoder(x))
    if options.get("l2_normalize") and "code_dim" not in options:
        assert torch.allclose(z_q.norm(dim=1), torch.ones(()), atol=1e-5)
    torch.testing.assert_close(vq.lookup(info.indices), z_q.detach(), atol=1e-6, rtol=1e-5)


def test_bad_inputs():
    vq = VectorQuantizer(QuantizerConfig(n_embed=8, embed_dim=4))
    with pytest.raises(BadInputError):
        vq(torch.randn(1, 3, 2, 2))
    with pytest.raises(BadInputError):
        vq.lookup(torch.tensor([[[8]]]))
    with pytest.raises(BadInputError):
        vq.lookup(torch.zeros(4, dtype=torch.long))
