"""VQGAN and StyleTransfer: shapes, memory layout, assembly, freezing, transfer variants (what every model keeps,
its checkpoint round trip, determinism, the original's keys and its codes, is tests/core/test_model_contract.py)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_st_config

from quantart_cli.core.config import tiny_vqgan_config
from quantart_cli.core.errors import BadInputError, UsageError
from quantart_cli.core.models import VQGAN, StyleTransfer, TransferResult


@pytest.fixture(scope="module")
def tiny_pair() -> tuple[VQGAN, VQGAN]:
    torch.manual_seed(0)
    return VQGAN(tiny_vqgan_config()).eval(), VQGAN(tiny_vqgan_config()).eval()


@pytest.mark.parametrize(("height", "width"), [(32, 48), (64, 16)])
def test_vqgan_encode_decode_shapes(tiny_pair, height, width):
    model = tiny_pair[0]
    x = torch.rand(2, 3, height, width) * 2 - 1
    with torch.inference_mode():
        quant, vq_loss, info = model.encode(x)
        assert quant.shape == (2, 64, height // 16, width // 16) and quant.is_contiguous()
        assert vq_loss.shape == () and vq_loss >= 0
        assert info.indices.shape == (2, height // 16, width // 16)
        assert int(info.usage.sum()) == info.indices.numel()
        rec, _, _ = model(x)
        assert rec.shape == x.shape and rec.is_contiguous()
        indices = model.encode_to_indices(x)
        assert indices.dtype == torch.int64
        # quant is z + (e - z): equal to the code e up to rounding.
        torch.testing.assert_close(model.decode_indices(indices), model.decode(quant), atol=1e-4, rtol=1e-4)


def _kernels(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.dim() == 4 and p.shape[-2:] != (1, 1)]


def test_models_are_plain_and_channels_last_is_chosen_where_they_run(tmp_path):
    from safetensors.torch import save_file

    from quantart_cli.core.devices import set_memory_format
    from quantart_cli.core.io.checkpoints import load_model, save_checkpoint

    torch.manual_seed(0)
    model = VQGAN(tiny_vqgan_config()).eval()
    assert not hasattr(model, "channels_last") and all(p.is_contiguous() for p in model.parameters())
    save_file(model.state_dict(), tmp_path / "plain.safetensors")  # what a user may do with any state dict
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        plain = model(x)[0]
        assert set_memory_format(model, True) is model
        assert _kernels(model) and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                                       for p in _kernels(model))
        fast = model(x)[0]
    torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-4)
    assert fast.is_contiguous()
    save_checkpoint(model, tmp_path / "m.safetensors")  # copes with channels-last kernels
    loaded = load_model(tmp_path / "m.safetensors", expected_kind="vqgan")
    assert all(p.is_contiguous() for p in loaded.parameters())  # a loaded model is plain too
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    set_memory_format(model, False)  # what training does by default: the original's contiguous order
    assert all(p.is_contiguous() for p in model.parameters())


def test_the_stylize_engine_runs_the_model_channels_last_unless_told(tiny_pair):
    from quantart_cli.core.transfer.engine import Stylizer

    x, style = torch.rand(1, 3, 48, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    images = {}
    for channels_last in (True, False):
        torch.manual_seed(1)  # the same SGA weights
        model = StyleTransfer.from_vqgans(*tiny_pair, sga_blocks=1).eval()
        images[channels_last] = Stylizer(model, [style], channels_last=channels_last)(x).image
        in_channels_last = {p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                            for p in _kernels(model)}
        assert in_channels_last == {channels_last}
    torch.testing.assert_close(images[True], images[False], atol=1e-4, rtol=1e-4)


def test_vqgan_trains_end_to_end(tiny_pair):
    model = VQGAN(tiny_vqgan_config())
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    rec, vq_loss, _ = model(x)
    ((rec - x).abs().mean() + vq_loss).backward()
    assert model.last_layer is model.decoder.conv_out.weight
    assert model.last_layer.grad is not None and model.encoder.conv_in.weight.grad is not None
    assert model.quantize.embedding.weight.grad is not None


@pytest.mark.parametrize("shape", [(1, 3, 24, 32), (1, 3, 32, 8), (1, 1, 32, 32), (3, 32, 32)])
def test_bad_image_shapes_are_bad_input(tiny_pair, shape):
    with pytest.raises(BadInputError):
        tiny_pair[0].encode(torch.zeros(shape))


def test_from_vqgans_copies_parts_and_freezes_them(tiny_pair):
    content, style = tiny_pair
    model = StyleTransfer.from_vqgans(content, style)
    assert model.config.sga_blocks == 6 and model.config.content == content.config
    sd = model.state_dict()
    pairs = {
        "encoder.": (content, "encoder."),
        "quant_conv.": (content, "quant_conv."),
        "quantize_enc.": (content, "quantize."),
        "encoder_real.": (style, "encoder."),
        "quant_conv_real.": (style, "quant_conv."),
        "quantize_dec.": (style, "quantize."),
        "post_quant_conv.": (style, "post_quant_conv."),
        "decoder.": (style, "decoder."),
    }
    for prefix, (source, source_prefix) in pairs.items():
        source_sd = source.state_dict()
        for key, value in sd.items():
            if key.startswith(prefix):
                assert torch.equal(value, source_sd[source_prefix + key[len(prefix) :]]), key
    # Copies, not shared storage: training the stage-2 model cannot touch the stage-1 models.
    assert model.encoder.conv_in.weight.data_ptr() != content.encoder.conv_in.weight.data_ptr()
    trainable = {id(p) for p in model.trainable_parameters()}
    for name, param in model.named_parameters():
        assert param.requires_grad == name.startswith("model_x2y."), name
        assert (id(param) in trainable) == name.startswith("model_x2y."), name
    model.train()
    assert model.model_x2y.training and not model.encoder.training and not model.decoder.training
    assert content.encoder.conv_in.weight.requires_grad  # the sources are left as they were


def test_transfer_with_reference_of_another_size(tiny_pair):
    torch.manual_seed(0)
    model = StyleTransfer.from_vqgans(*tiny_pair).eval()
    x, ref = torch.rand(2, 3, 32, 48) * 2 - 1, torch.rand(2, 3, 64, 16) * 2 - 1
    with torch.inference_mode():
        result = model.transfer(x, ref)
        assert isinstance(result, TransferResult)
        assert result.quant_x.shape == result.h_x.shape == result.quant_y.shape == (2, 64, 2, 3)
        assert result.quant_ref.shape == (2, 64, 4, 1)
        assert result.indices_y.shape == (2, 2, 3) and result.indices_ref.shape == (2, 4, 1)
        torch.testing.assert_close(result.quant_y, model.quantize_dec.lookup(result.indices_y))
        assert model.decode(result.quant_y).shape == x.shape
        assert model(x, ref).shape == x.shape
        # Same latents through the cached-latent / prepared-reference paths.
        h_x, quant_y, _, _ = model.stylize_latent(result.quant_x, result.quant_ref)
        torch.testing.assert_close(h_x, result.h_x)
        prepared = model.prepare_style(ref)
        torch.testing.assert_close(model.stylize_latent(result.quant_x, prepared)[0], result.h_x)
        # Blending: weights (1, 0) is the first reference alone; a batch-1 reference serves the batch.
        other = torch.rand(1, 3, 32, 32) * 2 - 1
        blended = model.transfer(x, [ref, other], weights=[1.0, 0.0])
        torch.testing.assert_close(blended.h_x, result.h_x)
        assert isinstance(blended.quant_ref, tuple) and len(blended.quant_ref) == 2
        mixed = model.transfer(x, [ref, other], weights=[0.7, 0.3])
        assert not torch.allclose(mixed.h_x, result.h_x)
    with pytest.raises(UsageError):
        model.transfer(x, [ref, other], weights=[1.0])
    with pytest.raises(BadInputError):
        model.transfer(x, torch.zeros(1, 3, 20, 16))


def test_transfer_trains_only_the_sga(tiny_pair):
    torch.manual_seed(0)
    model = StyleTransfer.from_vqgans(*tiny_pair)
    model.train()
    result = model.transfer(torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1)
    loss = (result.quant_y - result.quant_x).pow(2).mean() + result.vq_loss
    loss.backward()
    assert all(p.grad is not None for p in model.trainable_parameters())
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("model_x2y."))


def test_continuous_variant(tiny_pair):
    torch.manual_seed(0)
    model = StyleTransfer.from_vqgans(*tiny_pair, continuous=True).eval()
    assert not hasattr(model, "quantize_enc") and not hasattr(model, "quantize_dec")
    assert not any(k.startswith("quantize") for k in model.state_dict())
    x, ref = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 48, 32) * 2 - 1
    with torch.inference_mode():
        result = model.transfer(x, ref)
        torch.testing.assert_close(result.quant_x, tiny_pair[0].encode_continuous(x))
        torch.testing.assert_close(result.quant_ref, tiny_pair[1].encode_continuous(ref))
        assert result.indices_y is None and result.indices_x is None and float(result.vq_loss) == 0.0
        assert torch.equal(result.quant_y, result.h_x)
        assert model(x, ref).shape == x.shape


def test_non_residual_sga_config():
    config = tiny_st_config(tiny_vqgan_config(), sga_blocks=2, use_residual=False)
    model = StyleTransfer(config)
    assert len(model.model_x2y.blocks) == 2
    assert not model.model_x2y.blocks[0].attn_block.residual
