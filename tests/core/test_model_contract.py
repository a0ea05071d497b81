"""The contract every model of the core keeps, run on each (quantart_cli.core.models: the stage-1 VQGAN, the
style-transfer model, and its continuous variant):

- a checkpoint round trip, native ``.pt`` and ``.safetensors``, gives back the config, the weights, what was recorded
  with them, and the same outputs;
- the same input gives the same output, twice, and from a second model built the same way;
- the original's checkpoint keys (the key lists of tests/fixtures/spec) are exactly the model's: they load strictly,
  none missing, none unexpected, and the importer infers the model's config from them;
- the codes decode back to the quantized latent, also after a trip through a code file (a continuous model has no
  codes at all).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from golden_files import SPEC_KEYS
from tiny_models import seeded_style_transfer, seeded_vqgan, tiny_st_config, tiny_vq_config

from quantart_cli.core.config import StyleTransferConfig, VQGANConfig
from quantart_cli.core.io.checkpoint_format import FORMAT_VERSION
from quantart_cli.core.io.checkpoints import load_checkpoint, load_model, save_checkpoint
from quantart_cli.core.io.codes import CodeFile, CodeRecord, load_code_file, save_code_file
from quantart_cli.core.io.original import import_original_state_dict
from quantart_cli.core.models import VQGAN, StyleTransfer
from quantart_cli.core.nn.vq import VectorQuantizer

pytestmark = pytest.mark.usefixtures("one_thread")


def _vq_config(n_embed: int = 16, **overrides) -> VQGANConfig:
    """Two levels of 8 or 16 channels (the one-group GroupNorm rule); level 1 (nominal 128 px) gets attention."""
    return tiny_vq_config(n_embed=n_embed, embed_dim=8, **{"attn_resolutions": (128,), "resolution": 256, **overrides})


def _informative(model: torch.nn.Module) -> torch.nn.Module:
    """The default init leaves some tensors constant: make every weight informative."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


def image(seed: int, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g) * 2 - 1


def vqgan_output(model: VQGAN) -> torch.Tensor:
    """Reconstruction through the five named submodules only (no reliance on helper methods)."""
    with torch.no_grad():
        z_q = model.quantize(model.quant_conv(model.encoder(image(0))))[0]
        return model.decoder(model.post_quant_conv(z_q))


def style_output(model: StyleTransfer) -> torch.Tensor:
    with torch.no_grad():
        return model(image(1), image(2))


@dataclass(frozen=True)
class Codes:
    """Codes of one quantizer for one image: the quantized latent, its indices, and the book they index."""

    name: str
    quantizer: VectorQuantizer
    latent: torch.Tensor
    indices: torch.Tensor | None
    factor: int


def vqgan_codes(model: VQGAN) -> list[Codes]:
    with torch.no_grad():
        quant, _, info = model.encode(image(0))
    return [Codes("quantize", model.quantize, quant, info.indices, model.downsample_factor)]


def style_codes(model: StyleTransfer) -> list[Codes]:
    with torch.no_grad():
        result = model.transfer(image(1), image(2))
    factor = model.downsample_factor
    return [Codes("quantize_enc (photo)", getattr(model, "quantize_enc", None), result.quant_x, result.indices_x,
                  factor),
            Codes("quantize_dec (painting)", getattr(model, "quantize_dec", None), result.quant_ref,
                  result.indices_ref, factor),
            Codes("quantize_dec (stylized)", getattr(model, "quantize_dec", None), result.quant_y, result.indices_y,
                  factor)]


@dataclass(frozen=True)
class ModelCase:
    kind: str
    build: Callable[[], torch.nn.Module]  # a tiny model with informative weights, in eval mode
    run: Callable[[torch.nn.Module], torch.Tensor]  # its output on fixed images
    codes: Callable[[torch.nn.Module], list[Codes]]
    #: quantizer name -> book size, as training records codebook usage
    books: dict[str, int]


CASES = {
    "vqgan": ModelCase("vqgan", lambda: seeded_vqgan(_vq_config(), 1).eval(), vqgan_output, vqgan_codes,
                       {"quantize": 16}),
    "style-transfer": ModelCase(
        "style-transfer",
        lambda: _informative(seeded_style_transfer(
            tiny_st_config(_vq_config(16), style=_vq_config(32, ch=16), sga_blocks=2), 2)).eval(),
        style_output, style_codes, {"quantize_enc": 16, "quantize_dec": 32}),
    "style-transfer-continuous": ModelCase(
        "style-transfer",
        lambda: _informative(seeded_style_transfer(
            tiny_st_config(_vq_config(16), style=_vq_config(32, ch=16), sga_blocks=2, continuous=True), 2)).eval(),
        style_output, style_codes, {}),
}
MODELS = pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))


def assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b) or set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


# --- save and load ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recorded", [True, False], ids=["with-metadata", "bare"])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@MODELS
def test_a_checkpoint_round_trip_gives_back_config_weights_metadata_and_outputs(
    tmp_path: Path, case: ModelCase, suffix: str, recorded: bool
) -> None:
    model = case.build()
    usage = {name: torch.arange(size, dtype=torch.int64) for name, size in case.books.items()}
    disc = {"main.0.weight": torch.randn(4, 3, 4, 4), "main.1.num_batches_tracked": torch.tensor(3)}
    options = {"step": 1234, "codebook_usage": usage, "extra": {"dataset": "wikiart", "lr": 4.5e-6},
               "extra_state_dicts": {"discriminator": disc}} if recorded else {"step": None}
    path = save_checkpoint(model, tmp_path / f"model{suffix}", **options)

    ckpt = load_checkpoint(path, expected_kind=case.kind)
    assert ckpt.source_format == ("native" if suffix == ".pt" else "safetensors")
    assert ckpt.kind == case.kind and ckpt.format_version == FORMAT_VERSION
    assert ckpt.config == model.config
    assert ckpt.metadata["quantart_version"] and re.match(r"\d{4}-\d\d-\d\dT", ckpt.metadata["created"])
    if recorded:
        assert ckpt.step == 1234
        assert ckpt.metadata["dataset"] == "wikiart" and ckpt.metadata["lr"] == pytest.approx(4.5e-6)
        if usage:
            assert set(ckpt.codebook_usage) == set(usage)
            for name, counts in usage.items():
                assert torch.equal(ckpt.codebook_usage[name], counts) and ckpt.codebook_usage[name].dtype == torch.int64
        else:
            assert ckpt.codebook_usage is None  # a model without codebooks records no usage
        assert_same_state(ckpt.extra_state_dicts["discriminator"], disc)
    else:
        assert ckpt.step is None and ckpt.codebook_usage is None and not ckpt.extra_state_dicts
    assert_same_state(ckpt.state_dict, model.state_dict())

    loaded = load_model(path, expected_kind=case.kind)
    assert type(loaded) is type(model) and not loaded.training
    assert torch.equal(case.run(loaded), case.run(model))
    assert not list(tmp_path.glob(".*.tmp")), "temp file left behind"


# --- determinism ------------------------------------------------------------------------------------------------


@MODELS
def test_the_same_input_gives_the_same_output_twice(case: ModelCase) -> None:
    model = case.build()
    first = case.run(model)
    assert torch.equal(case.run(model), first)
    assert torch.equal(case.run(case.build()), first)  # a model built the same way computes the same
    assert torch.isfinite(first).all()


# --- the original's keys ----------------------------------------------------------------------------------------


def _original_keys(path: Path, *, with_loss: bool = False) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """A spec key list (``key<TAB>shape<TAB>dtype``); the training-loss entries only ``with_loss``."""
    keys = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape, dtype = line.split("\t")
        if with_loss or not name.startswith("loss."):
            keys[name] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), getattr(torch, dtype))
    return keys


def _meta_state(keys: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> dict[str, torch.Tensor]:
    return {name: torch.empty(shape, dtype=dtype, device="meta") for name, (shape, dtype) in keys.items()}


@pytest.mark.parametrize(
    ("key_file", "build"),
    [
        ("taming_vqgan_f16_keys.txt", lambda: VQGAN()),
        ("taming_vqgan_f16_keys_16384.txt", lambda: VQGAN(VQGANConfig(quantizer={"n_embed": 16384}))),
        ("quantart_stage2_keys.txt", lambda: StyleTransfer()),
        ("quantart_stage2_continuous_keys.txt", lambda: StyleTransfer(StyleTransferConfig(continuous=True))),
    ],
    ids=["vqgan", "vqgan-16384", "style-transfer", "style-transfer-continuous"],
)
def test_the_originals_keys_load_strictly(key_file: str, build: Callable[[], torch.nn.Module]) -> None:
    """The default models are the original's: same keys, same shapes (on the meta device: the f16 models are
    72M / 112M parameters), a strict load of the original's key list misses and leaves over nothing, and the
    importer reads that key list (its loss entries included) as this very config."""
    expected = _original_keys(SPEC_KEYS / key_file)
    with torch.device("meta"):
        model = build()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: s for k, (s, _) in expected.items()}
    result = model.load_state_dict(_meta_state(expected), strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys

    imported = import_original_state_dict(_meta_state(_original_keys(SPEC_KEYS / key_file, with_loss=True)),
                                          source=key_file)
    assert imported.config == model.config and set(imported.state_dict) == set(expected)


# --- codes ------------------------------------------------------------------------------------------------------


@MODELS
def test_codes_decode_back_to_the_quantized_latent(tmp_path: Path, case: ModelCase) -> None:
    model = case.build()
    all_codes = case.codes(model)
    if not case.books:  # the continuous model: latents are never quantized, so there are no codes
        assert all(codes.indices is None and codes.quantizer is None for codes in all_codes)
        return
    for codes in all_codes:
        assert codes.indices is not None and codes.indices.dtype == torch.int64, codes.name
        assert codes.indices.shape == (codes.latent.shape[0], *codes.latent.shape[-2:]), codes.name
        torch.testing.assert_close(codes.quantizer.lookup(codes.indices), codes.latent, atol=1e-6, rtol=1e-5,
                                   msg=codes.name)
        # written to a code file (as `quantart encode` does) and read back: the same codes, the same latent
        grid_h, grid_w = codes.indices.shape[-2:]
        record = CodeRecord(codes.indices[0], grid_w * codes.factor, grid_h * codes.factor, (0, 0, 0, 0), "x.png")
        book = codes.quantizer.embedding.num_embeddings
        path = save_code_file(tmp_path / "codes.safetensors", CodeFile([record], "0" * 64, book, codes.factor))
        (back,) = load_code_file(path).records
        assert torch.equal(back.indices, codes.indices[0]), codes.name
        torch.testing.assert_close(codes.quantizer.lookup(back.indices[None]), codes.latent, atol=1e-6, rtol=1e-5,
                                   msg=codes.name)
    # decoding the codes is decoding the latent (the VQGAN's decode_indices, the style model's art decoder)
    last = all_codes[-1]
    with torch.no_grad():
        from_codes = (model.decode_indices(last.indices) if isinstance(model, VQGAN)
                      else model.decode(last.quantizer.lookup(last.indices)))
        torch.testing.assert_close(from_codes, model.decode(last.latent), atol=1e-4, rtol=1e-4)
