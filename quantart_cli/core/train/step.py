"""One training step, as both stages take it: a generator (stage 1's autoencoder, stage 2's SGA module) trained
against a discriminator.

Both tasks own a :class:`Generator` (its forward module and Adam) and an :class:`Adversary` (the discriminator and
its Adam); :func:`train_step` is the whole step, on the step's micro-batches:

1. the generator's loss on each micro-batch, with D frozen so it leaves no gradient in D (:func:`generator_pass`);
2. in the ``sequential`` order (the original's) the generator steps, then each micro-batch runs again through the
   updated generator, without gradients, and D's loss on its reals and detached fakes is backpropagated
   (:func:`discriminator_pass`), at every step: before ``disc_start`` its factor 0 gives zero gradients and Adam
   still counts the step, as in the original; then D steps;
3. in the ``joint`` order one forward serves both: D's loss on the same forward's detached fakes is taken in
   step 1 (from ``disc_start`` on; before it, D's loss is skipped and D does not step), then both optimizers step.

Under DDP the generator's forward is wrapped in DistributedDataParallel; D runs inside the generator's loss with
its weights frozen, which DDP's reducer cannot follow, so D's gradients are averaged by one explicit all-reduce
and its BatchNorm statistics follow rank 0. D is saved with the model, under ``extra_state_dicts["discriminator"]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from quantart_cli.core.errors import BadInputError
from quantart_cli.core.io.checkpoint_format import LoadedCheckpoint
from quantart_cli.core.io.checkpoints import load_checkpoint, save_checkpoint
from quantart_cli.core.losses.terms import Logs
from quantart_cli.core.train.ddp import DistInfo, average_gradients, broadcast_buffers, broadcast_parameters
from quantart_cli.core.train.optim import make_adam
from quantart_cli.core.train.options import OptimizerOrder

if TYPE_CHECKING:
    from quantart_cli.core.models import VQGAN, StyleTransfer
    from quantart_cli.core.train.task import StepContext, TrainingTask

#: D's optimizer in ``state.pt`` and D's weights in a checkpoint's ``extra_state_dicts`` go by this name.
DISCRIMINATOR_KEY = "discriminator"
D_LOG_KEYS = ("d_loss", "logits_real", "logits_fake")


class AdversarialLoss(Protocol):
    """What :class:`Adversary` needs of a stage's loss (``VQGANLoss``, ``StyleTransferLoss``)."""

    discriminator: nn.Module

    def disc_factor_at(self, step: int) -> float: ...

    def discriminator_loss(self, real: Tensor, fake: Tensor, step: int) -> tuple[Tensor, Mapping[str, Tensor]]: ...


class Generator:
    """The trained side: ``forward`` (the module, wrapped in DDP across ranks and compiled on request) and its
    Adam over ``params``; ``name`` is its optimizer's name in ``state.pt`` (``autoencoder``, ``sga``)."""

    def __init__(self, name: str, forward: nn.Module, params: Any, *, lr: float, device: torch.device,
                 info: DistInfo, compile: bool = False) -> None:
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = None
            if device.type == "cuda":
                device_ids = [device.index if device.index is not None else info.local_rank]
            forward = DistributedDataParallel(forward, device_ids=device_ids)
        self._ddp = forward if info.enabled else None
        self.name = name
        self.forward: Any = torch.compile(forward) if compile else forward
        self.optimizer = make_adam(params, lr)

    def __call__(self, *args: Any) -> Any:
        return self.forward(*args)

    def no_sync(self) -> contextlib.AbstractContextManager[Any]:
        """For micro-batches whose gradients are not synchronised yet (DDP's ``no_sync``)."""
        return self._ddp.no_sync() if self._ddp is not None else contextlib.nullcontext()


class Adversary:
    """The discriminator (``loss.discriminator``, rank 0's weights on every rank) and its Adam; ``loss`` computes
    its loss and the factor that delays it to ``disc_start``."""

    def __init__(self, loss: AdversarialLoss, *, lr: float, device: torch.device, info: DistInfo) -> None:
        self.loss = loss
        self.module = loss.discriminator
        self.device = device
        self.info = info
        broadcast_parameters(self.module, info)
        self.optimizer = make_adam(self.module.parameters(), lr)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """D without gradients: the generator's loss runs D, but must leave no gradient in it."""
        self.module.requires_grad_(False)
        try:
            yield
        finally:
            self.module.requires_grad_(True)

    def is_on(self, step: int) -> bool:
        return self.loss.disc_factor_at(step) > 0

    def backward(self, ctx: StepContext, real: Tensor, fake: Tensor, step: int) -> Logs:
        """D's loss on ``real`` and the detached ``fake``, backpropagated; its logs."""
        with ctx.autocast():
            loss, logs = self.loss.discriminator_loss(real, fake.detach(), step)
        ctx.backward(loss)
        return dict(logs)

    def zero_logs(self) -> Logs:
        zero = torch.zeros((), device=self.device)
        return {key: zero for key in D_LOG_KEYS}

    def average_gradients(self) -> None:
        """Collective: D's gradients averaged over ranks (DDP does not see them)."""
        average_gradients(list(self.module.parameters()), self.info)

    def sync_buffers(self) -> None:
        """Collective: D's BatchNorm statistics follow rank 0, as DDP's broadcast_buffers does."""
        broadcast_buffers(self.module, self.info)


def optimizers_of(task: TrainingTask) -> dict[str, torch.optim.Optimizer]:
    """The task's optimizers by their names in ``state.pt``: the generator's, then the discriminator's."""
    return {task.generator.name: task.generator.optimizer, DISCRIMINATOR_KEY: task.adversary.optimizer}


# ------------------------------------------------------------------------------------------------- the step


def generator_pass(task: TrainingTask, batch: Any, step: int, ctx: StepContext, *, joint: bool) -> Logs:
    """The generator's loss on one micro-batch, with D frozen, backpropagated; in the ``joint`` order also D's loss
    on the same forward's fakes (zeros logged before ``disc_start``). Returns the micro-batch's logs."""
    adversary = task.adversary
    with adversary.frozen():
        with ctx.autocast():
            out = task.forward(batch, ctx)
            loss, logs = task.generator_loss(batch, out, step, ctx)
        ctx.backward(loss)
    logs = dict(logs)
    if joint and adversary.is_on(step):
        logs |= adversary.backward(ctx, *task.discriminator_inputs(batch, out), step)
    elif joint:  # before disc_start: zeros logged, and D gets no gradient, so it does not step
        logs |= adversary.zero_logs()
    return logs


def discriminator_pass(task: TrainingTask, batch: Any, step: int, ctx: StepContext) -> Logs:
    """The ``sequential`` order's second pass over one micro-batch: its fakes from the (updated) generator, without
    gradients, and D's loss on them, backpropagated. Returns D's logs."""
    with torch.no_grad(), ctx.autocast():
        out = task.forward(batch, ctx)
    return task.adversary.backward(ctx, *task.discriminator_inputs(batch, out), step)


def train_step(task: TrainingTask, batches: Sequence[Any], step: int, ctx: StepContext, order: OptimizerOrder,
               check_finite: Callable[[], None]) -> list[Logs]:
    """One optimizer step of the generator and of its discriminator (see the module docstring) on ``batches``, the
    step's micro-batches, at global ``step`` (0-based). ``check_finite`` runs before any optimizer steps on what
    was backpropagated (``ctx.losses``). Returns each micro-batch's logs in the order they were made."""
    generator, adversary = task.generator, task.adversary
    joint = order == "joint"
    logs = []
    with record_function("phase: generator" + (" and discriminator" if joint else "")):
        generator.optimizer.zero_grad(set_to_none=True)
        if joint:
            adversary.optimizer.zero_grad(set_to_none=True)
        ctx.losses = []
        for batch, synced in _micro_batches(batches, generator):
            with synced:
                logs.append(generator_pass(task, batch, step, ctx, joint=joint))
        check_finite()
        ctx.step(generator.optimizer)
        if joint:
            ctx.step(adversary.optimizer, before=adversary.average_gradients)  # not before disc_start: no gradients
    if not joint:
        with record_function("phase: discriminator"):
            adversary.optimizer.zero_grad(set_to_none=True)
            ctx.losses = []
            for batch, synced in _micro_batches(batches, generator):
                with synced:
                    logs.append(discriminator_pass(task, batch, step, ctx))
            check_finite()
            ctx.step(adversary.optimizer, before=adversary.average_gradients)
    ctx.scaler.update()
    adversary.sync_buffers()
    return logs


def _micro_batches(batches: Sequence[Any], generator: Generator) -> Iterator[tuple[Any, Any]]:
    """Each micro-batch with the context its backward runs in: gradients are synchronised on the last one only."""
    for i, batch in enumerate(batches):
        yield batch, contextlib.nullcontext() if i == len(batches) - 1 else generator.no_sync()


# ------------------------------------------------------------------------------------------- checkpoints


def save_with_discriminator(model: VQGAN | StyleTransfer, adversary: Adversary, path: Path, step: int,
                            **kwargs: Any) -> None:
    """The model's checkpoint with D's weights under ``extra_state_dicts["discriminator"]``."""
    save_checkpoint(model, path, step=step, extra_state_dicts={DISCRIMINATOR_KEY: adversary.module.state_dict()},
                    **kwargs)


def load_with_discriminator(model: VQGAN | StyleTransfer, adversary: Adversary, path: Path,
                            kind: str) -> LoadedCheckpoint:
    """Load a run's model (and D when stored) from ``path``; a checkpoint of another configuration is refused."""
    ckpt = load_checkpoint(path, device=adversary.device, expected_kind=kind)
    if ckpt.config != model.config:
        raise BadInputError(f"{path} holds a {kind} model of a different configuration than this run.")
    model.load_state_dict(ckpt.state_dict, strict=True)
    if DISCRIMINATOR_KEY in ckpt.extra_state_dicts:
        adversary.module.load_state_dict(ckpt.extra_state_dicts[DISCRIMINATOR_KEY], strict=True)
    return ckpt
