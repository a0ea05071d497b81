"""``quantart train-vq``: stage 1, a VQGAN codebook (taming-transformers VQGAN with the QuantArt recipe)."""

from __future__ import annotations

from pathlib import Path

from quantart_cli.core.config import VQGANConfig
from quantart_cli.core.losses.config import VQGANLossConfig
from quantart_cli.plugin import RunContext, Stage, UsageError, cli_option
from quantart_stages.common import (
    TrainingSettings,
    check_discriminator_fits,
    load_saved_discriminator,
    record_run_settings,
    resume_header,
    resumed_settings,
    run_with_progress,
    summary_rows,
    training_device,
    training_lr,
    training_run_folder,
)


class TrainVQSettings(TrainingSettings):
    data: list[Path] = cli_option([], "Training images: folder (recursive), list file or CSV manifest (repeatable).")
    init_from: Path | None = cli_option(None, "Fine-tune from this VQGAN checkpoint (native or original).")
    restart_dead_codes: bool = cli_option(False, "Re-seed unused codes from recent encoder outputs.")
    dead_code_window: int = cli_option(200, "Steps over which code usage is counted for health and restarts.", ge=1)
    model: VQGANConfig = VQGANConfig()
    loss: VQGANLossConfig = VQGANLossConfig()


def run(settings: TrainVQSettings, ctx: RunContext) -> int:
    settings = resumed_settings(settings, ctx)  # --resume DIR alone: the run's recorded settings
    if not settings.data:
        raise UsageError("train-vq needs --data: a folder of images, a list file or a CSV manifest.")

    from quantart_cli.core.data.datasets import ImageDataset
    from quantart_cli.core.train.ddp import shutdown_distributed
    from quantart_cli.core.train.resume import LAST_CHECKPOINT
    from quantart_cli.core.train.rng import seed_everything

    device, info = training_device(settings)
    try:
        out_dir = training_run_folder(settings, ctx, "train-vq")
        seed_everything(settings.seed)
        model_config = _model_config(settings, out_dir)
        dataset = ImageDataset(
            settings.data,
            size=settings.size,
            crop="random" if settings.random_crop else "center",
            hflip=settings.hflip,
            resize_filter=settings.resize_filter,
            max_scale=settings.max_scale,
            seed=settings.seed,
            max_pixels=settings.max_pixels,
        )
        check_discriminator_fits(settings.size, 1, settings.loss.disc_num_layers)
        model, loss = _build(settings, model_config, device)
        lr, how = training_lr(settings, info.world_size, ctx)
        show = ctx.console if info.is_main else None
        if show:
            show.info(
                f"Training on {len(dataset)} images ({dataset.skipped} skipped) on {device}; lr = {lr:.3g} ({how})."
            )
        from quantart_cli.core.train.vq_task import VQGANTask, first_images, reconstruction_psnr

        eval_images = first_images(dataset, 16)
        psnr_before = reconstruction_psnr(model, eval_images) if settings.resume is None else None
        task = VQGANTask(
            model,
            loss,
            lr=lr,
            device=device,
            info=info,
            sample_images=eval_images[:4],
            channels_last=settings.channels_last,
            compile=settings.compile,
            restart_dead_codes=settings.restart_dead_codes,
            dead_code_window=settings.dead_code_window,
            seed=settings.seed,
        )
        if settings.resume is None and info.is_main:  # once the inputs proved usable
            record_run_settings(settings, ctx, out_dir)
        result = run_with_progress(settings, ctx, "train-vq", task, dataset, out_dir, device, info, _status)
        if show:
            psnr_after = reconstruction_psnr(model, eval_images)
            rows = [
                *summary_rows(result, lr, _SUMMARY_KEYS),
                ("PSNR (training images)", (f"{psnr_before:.2f} -> " if psnr_before is not None else "")
                 + f"{psnr_after:.2f} dB"),
                ("skipped images", str(dataset.skipped)),
            ]
            show.table("train-vq summary", ["", "value"], rows)
            show.result(str(out_dir / LAST_CHECKPOINT))
        return 0
    finally:
        shutdown_distributed()


_SUMMARY_KEYS = ("total", "rec_l1", "perceptual", "vq", "g_loss", "d_loss", "perplexity", "dead_codes")


def _status(record: dict) -> str:
    status = f"loss {record.get('total', float('nan')):.4f} l1 {record.get('rec_l1', float('nan')):.4f}"
    if record.get("d_loss"):
        status += f" d {record['d_loss']:.3f}"
    return status + f" ppl {record.get('perplexity', 0):.1f}"


def _model_config(settings: TrainVQSettings, out_dir: Path) -> VQGANConfig:
    """The settings' model, except on resume where the run's own checkpoint decides."""
    if settings.resume is None:
        return settings.model
    header = resume_header(out_dir, "vqgan", "train-vq")
    return header.config  # type: ignore[return-value]


def _build(settings: TrainVQSettings, config: VQGANConfig, device):
    from quantart_cli.core.losses.vqgan import VQGANLoss
    from quantart_cli.core.models import VQGAN

    model = VQGAN(config).to(device)
    loss = VQGANLoss(settings.loss).to(device)
    if settings.init_from is not None and settings.resume is None:
        from quantart_cli.core.io.checkpoints import load_checkpoint

        ckpt = load_checkpoint(
            settings.init_from, device=device, expected_kind="vqgan", trust=settings.trust_checkpoint
        )
        if ckpt.config != config:
            raise UsageError(
                f"{settings.init_from} holds a VQGAN whose configuration differs from this run's model; "
                "use the preset that matches it (or --set model.* to its values)."
            )
        model.load_state_dict(ckpt.state_dict, strict=True)
        load_saved_discriminator(loss, ckpt.extra_state_dicts.get("discriminator"), settings.init_from)
    return model, loss


stage = Stage(
    name="train-vq",
    help="Train a VQGAN codebook (stage 1).",
    settings=TrainVQSettings,
    run=run,
    description="Example: quantart train-vq --preset wikiart --data ~/datasets/wikiart",
)
