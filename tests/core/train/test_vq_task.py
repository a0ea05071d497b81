"""The stage-1 training task (quantart_cli.core.train.vq_task) step by step."""

from __future__ import annotations

import pytest
import torch

from quantart_cli.core.config import tiny_vqgan_config
from quantart_cli.core.losses.config import VQGANLossConfig
from quantart_cli.core.losses.vqgan import VQGANLoss


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
