"""Tiled encode/decode: the split equals the whole model, tile plans cover the image, blending hides seams."""

from __future__ import annotations

import pytest
import torch
from tiny_models import seeded_vqgan, tiny_vq_config

from quantart_cli.core.errors import UsageError
from quantart_cli.core.models import VQGAN
from quantart_cli.core.transfer.tile_plan import feather_ramp, own_span, plan_tiles, tile_starts
from quantart_cli.core.transfer.tiling import _schedule, decode_tiled, encode_tiled
from quantart_cli.core.transfer.units import Unit, decoder_high, decoder_low, encoder_high, encoder_low

pytestmark = pytest.mark.usefixtures("one_thread")

Z = 8  # latent channels of the micro model


@pytest.fixture(scope="module")
def vqgan() -> VQGAN:
    """A micro VQGAN (factor 4, 32-channel GroupNorms, attention at the lowest level) so tests stay fast."""
    return _micro((16,))


def _smooth_image(size: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size, size, generator=gen) * 2 - 1
    return torch.nn.functional.avg_pool2d(x, 9, 1, 4) * 3


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().mean() / b.abs().mean()).item()


def test_split_parts_equal_the_whole_models(vqgan: VQGAN) -> None:
    x = _smooth_image(64)
    z = torch.randn(1, Z, 3, 5)
    with torch.inference_mode():
        assert torch.equal(encoder_low(vqgan.encoder, encoder_high(vqgan.encoder, x)), vqgan.encoder(x))
        assert torch.equal(decoder_high(vqgan.decoder, decoder_low(vqgan.decoder, z)), vqgan.decoder(z))


@pytest.mark.parametrize(("length", "tile", "overlap", "align"), [(100, 30, 8, 1), (64, 16, 4, 2), (17, 8, 3, 1)])
def test_tile_starts_cover_with_the_requested_overlap(length: int, tile: int, overlap: int, align: int) -> None:
    starts = tile_starts(length, tile, overlap, align)
    assert starts[0] == 0 and starts[-1] + tile == length
    assert all(s % align == 0 for s in starts)
    assert all(0 < b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))


def test_tile_plan_own_parts_partition_the_image() -> None:
    tiles = plan_tiles(20, 33, 12, 4)
    for scale in (1, 2, 4):
        covered = torch.zeros(20 * scale, 33 * scale)
        for t in tiles:
            assert t.top <= t.own_top < t.own_bottom <= t.top + t.height
            rows, cols = own_span(t.own_top, t.own_bottom, scale), own_span(t.own_left, t.own_right, scale)
            covered[rows[0] : rows[1], cols[0] : cols[1]] += 1
        assert torch.equal(covered, torch.ones(20 * scale, 33 * scale))
    assert plan_tiles(8, 8, 12, 4) == plan_tiles(8, 8, 8, 0)[:1]


def test_feather_ramp_is_positive_and_ramps_only_at_inner_edges() -> None:
    ramp = feather_ramp(32, 16, at_start=True, at_end=False)
    assert (ramp > 0).all() and ramp[-1] == 1 and ramp[0] < 0.01
    assert torch.all(ramp[1:] >= ramp[:-1])
    assert torch.equal(feather_ramp(32, 0, True, True), torch.ones(32))


def test_bad_tiling_options_are_refused(vqgan: VQGAN) -> None:
    with pytest.raises(UsageError):
        decode_tiled(vqgan.decoder, torch.randn(1, Z, 4, 4), tile=30, overlap=8)
    with pytest.raises(UsageError):
        decode_tiled(vqgan.decoder, torch.randn(1, Z, 4, 4), tile=64, overlap=32, norm_stats="tile")
    with pytest.raises(UsageError):
        decode_tiled(vqgan.decoder, torch.randn(1, Z, 4, 4), tile=64, norm_stats="other")  # type: ignore[arg-type]
    # Exact tiling reads halos instead of blending overlaps: the overlap is not its concern.
    z = torch.randn(1, Z, 4, 4)
    with torch.inference_mode():
        torch.testing.assert_close(
            decode_tiled(vqgan.decoder, z, tile=8, overlap=32), vqgan.decoder(z), atol=2e-5, rtol=0
        )


def test_single_tile_equals_untiled(vqgan: VQGAN) -> None:
    x = _smooth_image(64)
    with torch.inference_mode():  # float rounding only: the tiled path computes GroupNorm statistics itself
        assert torch.allclose(encode_tiled(vqgan.encoder, x, tile=64, overlap=16), vqgan.encoder(x), atol=1e-5)
        z = torch.randn(1, Z, 16, 16)
        assert torch.allclose(decode_tiled(vqgan.decoder, z, tile=64, overlap=16), vqgan.decoder(z), atol=1e-5)


def test_overlap_blending_beats_seamy_tiles(vqgan: VQGAN) -> None:
    """Per-tile statistics: the deliberately seamy no-overlap tiling is the yardstick for blending."""
    torch.manual_seed(3)
    z = torch.randn(1, Z, 40, 40)
    with torch.inference_mode():
        whole = vqgan.decoder(z)
        seamy = _rel(decode_tiled(vqgan.decoder, z, tile=64, overlap=0, norm_stats="tile"), whole)
        blended = _rel(decode_tiled(vqgan.decoder, z, tile=64, overlap=24, norm_stats="tile"), whole)
    assert blended < 0.8 * seamy


def _micro(attn_resolutions: tuple[int, ...]) -> VQGAN:
    config = tiny_vq_config(ch=32, ch_mult=(1, 1, 2), attn_resolutions=attn_resolutions, resolution=64, z_channels=Z)
    return seeded_vqgan(config, 0).eval()


@pytest.mark.parametrize("buffer_bytes", [2**31, 0, 200_000], ids=["all-stored", "recompute-all", "some-stored"])
@pytest.mark.parametrize("attn", [(16,), (16, 32)], ids=["attn-low", "attn-in-tiled-part"])
def test_image_norm_tiling_equals_the_untiled_model(buffer_bytes: int, attn: tuple[int, ...]) -> None:
    """Exact tiling: odd grids, a batch of two, tiles that do not divide the image, every buffer budget, and
    attention inside the tiled part (run on the whole image) all give the untiled result to float rounding."""
    model = _micro(attn)
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(2, Z, 37, 29, generator=gen)
    x = torch.randn(2, 3, 148, 116, generator=gen)
    with torch.inference_mode():
        decoded = decode_tiled(model.decoder, z, tile=48, overlap=8, buffer_bytes=buffer_bytes)
        encoded = encode_tiled(model.encoder, x, tile=32, overlap=8, buffer_bytes=buffer_bytes)
        torch.testing.assert_close(decoded, model.decoder(z), atol=2e-5, rtol=0)
        torch.testing.assert_close(encoded, model.encoder(x), atol=2e-5, rtol=0)


def test_image_norm_tiling_needs_the_halo(vqgan: VQGAN, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the receptive-field halo the tiles' borders are wrong: the halo is what makes tiling exact."""
    import dataclasses

    import quantart_cli.core.transfer.tiling as tiling

    real = tiling.decoder_units
    monkeypatch.setattr(tiling, "decoder_units", lambda d: [dataclasses.replace(u, radius=0) for u in real(d)])
    z = torch.randn(1, Z, 37, 29, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        error = (decode_tiled(vqgan.decoder, z, tile=32, overlap=8) - vqgan.decoder(z)).abs().max().item()
    assert error > 1e-2


def _unit(channels: tuple[int, ...] = (4,), keeps: int | None = None, local: bool = True, cost: float = 1.0) -> Unit:
    return Unit(lambda *state: state, 1, 1, 1, channels, cost, torch.nn.GroupNorm(1, 4), 0, keeps, local)


def test_schedule_keeps_what_fits_and_recomputes_least() -> None:
    """Two resnet blocks (halves A, cost 2, and B, cost 1) and a head; a buffer of 4 channels takes 4 bytes."""
    half_a, half_b = _unit((4, 4), keeps=0, cost=2.0), _unit()
    units = [half_a, half_b, half_a, half_b, _unit()]
    stored = [4] + [sum(u.channels) for u in units]
    assert _schedule(units, stored, 1000) == [0, 1, 2, 3, 4]  # everything stored: no recomputation
    # Input + block output fit (8) but not A's two tensors plus B's output (12). The first block runs whole
    # (B's statistics pass recomputes A: 2); the second stores A's state and runs B with the head, whose
    # statistics pass recomputes only B (1) instead of A (2) again.
    assert _schedule(units, stored, 8) == [1, 2, 4]
    assert _schedule(units, stored, 0) == [4]  # nothing fits: one segment to the end
    with_attention = [half_a, half_b, _unit(local=False), half_a, half_b]
    # Attention sees the whole image: its input and output are stored whatever the budget.
    assert _schedule(with_attention, [4] + [sum(u.channels) for u in with_attention], 0) == [1, 2, 4]
