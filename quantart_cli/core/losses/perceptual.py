"""LPIPS (VGG16) perceptual distance for the stage-1 loss, built from the ``lpips`` package.

Import this module only when LPIPS is needed: ``lpips`` pulls in scipy and takes seconds to import.
The LPIPS linear heads ship inside the ``lpips`` package; the VGG16 backbone weights come from
torchvision's download cache. Without network access that download fails, so ``build_lpips`` turns
the failure into one sentence naming the file and the folder to put it in.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import pickle
import socket
import sys
import urllib.error
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import lpips
import torch
from torch import nn

from quantart_cli.core.errors import BadInputError, NotFoundError

# Seconds a stalled connection may block before the download counts as failed (torch.hub sets none).
DOWNLOAD_SOCKET_TIMEOUT_S = 30.0

# What a failed download or an unreadable cached file raises inside torchvision / torch.hub / torch.load.
_LOAD_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException, RuntimeError, pickle.UnpicklingError)


def vgg16_weights_url() -> str:
    """URL torchvision downloads the ImageNet VGG16 weights from."""
    from torchvision.models import VGG16_Weights

    return VGG16_Weights.IMAGENET1K_V1.url


def vgg16_weights_path() -> Path:
    """Where torchvision looks for (and caches) the VGG16 weights: ``torch.hub.get_dir()/checkpoints/<file>``."""
    filename = os.path.basename(urlparse(vgg16_weights_url()).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def lpips_linear_weights_path() -> Path:
    """The calibrated LPIPS linear heads shipped inside the ``lpips`` package."""
    return Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"


def build_lpips(pretrained_backbone: bool = True) -> nn.Module:
    """Frozen LPIPS(vgg) in eval mode, with the package's calibrated linear heads.

    ``pretrained_backbone=False`` uses a randomly initialised VGG16 and needs no network (for tests).
    Raises ``NotFoundError`` when the VGG16 weights are neither cached nor downloadable, and
    ``BadInputError`` when the cached file cannot be loaded.
    """
    heads_path = lpips_linear_weights_path()
    if not heads_path.is_file():
        raise NotFoundError(f"The lpips package is missing its weights file {heads_path}: reinstall lpips.")
    weights_path = vgg16_weights_path() if pretrained_backbone else None
    try:
        with _download_timeout(), _quiet_construction():
            model = FrozenLPIPS(pnet_rand=not pretrained_backbone)
    except _LOAD_ERRORS as err:
        if weights_path is None or isinstance(err, torch.OutOfMemoryError):
            raise
        if weights_path.is_file():  # cached before, or downloaded just now, yet unreadable
            raise BadInputError(
                f"The VGG16 weights file {weights_path} could not be loaded: delete it so it is "
                "downloaded again, or replace it with a good copy."
            ) from err
        raise NotFoundError(
            f"LPIPS needs the VGG16 weights file {weights_path.name}, which could not be downloaded: "
            f"put it in {weights_path.parent}.",
            hint=f"Download it from {vgg16_weights_url()} on a machine with network access.",
        ) from err
    return model


class FrozenLPIPS(lpips.LPIPS):
    """``lpips.LPIPS(net="vgg")`` whose parameters are frozen and which stays in eval mode.

    Deliberate difference from the original: there, a recursive ``.train()`` on the training module
    switched the LPIPS dropout layers back on during stage-1 training. Here ``train()`` is a no-op, so
    the perceptual term is deterministic. State-dict keys match the original's ``perceptual_loss.*``
    (plus the package's ``lins.*`` aliases of ``lin0..lin4``).
    """

    def __init__(self, pnet_rand: bool = False) -> None:
        # Explicit path: lpips derives its default from the file defining the class, i.e. this one.
        super().__init__(
            net="vgg",
            version="0.1",
            pretrained=True,
            model_path=str(lpips_linear_weights_path()),
            pnet_rand=pnet_rand,
            verbose=False,
        )
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenLPIPS:  # noqa: ARG002 - mode ignored on purpose
        return super().train(False)


@contextlib.contextmanager
def _quiet_construction() -> Iterator[None]:
    """Keep stdout for results only and silence torchvision's ``pretrained=`` deprecation warnings."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*('pretrained'|'weights').*deprecated", category=UserWarning)
        yield


@contextlib.contextmanager
def _download_timeout() -> Iterator[None]:
    """Bound each socket operation so a blocked network fails instead of hanging forever."""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
