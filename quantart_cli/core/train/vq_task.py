"""Stage 1 for the shared loop: the VQGAN (the generator) against its PatchGAN, codebook health, samples, PSNR.

The generator's forward reconstructs the micro-batch's images; its loss is :class:`VQGANLoss`'s L1 (+ perceptual,
chroma) + codebook + adaptive GAN term; the discriminator compares the images with the detached reconstructions.
How a step runs them is :mod:`quantart_cli.core.train.step`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from quantart_cli.core.codebook.stats import perplexity
from quantart_cli.core.devices import set_memory_format
from quantart_cli.core.losses.vqgan import VQGANLoss
from quantart_cli.core.models import VQGAN
from quantart_cli.core.train.ddp import DistInfo, all_reduce_sum
from quantart_cli.core.train.samples import save_image_rows
from quantart_cli.core.train.step import Adversary, Generator, load_with_discriminator, save_with_discriminator
from quantart_cli.core.train.task import StepContext

logger = logging.getLogger(__name__)



class _Reconstruction(NamedTuple):
    rec: Tensor
    vq_loss: Tensor
    usage: Tensor
    latent: Tensor


class _Autoencode(nn.Module):
    """VQGAN forward that also returns the pre-quantization latent (for dead-code restarts); DDP wraps this."""

    def __init__(self, vqgan: VQGAN) -> None:
        super().__init__()
        self.vqgan = vqgan

    def forward(self, x: Tensor) -> _Reconstruction:
        latent = self.vqgan.encode_continuous(x)
        quant, vq_loss, info = self.vqgan.quantize(latent)
        return _Reconstruction(self.vqgan.decode(quant), vq_loss, info.usage, latent.detach())


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (measured on the [0, 1] scale), shape (B,)."""
    mse = ((x.float() - y.float().clamp(-1, 1)) / 2).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


@torch.no_grad()
def reconstruction_psnr(model: VQGAN, images: Tensor, *, batch_size: int = 8) -> float:
    """Mean PSNR (dB) of the model's reconstructions of ``images`` (N, 3, H, W) in [-1, 1]."""
    was_training = model.training
    model.eval()
    device = model.last_layer.device
    values = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        rec, _, _ = model(x)
        values.append(psnr(x, rec).cpu())
    model.train(was_training)
    return float(torch.cat(values).mean())


class VQGANTask:
    """Stage-1 :class:`~quantart_cli.core.train.task.TrainingTask`: a VQGAN and its :class:`VQGANLoss`."""

    def __init__(
        self,
        model: VQGAN,
        loss: VQGANLoss,
        *,
        lr: float,
        device: torch.device,
        info: DistInfo = DistInfo(),
        sample_images: Tensor | None = None,
        channels_last: bool = False,
        compile: bool = False,
        restart_dead_codes: bool = False,
        dead_code_window: int = 200,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.loss = loss
        self.device = device
        self.info = info
        self.channels_last = channels_last
        self.restart_dead_codes = restart_dead_codes
        self.dead_code_window = dead_code_window
        self.seed = seed
        self.sample_images = sample_images
        # the original's contiguous order unless --channels-last (its other rounding is amplified by Adam)
        set_memory_format(model, channels_last)
        set_memory_format(loss.discriminator, channels_last)
        self.adversary = Adversary(loss, lr=lr, device=device, info=info)
        self.generator = Generator("autoencoder", _Autoencode(model), model.parameters(), lr=lr, device=device,
                                   info=info, compile=compile)
        n_embed = model.config.quantizer.n_embed
        self._usage_since_log = torch.zeros(n_embed, dtype=torch.long, device=device)
        self._window_usage = torch.zeros(n_embed, dtype=torch.long, device=device)
        self._window_steps = 0
        self._last_window_usage: Tensor | None = None
        self._recent_latent: Tensor | None = None
        self.restarted_codes = 0

    # -- TrainingTask ------------------------------------------------------------------------------------

    def train(self) -> None:
        self.model.train()
        self.loss.train()

    def _images(self, batch: Any) -> Tensor:
        x = batch["image"] if isinstance(batch, Mapping) else batch
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, batch: Any, ctx: StepContext) -> _Reconstruction:
        return self.generator(self._images(batch))

    def generator_loss(self, batch: Any, out: _Reconstruction, step: int, ctx: StepContext
                       ) -> tuple[Tensor, Mapping[str, Tensor]]:
        usage = out.usage.detach()  # codebook usage of the forward that trains the generator
        self._usage_since_log += usage
        self._window_usage += usage
        self._recent_latent = out.latent
        return self.loss.generator_loss(self._images(batch), out.rec, out.vq_loss, step,
                                        last_layer=self.model.last_layer)

    def discriminator_inputs(self, batch: Any, out: _Reconstruction) -> tuple[Tensor, Tensor]:
        return self._images(batch), out.rec

    def after_step(self, step: int) -> None:
        self._window_steps += 1
        if self._window_steps < self.dead_code_window:
            return
        usage = all_reduce_sum(self._window_usage.clone(), self.info)
        self._last_window_usage = usage
        if self.restart_dead_codes:
            self._restart(usage == 0, step)
        self._window_usage.zero_()
        self._window_steps = 0

    def metrics(self, step: int) -> dict[str, float]:
        both = all_reduce_sum(torch.stack([self._usage_since_log, self._window_usage]), self.info)
        self._usage_since_log.zero_()
        since_log = both[0].cpu()
        window = self._last_window_usage if self._last_window_usage is not None else both[1]
        n_embed = since_log.numel()
        return {
            "perplexity": perplexity(since_log),
            "codes_used": int((since_log > 0).sum()),
            "dead_codes": int(n_embed - (window > 0).sum()),
            "restarted_codes": self.restarted_codes,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "usage_since_log": self._usage_since_log.cpu(),
            "window_usage": self._window_usage.cpu(),
            "window_steps": self._window_steps,
            "last_window_usage": None if self._last_window_usage is None else self._last_window_usage.cpu(),
            "restarted_codes": self.restarted_codes,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        self._usage_since_log.copy_(state["usage_since_log"])
        self._window_usage.copy_(state["window_usage"])
        self._window_steps = int(state["window_steps"])
        last = state.get("last_window_usage")
        self._last_window_usage = None if last is None else last.to(self.device)
        self.restarted_codes = int(state.get("restarted_codes", 0))

    def save_model(self, path: Path, step: int) -> None:
        usage = self._last_window_usage if self._last_window_usage is not None else self._window_usage
        save_with_discriminator(self.model, self.adversary, path, step, codebook_usage={"quantize": usage})

    def load_model(self, path: Path) -> int:
        return int(load_with_discriminator(self.model, self.adversary, path, "vqgan").step or 0)

    def write_sample(self, path: Path) -> None:
        if self.sample_images is None:
            return
        write_sample_grid(self.model, self.sample_images, path)

    # -- codebook restarts ------------------------------------------------------------------------------

    @torch.no_grad()
    def _restart(self, dead: Tensor, step: int) -> None:
        """Re-seed dead codes with encoder outputs of the last micro-batch; rank 0 decides, all copy."""
        quantizer = self.model.quantize
        weight = quantizer.embedding.weight
        n_dead = int(dead.sum())
        if n_dead == 0 or self._recent_latent is None:
            return
        latent = self._recent_latent.float()
        if quantizer.projected:
            latent = quantizer.project_in(latent)
        vectors = latent.permute(0, 2, 3, 1).reshape(-1, latent.shape[1])
        generator = torch.Generator(device="cpu").manual_seed(self.seed * 7919 + step)
        picks = torch.randint(len(vectors), (n_dead,), generator=generator).to(vectors.device)
        dead_idx = dead.nonzero().flatten().to(weight.device)
        weight.data[dead_idx] = vectors[picks].to(weight.dtype)
        if self.info.enabled:
            import torch.distributed as dist

            dist.broadcast(weight.data, src=0)
        state = self.generator.optimizer.state.get(weight)
        if state:  # fresh codes should not inherit the old rows' Adam moments
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][dead_idx] = 0
        self.restarted_codes += n_dead
        logger.info("Restarted %d dead codes at step %d.", n_dead, step)


@torch.no_grad()
def write_sample_grid(model: VQGAN, images: Tensor, path: Path) -> Path:
    """Inputs in the top row, reconstructions below, written atomically as PNG."""
    was_training = model.training
    model.eval()
    x = images.to(model.last_layer.device)
    rec, _, _ = model(x)
    model.train(was_training)
    return save_image_rows([x, rec], path)


def first_images(dataset: Any, count: int) -> Tensor:
    """The first ``count`` training images (epoch-0 transforms) as one batch, for samples and PSNR."""
    count = min(count, len(dataset))
    return torch.stack([dataset[i]["image"] for i in range(count)])


__all__ = ["VQGANTask", "first_images", "psnr", "reconstruction_psnr", "write_sample_grid"]
