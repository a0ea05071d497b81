"""PatchGAN discriminator, LPIPS factory and the two training losses, checked against hand computations; the
discriminator's augmentation and the optional adaptive weight before disc_start."""

from __future__ import annotations

import math
import re
import urllib.error
from pathlib import Path

import pydantic
import pytest
import torch
import torch.nn.functional as F
from golden_files import SPEC_KEYS
from repo_root import REPO
from torch import nn

from quantart_cli.core.errors import BadInputError, NotFoundError
from quantart_cli.core.losses.config import StyleTransferLossConfig, VQGANLossConfig
from quantart_cli.core.losses.gan import (
    adaptive_gan_weight,
    adopt_weight,
    augment_for_discriminator,
    hinge_d_loss,
    vanilla_d_loss,
)
from quantart_cli.core.losses.style_transfer import StyleTransferLoss, style_statistics
from quantart_cli.core.losses.vqgan import VQGANLoss
from quantart_cli.core.nn.discriminator import NLayerDiscriminator

# (key, shape) of the original `loss.discriminator.*` entries, prefix stripped (spec/*_keys.txt).
STAGE1_DISC_KEYS = {
    "main.0.weight": (64, 3, 4, 4),
    "main.0.bias": (64,),
    "main.2.weight": (128, 64, 4, 4),
    "main.3.weight": (128,),
    "main.3.bias": (128,),
    "main.3.running_mean": (128,),
    "main.3.running_var": (128,),
    "main.3.num_batches_tracked": (),
    "main.5.weight": (256, 128, 4, 4),
    "main.6.weight": (256,),
    "main.6.bias": (256,),
    "main.6.running_mean": (256,),
    "main.6.running_var": (256,),
    "main.6.num_batches_tracked": (),
    "main.8.weight": (512, 256, 4, 4),
    "main.9.weight": (512,),
    "main.9.bias": (512,),
    "main.9.running_mean": (512,),
    "main.9.running_var": (512,),
    "main.9.num_batches_tracked": (),
    "main.11.weight": (1, 512, 4, 4),
    "main.11.bias": (1,),
}
STAGE2_DISC_KEYS = {
    "main.0.weight": (64, 256, 4, 4),
    "main.0.bias": (64,),
    "main.2.weight": (64, 64, 4, 4),
    "main.3.weight": (64,),
    "main.3.bias": (64,),
    "main.3.running_mean": (64,),
    "main.3.running_var": (64,),
    "main.3.num_batches_tracked": (),
    "main.5.weight": (1, 64, 4, 4),
    "main.5.bias": (1,),
}


def _spec_dir() -> Path | None:
    for candidate in (SPEC_KEYS, REPO.parent / "shared" / "spec"):
        if (candidate / "taming_vqgan_f16_keys.txt").is_file():
            return candidate
    return None


def _spec_disc_keys(filename: str) -> dict[str, tuple[int, ...]]:
    spec_dir = _spec_dir()
    if spec_dir is None:
        pytest.skip("spec/*_keys.txt not found next to the repository")
    keys = {}
    for line in (spec_dir / filename).read_text().splitlines():
        if line.startswith("loss.discriminator."):
            key, shape, _dtype = line.split("\t")
            keys[key.removeprefix("loss.discriminator.")] = tuple(int(n) for n in re.findall(r"\d+", shape))
    return keys


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- discriminator -------------------------------------------------------------------------------


def test_stage1_discriminator_layout_params_and_output_size() -> None:
    disc = NLayerDiscriminator(3, ndf=64, n_layers=3)
    assert _n_params(disc) == 2_765_633
    assert _shapes(disc) == STAGE1_DISC_KEYS
    kinds = {i: type(m).__name__ for i, m in enumerate(disc.main)}
    assert [i for i, k in kinds.items() if k == "Conv2d"] == [0, 2, 5, 8, 11]
    assert [i for i, k in kinds.items() if k == "BatchNorm2d"] == [3, 6, 9]
    assert [disc.main[i].stride for i in (0, 2, 5, 8, 11)] == [(2, 2), (2, 2), (2, 2), (1, 1), (1, 1)]
    assert all(disc.main[i].negative_slope == 0.2 for i, k in kinds.items() if k == "LeakyReLU")
    with torch.no_grad():
        assert disc.eval()(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)


def test_stage2_discriminator_layout_params_and_output_size() -> None:
    disc = NLayerDiscriminator(256, ndf=64, n_layers=0)
    assert _n_params(disc) == 328_897
    assert _shapes(disc) == STAGE2_DISC_KEYS
    assert disc.main[2].bias is None and isinstance(disc.main[3], nn.BatchNorm2d)
    with torch.no_grad():
        assert disc.eval()(torch.randn(2, 256, 16, 16)).shape == (2, 1, 6, 6)


@pytest.mark.parametrize(
    ("filename", "in_channels", "n_layers"),
    [("taming_vqgan_f16_keys.txt", 3, 3), ("quantart_stage2_keys.txt", 256, 0)],
)
def test_discriminator_keys_match_original_key_lists(filename: str, in_channels: int, n_layers: int) -> None:
    expected = _spec_disc_keys(filename)
    assert expected, f"no loss.discriminator keys parsed from {filename}"
    assert _shapes(NLayerDiscriminator(in_channels, n_layers=n_layers)) == expected


def test_discriminator_init_statistics() -> None:
    torch.manual_seed(0)
    disc = NLayerDiscriminator(3, ndf=64, n_layers=3)
    big_conv = disc.main[8].weight  # 2M samples: tight estimates
    assert abs(big_conv.mean().item()) < 1e-3
    assert big_conv.std().item() == pytest.approx(0.02, rel=0.01)
    bn_weights = torch.cat([disc.main[i].weight.detach() for i in (3, 6, 9)])
    assert bn_weights.mean().item() == pytest.approx(1.0, abs=0.005)
    assert bn_weights.std().item() == pytest.approx(0.02, rel=0.15)
    assert all(torch.count_nonzero(disc.main[i].bias) == 0 for i in (3, 6, 9))
    # Conv biases keep PyTorch's default uniform init, as in the original.
    assert torch.count_nonzero(disc.main[0].bias) == 64


def test_discriminator_rejects_unknown_norm() -> None:
    with pytest.raises(ValueError, match="norm"):
        NLayerDiscriminator(3, norm="instance")  # type: ignore[arg-type]


# --- GAN losses and helpers ----------------------------------------------------------------------


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_hinge_and_vanilla_against_hand_values() -> None:
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.5])
    # relu(1 - real) = [0, 0.5, 2]; relu(1 + fake) = [0, 1, 2.5]
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (2.5 / 3 + 3.5 / 3))
    vanilla = 0.5 * (sum(_softplus(-r) for r in (2.0, 0.5, -1.0)) / 3 + sum(_softplus(f) for f in (-2.0, 0.0, 1.5)) / 3)
    assert vanilla_d_loss(real, fake).item() == pytest.approx(vanilla, rel=1e-6)


def test_adopt_weight_switches_at_start() -> None:
    assert adopt_weight(0.8, 9, 10) == 0.0
    assert adopt_weight(0.8, 10, 10) == 0.8


def test_disc_loss_kind_is_validated() -> None:
    with pytest.raises(pydantic.ValidationError):
        VQGANLossConfig(disc_loss="wasserstein")  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError):
        StyleTransferLossConfig(disc_weigth=1.0)  # type: ignore[call-arg]


def test_adaptive_weight_clamps_at_1e4() -> None:
    weight = torch.ones(3, requires_grad=True)
    nll = 1e6 * (weight**2).sum()  # grad norm 2e6 * sqrt(3)
    g_loss = 1e-3 * weight.sum()  # grad norm 1.7e-3
    assert adaptive_gan_weight(nll, g_loss, weight, disc_weight=0.5).item() == pytest.approx(0.5e4)


def test_adaptive_weight_formula_on_simple_graph() -> None:
    weight = torch.tensor([3.0, 4.0], requires_grad=True)
    nll = (weight**2).sum() / 2  # grad = weight, norm 5
    g_loss = 2.0 * weight.sum()  # grad = [2, 2], norm 2*sqrt(2)
    expected = 0.8 * 5.0 / (2.0 * math.sqrt(2.0) + 1e-4)
    result = adaptive_gan_weight(nll, g_loss, weight, disc_weight=0.8)
    assert result.item() == pytest.approx(expected, rel=1e-6)
    assert not result.requires_grad


def test_adaptive_weight_is_zero_without_graph_and_rejects_unused_layer() -> None:
    weight = torch.ones(2, requires_grad=True)
    with torch.no_grad():
        nll, g_loss = (weight**2).sum(), weight.sum()
    assert adaptive_gan_weight(nll, g_loss, weight).item() == 0.0
    nll, g_loss = (weight**2).sum(), weight.sum()
    assert adaptive_gan_weight(nll, g_loss, None).item() == 0.0
    with pytest.raises(ValueError, match="last_layer"):
        adaptive_gan_weight(nll, g_loss, torch.ones(2, requires_grad=True))


# --- stage-1 loss --------------------------------------------------------------------------------


def _tiny_stage1(**overrides: object) -> tuple[VQGANLoss, nn.Conv2d, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss with a tiny D, no LPIPS; a single conv stands in for the decoder's last layer."""
    torch.manual_seed(0)
    config = VQGANLossConfig(
        **{"perceptual_weight": 0.0, "disc_ndf": 8, "disc_num_layers": 1, "disc_start": 5, **overrides}
    )
    loss = VQGANLoss(config)
    decoder_out = nn.Conv2d(4, 3, 3, padding=1)
    features = torch.randn(2, 4, 16, 16)
    inputs = torch.randn(2, 3, 16, 16)
    reconstructions = decoder_out(features)
    return loss, decoder_out, features, inputs, reconstructions


def test_stage1_generator_terms_match_hand_computation() -> None:
    loss, decoder_out, _features, x, x_rec = _tiny_stage1(codebook_weight=0.7, disc_weight=0.8, disc_factor=0.9)
    vq_loss = torch.tensor(0.3)
    total, logs = loss.generator_loss(x, x_rec, vq_loss, step=5, last_layer=decoder_out.weight)

    nll = (x - x_rec).abs().mean()
    g_loss = -loss.discriminator(x_rec).mean()  # train-mode BN: same batch, same logits
    w = decoder_out.weight
    grad_nll = torch.autograd.grad(nll, w, retain_graph=True)[0]
    grad_g = torch.autograd.grad(g_loss, w, retain_graph=True)[0]
    d_weight = 0.8 * min(max(grad_nll.norm().item() / (grad_g.norm().item() + 1e-4), 0.0), 1e4)
    expected_total = nll.item() + d_weight * 0.9 * g_loss.item() + 0.7 * 0.3

    assert logs["nll"].item() == pytest.approx(nll.item(), rel=1e-6)
    assert logs["rec_l1"].item() == pytest.approx(nll.item(), rel=1e-6)
    assert logs["perceptual"].item() == 0.0
    assert logs["g_loss"].item() == pytest.approx(g_loss.item(), rel=1e-5)
    assert logs["d_weight"].item() == pytest.approx(d_weight, rel=1e-5)
    assert logs["disc_factor"].item() == pytest.approx(0.9)
    assert logs["vq"].item() == pytest.approx(0.3)
    assert total.item() == pytest.approx(expected_total, rel=1e-5)
    assert logs["total"].item() == pytest.approx(expected_total, rel=1e-5)
    assert all(not v.requires_grad and v.dtype == torch.float32 and v.dim() == 0 for v in logs.values())
    # d_weight is a constant: the total's gradient is grad(nll) + d_weight * disc_factor * grad(g).
    grad_total = torch.autograd.grad(total, w)[0]
    torch.testing.assert_close(grad_total, grad_nll + d_weight * 0.9 * grad_g, rtol=1e-4, atol=1e-7)


def test_stage1_before_disc_start_runs_d_but_keeps_it_out_of_the_loss() -> None:
    """As the original: D runs and the adaptive weight is computed at every step (D's BatchNorm statistics move,
    and the logs show them); before disc_start the factor 0 keeps the GAN term out of the loss."""
    loss, decoder_out, _features, x, x_rec = _tiny_stage1()
    calls = []
    loss.discriminator.register_forward_hook(lambda *_: calls.append(1))
    total, logs = loss.generator_loss(x, x_rec, torch.tensor(0.25), step=4, last_layer=decoder_out.weight)
    assert calls == [1]
    assert set(logs) == {"total", "nll", "rec_l1", "perceptual", "chroma", "g_loss", "d_weight", "disc_factor", "vq"}
    assert logs["disc_factor"].item() == 0.0 and logs["g_loss"].item() != 0.0 and logs["d_weight"].item() > 0.0
    assert total.item() == pytest.approx((x - x_rec).abs().mean().item() + 0.25, rel=1e-6)
    _, later = loss.generator_loss(x, x_rec, torch.tensor(0.25), step=5, last_layer=decoder_out.weight)
    assert calls == [1, 1] and later["disc_factor"].item() > 0


def test_stage1_eval_without_graph_gives_zero_adaptive_weight() -> None:
    loss, decoder_out, features, x, _ = _tiny_stage1()
    with torch.no_grad():
        x_rec = decoder_out(features)
        total, logs = loss.generator_loss(x, x_rec, 0.0, step=10, last_layer=decoder_out.weight)
    assert logs["d_weight"].item() == 0.0
    assert logs["g_loss"].item() != 0.0  # D still ran and is logged
    assert total.item() == pytest.approx(logs["nll"].item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["hinge", "vanilla"])
def test_stage1_discriminator_step(kind: str) -> None:
    loss, decoder_out, _features, x, x_rec = _tiny_stage1(disc_loss=kind, disc_factor=0.5)
    d_loss, logs = loss.discriminator_loss(x, x_rec, step=5)
    logits_real, logits_fake = loss.discriminator(x), loss.discriminator(x_rec.detach())
    reference = hinge_d_loss if kind == "hinge" else vanilla_d_loss
    assert d_loss.item() == pytest.approx(0.5 * reference(logits_real, logits_fake).item(), rel=1e-5)
    assert logs["logits_real"].item() == pytest.approx(logits_real.mean().item(), rel=1e-5)
    assert logs["logits_fake"].item() == pytest.approx(logits_fake.mean().item(), rel=1e-5)
    d_loss.backward()
    assert decoder_out.weight.grad is None  # reconstructions are detached for D's step
    assert loss.discriminator.main[0].weight.grad is not None
    d_loss_before, _ = loss.discriminator_loss(x, x_rec, step=4)
    assert d_loss_before.item() == 0.0


def test_stage1_under_cpu_autocast_is_close_to_fp32() -> None:
    loss, decoder_out, features, x, _ = _tiny_stage1()
    loss.discriminator.eval()  # fixed BN statistics so both runs see the same D
    reference, ref_logs = loss.generator_loss(x, decoder_out(features), 0.1, step=5, last_layer=decoder_out.weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, logs = loss.generator_loss(x, decoder_out(features), 0.1, step=5, last_layer=decoder_out.weight)
    assert total.dtype == torch.float32 and torch.isfinite(total)
    assert logs["d_weight"].item() == pytest.approx(ref_logs["d_weight"].item(), rel=0.1)
    assert total.item() == pytest.approx(reference.item(), rel=0.05)


# --- LPIPS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_lpips() -> nn.Module:
    from quantart_cli.core.losses.perceptual import build_lpips

    torch.manual_seed(0)
    return build_lpips(pretrained_backbone=False)


def test_lpips_values_frozen_and_eval(random_lpips: nn.Module) -> None:
    torch.manual_seed(1)
    a = torch.rand(2, 3, 32, 32) * 2 - 1
    b = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        distance = random_lpips(a, b)
        same = random_lpips(a, a)
    assert distance.shape == (2, 1, 1, 1)
    assert torch.isfinite(distance).all() and (distance > 0).all()
    assert same.abs().max().item() < 1e-6
    assert all(not p.requires_grad for p in random_lpips.parameters())
    from quantart_cli.core.losses.perceptual import lpips_linear_weights_path

    # The calibrated linear heads load even with a random backbone (lpips loads them with strict=False).
    heads = torch.load(lpips_linear_weights_path(), map_location="cpu", weights_only=True)
    assert sorted(heads) == [f"lin{i}.model.1.weight" for i in range(5)]
    for key, value in heads.items():
        torch.testing.assert_close(random_lpips.state_dict()[key], value)
    parent = nn.Sequential(random_lpips)
    parent.train()  # a recursive train() must not re-enable LPIPS dropout
    assert not any(m.training for m in random_lpips.modules())
    with torch.no_grad():
        torch.testing.assert_close(random_lpips(a, b), distance)


def test_stage1_perceptual_term_broadcasts_per_pixel(random_lpips: nn.Module) -> None:
    torch.manual_seed(2)
    loss = VQGANLoss(VQGANLossConfig(perceptual_weight=0.5, disc_ndf=8, disc_num_layers=1), perceptual=random_lpips)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_rec = torch.rand(2, 3, 32, 32) * 2 - 1
    _, logs = loss.generator_loss(x, x_rec, 0.0, step=0)
    with torch.no_grad():
        p = random_lpips(x, x_rec).mean().item()
    assert logs["perceptual"].item() == pytest.approx(p, rel=1e-5) and p > 0
    assert logs["nll"].item() == pytest.approx((x - x_rec).abs().mean().item() + 0.5 * p, rel=1e-5)
    assert "perceptual_loss.lin0.model.1.weight" in loss.state_dict()


def _fail_download(calls: list[str]):
    def fake_download(url: str, dst: str, *args: object, **kwargs: object) -> None:
        calls.append(url)
        raise urllib.error.URLError("no network")

    return fake_download


def test_missing_vgg_download_names_file_and_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from quantart_cli.core.losses.perceptual import build_lpips

    calls: list[str] = []
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _fail_download(calls))
    with pytest.raises(NotFoundError) as excinfo:
        build_lpips(pretrained_backbone=True)
    message = str(excinfo.value)
    folder = tmp_path / "hub" / "checkpoints"
    assert calls and calls[0].endswith("vgg16-397923af.pth")
    assert "vgg16-397923af.pth" in message and f"put it in {folder}." in message
    assert message.endswith(".") and ". " not in message  # one sentence
    assert excinfo.value.exit_code == 3
    assert capsys.readouterr().out == ""  # lpips' "Setting up [LPIPS]" banner stays off stdout


def test_corrupt_cached_vgg_file_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from quantart_cli.core.losses.perceptual import build_lpips

    calls: list[str] = []
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _fail_download(calls))
    cached = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError, match="could not be loaded"):
        build_lpips(pretrained_backbone=True)
    assert calls == []


# --- stage-2 loss --------------------------------------------------------------------------------


def test_style_statistics_use_unbiased_variance_plus_eps() -> None:
    latent = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]], [[5.0, 5.0], [5.0, 5.0]]]])  # (1, 2, 2, 2)
    mean, std = style_statistics(latent)
    assert mean.shape == std.shape == (1, 2)
    # channel 0: mean 3, unbiased var (4 + 1 + 0 + 9) / 3; channel 1 is constant: std = sqrt(1e-5)
    torch.testing.assert_close(mean, torch.tensor([[3.0, 5.0]]))
    torch.testing.assert_close(std, torch.tensor([[math.sqrt(14 / 3 + 1e-5), math.sqrt(1e-5)]]))
    with pytest.raises(ValueError, match="spatial"):
        style_statistics(torch.ones(1, 2, 1, 1))


def _tiny_stage2(**overrides: object) -> tuple[StyleTransferLoss, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    loss = StyleTransferLoss(StyleTransferLossConfig(**{"disc_in_channels": 8, "disc_ndf": 8, **overrides}))
    quant_y = torch.randn(2, 8, 16, 16, requires_grad=True)
    quant_x = torch.randn(2, 8, 16, 16, requires_grad=True)  # requires grad only to prove it gets none
    quant_ref = 0.5 * torch.randn(2, 8, 16, 16) + 1.0
    return loss, quant_y, quant_x, quant_ref


def _hand_std(latent: torch.Tensor) -> torch.Tensor:
    flat = latent.detach().flatten(2)
    centred = flat - flat.mean(-1, keepdim=True)
    return ((centred**2).sum(-1) / (flat.shape[-1] - 1) + 1e-5).sqrt()


def test_stage2_generator_terms_match_hand_computation() -> None:
    weights = {"reverse_weight": 0.5, "codebook1_weight": 2.0, "style_weight": 3.0, "disc_weight": 1.5}
    loss, quant_y, quant_x, quant_ref = _tiny_stage2(disc_factor=0.8, **weights)
    total, logs = loss.generator_loss(quant_y, quant_x, quant_ref, torch.tensor(0.2), step=0)

    y, x = quant_y.detach(), quant_x.detach()
    reverse = ((y - x) ** 2).mean().item()
    style_mean = ((y.mean((2, 3)) - quant_ref.mean((2, 3))) ** 2).mean().item()
    style_std = ((_hand_std(y) - _hand_std(quant_ref)) ** 2).mean().item()
    g_loss = -loss.discriminator(y).mean().item()
    expected = 0.5 * reverse + 2.0 * 0.2 + 3.0 * (style_mean + style_std) + 1.5 * 0.8 * g_loss

    assert logs["reverse"].item() == pytest.approx(reverse, rel=1e-5)
    assert logs["style_mean"].item() == pytest.approx(style_mean, rel=1e-5)
    assert logs["style_std"].item() == pytest.approx(style_std, rel=1e-5)
    assert logs["style"].item() == pytest.approx(style_mean + style_std, rel=1e-5)
    assert logs["g_loss"].item() == pytest.approx(g_loss, rel=1e-5)
    assert logs["vq"].item() == pytest.approx(0.2)
    assert logs["disc_factor"].item() == pytest.approx(0.8)
    assert total.item() == pytest.approx(expected, rel=1e-5)
    assert set(logs) == {"total", "reverse", "style", "style_mean", "style_std", "vq", "g_loss", "disc_factor"}
    total.backward()
    assert quant_y.grad is not None and quant_x.grad is None  # the content target is a constant


def test_stage2_continuous_variant_and_disc_start() -> None:
    loss, quant_y, quant_x, quant_ref = _tiny_stage2(disc_start=3)
    calls = []
    loss.discriminator.register_forward_hook(lambda *_: calls.append(1))
    total, logs = loss.generator_loss(quant_y, quant_x, quant_ref, 0.0, step=2)
    # D runs at every step, as in the original; before disc_start its term is logged but weighs 0
    assert calls == [1] and logs["g_loss"].item() != 0.0 and logs["disc_factor"].item() == 0.0
    assert logs["vq"].item() == 0.0
    assert total.item() == pytest.approx(logs["reverse"].item() + 10.0 * logs["style"].item(), rel=1e-6)
    _, logs = loss.generator_loss(quant_y, quant_x, quant_ref, 0.0, step=3)
    assert calls == [1, 1] and logs["disc_factor"].item() == pytest.approx(0.8)


def test_stage2_discriminator_step_is_hinge_on_detached_latents() -> None:
    loss, quant_y, _quant_x, quant_ref = _tiny_stage2(disc_factor=0.1)
    d_loss, logs = loss.discriminator_loss(quant_ref, quant_y, step=0)
    logits_real, logits_fake = loss.discriminator(quant_ref), loss.discriminator(quant_y.detach())
    expected = 0.1 * 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()).item()
    assert d_loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs["logits_real"].item() == pytest.approx(logits_real.mean().item(), rel=1e-5)
    assert logs["logits_fake"].item() == pytest.approx(logits_fake.mean().item(), rel=1e-5)
    d_loss.backward()
    assert quant_y.grad is None


def test_stage2_default_config_is_the_original_latent_gan() -> None:
    loss = StyleTransferLoss()
    assert _shapes(loss.discriminator) == STAGE2_DISC_KEYS
    cfg = loss.config
    assert (cfg.reverse_weight, cfg.codebook1_weight, cfg.style_weight) == (1.0, 1.0, 10.0)
    assert (cfg.disc_weight, cfg.disc_factor, cfg.disc_start, cfg.disc_loss) == (1.0, 0.8, 0, "hinge")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_losses_on_cuda_under_fp16_autocast() -> None:
    loss, decoder_out, features, x, _ = _tiny_stage1()
    loss, decoder_out = loss.cuda(), decoder_out.cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        x_rec = decoder_out(features.cuda())
        total, logs = loss.generator_loss(x.cuda(), x_rec, 0.1, step=5, last_layer=decoder_out.weight)
        d_loss, _ = loss.discriminator_loss(x.cuda(), x_rec, step=5)
    assert total.dtype == torch.float32 and torch.isfinite(total) and torch.isfinite(d_loss)
    assert logs["d_weight"].item() > 0
    total.backward()
    s2, quant_y, quant_x, quant_ref = _tiny_stage2()
    s2 = s2.cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        total2, _ = s2.generator_loss(quant_y.cuda(), quant_x.cuda(), quant_ref.cuda(), 0.0, step=0)
    assert torch.isfinite(total2)


def test_stage1_chroma_term_sees_colour_errors_only() -> None:
    from quantart_cli.core.color_space import rgb_to_ycbcr, ycbcr_to_rgb

    loss = VQGANLoss(VQGANLossConfig(perceptual_weight=0.0, disc_factor=0.0, chroma_weight=2.0))
    x = torch.rand(2, 3, 32, 32) * 1.6 - 0.8  # D runs at every step, and needs at least 32 px
    ycc = rgb_to_ycbcr(x)
    brighter = ycbcr_to_rgb(ycc + torch.tensor([0.1, 0.0, 0.0]).view(1, 3, 1, 1))
    redder = ycbcr_to_rgb(ycc + torch.tensor([0.0, 0.0, 0.1]).view(1, 3, 1, 1))
    _, luma_logs = loss.generator_loss(x, brighter, 0.0, step=0)
    _, chroma_logs = loss.generator_loss(x, redder, 0.0, step=0)
    assert luma_logs["chroma"].item() == pytest.approx(0.0, abs=1e-6)
    assert chroma_logs["chroma"].item() == pytest.approx(0.05, rel=1e-4)  # mean of |0| (Cb) and |0.1| (Cr)
    # The chroma map is added to every pixel like LPIPS, so nll = L1 + weight * chroma.
    expected = (x - redder).abs().mean().item() + 2.0 * 0.05
    assert chroma_logs["nll"].item() == pytest.approx(expected, rel=1e-4)


def test_discriminator_augmentation_shifts_erases_and_passes_gradients():
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    torch.manual_seed(0)
    y = augment_for_discriminator(x)
    assert y.shape == x.shape
    assert float((y == 0).float().mean()) >= 0.2  # a quarter of every image is erased, borders shifted in
    y.sum().backward()
    assert 0 < float((x.grad != 0).float().mean()) < 1
    torch.manual_seed(0)
    assert torch.equal(augment_for_discriminator(x.detach()), y.detach())  # follows the seeded RNG


def test_stage1_discriminator_sees_augmented_images_only_when_asked():
    torch.manual_seed(0)
    x, rec = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    plain = VQGANLoss(VQGANLossConfig(perceptual_weight=0.0, disc_start=0, disc_augment=False))
    augmented = VQGANLoss(VQGANLossConfig(perceptual_weight=0.0, disc_start=0, disc_augment=True))
    augmented.discriminator.load_state_dict(plain.discriminator.state_dict())
    seen = []
    for loss in (plain, augmented):
        loss.discriminator.eval()
        hook = loss.discriminator.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
        loss.discriminator_loss(x, rec, step=0)
        hook.remove()
    assert torch.equal(seen[0], x) and not torch.equal(seen[2], x)


@pytest.mark.parametrize("before_start", [True, False])
def test_the_adaptive_weight_before_disc_start_is_optional(before_start):
    """The original computes d_weight at every step; the option skips that second backward pass while the GAN
    term is off, and changes nothing once it is on."""
    torch.manual_seed(0)
    loss = VQGANLoss(VQGANLossConfig(perceptual_weight=0.0, disc_start=5, d_weight_before_start=before_start))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    weight = torch.randn(3, 3, 1, 1, requires_grad=True)
    rec = F.conv2d(x, weight)
    _, early = loss.generator_loss(x, rec, 0.0, step=0, last_layer=weight)
    _, late = loss.generator_loss(x, rec, 0.0, step=5, last_layer=weight)
    assert (float(early["d_weight"]) > 0) == before_start
    assert float(late["d_weight"]) > 0
