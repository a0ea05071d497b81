"""Stage 2 for the shared loop: the SGA module (the generator) against the latent discriminator, from images or
cached latents.

The frozen encoders give the content latent ``quant_x`` and the style latent ``quant_ref`` (or the batch already
holds them, from a :mod:`~quantart_cli.core.cache.latents`); the generator's forward maps ``quant_x`` toward the
style and ``quantize_dec`` quantizes the result into ``quant_y`` (not in the continuous variant); its loss is
:class:`StyleTransferLoss`'s reverse + VQ + style + constant-weight GAN (+ image) terms; the discriminator compares
``quant_ref`` (real) with the detached ``quant_y`` (fake). How a step runs them is
:mod:`quantart_cli.core.train.step`; only ``model_x2y`` has trainable parameters.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from quantart_cli.core.codebook.stats import perplexity
from quantart_cli.core.devices import set_memory_format
from quantart_cli.core.errors import UsageError
from quantart_cli.core.io.checkpoint_format import LoadedCheckpoint
from quantart_cli.core.io.checkpoints import load_checkpoint, model_from_checkpoint
from quantart_cli.core.losses.style_transfer import StyleTransferLoss
from quantart_cli.core.models import StyleTransfer
from quantart_cli.core.train.ddp import DistInfo, all_reduce_sum
from quantart_cli.core.train.samples import save_image_rows
from quantart_cli.core.train.step import Adversary, Generator, load_with_discriminator, save_with_discriminator
from quantart_cli.core.train.task import StepContext

# ------------------------------------------------------------------------------------------- assembly


def load_vqgan_pair(
    content_path: str | os.PathLike[str],
    style_path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    trust: bool = False,
) -> tuple[LoadedCheckpoint, LoadedCheckpoint]:
    """Read the content (photo) and style (art) stage-1 checkpoints and check that they pair up.

    Raises :class:`UsageError` for a style-transfer checkpoint where a VQGAN is expected and for two
    VQGANs whose latents differ in width (``embed_dim``).
    """
    loaded = []
    for role, path in (("content", content_path), ("style", style_path)):
        ckpt = load_checkpoint(path, device=device, trust=trust)
        if ckpt.kind != "vqgan":
            raise UsageError(
                f"{path} is a {ckpt.kind} checkpoint, but the {role} model of stage 2 must be a stage-1 VQGAN "
                "(from train-vq, or an original taming/QuantArt VQGAN)."
            )
        loaded.append(ckpt)
    content, style = loaded
    c_dim, s_dim = content.config.quantizer.embed_dim, style.config.quantizer.embed_dim
    if c_dim != s_dim:
        raise UsageError(
            f"The content VQGAN {content_path} has embed_dim {c_dim} but the style VQGAN {style_path} has "
            f"embed_dim {s_dim}; stage 2 needs two VQGANs with latents of the same width."
        )
    return content, style


def assemble_style_transfer(
    content: LoadedCheckpoint,
    style: LoadedCheckpoint,
    *,
    sga_blocks: int = 6,
    use_residual: bool = True,
    continuous: bool = False,
    sga_padding: str = "zeros",
    device: str | torch.device = "cpu",
) -> StyleTransfer:
    """The stage-2 model from two stage-1 checkpoints, frozen as the original: only ``model_x2y`` trains."""
    content_model = model_from_checkpoint(content, device=device)
    style_model = model_from_checkpoint(style, device=device)
    return StyleTransfer.from_vqgans(
        content_model, style_model, sga_blocks=sga_blocks, use_residual=use_residual, continuous=continuous,
        sga_padding=sga_padding,
    )


# ------------------------------------------------------------------------------------------- the task


class _Stylized(NamedTuple):
    quant_y: Tensor
    vq_loss: Tensor
    usage: Tensor


class _Stylize(nn.Module):
    """``model.stylize_latent`` as a module DDP can wrap (its only trainable part is ``model_x2y``); with
    ``channels_last`` its inputs are put in that order first, as the model's weights are."""

    def __init__(self, model: StyleTransfer, channels_last: bool) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last

    def forward(self, quant_x: Tensor, quant_ref: Tensor) -> _Stylized:
        if self.channels_last:
            quant_x = quant_x.contiguous(memory_format=torch.channels_last)
            quant_ref = quant_ref.contiguous(memory_format=torch.channels_last)
        _, quant_y, vq_loss, info = self.model.stylize_latent(quant_x, quant_ref)
        usage = info.usage if info is not None else quant_y.new_zeros(1, dtype=torch.long)
        return _Stylized(quant_y.contiguous(), vq_loss, usage)


class StyleTransferTask:
    """Stage-2 :class:`~quantart_cli.core.train.task.TrainingTask`: a :class:`StyleTransfer` and its loss.

    Batches hold images (``content``, ``style``) or cached latents (``content_latent``,
    ``style_latent``). ``sample_pairs`` (content images, style images) feed the sample grids;
    ``metadata`` is stored in every checkpoint (e.g. where the stage-1 models came from).
    """

    def __init__(
        self,
        model: StyleTransfer,
        loss: StyleTransferLoss,
        *,
        lr: float,
        device: torch.device,
        info: DistInfo = DistInfo(),
        sample_pairs: tuple[Tensor, Tensor] | None = None,
        compile: bool = False,
        metadata: Mapping[str, Any] | None = None,
        channels_last: bool = False,
    ) -> None:
        if loss.config.disc_in_channels != model.config.embed_dim:
            raise UsageError(
                f"The latent discriminator sees {loss.config.disc_in_channels} channels but the model's latents "
                f"have {model.config.embed_dim}; set loss.disc_in_channels to the model's embed_dim."
            )
        self.model = set_memory_format(model, channels_last)  # contiguous by default, as the original (see vq_task)
        self.loss = loss
        self.device = device
        self.info = info
        self.sample_pairs = sample_pairs
        self.metadata = dict(metadata or {})
        self.adversary = Adversary(loss, lr=lr, device=device, info=info)
        self.generator = Generator("sga", _Stylize(model, channels_last), model.trainable_parameters(), lr=lr,
                                   device=device, info=info, compile=compile)
        n_embed = model.config.style.quantizer.n_embed
        self._usage_since_log = torch.zeros(n_embed, dtype=torch.long, device=device)
        self._latents_of: Any = None
        self._latents: tuple[Tensor, Tensor] = (torch.empty(0), torch.empty(0))
        self._targets: tuple[Tensor, Tensor] | None = None

    # -- TrainingTask ------------------------------------------------------------------------------------

    def train(self) -> None:
        self.model.train()  # the frozen VQGAN parts keep themselves in eval mode
        self.loss.train()

    def latents(self, batch: Mapping[str, Any], ctx: StepContext | None = None) -> tuple[Tensor, Tensor]:
        """(quant_x, quant_ref) of a batch: from the cache as they are, else by the frozen encoders."""
        if "content_latent" in batch:
            return batch["content_latent"], batch["style_latent"]
        with torch.no_grad(), ctx.autocast() if ctx is not None else contextlib.nullcontext():
            quant_x, _ = self.model.encode_content(batch["content"])
            quant_ref, _ = self.model.encode_style(batch["style"])
        return quant_x, quant_ref

    def target_images(self, batch: Mapping[str, Any], ctx: StepContext | None = None) -> tuple[Tensor, Tensor]:
        """(painting, photo) for the image-space terms: the batch's images, or for cached latents their decodings
        by the art decoder (the nearest the cache holds)."""
        if "content" in batch:
            return batch["style"], batch["content"]
        quant_x, quant_ref = self._latents
        with torch.no_grad(), ctx.autocast() if ctx is not None else contextlib.nullcontext():
            return self.model.decode(quant_ref), self.model.decode(quant_x)

    def forward(self, batch: Any, ctx: StepContext) -> _Stylized:
        if batch is not self._latents_of:  # the sequential order runs each batch twice: encode it once
            self._latents_of, self._latents = batch, self.latents(batch, ctx)
            self._targets = self.target_images(batch, ctx) if self.loss.uses_images else None
        return self.generator(*self._latents)

    def generator_loss(self, batch: Any, out: _Stylized, step: int, ctx: StepContext
                       ) -> tuple[Tensor, Mapping[str, Tensor]]:
        quant_x, quant_ref = self._latents  # of this batch: forward just ran on it
        images = None
        if self._targets is not None:
            with ctx.autocast():
                images = (self.model.decode(out.quant_y), *self._targets)
        if not self.model.config.continuous:  # codebook usage of the forward that trains the generator
            self._usage_since_log += out.usage.detach()
        return self.loss.generator_loss(out.quant_y, quant_x, quant_ref, out.vq_loss, step, images=images)

    def discriminator_inputs(self, batch: Any, out: _Stylized) -> tuple[Tensor, Tensor]:
        return self._latents[1], out.quant_y

    def after_step(self, step: int) -> None:
        pass

    def metrics(self, step: int) -> dict[str, float]:
        if self.model.config.continuous:
            return {}
        usage = all_reduce_sum(self._usage_since_log.clone(), self.info).cpu()
        self._usage_since_log.zero_()
        return {"perplexity_y": perplexity(usage), "codes_used_y": int((usage > 0).sum())}

    def state_dict(self) -> dict[str, Any]:
        return {"usage_since_log": self._usage_since_log.cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            self._usage_since_log.copy_(state["usage_since_log"])

    def save_model(self, path: Path, step: int) -> None:
        save_with_discriminator(self.model, self.adversary, path, step, extra=self.metadata)

    def load_model(self, path: Path) -> int:
        return int(load_with_discriminator(self.model, self.adversary, path, "style-transfer").step or 0)

    def write_sample(self, path: Path) -> None:
        if self.sample_pairs is not None:
            write_transfer_grid(self.model, *self.sample_pairs, path)


@torch.no_grad()
def write_transfer_grid(model: StyleTransfer, content: Tensor, style: Tensor, path: Path) -> Path:
    """Content images (top row), their style images (middle) and the results (bottom), as one PNG."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x, ref = content.to(device), style.to(device)
    result = model(x, ref)
    model.train(was_training)
    return save_image_rows([x, ref, result], path)


def first_pairs(dataset: Any, count: int) -> tuple[Tensor, Tensor]:
    """The first ``count`` (content, style) image pairs of an UnpairedDataset (epoch-0 pairing)."""
    count = min(count, len(dataset))
    items = [dataset[i] for i in range(count)]
    return torch.stack([it["content"] for it in items]), torch.stack([it["style"] for it in items])


__all__ = [
    "StyleTransferTask",
    "assemble_style_transfer",
    "first_pairs",
    "load_vqgan_pair",
    "write_transfer_grid",
]
