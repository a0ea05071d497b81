"""``quantart train-sga``: stage 2, the Style-Guided Attention module between two frozen VQGANs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from quantart_cli.core.losses.config import StyleTransferLossConfig
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

GENRE_CSV_NAME = "train_info.csv"


class TrainSGASettings(TrainingSettings):
    batch_size: int = cli_option(8, "Content/style pairs per step on each device.", ge=1)
    content_vq: Path | None = cli_option(None, "Stage-1 checkpoint of the content (photo) domain.")
    style_vq: Path | None = cli_option(None, "Stage-1 checkpoint of the style (art) domain.")
    init_from: Path | None = cli_option(
        None,
        "Fine-tune from this style-transfer checkpoint (its two VQGANs and SGA module, native or original) "
        "instead of starting from --content-vq/--style-vq.",
    )
    content_data: list[Path] = cli_option([], "Content images: folder, list file or CSV (repeatable).")
    style_data: list[Path] = cli_option([], "Style images: folder, list file or CSV (repeatable).")
    style_genre_csv: Path | None = cli_option(None, "WikiArt train_info.csv to filter style images by genre.")
    style_genre: str | None = cli_option(None, "Genre kept from --style-genre-csv, e.g. landscape.")
    continuous: bool = cli_option(False, "Train the continuous (non-quantized) variant for the visual-fidelity knob.")
    cache: Path | None = cli_option(None, "Encode both datasets once into this folder and train from the latents.")
    rebuild_cache: bool = cli_option(False, "Re-encode a --cache folder made from other checkpoints or settings.")
    sga_blocks: int = cli_option(6, "Style-Guided Attention blocks.", ge=1)
    use_residual: bool = cli_option(True, "Residual connections in the SGA attention blocks.")
    sga_padding: Literal["zeros", "replicate"] = cli_option(
        "zeros", "Padding of the SGA convolutions: zeros (the original) or replicate (no frame along the border)."
    )
    loss: StyleTransferLossConfig = StyleTransferLossConfig()


def run(settings: TrainSGASettings, ctx: RunContext) -> int:
    settings = resumed_settings(settings, ctx)  # --resume DIR alone: the run's recorded settings
    if settings.resume is None and settings.init_from is not None:
        if settings.content_vq is not None or settings.style_vq is not None:
            raise UsageError("--init-from brings its own VQGANs; give it without --content-vq and --style-vq.")
    elif settings.resume is None and (settings.content_vq is None or settings.style_vq is None):
        raise UsageError(
            "train-sga needs --content-vq and --style-vq (the two stage-1 VQGAN checkpoints), or --init-from "
            "(a style-transfer checkpoint to fine-tune)."
        )
    if not settings.content_data or not settings.style_data:
        raise UsageError("train-sga needs --content-data and --style-data: folders, list files or CSV manifests.")

    from quantart_cli.core.train.ddp import shutdown_distributed
    from quantart_cli.core.train.resume import LAST_CHECKPOINT, METRICS_FILE
    from quantart_cli.core.train.rng import seed_everything

    device, info = training_device(settings)
    try:
        out_dir = training_run_folder(settings, ctx, "train-sga")
        seed_everything(settings.seed)
        show = ctx.console if info.is_main else None
        model, provenance, discriminator = _build_model(settings, out_dir, device)
        _check_size(settings.size, model, settings.loss.disc_num_layers)
        from quantart_cli.core.data.datasets import UnpairedDataset
        from quantart_cli.core.losses.style_transfer import StyleTransferLoss
        from quantart_cli.core.train.sga_task import StyleTransferTask, first_pairs

        genre_csv = _genre_csv(settings, show)
        images = UnpairedDataset(
            settings.content_data,
            settings.style_data,
            size=settings.size,
            seed=settings.seed,
            resize="shorter-side" if settings.random_crop else "squash",
            crop="random" if settings.random_crop else "center",
            hflip=settings.hflip,
            max_scale=settings.max_scale,
            resize_filter=settings.resize_filter,
            style_genre_csv=genre_csv,
            style_genre=settings.style_genre if genre_csv is not None else None,
            max_pixels=settings.max_pixels,
        )
        loss = StyleTransferLoss(settings.loss.model_copy(update={"disc_in_channels": model.config.embed_dim}))
        loss = loss.to(device)
        load_saved_discriminator(loss, discriminator, settings.init_from)
        lr, how = training_lr(settings, info.world_size, ctx)
        summary = images.summary()
        if show:
            variant = "continuous" if model.config.continuous else "quantized"
            show.info(
                f"Training the {variant} SGA on {summary['pairs']} pairs ({summary['content_images']} content, "
                f"{summary['style_images']} style, {images.skipped} skipped) on {device}; lr = {lr:.3g} ({how})."
            )
        dataset = images
        if settings.cache is not None:
            dataset = _cached_dataset(settings, ctx, model, images, provenance, device, info)
            provenance["trained_from"] = "latent-cache"
        else:
            provenance["trained_from"] = "images"
        task = StyleTransferTask(
            model,
            loss,
            lr=lr,
            device=device,
            info=info,
            sample_pairs=first_pairs(images, 4),
            compile=settings.compile,
            metadata=provenance,
            channels_last=settings.channels_last,
        )
        if settings.resume is None and info.is_main:  # once the inputs proved usable
            record_run_settings(settings, ctx, out_dir)
        result = run_with_progress(settings, ctx, "train-sga", task, dataset, out_dir, device, info, _status)
        if show:
            rows = summary_rows(result, lr, _SUMMARY_KEYS)
            first = _first_record(out_dir / METRICS_FILE)
            if first and "style" in first and "style" in result.last_record:
                rows.append(
                    ("style loss (first -> last log)", f"{first['style']:.4g} -> {result.last_record['style']:.4g}")
                )
            rows.append(("skipped images", str(images.skipped)))
            show.table("train-sga summary", ["", "value"], rows)
            show.result(str(out_dir / LAST_CHECKPOINT))
        return 0
    finally:
        shutdown_distributed()


_SUMMARY_KEYS = ("total", "reverse", "style", "vq", "g_loss", "d_loss", "perplexity_y")


def _status(record: dict) -> str:
    status = f"loss {record.get('total', float('nan')):.4f} style {record.get('style', float('nan')):.4f}"
    if record.get("d_loss"):
        status += f" d {record['d_loss']:.3f}"
    return status


def _first_record(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline()
        return json.loads(line) if line else None
    except (OSError, ValueError):
        return None


def _build_model(settings: TrainSGASettings, out_dir: Path, device):
    """A new model from the two VQGANs, or from --init-from, or on resume the run's own model; with the provenance
    stored in its checkpoints and, from --init-from, the discriminator saved beside it (or None)."""
    if settings.resume is not None:
        header = resume_header(out_dir, "style-transfer", "train-sga")
        if header.config.continuous != settings.continuous:
            raise UsageError(
                f"{out_dir} trains the {'continuous' if header.config.continuous else 'quantized'} variant; "
                "resume it with the same --continuous setting."
            )
        from quantart_cli.core.io.checkpoints import load_model

        # The weights are needed before the loop restores them: the latent cache checks its encoders.
        model = load_model(header.path, device=device, expected_kind="style-transfer")
        provenance = {k: header.metadata[k] for k in _PROVENANCE_KEYS if k in header.metadata}
        return model, provenance, None
    if settings.init_from is not None:
        return _fine_tuned_model(settings, device)
    from quantart_cli.core.train.sga_task import assemble_style_transfer, load_vqgan_pair

    content, style = load_vqgan_pair(
        settings.content_vq, settings.style_vq, device=device, trust=settings.trust_checkpoint
    )
    model = assemble_style_transfer(
        content,
        style,
        sga_blocks=settings.sga_blocks,
        use_residual=settings.use_residual,
        continuous=settings.continuous,
        sga_padding=settings.sga_padding,
        device=device,
    )
    provenance = {
        "content_vq": {"file": str(content.path), "sha256": content.sha256},
        "style_vq": {"file": str(style.path), "sha256": style.sha256},
    }
    return model, provenance, None


#: Where a model came from, carried from checkpoint to checkpoint.
_PROVENANCE_KEYS = ("content_vq", "style_vq", "init_from")
#: Settings that shape the SGA module: a fine-tuned model keeps those of the checkpoint it starts from.
_ARCHITECTURE = ("sga_blocks", "use_residual", "sga_padding", "continuous")


def _fine_tuned_model(settings: TrainSGASettings, device):
    from quantart_cli.core.io.checkpoints import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(
        settings.init_from, device=device, expected_kind="style-transfer", trust=settings.trust_checkpoint
    )
    from quantart_cli.shell.fields import option_label

    for name in _ARCHITECTURE:
        theirs, ours = getattr(ckpt.config, name), getattr(settings, name)
        if theirs != ours:
            raise UsageError(
                f"{settings.init_from} was trained with {name} = {theirs!r} but this run asks for {ours!r}; "
                f"set {option_label(name, type(settings))} to the checkpoint's value (a fine-tuned model keeps its "
                "architecture)."
            )
    model = model_from_checkpoint(ckpt, device=device)
    provenance = {k: ckpt.metadata[k] for k in ("content_vq", "style_vq") if k in ckpt.metadata}
    provenance["init_from"] = {"file": str(ckpt.path), "sha256": ckpt.sha256}
    return model, provenance, ckpt.extra_state_dicts.get("discriminator")


def _check_size(size: int, model, disc_num_layers: int) -> None:
    factors = {model.config.content.autoencoder.downsample_factor, model.config.style.autoencoder.downsample_factor}
    factor = max(factors)
    if size % factor:
        raise UsageError(f"--size {size} must be a multiple of the VQGANs' downsampling factor {factor}.")
    check_discriminator_fits(size, factor, disc_num_layers)


def _genre_csv(settings: TrainSGASettings, show) -> Path | None:
    """The genre CSV to filter with: --style-genre-csv, else a train_info.csv beside the style folder."""
    if settings.style_genre is None:
        if settings.style_genre_csv is not None:
            raise UsageError("--style-genre-csv needs --style-genre, the genre to keep (e.g. landscape).")
        return None
    if settings.style_genre_csv is not None:
        return settings.style_genre_csv
    if len(settings.style_data) == 1:
        folder = settings.style_data[0]
        for candidate in (folder / GENRE_CSV_NAME, folder.parent / GENRE_CSV_NAME):
            if candidate.is_file():
                if show:
                    show.info(f"Keeping style images of genre {settings.style_genre!r} listed in {candidate}.")
                return candidate
    if show:
        show.warn(
            f"Style genre {settings.style_genre!r} is set but no {GENRE_CSV_NAME} was given or found beside the "
            "style folder; all style images are used (pass --style-genre-csv to filter)."
        )
    return None


def _cached_dataset(settings: TrainSGASettings, ctx: RunContext, model, images, provenance, device, info):
    from quantart_cli.core.cache.latents import CacheCallbacks, LatentPairDataset, build_latent_cache

    class _Progress(CacheCallbacks):
        def __init__(self, bar) -> None:
            self.bar = bar

        def on_start(self, total: int, done: int) -> None:
            self.bar.update(completed=done, total=total)
            if done and info.is_main:
                ctx.console.info(f"Latent cache {settings.cache}: {done} of {total} images already encoded.")

        def on_advance(self, items: int) -> None:
            self.bar.advance(items)

        def on_message(self, text: str) -> None:
            ctx.console.info(text)

    resize = "shorter-side" if settings.random_crop else "squash"
    with ctx.console.progress("encoding latents", None, unit="img") as bar:
        cache = build_latent_cache(
            model,
            settings.cache,
            images.content_paths,
            images.style_paths,
            size=settings.size,
            resize=resize,
            resize_filter=settings.resize_filter,
            device=device,
            batch_size=settings.batch_size,
            workers=settings.workers,
            rebuild=settings.rebuild_cache,
            checkpoints=provenance,
            callbacks=_Progress(bar) if info.is_main else None,
            info=info,
        )
    return LatentPairDataset(
        cache,
        content_size=settings.size // model.config.content.autoencoder.downsample_factor,
        style_size=settings.size // model.config.style.autoencoder.downsample_factor,
        seed=settings.seed,
        random_crop=settings.random_crop,
        hflip=settings.hflip,
    )


stage = Stage(
    name="train-sga",
    help="Train the style-transfer (SGA) module between two VQGANs (stage 2).",
    settings=TrainSGASettings,
    run=run,
    description=(
        "Example: quantart train-sga --preset landscape2art --content-vq photo_vq.pt --style-vq art_vq.pt "
        "--content-data ~/lhq --style-data ~/wikiart"
    ),
)
