"""Kernels: norm, resnet/down/up blocks, attention (self, cross, chunked, blended), SGA (and its border padding),
encoder/decoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_autoencoder_config, tiny_st_config
from torch import nn

from quantart_cli.core.config import tiny_vqgan_config
from quantart_cli.core.errors import BadInputError, UsageError
from quantart_cli.core.io.checkpoints import load_model, save_checkpoint
from quantart_cli.core.models import StyleTransfer
from quantart_cli.core.nn import attention as attention_module
from quantart_cli.core.nn.attention import AttnBlock, attend, set_query_chunk_size
from quantart_cli.core.nn.autoencoder import Decoder, Encoder
from quantart_cli.core.nn.blocks import Downsample, ResnetBlock, Upsample, fold_upsample_weight, normalize
from quantart_cli.core.nn.sga import StyleGuidedAttention

TINY_AE = tiny_autoencoder_config(ch=32, ch_mult=(1, 2, 2), attn_resolutions=(4,), resolution=16, z_channels=16)


def _randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give norms non-trivial affine parameters so tests see them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=gen))
    return module


def _naive_attention(block: AttnBlock, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
    """Attention written out the original way: bmm, explicit softmax(QK^T / sqrt(C)), no fusing."""
    b, c, h, w = x.shape
    hn = block.norm(x)
    rn = hn if ref is None else block.norm(ref)
    q = block.q(hn).reshape(b, c, h * w).permute(0, 2, 1)
    k = block.k(rn).reshape(rn.shape[0], c, -1).expand(b, -1, -1)
    v = block.v(rn).reshape(rn.shape[0], c, -1).expand(b, -1, -1)
    weights = torch.softmax(torch.bmm(q, k) * c**-0.5, dim=2)
    out = torch.bmm(v, weights.permute(0, 2, 1)).reshape(b, c, h, w)
    return block.proj_out(out)


def test_groupnorm_uses_one_group_below_32_channels():
    assert normalize(16).num_groups == 1
    assert normalize(64).num_groups == 32
    assert normalize(64).eps == 1e-6


def test_norm_groups_reach_every_norm_of_the_autoencoder():
    from quantart_cli.core.nn.autoencoder import Decoder, Encoder

    config = tiny_autoencoder_config(ch=32, attn_resolutions=(8,), resolution=16, z_channels=16, norm_groups=8)
    norms = [m for net in (Encoder(config), Decoder(config)) for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and {m.num_groups for m in norms} == {8}
    assert normalize(4, 8).num_groups == 1  # fewer channels than groups: one group, as the original does
    default = [m for m in Encoder(tiny_autoencoder_config(ch=32, resolution=16, z_channels=16)).modules()
               if isinstance(m, nn.GroupNorm)]
    assert {m.num_groups for m in default} == {32}


def test_resnet_block_matches_formula_and_has_shortcut_only_when_needed():
    torch.manual_seed(0)
    same, proj = ResnetBlock(32, 32), _randomize(ResnetBlock(32, 64))
    assert not hasattr(same, "nin_shortcut")
    assert proj.nin_shortcut.kernel_size == (1, 1)
    x = torch.randn(2, 32, 8, 6)

    def swish(t: torch.Tensor) -> torch.Tensor:
        return t * torch.sigmoid(t)

    h = proj.conv2(swish(proj.norm2(proj.conv1(swish(proj.norm1(x))))))
    expected = proj.nin_shortcut(x) + h
    torch.testing.assert_close(proj(x), expected, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():  # in-place fast path gives the same numbers
        torch.testing.assert_close(proj(x), expected, atol=1e-5, rtol=1e-5)


def test_downsample_pads_right_and_bottom_only():
    torch.manual_seed(0)
    down = Downsample(8)
    x = torch.randn(1, 8, 12, 10)
    out = down(x)
    assert out.shape == (1, 8, 6, 5)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), down.conv.weight, down.conv.bias, stride=2)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_upsample_equals_nearest_then_conv(channels_last):
    torch.manual_seed(0)
    up = Upsample(16)
    x = torch.randn(2, 16, 5, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    reference = up.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    out = up(x)
    assert out.shape == (2, 16, 10, 14)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    assert fold_upsample_weight(up.conv.weight).shape == (16, 16, 4, 4)


def test_folded_upsample_gradients_match_unfolded():
    torch.manual_seed(0)
    up = Upsample(8)
    x = torch.randn(1, 8, 4, 6, requires_grad=True)
    target = torch.randn(1, 8, 8, 12)
    grads = []
    for folded in (True, False):
        up.folded = folded
        up.zero_grad()
        x.grad = None
        ((up(x) - target) ** 2).sum().backward()
        grads.append((x.grad.clone(), up.conv.weight.grad.clone(), up.conv.bias.grad.clone()))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_self_attention_equals_naive_softmax():
    torch.manual_seed(0)
    block = _randomize(AttnBlock(32))
    x = torch.randn(2, 32, 6, 5)
    torch.testing.assert_close(block(x), x + _naive_attention(block, x), atol=1e-5, rtol=1e-5)
    block.residual = False
    torch.testing.assert_close(block(x), _naive_attention(block, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [None, 1, 7, 1000])
def test_cross_attention_with_other_reference_size_and_chunks(chunk):
    torch.manual_seed(0)
    block = _randomize(AttnBlock(32, query_chunk_size=chunk))
    x = torch.randn(2, 32, 4, 6)
    ref = torch.randn(2, 32, 3, 9)  # 27 reference tokens vs 24 query tokens
    expected = x + _naive_attention(block, x, ref)
    torch.testing.assert_close(block(x, ref), expected, atol=1e-5, rtol=1e-5)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(block(channels_last, ref), expected, atol=1e-5, rtol=1e-5)


def test_automatic_chunking_bounds_scores(monkeypatch):
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 50, 8), torch.randn(1, 40, 8), torch.randn(1, 40, 8)
    full = attend(q, k, v, query_chunk_size=None)
    calls = []
    real_sdpa = F.scaled_dot_product_attention

    def counting_sdpa(qq, kk, vv):
        calls.append(qq.shape[-2] * kk.shape[-2])
        return real_sdpa(qq, kk, vv)

    monkeypatch.setattr(attention_module, "MAX_SCORE_ELEMENTS", 400)  # 10 queries x 40 keys
    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", counting_sdpa)
    chunked = attend(q, k, v, query_chunk_size=None)
    assert len(calls) == 5 and max(calls) <= 400
    torch.testing.assert_close(chunked, full, atol=1e-6, rtol=1e-6)
    with pytest.raises(UsageError):
        attend(q, k, v, query_chunk_size=0)


def test_reference_batch_one_broadcasts_and_mismatch_is_rejected():
    torch.manual_seed(0)
    block = AttnBlock(16)
    x, ref = torch.randn(3, 16, 4, 4), torch.randn(1, 16, 2, 2)
    out = block(x, ref)
    for i in range(3):
        torch.testing.assert_close(out[i : i + 1], block(x[i : i + 1], ref), atol=1e-6, rtol=1e-6)
    with pytest.raises(BadInputError):
        block(x, torch.randn(2, 16, 2, 2))
    with pytest.raises(BadInputError):
        block(x, torch.randn(1, 8, 2, 2))


def test_blended_references():
    torch.manual_seed(0)
    block = _randomize(AttnBlock(16))
    x, ref_a, ref_b = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4), torch.randn(2, 16, 2, 6)
    single = block(x, ref_a)
    torch.testing.assert_close(block(x, [ref_a, ref_b], weights=[1.0, 0.0]), single)
    torch.testing.assert_close(block(x, [ref_a, ref_b], weights=[2.0, 0.0]), single)
    torch.testing.assert_close(block(x, [ref_a]), single)
    # 0.7/0.3: attention outputs mixed before proj_out (proj_out is affine, so mixing after is the same).
    expected = x + 0.7 * _naive_attention(block, x, ref_a) + 0.3 * _naive_attention(block, x, ref_b)
    torch.testing.assert_close(block(x, [ref_a, ref_b], weights=[0.7, 0.3]), expected, atol=1e-5, rtol=1e-5)
    # Precomputed keys/values give the same answer.
    contexts = [block.reference_context(ref_a), block.reference_context(ref_b)]
    torch.testing.assert_close(block(x, contexts, weights=[0.7, 0.3]), block(x, [ref_a, ref_b], weights=[0.7, 0.3]))
    for bad in ([1.0], [-1.0, 2.0], [0.0, 0.0]):
        with pytest.raises(UsageError):
            block(x, [ref_a, ref_b], weights=bad)


def test_set_query_chunk_size_reaches_every_attention_block():
    sga = StyleGuidedAttention(16, num_blocks=2)
    set_query_chunk_size(sga, 3)
    sizes = [m.query_chunk_size for m in sga.modules() if isinstance(m, AttnBlock)]
    assert sizes == [3, 3, 3, 3]


def test_sga_layout_forward_and_prepared_reference():
    torch.manual_seed(0)
    sga = _randomize(StyleGuidedAttention(32, num_blocks=6))
    keys = set(sga.state_dict())
    assert "blocks.3.attn_block.q.weight" in keys and "blocks.5.self_attn_block.proj_out.bias" in keys
    assert "blocks.0.res_block.norm1.weight" in keys and not any("nin_shortcut" in k for k in keys)
    x, ref = torch.randn(2, 32, 4, 4), torch.randn(1, 32, 3, 5)

    h = x  # the same reference feeds every block
    for block in sga.blocks:
        h = block.res_block(h)
        h = h + _naive_attention(block.self_attn_block, h)
        h = h + _naive_attention(block.attn_block, h, ref)
    out = sga(x, ref)
    torch.testing.assert_close(out, h, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sga(x, sga.prepare_reference(ref)), out, atol=1e-6, rtol=1e-6)
    other = torch.randn(1, 32, 4, 4)
    torch.testing.assert_close(sga(x, [ref, other], weights=[1, 0]), out, atol=1e-6, rtol=1e-6)
    with pytest.raises(UsageError):
        sga(x, sga.prepare_reference(ref), weights=[1.0])


def test_sga_trains():
    torch.manual_seed(0)
    sga = StyleGuidedAttention(16, num_blocks=2, residual=False)
    x, ref = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    sga(x, ref).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in sga.parameters())


@pytest.mark.parametrize(("height", "width"), [(16, 16), (16, 40), (48, 24)])
def test_encoder_decoder_shapes_at_non_square_sizes(height, width):
    torch.manual_seed(0)
    encoder, decoder = Encoder(TINY_AE), Decoder(TINY_AE)
    x = torch.randn(1, 3, height, width)
    with torch.inference_mode():
        z = encoder(x)
        assert z.shape == (1, 16, height // 4, width // 4)
        assert decoder(z).shape == (1, 3, height, width)


def test_encoder_decoder_layout_follows_the_original():
    encoder, decoder = Encoder(TINY_AE), Decoder(TINY_AE)
    # Nominal sizes 16 -> 8 -> 4: attention only on the last encoder level and the first decoder one.
    assert [len(level.attn) for level in encoder.down] == [0, 0, 1]
    assert [len(level.attn) for level in decoder.up] == [0, 0, 2]
    assert [len(level.block) for level in decoder.up] == [2, 2, 2]
    assert hasattr(decoder.up[2], "upsample") and not hasattr(decoder.up[0], "upsample")
    assert decoder.up[0].block[0].in_channels == 64 and decoder.up[0].block[0].out_channels == 32
    assert hasattr(encoder.down[0], "downsample") and not hasattr(encoder.down[2], "downsample")
    assert decoder.conv_out.out_channels == 3


def test_encoder_decoder_backward():
    torch.manual_seed(0)
    encoder, decoder = Encoder(TINY_AE), Decoder(TINY_AE)
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    decoder(encoder(x)).pow(2).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert encoder.conv_in.weight.grad is not None and decoder.up[1].upsample.conv.weight.grad is not None


def test_chunked_attention_backward_equals_unchunked():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 13, 8, requires_grad=True) for _ in range(3))
    grads = []
    for chunk in (None, 4):
        for t in (q, k, v):
            t.grad = None
        out = attend(q, k, v, query_chunk_size=chunk)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append([t.grad.clone() for t in (q, k, v)])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("padding", ["zeros", "replicate"])
def test_replicate_padding_leaves_the_sga_blind_to_the_border(padding, tmp_path):
    """On a flat latent the replicate-padded SGA gives a flat output (it cannot tell the border from the inside:
    no frame), the zero-padded one does not; the setting survives a checkpoint round trip."""
    torch.manual_seed(0)
    vq = tiny_vqgan_config()
    model = StyleTransfer(tiny_st_config(vq, sga_blocks=2, sga_padding=padding)).eval()
    with torch.no_grad():
        for p in model.model_x2y.parameters():
            p.add_(0.1 * torch.randn_like(p))  # biases away from 0 so borders would show
        flat = torch.full((1, vq.quantizer.embed_dim, 8, 8), 0.3)
        out = model.model_x2y(flat, torch.randn(1, vq.quantizer.embed_dim, 4, 4))
    spread = float((out - out[:, :, 4:5, 4:5]).abs().max())
    assert (spread < 1e-4) == (padding == "replicate"), spread
    path = save_checkpoint(model, tmp_path / "m.pt")
    assert load_model(path).config.sga_padding == padding
