"""The stylize engine (quantart_cli.core.transfer.engine): alpha, visual fidelity, precision, sizes, tiling,
several styles, colour, the Python API."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import engine_test_model, seeded_style_transfer, smooth_image, tiny_preset_vq_config, tiny_st_config

from quantart_cli.core import precision
from quantart_cli.core.color_space import rgb_to_ycbcr
from quantart_cli.core.devices import set_memory_format
from quantart_cli.core.errors import UsageError
from quantart_cli.core.models import StyleTransfer
from quantart_cli.core.transfer.engine import Stylizer, preserve_content_color
from quantart_cli.core.transfer.options import StylizeOptions

pytestmark = pytest.mark.usefixtures("one_thread")


CONTENT = smooth_image(32, 48, 1)
STYLE = smooth_image(32, 32, 2)
STYLE_B = smooth_image(48, 32, 3)


def _run(model: StyleTransfer, content: torch.Tensor = CONTENT, styles=(STYLE,), cont=None, **options) -> torch.Tensor:
    options.setdefault("tiling", "never")
    return Stylizer(model, list(styles), StylizeOptions(**options), cont)(content).image


def test_alpha_endpoints_and_middle(model: StyleTransfer) -> None:
    with torch.inference_mode():
        zq_c, _ = model.encode_content(CONTENT)
        transfer = model.transfer(CONTENT, STYLE)
        content_decoded = model.decode(zq_c).clamp(-1, 1)
        full_style = model.decode(transfer.quant_y).clamp(-1, 1)
        middle = model.decode(0.3 * transfer.quant_y + 0.7 * zq_c).clamp(-1, 1)
    assert torch.allclose(_run(model, alpha=0.0), content_decoded, atol=1e-5)
    assert torch.allclose(_run(model, alpha=1.0), full_style, atol=1e-5)
    assert torch.allclose(_run(model, alpha=0.3), middle, atol=1e-5)
    assert (full_style - content_decoded).abs().mean() > 1e-3  # the endpoints really differ


def test_visual_fidelity_mixes_latents_and_decoder_weights(
    model: StyleTransfer, continuous_model: StyleTransfer
) -> None:
    a, b = 0.4, 0.7
    for engine_model in (model, continuous_model):
        set_memory_format(engine_model, True)  # as the engine runs them
    with torch.inference_mode():
        discrete = model.transfer(CONTENT, STYLE)
        continuous = continuous_model.transfer(CONTENT, STYLE)
        assert continuous.indices_y is None  # continuous: z_y is the SGA output itself
        z = a * (b * discrete.quant_y + (1 - b) * discrete.quant_x) + (1 - a) * (
            b * continuous.quant_y + (1 - b) * continuous.quant_x
        )
        by_hand = set_memory_format(engine_test_model(0), True)  # as the engine runs its models
        mixed = by_hand.state_dict()
        for key, value in continuous_model.state_dict().items():
            if key.startswith(("decoder.", "post_quant_conv.")):
                mixed[key] = a * mixed[key] + (1 - a) * value
        by_hand.load_state_dict(mixed)
        expected = by_hand.decode(z).clamp(-1, 1)
    got = _run(model, cont=continuous_model, alpha=b, visual_fidelity=a)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, _run(model, alpha=b), atol=1e-3)
    # visual fidelity 0 is the continuous model alone (its own decoder)
    with torch.inference_mode():
        only_continuous = continuous_model.decode(b * continuous.quant_y + (1 - b) * continuous.quant_x)
    got0 = _run(model, cont=continuous_model, alpha=b, visual_fidelity=0.0)
    assert torch.allclose(got0, only_continuous.clamp(-1, 1), atol=1e-5)


def test_bf16_stylizes_close_to_fp32_tiled_or_not_and_fp16_needs_cuda(
    model: StyleTransfer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantart_cli.core import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)  # else a CPU without bf16 runs fp32
    exact = _run(model, alpha=0.7)
    fast = _run(model, alpha=0.7, precision="bf16")
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    grey_levels = (fast - exact).abs() * 127.5
    assert 0 < float(grey_levels.mean()) < 4.0  # bf16 really ran, and stays close
    tiled = _run(model, alpha=0.7, precision="bf16", tiling="always", tile=16, overlap=0)
    assert float(((tiled - fast).abs() * 127.5).mean()) < 4.0
    with pytest.raises(UsageError, match="`precision=fp16` needs a CUDA GPU"):
        _run(model, precision="fp16")


def test_the_recipe_names_precision_only_when_it_is_not_fp32() -> None:
    from quantart_cli.core.transfer.files import Recipe

    plain = Recipe.of("m", ["s"], StylizeOptions(), None)
    assert "precision" not in plain.options  # outputs written before --precision existed stay current
    assert Recipe.of("m", ["s"], StylizeOptions(precision="bf16"), None).options["precision"] == "bf16"


@pytest.mark.parametrize("with_continuous", [False, True])
def test_an_alpha_sweep_equals_one_stylizer_per_alpha_and_encodes_once(
    model: StyleTransfer, continuous_model: StyleTransfer, with_continuous: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    alphas = [0.0, 0.3, 1.0]
    knobs = {"visual_fidelity": 0.6, "preserve_color": True} if with_continuous else {"size": 40}
    cont = continuous_model if with_continuous else None
    stylizer = Stylizer(model, [STYLE], StylizeOptions(alpha=1.0, **knobs), cont)
    calls = []
    encode = type(model).encode_content
    monkeypatch.setattr(type(model), "encode_content", lambda self, *a: calls.append(1) or encode(self, *a))
    swept = stylizer.sweep(CONTENT, alphas)
    assert len(calls) == (2 if with_continuous else 1)  # once per model, not once per alpha
    monkeypatch.undo()
    for alpha, out in zip(alphas, swept, strict=True):
        one = _run(model, alpha=alpha, cont=cont, **knobs)
        assert torch.equal(out.image, one), alpha
    assert not torch.equal(swept[0].image, swept[-1].image)
    with pytest.raises(UsageError, match="between 0 and 1"):
        stylizer.sweep(CONTENT, [1.5])
    with pytest.raises(UsageError, match="largest alpha"):
        Stylizer(model, [STYLE], StylizeOptions(alpha=0.0)).sweep(CONTENT, [0.5])


def test_visual_fidelity_needs_a_continuous_model(model: StyleTransfer) -> None:
    with pytest.raises(UsageError, match="`continuous_ckpt`"):
        _run(model, visual_fidelity=0.5)
    with pytest.raises(UsageError, match="continuous"):
        _run(model, cont=engine_test_model(5), visual_fidelity=0.5)  # a discrete model given as the continuous one


@pytest.mark.parametrize(
    ("height", "width", "size", "expected"),
    [(37, 53, None, (37, 53)), (17, 30, None, (17, 30)), (50, 30, 40, (40, 24))],
)
def test_any_size_round_trips(model: StyleTransfer, height: int, width: int, size, expected) -> None:
    out = _run(model, content=smooth_image(height, width, 4), size=size)
    assert tuple(out.shape) == (1, 3, *expected)
    assert out.abs().max() <= 1.0


def _one_channel_per_group_model() -> StyleTransfer:
    """The shape of the ``tiny`` presets: 32 latent channels, so each GroupNorm of the SGA module (32 groups) holds
    one channel, which a 1x1 latent cannot normalize."""
    return seeded_style_transfer(tiny_st_config(tiny_preset_vq_config()), 0).eval()


@pytest.mark.parametrize(("height", "width"), [(5, 7), (1, 1), (8, 8)])
def test_photos_and_paintings_smaller_than_two_latent_cells_are_stylized(height: int, width: int) -> None:
    """Issue 25: a 7x5 photo ended a batch with "Expected more than 1 value per channel"; the padding now reaches
    a latent of at least 2x2."""
    model = _one_channel_per_group_model()
    out = _run(model, content=smooth_image(height, width, 4), styles=(smooth_image(height, width, 5),))
    assert tuple(out.shape) == (1, 3, height, width)
    assert torch.isfinite(out).all()


def test_single_tile_equals_untiled_and_tiles_change_little(model: StyleTransfer) -> None:
    content = smooth_image(64, 64, 6)
    untiled = _run(model, content=content, alpha=0.0)
    one_tile = _run(model, content=content, alpha=0.0, tiling="always", tile=128, overlap=32)
    assert torch.allclose(one_tile, untiled, atol=1e-5)
    stylizer = Stylizer(model, [STYLE], StylizeOptions(tiling="auto", tile_threshold=32))
    assert stylizer.options.tiles(64, 64) and not stylizer.options.tiles(32, 32)
    tiled = stylizer(content)
    assert tiled.tiled and tuple(tiled.image.shape) == (1, 3, 64, 64)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_tiled_stylize_matches_untiled_within_a_grey_level(model: StyleTransfer, alpha: float) -> None:
    """The issue's target end to end (encoder, quantizer, SGA, decoder): tiled output within 1/255 mean absolute
    difference of untiled output, here with 3x2 tiles on an odd-sized photo (padding and crop included)."""
    content = smooth_image(101, 87, 8)
    untiled = _run(model, content=content, alpha=alpha)
    tiled = _run(model, content=content, alpha=alpha, tiling="always", tile=48, overlap=16)
    assert tiled.shape == untiled.shape == (1, 3, 101, 87)
    assert (tiled - untiled).abs().mean().item() * 255 / 2 < 1.0


def test_style_weights(model: StyleTransfer) -> None:
    single = _run(model, styles=(STYLE,))
    assert torch.allclose(_run(model, styles=(STYLE, STYLE_B), style_weights=(1.0, 0.0)), single, atol=1e-5)
    other = _run(model, styles=(STYLE_B,))
    blend = _run(model, styles=(STYLE, STYLE_B), style_weights=(0.5, 0.5))
    assert not torch.allclose(blend, single, atol=1e-3) and not torch.allclose(blend, other, atol=1e-3)
    with pytest.raises(UsageError):
        _run(model, styles=(STYLE, STYLE_B), style_weights=(1.0,))


def test_preserve_color_keeps_content_chroma(model: StyleTransfer) -> None:
    content = smooth_image(32, 32, 7) * 0.4  # mid tones: no clipping after the chroma swap
    stylized = _run(model, content=content)
    kept = _run(model, content=content, preserve_color=True)
    got, want = rgb_to_ycbcr(kept), rgb_to_ycbcr(content)
    unclipped = (kept.abs() < 0.999) & (stylized.abs() < 0.999)  # clamping changes colours where it acts
    inside = unclipped.all(dim=1, keepdim=True).expand(-1, 2, -1, -1)
    assert inside.float().mean() > 0.5
    assert torch.allclose(got[:, 1:][inside], want[:, 1:][inside], atol=1e-4)
    luma_inside = inside[:, :1]
    assert torch.allclose(got[:, :1][luma_inside], rgb_to_ycbcr(stylized)[:, :1][luma_inside], atol=1e-4)
    assert torch.allclose(preserve_content_color(content, content), content, atol=1e-5)


def test_python_api_on_pil_and_tensors(model: StyleTransfer) -> None:
    from quantart_cli import stylize_images

    pil = Image.fromarray(np.random.default_rng(0).integers(0, 255, (21, 34, 3), dtype=np.uint8))
    out = stylize_images(model, pil, STYLE[0], alpha=0.5)
    assert isinstance(out, Image.Image) and out.size == (34, 21)
    tensor_out = stylize_images(model, CONTENT[0], [STYLE, STYLE_B], alpha=1.0, style_weights=[1, 0])
    assert tensor_out.shape == CONTENT[0].shape
    assert torch.allclose(tensor_out, _run(model)[0], atol=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        stylize_images(model, pil, STYLE[0], alpha=1.5)


def test_the_unreleased_spellings_are_gone(model: StyleTransfer) -> None:
    """The model does not reach up into the engine (no StyleTransfer.stylize), and tile_norm has one name."""
    from quantart_cli import stylize_images

    assert not hasattr(model, "stylize")
    with pytest.raises(ValueError, match="norm_stats"):
        stylize_images(model, CONTENT[0], STYLE[0], alpha=0.5, norm_stats="image")


def test_bf16_without_native_bf16_runs_fp32_with_a_note_in_python(monkeypatch):
    from quantart_cli.core.transfer.engine import Stylizer
    from quantart_cli.core.transfer.options import StylizeOptions

    model = engine_test_model(0)
    gen = torch.Generator().manual_seed(1)
    content, style = torch.rand(1, 3, 32, 48, generator=gen) * 2 - 1, torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1
    exact = Stylizer(model, [style], StylizeOptions(alpha=0.7))(content).image
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match=r"fp32") as caught:
        slow_cpu = Stylizer(model, [style], StylizeOptions(alpha=0.7, precision="bf16"))
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert slow_cpu.options.precision == "fp32"
    assert torch.equal(slow_cpu(content).image, exact)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast_cpu = Stylizer(model, [style], StylizeOptions(alpha=0.7, precision="bf16"))
    assert fast_cpu.options.precision == "bf16"
    assert not torch.equal(fast_cpu(content).image, exact)  # bf16 really ran
