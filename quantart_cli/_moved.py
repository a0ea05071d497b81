"""Import paths of quantart 0.1's flat layout, kept working for one release with a DeprecationWarning.

``import quantart_cli.checkpoint`` (and ``from quantart_cli.models import VQGAN``, ...) still works: a finder
on ``sys.meta_path`` answers the old name with a module that forwards every attribute to where the code
lives now, and warns once per old module. These paths go away in quantart 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from typing import Any

REMOVED_IN = "0.3"

#: old module -> the modules its names live in now (searched in order).
MOVED: dict[str, tuple[str, ...]] = {
    "quantart_cli.app": ("quantart_cli.shell.app",),
    "quantart_cli.console": ("quantart_cli.shell.console",),
    "quantart_cli.settings": ("quantart_cli.shell.settings", "quantart_cli.core.options"),
    "quantart_cli.plugins": ("quantart_cli.shell.plugins",),
    "quantart_cli.paths": ("quantart_cli.shell.paths",),
    "quantart_cli.errors": ("quantart_cli.core.errors",),
    "quantart_cli.devices": ("quantart_cli.core.devices",),
    "quantart_cli.config": ("quantart_cli.core.config",),
    "quantart_cli.color_space": ("quantart_cli.core.color_space",),
    "quantart_cli.models": ("quantart_cli.core.models",),
    "quantart_cli.nn": ("quantart_cli.core.nn",),
    "quantart_cli.autoencoder_split": ("quantart_cli.core.transfer.units",),
    "quantart_cli.loss_config": ("quantart_cli.core.losses.config",),
    "quantart_cli.losses": (
        "quantart_cli.core.losses.vqgan", "quantart_cli.core.losses.style_transfer", "quantart_cli.core.losses.gan",
        "quantart_cli.core.losses.terms", "quantart_cli.core.losses.config",
    ),
    "quantart_cli.perceptual": ("quantart_cli.core.losses.perceptual",),
    "quantart_cli.imageio": ("quantart_cli.core.io.images",),
    "quantart_cli.checkpoint": (
        "quantart_cli.core.io.checkpoints", "quantart_cli.core.io.checkpoint_format",
        "quantart_cli.core.io.checkpoint_read", "quantart_cli.core.io.checkpoint_write", "quantart_cli.core.io.atomic",
    ),
    "quantart_cli.checkpoint_import": ("quantart_cli.core.io.original",),
    "quantart_cli.codes": ("quantart_cli.core.io.codes",),
    "quantart_cli.data": (
        "quantart_cli.core.data.sources", "quantart_cli.core.data.transforms", "quantart_cli.core.data.datasets",
        "quantart_cli.core.io.images",
    ),
    "quantart_cli.latent_cache": ("quantart_cli.core.cache.latents",),
    "quantart_cli.training": (
        "quantart_cli.core.train.loop", "quantart_cli.core.train.task", "quantart_cli.core.train.options",
        "quantart_cli.core.train.resume", "quantart_cli.core.train.batches", "quantart_cli.core.train.ddp",
        "quantart_cli.core.train.rng", "quantart_cli.core.precision", "quantart_cli.core.train.optim",
        "quantart_cli.core.train.samples", "quantart_cli.core.train.signals",
    ),
    "quantart_cli.adversarial": ("quantart_cli.core.train.adversarial",),
    "quantart_cli.train_vq": ("quantart_cli.core.train.vq_task",),
    "quantart_cli.train_sga": ("quantart_cli.core.train.sga_task",),
    "quantart_cli.stylize": (
        "quantart_cli.core.transfer.engine", "quantart_cli.core.transfer.options", "quantart_cli.core.color_space",
    ),
    "quantart_cli.tiling": ("quantart_cli.core.transfer.tiling", "quantart_cli.core.transfer.options"),
    "quantart_cli.tile_plan": ("quantart_cli.core.transfer.tile_plan",),
    "quantart_cli.codebook_stats": ("quantart_cli.core.codebook.stats",),
    "quantart_cli.codebook_viz": ("quantart_cli.core.codebook.atlas",),
    "quantart_cli.style_metrics": ("quantart_cli.core.metrics.style", "quantart_cli.core.metrics.grid"),
    "quantart_cli.evaluation": ("quantart_cli.core.metrics.grid",),
    "quantart_cli.weights": ("quantart_cli.core.weights",),
}


def new_home(old: str) -> tuple[str, ...] | None:
    """Where an old module's names live now (``quantart_cli.nn.vq`` follows ``quantart_cli.nn``)."""
    if old in MOVED:
        return MOVED[old]
    parent, _, leaf = old.rpartition(".")
    if parent in MOVED and len(MOVED[parent]) == 1:
        return (f"{MOVED[parent][0]}.{leaf}",)
    return None


class _Forwarder(types.ModuleType):
    """An old module: every attribute is looked up in the new modules, in order."""

    def __init__(self, name: str, targets: tuple[str, ...]) -> None:
        super().__init__(name, f"Moved to {', '.join(targets)} (this path goes away in quantart {REMOVED_IN}).")
        self.__targets = targets

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        for target in self.__targets:
            module = importlib.import_module(target)
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")

    def __dir__(self) -> list[str]:
        names: set[str] = set()
        for target in self.__targets:
            names.update(n for n in dir(importlib.import_module(target)) if not n.startswith("_"))
        return sorted(names)


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers old module names with a :class:`_Forwarder` and a DeprecationWarning."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        targets = new_home(fullname)
        if targets is None:
            return None
        new = importlib.util.find_spec(targets[0])
        if new is None:  # an unknown leaf (quantart_cli.nn.nothing) stays unknown
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=new.submodule_search_locations is not None)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        targets = new_home(spec.name) or ()
        where = targets[0] if len(targets) == 1 else "; ".join(targets)
        verb = "moved to" if len(targets) == 1 else "was split into"
        warnings.warn(
            f"{spec.name} {verb} {where}; the old import path goes away in quantart {REMOVED_IN}.",
            DeprecationWarning,
            stacklevel=_caller_level(),
        )
        module = _Forwarder(spec.name, targets)
        if spec.submodule_search_locations is not None:
            module.__path__ = []  # a package: its old submodules are answered by this finder too
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def _caller_level() -> int:
    """The ``stacklevel`` that points the warning at the importing line, past importlib's own frames."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename.startswith("<frozen importlib") or
                                 frame.f_code.co_filename == __file__):
        frame, level = frame.f_back, level + 1
    return level


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
