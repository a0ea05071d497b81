"""LPIPS perceptual distance (VGG16 for the stage-1 loss, AlexNet for evaluation), from the ``lpips`` package.

Import this module only when LPIPS is needed: ``lpips`` pulls in scipy and takes seconds to import.
The LPIPS linear heads ship inside the ``lpips`` package; the VGG16 backbone weights come from
torchvision's download cache. Without network access that download fails, so ``build_lpips`` turns
the failure into one sentence naming the file and the folder to put it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lpips
from torch import nn

from quantart_cli.core.errors import NotFoundError
from quantart_cli.core.io.pretrained import build_pretrained, quiet_construction

LpipsNet = Literal["vgg", "alex"]


def backbone_weights_url(net: LpipsNet = "vgg") -> str:
    """URL torchvision downloads the ImageNet weights of LPIPS' backbone from (VGG16 or AlexNet)."""
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    return (VGG16_Weights if net == "vgg" else AlexNet_Weights).IMAGENET1K_V1.url


def lpips_linear_weights_path(net: LpipsNet = "vgg") -> Path:
    """The calibrated LPIPS linear heads shipped inside the ``lpips`` package."""
    return Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"


def build_lpips(pretrained_backbone: bool = True, net: LpipsNet = "vgg") -> nn.Module:
    """Frozen LPIPS in eval mode, with the package's calibrated linear heads: ``net="vgg"`` (VGG16, the
    stage-1 loss, as the original) or ``"alex"`` (AlexNet, the content distance of ArtFID and ``evaluate``).

    ``pretrained_backbone=False`` uses a randomly initialised backbone and needs no network (for tests).
    Raises ``NotFoundError`` when the backbone weights are neither cached nor downloadable, and
    ``BadInputError`` when the cached file cannot be loaded.
    """
    heads_path = lpips_linear_weights_path(net)
    if not heads_path.is_file():
        raise NotFoundError(f"The lpips package is missing its weights file {heads_path}: reinstall lpips.")
    if not pretrained_backbone:
        with quiet_construction():
            return FrozenLPIPS(pnet_rand=True, net=net)
    return build_pretrained(lambda: FrozenLPIPS(pnet_rand=False, net=net), url=backbone_weights_url(net),
                            needed_by="LPIPS")


class FrozenLPIPS(lpips.LPIPS):
    """``lpips.LPIPS(net=...)`` whose parameters are frozen and which stays in eval mode.

    Deliberate difference from the original: there, a recursive ``.train()`` on the training module
    switched the LPIPS dropout layers back on during stage-1 training. Here ``train()`` is a no-op, so
    the perceptual term is deterministic. State-dict keys match the original's ``perceptual_loss.*``
    (plus the package's ``lins.*`` aliases of ``lin0..lin4``).
    """

    def __init__(self, pnet_rand: bool = False, net: LpipsNet = "vgg") -> None:
        # Explicit path: lpips derives its default from the file defining the class, i.e. this one.
        super().__init__(
            net=net,
            version="0.1",
            pretrained=True,
            model_path=str(lpips_linear_weights_path(net)),
            pnet_rand=pnet_rand,
            verbose=False,
        )
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenLPIPS:  # noqa: ARG002 - mode ignored on purpose
        return super().train(False)
