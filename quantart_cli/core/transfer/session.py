"""A stylization session: the model(s) of one job, opened once, and everything around a stylized file.

``quantart stylize``, ``quantart serve``, ``quantart evaluate`` and ``quantart demo`` all stylize through a
:class:`StylizeSession`. It picks the checkpoint (the built-in model when none is given), checks both checkpoints'
kind from their headers, keeps their SHA-256s and the name messages show, resolves the device and the precision
that actually runs, loads the weights once (only when something is stylized), decides which outputs are stale
(:meth:`StylizeSession.plan`) and builds the :class:`~quantart_cli.core.transfer.engine.Stylizer` for a set of
paintings. Each of these checks lives here once; the stages only read settings and print.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from quantart_cli.core.transfer.files import Recipe, output_state
from quantart_cli.core.transfer.options import StylizeOptions, check_visual_fidelity

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from quantart_cli.core.io.images import BitDepth
    from quantart_cli.core.models import StyleTransfer
    from quantart_cli.core.transfer.engine import Stylizer

__all__ = ["OutputPlan", "StylizeSession"]


@dataclass
class OutputPlan:
    """What a run does with each planned output: ``todo`` (input, output, recipe note) is stylized, ``current``
    outputs are up to date (or kept by ``skip_existing``), ``stale`` ones (in ``todo`` too) were made from another
    recipe, ``foreign`` ones quantart did not write."""

    todo: list[tuple[Path, Path, str]] = field(default_factory=list)
    current: list[Path] = field(default_factory=list)
    stale: list[Path] = field(default_factory=list)
    foreign: list[Path] = field(default_factory=list)


class StylizeSession:
    """The style-transfer model of a job (``ckpt``; None: the built-in model) and, for ``visual_fidelity`` below 1,
    its continuous partner, on ``device``.

    Opening a session reads only the checkpoints' headers and hashes the files: a run whose outputs are all up to
    date never loads a weight. ``notes`` holds what a caller may want to tell the user (the continuous model
    ignored at ``visual_fidelity`` 1, bf16 running as fp32 on this CPU). ``options`` are the defaults every
    stylization of the session starts from, with the precision that really runs.
    """

    def __init__(
        self,
        ckpt: str | Path | None = None,
        continuous_ckpt: str | Path | None = None,
        *,
        options: StylizeOptions | None = None,
        device: str | torch.device = "auto",
        trust: bool = False,
    ) -> None:
        from quantart_cli.core.devices import resolve_device
        from quantart_cli.core.io.checkpoint_read import check_kind
        from quantart_cli.core.io.checkpoints import read_checkpoint_header
        from quantart_cli.core.io.digest import file_sha256
        from quantart_cli.core.precision import check_precision, stylize_precision
        from quantart_cli.core.weights import BUILTIN_MODEL_NAME, builtin_model_path

        options = StylizeOptions() if options is None else options
        self.notes: list[str] = []
        check_visual_fidelity(options.visual_fidelity, continuous_ckpt is not None)
        if options.visual_fidelity >= 1.0 and continuous_ckpt is not None:
            self.notes.append("`continuous_ckpt` is only used with `visual_fidelity` below 1; ignoring it")
            continuous_ckpt = None
        self.builtin = ckpt is None
        self.ckpt = builtin_model_path() if ckpt is None else Path(ckpt)
        self.continuous_ckpt = None if continuous_ckpt is None else Path(continuous_ckpt)
        self.name = BUILTIN_MODEL_NAME if self.builtin else str(self.ckpt)
        self.device = resolve_device(device) if isinstance(device, str) else device
        check_precision(self.device, options.precision, training=False)
        precision, note = stylize_precision(self.device, options.precision)
        if note is not None:  # outputs made in fp32 record fp32 in their recipe
            self.notes.append(note)
            options = options.model_copy(update={"precision": precision})
        self.options = options
        self.trust = trust
        for path in self.checkpoints:
            check_kind(read_checkpoint_header(path, trust=trust).kind, "style-transfer", path)
        self.model_sha256 = file_sha256(self.ckpt)
        self.continuous_sha256 = None if self.continuous_ckpt is None else file_sha256(self.continuous_ckpt)
        self._model: StyleTransfer | None = None
        self._continuous: StyleTransfer | None = None
        self.load_seconds = 0.0

    @property
    def checkpoints(self) -> list[Path]:
        """The checkpoint files the session reads (outputs must never land on them)."""
        return [self.ckpt, *([self.continuous_ckpt] if self.continuous_ckpt is not None else [])]

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> StyleTransfer:
        """The model, loaded on first use (and its continuous partner with it); ``load_seconds`` says how long."""
        if self._model is None:
            from quantart_cli.core.io.checkpoints import load_model

            start = time.perf_counter()
            self._model = load_model(self.ckpt, device=self.device, expected_kind="style-transfer", trust=self.trust)
            if self.continuous_ckpt is not None:
                self._continuous = load_model(self.continuous_ckpt, device=self.device,
                                              expected_kind="style-transfer", trust=self.trust)
            self.load_seconds = time.perf_counter() - start
        return self._model

    def with_options(self, **changes: object) -> StylizeOptions:
        """The session's options with some fields changed (validated, precision kept as it runs)."""
        return StylizeOptions(**{**self.options.model_dump(), **changes})

    def recipe(self, style_files: Sequence[Path], options: StylizeOptions | None = None,
               mask_files: Sequence[Path | None] | None = None) -> Recipe:
        """The recipe an output made by this session after ``style_files`` (and their ``mask_files``, None for a
        painting without one) with ``options`` records."""
        from quantart_cli.core.io.digest import file_sha256

        masks = None if mask_files is None else [None if p is None else file_sha256(p) for p in mask_files]
        return Recipe.of(self.model_sha256, [file_sha256(p) for p in style_files], options or self.options,
                         self.continuous_sha256, masks)

    def plan(self, pairs: Sequence[tuple[Path, Path]], recipe: Recipe, *, overwrite: bool = False,
             skip_existing: bool = False, bit_depths: Mapping[Path, BitDepth] | None = None,
             video: Mapping[str, object] | None = None) -> OutputPlan:
        """Sort (input, output) pairs by what a run must do: an output is redone when missing, made from another
        recipe or input (unless ``skip_existing``), or always with ``overwrite``; a file quantart did not write
        is ``foreign`` (the caller decides), unless ``skip_existing`` keeps it. ``bit_depths`` maps outputs to
        their bits per channel (8 where absent), part of their recipe: an output of another bit depth is stale.
        ``video``: the video knobs recorded in (and so compared with) each video output's recipe."""
        from quantart_cli.core.io.digest import file_sha256
        from quantart_cli.core.io.video import is_video

        plan = OutputPlan()
        for source, target in pairs:
            knobs = dict(video or {}) if is_video(source) else None
            note = recipe.note(file_sha256(source), (bit_depths or {}).get(target, 8), knobs)
            state = "missing" if overwrite else output_state(target, note)
            if state == "missing" or state == "stale" and not skip_existing:
                plan.todo.append((source, target, note))
                if state == "stale":
                    plan.stale.append(target)
            elif state == "foreign" and not skip_existing:
                plan.foreign.append(target)
            else:
                plan.current.append(target)
        return plan

    def stylizer(self, styles: Tensor | Sequence[Tensor], options: StylizeOptions | None = None,
                 masks: Sequence[Tensor | None] | None = None) -> Stylizer:
        """A :class:`Stylizer` after these paintings ((3, H, W) tensors in [-1, 1]) and their masks (see
        :mod:`~quantart_cli.core.transfer.masks`); loads the model if needed."""
        from quantart_cli.core.transfer.engine import Stylizer

        model = self.load()
        return Stylizer(model, styles, options or self.options, self._continuous, masks=masks)
