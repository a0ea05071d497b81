"""Settings shared by several stages (training loop knobs, checkpoint trust)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from quantart_cli.core.io.limits import DEFAULT_MAX_PIXELS
from quantart_cli.core.train.options import LoopOptions
from quantart_cli.plugin import BadInputError, NotFoundError, StageSettings, UsageError, cli_option


class ImageReadingSettings(StageSettings):
    max_pixels: int = cli_option(
        DEFAULT_MAX_PIXELS,
        "Refuse images with more pixels than this before decoding them (decompression bombs, absurd sizes).",
        ge=1,
    )


class CheckpointReadingSettings(StageSettings):
    trust_checkpoint: bool = cli_option(
        False,
        "Allow a full unpickle of checkpoints that cannot be read safely (only for files from a source you trust).",
    )


class TrainingSettings(CheckpointReadingSettings, ImageReadingSettings, LoopOptions):
    """What both trainers take: the shared loop's :class:`LoopOptions` fields, data and optimizer knobs."""

    out: Path | None = cli_option(None, "Run folder (default: a new folder under the runs dir).", short="-o")
    batch_size: int = cli_option(5, "Images per step on each device.", ge=1)
    base_lr: float = cli_option(4.5e-6, "Base learning rate; lr = base_lr x batch x GPUs x accumulate.", gt=0)
    lr: float | None = cli_option(None, "Absolute learning rate (overrides the base_lr scaling).", gt=0)
    size: int = cli_option(256, "Training image size in pixels (a multiple of 16).", ge=16, multiple_of=16)
    random_crop: bool = cli_option(False, "Random crops instead of the original's centre crop / squash.")
    hflip: bool = cli_option(False, "Random horizontal flips.")
    max_scale: float = cli_option(
        1.0, "Scale jitter: random crops from images resized up to this factor beyond --size (1: none).", ge=1.0
    )
    resize_filter: Literal["opencv-linear", "antialias"] = cli_option(
        "opencv-linear",
        "How training images are resized: opencv-linear (the original's: OpenCV INTER_LINEAR, no antialiasing) or "
        "antialias (PIL bilinear, smoother downscales, not the original's pixels).",
    )
    workers: int = cli_option(2, "DataLoader worker processes.", ge=0)
    channels_last: bool = cli_option(False, "Use the channels_last memory format (faster convs on recent GPUs).")
    compile: bool = cli_option(False, "torch.compile the model (opt-in; slow first steps).")
    resume: Path | None = cli_option(None, "Continue the run in this folder exactly where it stopped.")


# -- helpers both trainers share (kept free of torch at import time: `--help` must stay fast) ------------------

#: The settings a training run was started with, in its run folder (a preset: TOML, each value's source noted).
RUN_SETTINGS = "settings.toml"
#: What a resumed run may change; everything else keeps the value the run was started with.
MAY_CHANGE_ON_RESUME = frozenset({
    "steps", "save_every", "keep_checkpoints", "sample_every", "log_every", "workers", "device", "resume", "out",
    "trust_checkpoint", "compile",
})


def record_run_settings(settings: StageSettings, ctx, out_dir: Path) -> None:
    """Write the resolved settings into a new run folder (paths made absolute), so ``--resume DIR`` alone can
    continue it from anywhere."""
    from quantart_cli.core.io.atomic import atomic_write
    from quantart_cli.shell.settings import ResolvedSettings, render_config

    absolute = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, Path):
            absolute[name] = value.absolute()
        elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
            absolute[name] = [v.absolute() for v in value]
    recorded = settings.model_copy(update=absolute)
    text = render_config(ResolvedSettings(settings=recorded, sources=ctx.resolved.sources)) + "\n"
    atomic_write(out_dir / RUN_SETTINGS, lambda tmp: tmp.write_text(text, encoding="utf-8"), what="run settings")


def resumed_settings(settings: TrainingSettings, ctx) -> TrainingSettings:
    """With ``--resume DIR``: the settings recorded in DIR; what is given now overrides them only where it may
    change (steps, save and log intervals, workers, device), and any other setting given now that differs from the
    recorded one is refused with one sentence. A run folder without recorded settings resumes as before. A
    ``--resume`` folder that does not exist, or holds no run, is said to be so here, before any other setting is
    asked for."""
    if settings.resume is None:
        return settings
    _check_resume_folder(settings.resume)
    if not (settings.resume / RUN_SETTINGS).is_file():
        return settings
    from quantart_cli.shell.fields import flatten, option_label, set_dotted
    from quantart_cli.shell.presets import load_preset

    model = type(settings)
    recorded, _ = load_preset(settings.resume / RUN_SETTINGS, model)
    current = flatten(settings.model_dump(mode="json"))
    merged: dict[str, object] = {}
    for key, value in flatten(recorded).items():
        given = ctx.resolved.source_of(key).kind != "default"
        if given and key.split(".")[0] in MAY_CHANGE_ON_RESUME:
            continue
        if given and current.get(key) != value:
            raise UsageError(
                f"{option_label(key, model)} is {current.get(key)!r} but the run in {settings.resume} was started with "
                f"{value!r}; a resumed run keeps its settings (only {', '.join(_SHOWN)} may change)."
            )
        merged[key] = value
    data = settings.model_dump(mode="json")
    for key, value in merged.items():
        set_dotted(data, key, value)
    data["resume"] = str(settings.resume)
    return model.model_validate(data)


_SHOWN = ("steps", "save_every", "sample_every", "log_every", "keep_checkpoints", "workers", "device")


def _check_resume_folder(folder: Path) -> None:
    from quantart_cli.core.train.resume import STATE_FILE

    if not folder.exists():
        raise NotFoundError(f"--resume {folder}: that folder does not exist; give the folder of an earlier run.")
    if not folder.is_dir():
        raise UsageError(f"--resume {folder} is a file; give the folder of an earlier run (it holds {STATE_FILE}).")
    if not (folder / STATE_FILE).is_file() and not (folder / RUN_SETTINGS).is_file():
        raise NotFoundError(
            f"--resume {folder} holds no training run (no {STATE_FILE}); give the folder of an earlier run."
        )


def training_run_folder(settings: TrainingSettings, ctx, stage_name: str) -> Path:
    """The run folder: ``--resume``'s folder, else ``--out``, else a new stamped folder under the runs dir.

    Refuses to overwrite an existing run and a ``--resume`` of a folder without a training state.
    """
    from quantart_cli.core.train.resume import LAST_CHECKPOINT, STATE_FILE

    if settings.resume is not None:
        if settings.out is not None and settings.out.resolve() != settings.resume.resolve():
            raise UsageError("--resume continues the run in its own folder; leave out --out or give the same folder.")
        out_dir = settings.resume
        if not (out_dir / STATE_FILE).is_file():
            raise NotFoundError(
                f"{out_dir / STATE_FILE} does not exist; --resume needs the folder of an earlier run."
            )
        return out_dir
    if settings.out is not None:
        out_dir = settings.out
    else:
        import datetime

        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out_dir = ctx.paths.runs_dir / f"{stage_name}-{stamp}"
    if (out_dir / LAST_CHECKPOINT).exists():
        if not (out_dir / STATE_FILE).exists():
            raise UsageError(
                f"{out_dir} holds {LAST_CHECKPOINT} but no {STATE_FILE} (a run stopped during its first save?), so it "
                f"cannot be resumed; delete {out_dir / LAST_CHECKPOINT} to start over there, or pick another --out."
            )
        raise UsageError(f"{out_dir} already holds a run; continue it with --resume {out_dir} or pick another --out.")
    return out_dir


def resume_header(out_dir: Path, expected_kind: str, stage_name: str):
    """The header of the run's model checkpoint to resume from: ``last.pt``, or, when a kill damaged it, the
    ``previous.pt`` / newest ``step_N.pt`` the loop falls back to. Unsafe files are refused, never skipped."""
    from quantart_cli.core.errors import UnsafeCheckpointError
    from quantart_cli.core.io.checkpoints import read_checkpoint_header
    from quantart_cli.core.train.resume import LAST_CHECKPOINT, PREVIOUS_CHECKPOINT

    candidates = [out_dir / LAST_CHECKPOINT, out_dir / PREVIOUS_CHECKPOINT,
                  *sorted(out_dir.glob("step_*.pt"), reverse=True)]
    first_error: Exception | None = None
    for path in candidates:
        if not path.is_file():
            continue
        try:
            header = read_checkpoint_header(path)
        except UnsafeCheckpointError:
            raise
        except BadInputError as err:
            first_error = first_error or err
            continue
        if header.kind != expected_kind:
            raise UsageError(
                f"{path} is a {header.kind} checkpoint; {stage_name} can only resume a {expected_kind} run."
            )
        return header
    if first_error is not None:
        raise first_error

    raise NotFoundError(f"{out_dir / LAST_CHECKPOINT} does not exist; --resume needs the folder of an earlier run.")


def training_device(settings: TrainingSettings):
    """(device, DistInfo): the resolved device, precision checked, the process group joined under torchrun,
    and each process on the GPU of its LOCAL_RANK."""
    import torch

    from quantart_cli.core.devices import resolve_device
    from quantart_cli.core.precision import check_precision
    from quantart_cli.core.train.ddp import init_distributed

    device = resolve_device(settings.device)
    check_precision(device, settings.precision)
    info = init_distributed(device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    return device, info


def run_with_progress(settings: TrainingSettings, ctx, stage_name: str, task, dataset, out_dir: Path, device,
                      info, status):
    """Feed ``dataset`` to the shared loop for ``task`` with a progress bar (rank 0 only); the loop's result."""
    from quantart_cli.core.train.batches import BatchStream
    from quantart_cli.core.train.loop import run_training

    stream = BatchStream(dataset, batch_size=settings.batch_size, seed=settings.seed, info=info,
                         workers=settings.workers, pin_memory=device.type == "cuda")
    with ctx.console.progress(stage_name, settings.steps, unit="step") as bar:
        callbacks = ConsoleCallbacks(ctx, bar, status) if info.is_main else None
        return run_training(task, stream, out_dir, LoopOptions.pick(settings), device=device, info=info,
                            callbacks=callbacks, resume=settings.resume is not None)


def training_lr(settings: TrainingSettings, world_size: int, ctx=None) -> tuple[float, str]:
    """The learning rate and how it was derived: an absolute ``lr`` and where it was set (``--lr``, a preset, a
    ``QUANTART_*`` variable, the user config, the resumed run), or the original's scaling rule."""
    from quantart_cli.core.train.optim import scaled_lr

    if settings.lr:
        return settings.lr, _lr_origin(settings, ctx)
    lr = scaled_lr(settings.base_lr, settings.batch_size, world_size, settings.accumulate)
    how = (
        f"{settings.base_lr:g} x batch {settings.batch_size} x {world_size} process(es)"
        f" x accumulate {settings.accumulate}"
    )
    return lr, how


def _lr_origin(settings: TrainingSettings, ctx) -> str:
    source = ctx.resolved.source_of("lr") if ctx is not None else None
    if source is None or source.kind == "cli":
        return "--lr"
    if source.kind == "preset":
        return f"from the preset {Path(source.detail).stem}"
    if source.kind == "env":
        return f"from {source.detail}"
    if source.kind == "config":
        return f"from {source.detail}"
    return f"as recorded in {settings.resume}" if settings.resume is not None else "lr"


def json_safe(value: Any) -> Any:
    """JSON has no NaN/inf: turn them into null so the document parses everywhere."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def fmt_metric(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def summary_rows(result, lr: float, keys: tuple[str, ...]) -> list[tuple[str, str]]:
    """The first rows of a training summary table: steps, time, lr and the chosen metrics of the last record."""
    record = result.last_record
    return [
        ("steps", f"{result.start_step} -> {result.final_step}"),
        ("time", f"{result.seconds:.1f} s"),
        ("lr", f"{lr:.3g}"),
        *[(key, fmt_metric(record[key])) for key in keys if key in record],
    ]


class ConsoleCallbacks:
    """Maps the training loop's callbacks onto the console's progress bar and notes.

    ``status`` turns a metrics record into the short text shown beside the bar.
    """

    def __init__(self, ctx, bar, status: Callable[[dict], str]) -> None:
        self.ctx = ctx
        self.bar = bar
        self.status = status

    def on_start(self, start_step: int, total_steps: int) -> None:
        self.bar.update(completed=start_step, total=total_steps)

    def on_step(self, step: int, record: dict | None) -> None:
        if record is None:
            self.bar.advance(1)
        else:
            self.bar.advance(1, status=self.status(record))

    def on_checkpoint(self, step: int, path: Path) -> None:
        pass

    def on_sample(self, step: int, path: Path) -> None:
        pass

    def on_message(self, text: str) -> None:
        self.ctx.console.info(text)


def check_discriminator_fits(size: int, factor: int, n_layers: int) -> None:
    """Refuse a ``--size`` whose images (``factor`` 1) or latents (the VQGANs' downsampling factor) are too small
    for the PatchGAN with ``n_layers``, which would otherwise fail inside torch at the first step."""
    from quantart_cli.core.nn.discriminator import min_input_side

    needed = min_input_side(n_layers)
    side = size // factor
    if side < needed:
        what = "images" if factor == 1 else f"latents ({size} px / {factor})"
        smallest = -(-needed * factor // 16) * 16
        raise UsageError(
            f"--size {size} gives {what} of {side}x{side}, too small for the discriminator with "
            f"loss.disc_num_layers = {n_layers}, which needs at least {needed}x{needed}: use --size {smallest} or more."
        )


def load_saved_discriminator(loss, state: dict | None, source: Path) -> None:
    """A fine-tuning run (``--init-from``) goes on with the discriminator saved beside the model it starts from;
    one of another shape (other ``disc_*`` settings) is left fresh, which is logged. Nothing saved: nothing to do."""
    if not state:
        return
    try:
        loss.discriminator.load_state_dict(state, strict=True)
    except RuntimeError:
        logging.getLogger(__name__).info("The discriminator in %s does not fit; a fresh one is trained.", source)


def first_process_context(ctx, info):
    """``ctx`` for the notes and summaries of a job split across torchrun's processes: rank 0 says them for all,
    so elsewhere its console is muted (each process still prints its own outputs' lines through ``ctx``)."""
    if info.is_main:
        return ctx
    from dataclasses import replace

    return replace(ctx, console=ctx.console.muted())
