"""What the two trainers share: a generator that trains against a discriminator on the shared loop.

Both stages (vq_task, sga_task) run the generator loss with the discriminator frozen (so it leaves no gradient in
D), and the discriminator's loss on detached fakes: by default (the loop's ``sequential`` order, the original's)
the generator steps first and the batch is run again for D; in the ``joint`` order one forward serves both.
Under DDP, D's gradients are averaged by one explicit all-reduce and its BatchNorm statistics
follow rank 0. D is saved with the model, under ``extra_state_dicts["discriminator"]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from quantart_cli.core.errors import BadInputError
from quantart_cli.core.io.checkpoint_format import LoadedCheckpoint
from quantart_cli.core.io.checkpoints import load_checkpoint, save_checkpoint
from quantart_cli.core.train.ddp import DistInfo, average_gradients, broadcast_buffers, broadcast_parameters
from quantart_cli.core.train.optim import make_adam
from quantart_cli.core.train.task import StepContext

DISCRIMINATOR_KEY = "discriminator"
D_LOG_KEYS = ("d_loss", "logits_real", "logits_fake")

#: ``forward()`` -> the generator's output for the micro-batch (whatever the task's losses read).
Forward = Callable[[], Any]
#: ``generator_loss(output)`` -> (generator loss, its logs).
GeneratorLoss = Callable[[Any], tuple[Tensor, Mapping[str, Tensor]]]


class AdversarialTask:
    """Base of the stage tasks. Subclasses set ``model``, ``loss`` (with ``discriminator``, ``disc_factor_at``
    and ``discriminator_loss``), ``device`` and ``info``, implement :meth:`discriminator_inputs`, then call
    :meth:`_setup`."""

    generator_name: str

    model: nn.Module
    loss: Any
    device: torch.device
    info: DistInfo
    _ddp: Any
    _optimizers: dict[str, torch.optim.Optimizer]

    def _setup(self, forward: nn.Module, generator_params: Any, generator_name: str, lr: float,
               compile: bool) -> None:
        """Sync D across ranks, wrap the generator's forward (DDP, torch.compile) and make both Adams."""
        broadcast_parameters(self.loss.discriminator, self.info)
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = None
            if self.device.type == "cuda":
                device_ids = [self.device.index if self.device.index is not None else self.info.local_rank]
            forward = DistributedDataParallel(forward, device_ids=device_ids)
        self._ddp = forward if self.info.enabled else None
        self.generator_name = generator_name
        self.forward_module: Any = torch.compile(forward) if compile else forward
        self._optimizers = {
            generator_name: make_adam(generator_params, lr),
            DISCRIMINATOR_KEY: make_adam(self.loss.discriminator.parameters(), lr),
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers

    def train(self) -> None:
        self.model.train()  # frozen parts (stage 2's VQGANs) keep themselves in eval mode
        self.loss.train()

    def no_sync(self) -> contextlib.AbstractContextManager[Any]:
        return self._ddp.no_sync() if self._ddp is not None else contextlib.nullcontext()

    def adversarial_step(self, ctx: StepContext, step: int, optimizers: tuple[str, ...], forward: Forward,
                         generator_loss: GeneratorLoss) -> tuple[dict[str, Tensor], Any]:
        """The losses of ``optimizers`` for one micro-batch; returns (logs, the generator forward's output).

        Generator (alone, or first in the joint order): the generator loss with D frozen, so it leaves no gradient
        in D. Discriminator alone (the sequential order, after the generator stepped): the batch runs through the
        generator again, without gradients, and D's loss is computed and backpropagated at every step, also
        before ``disc_start`` where its factor is 0: its gradients are zeros, and Adam still counts the step, as
        in the original. Discriminator in the joint order: D's loss on the same forward's detached fakes, skipped
        before ``disc_start``.
        """
        disc = self.loss.discriminator
        logs: dict[str, Tensor] = {}
        out = None
        if self.generator_name in optimizers:
            disc.requires_grad_(False)  # the generator loss must leave no gradient in D
            try:
                with ctx.autocast():
                    out = forward()
                    g_total, g_logs = generator_loss(out)
                ctx.backward(g_total)
            finally:
                disc.requires_grad_(True)
            logs.update(g_logs)
        if DISCRIMINATOR_KEY not in optimizers:
            return logs, out
        joint = out is not None
        if joint and self.loss.disc_factor_at(step) <= 0:
            zero = torch.zeros((), device=self.device)
            logs.update({key: zero for key in D_LOG_KEYS})
            return logs, out
        if not joint:
            with torch.no_grad(), ctx.autocast():
                out = forward()
        real, fake = self.discriminator_inputs(out)
        with ctx.autocast():
            d_loss, d_logs = self.loss.discriminator_loss(real, fake.detach(), step)
        ctx.backward(d_loss)
        logs.update(d_logs)
        return logs, out

    def discriminator_inputs(self, out: Any) -> tuple[Tensor, Tensor]:
        """(real samples, fakes) D compares, from the generator forward's output."""
        raise NotImplementedError

    def before_optimizer_step(self, name: str) -> None:
        if name == DISCRIMINATOR_KEY:
            average_gradients(list(self.loss.discriminator.parameters()), self.info)

    def after_step(self, step: int) -> None:
        broadcast_buffers(self.loss.discriminator, self.info)  # BatchNorm statistics follow rank 0

    def save_with_discriminator(self, path: Path, step: int, **kwargs: Any) -> None:
        save_checkpoint(self.model, path, step=step,
                        extra_state_dicts={DISCRIMINATOR_KEY: self.loss.discriminator.state_dict()}, **kwargs)

    def load_with_discriminator(self, path: Path, kind: str) -> LoadedCheckpoint:
        """Load this run's model (and D when stored); a checkpoint of another configuration is refused."""
        ckpt = load_checkpoint(path, device=self.device, expected_kind=kind)
        if ckpt.config != self.model.config:
            raise BadInputError(f"{path} holds a {kind} model of a different configuration than this run.")
        self.model.load_state_dict(ckpt.state_dict, strict=True)
        if DISCRIMINATOR_KEY in ckpt.extra_state_dicts:
            self.loss.discriminator.load_state_dict(ckpt.extra_state_dicts[DISCRIMINATOR_KEY], strict=True)
        return ckpt
