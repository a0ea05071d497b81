"""Pretrained network weights: fetched into torch.hub's checkpoint folder on first use, never in tests.

:func:`build_pretrained` runs a constructor that downloads (or reads the cached copy of) one weights file and
turns every way that can fail into one sentence: no network (``NotFoundError`` naming the file, the folder to
put it in and where to get it), or a damaged cached copy (``BadInputError``). Each socket operation is bounded,
so a blocked network fails instead of hanging.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import torch

from quantart_cli.core.errors import BadInputError, NotFoundError

__all__ = ["DOWNLOAD_SOCKET_TIMEOUT_S", "build_pretrained", "hub_checkpoint_path"]

#: Seconds a stalled connection may block before the download counts as failed (torch.hub sets none).
DOWNLOAD_SOCKET_TIMEOUT_S = 30.0

# What a failed download or an unreadable cached file raises inside torchvision / torch.hub / torch.load.
_LOAD_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException, RuntimeError, pickle.UnpicklingError)

_Module = TypeVar("_Module")


def hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub caches the file at ``url``: ``torch.hub.get_dir()/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def build_pretrained(build: Callable[[], _Module], *, url: str, needed_by: str) -> _Module:
    """``build()``, which loads the weights at ``url`` through torch.hub; ``needed_by`` names what needs them
    ("LPIPS", "FID") in the error sentence."""
    path = hub_checkpoint_path(url)
    try:
        with _download_timeout(), quiet_construction():
            return build()
    except _LOAD_ERRORS as err:
        if isinstance(err, torch.OutOfMemoryError):
            raise
        if path.is_file():  # cached before, or downloaded just now, yet unreadable
            raise BadInputError(
                f"The weights file {path} could not be loaded: delete it so it is downloaded again, "
                "or replace it with a good copy."
            ) from err
        raise NotFoundError(
            f"{needed_by} {_needs(needed_by)} the weights file {path.name}, which could not be downloaded: "
            f"put it in {path.parent}.",
            hint=f"Download it from {url} on a machine with network access.",
        ) from err


def _needs(subject: str) -> str:
    return "need" if " and " in subject else "needs"


@contextlib.contextmanager
def quiet_construction() -> Iterator[None]:
    """Keep stdout for results only and silence torchvision's ``pretrained=`` deprecation warnings."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*('pretrained'|'weights').*deprecated", category=UserWarning)
        yield


@contextlib.contextmanager
def _download_timeout() -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
