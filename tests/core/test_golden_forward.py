"""Numerical compatibility with the original QuantArt code (golden file from the original, see its README).

The fixture holds fp16-rounded random weights in the original key layout and every intermediate
output of stage 1 (VQGAN) and stage 2 (style transfer) at 64x64 px. Indices must match exactly,
floats to 1e-4.
"""

from __future__ import annotations

import pytest
import torch
from golden_files import FORWARD

from quantart_cli.core.config import AutoencoderConfig, QuantizerConfig, StyleTransferConfig, VQGANConfig
from quantart_cli.core.devices import set_memory_format
from quantart_cli.core.models import VQGAN, StyleTransfer

FIXTURE = FORWARD
TOLERANCE = {"atol": 1e-4, "rtol": 0.0}


@pytest.fixture(scope="module")
def reference() -> dict:
    assert FIXTURE.is_file(), f"golden file of the original code not found at {FIXTURE} (QUANTART_GOLDEN)"
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


def _vqgan_config(reference: dict) -> VQGANConfig:
    return VQGANConfig(
        autoencoder=AutoencoderConfig(**reference["ddconfig"]),
        quantizer=QuantizerConfig(
            n_embed=reference["n_embed"], embed_dim=reference["embed_dim"], beta=reference["beta"]
        ),
    )


def _load(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    model.eval()


@pytest.mark.parametrize("channels_last", [True, False])
def test_stage1_matches_the_original(reference, channels_last):
    stage1 = reference["stage1"]
    model = VQGAN(_vqgan_config(reference))
    _load(model, stage1["state_dict"])
    set_memory_format(model, channels_last)
    with torch.inference_mode():
        quant, emb_loss, info = model.encode(stage1["input"])
        reconstruction = model.decode(quant)
    # The original's stage-1 quantizer returns flattened indices (sane_index_shape=False).
    assert torch.equal(info.indices.reshape(-1), stage1["indices"].reshape(-1))
    torch.testing.assert_close(quant, stage1["quant"], **TOLERANCE)
    torch.testing.assert_close(emb_loss, stage1["emb_loss"].reshape(()), **TOLERANCE)
    torch.testing.assert_close(reconstruction, stage1["reconstruction"], **TOLERANCE)


@pytest.mark.parametrize("channels_last", [True, False])
def test_stage2_matches_the_original(reference, channels_last):
    stage2 = reference["stage2"]
    vq_config = _vqgan_config(reference)
    config = StyleTransferConfig(content=vq_config, style=vq_config, sga_blocks=reference["sga_blocks"])
    model = StyleTransfer(config)
    _load(model, stage2["state_dict"])
    set_memory_format(model, channels_last)
    with torch.inference_mode():
        result = model.transfer(stage2["content"], stage2["style"])
        output = model.decode(result.quant_y)
    for name in ("indices_x", "indices_ref", "indices_y"):
        assert torch.equal(getattr(result, name), stage2[name]), name
    for name in ("quant_x", "quant_ref", "h_x", "quant_y"):
        torch.testing.assert_close(getattr(result, name), stage2[name], **TOLERANCE, msg=name)
    torch.testing.assert_close(output, stage2["output"], **TOLERANCE)


def test_stage2_assembled_from_stage1_parts_matches(reference):
    """from_vqgans on two stage-1 models holding the fixture's stage-2 parts reproduces the output."""
    stage2 = reference["stage2"]
    sd = stage2["state_dict"]
    vq_config = _vqgan_config(reference)

    def stage1_from(prefixes: dict[str, str]) -> VQGAN:
        model = VQGAN(vq_config)
        picked = {}
        for ours, theirs in prefixes.items():
            picked.update({ours + k[len(theirs) :]: v for k, v in sd.items() if k.startswith(theirs)})
        # Parts stage 2 does not use keep their random init (the decoder of the content model).
        full = {k: v.clone() for k, v in model.state_dict().items()}
        full.update({k: v.float() for k, v in picked.items()})
        model.load_state_dict(full, strict=True)
        return model

    content = stage1_from({"encoder.": "encoder.", "quant_conv.": "quant_conv.", "quantize.": "quantize_enc."})
    style = stage1_from(
        {
            "encoder.": "encoder_real.",
            "quant_conv.": "quant_conv_real.",
            "quantize.": "quantize_dec.",
            "post_quant_conv.": "post_quant_conv.",
            "decoder.": "decoder.",
        }
    )
    model = StyleTransfer.from_vqgans(content, style, sga_blocks=reference["sga_blocks"])
    model.model_x2y.load_state_dict(
        {k[len("model_x2y.") :]: v.float() for k, v in sd.items() if k.startswith("model_x2y.")}, strict=True
    )
    with torch.inference_mode():
        output = model(stage2["content"], stage2["style"])
    torch.testing.assert_close(output, stage2["output"], **TOLERANCE)
