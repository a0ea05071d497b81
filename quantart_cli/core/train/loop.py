"""The training loop shared by ``train-vq`` and ``train-sga``.

The loop owns what every trainer needs: seeding, a resumable seeded data order, mixed precision
(autocast, a GradScaler for fp16), gradient accumulation, gradient clipping, non-finite loss detection,
``metrics.jsonl``, sample and checkpoint cadence, exact resume and a clean Ctrl-C. One optimizer step of the
generator and its discriminator is :func:`~quantart_cli.core.train.step.train_step`; what is trained and its
losses belong to a :class:`~quantart_cli.core.train.task.TrainingTask` (``vq_task.VQGANTask``,
``sga_task.StyleTransferTask``). Progress is reported through ``TrainingCallbacks``, so this module never
touches the terminal. The run folder's files and how a run resumes are described in :mod:`.resume`.
Under torchrun (``WORLD_SIZE > 1``) every rank runs the loop; rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from quantart_cli.core.errors import (
    BadInputError,
    NonFiniteLossError,
    QuantartError,
    RunFolderWriteError,
    UsageError,
)
from quantart_cli.core.precision import check_precision
from quantart_cli.core.train.batches import BatchStream
from quantart_cli.core.train.ddp import DistInfo, any_rank, stop_agreed
from quantart_cli.core.train.lock import run_folder_lock
from quantart_cli.core.train.optim import first_lr
from quantart_cli.core.train.options import LoopOptions
from quantart_cli.core.train.resume import (
    LAST_CHECKPOINT,
    METRICS_FILE,
    PREVIOUS_CHECKPOINT,
    SAMPLES_DIR,
    STATE_FILE,
    STATE_FORMAT,
    STATE_VERSION,
    keep_previous,
    keep_step_copy,
    load_resume_model,
    load_training_state,
    remove_stale_temps,
    save_training_state,
    trim_metrics,
)
from quantart_cli.core.train.rng import capture_rng_state, restore_rng_state
from quantart_cli.core.train.signals import StopRequest
from quantart_cli.core.train.step import optimizers_of, train_step
from quantart_cli.core.train.task import StepContext, TrainingCallbacks, TrainingResult, TrainingTask


def _write_failure(err: BaseException, out_dir: Path, complete_step: int | None) -> RunFolderWriteError:
    reason = str(err).strip().rstrip(".") if isinstance(err, QuantartError) else (
        f"cannot write to {out_dir} ({getattr(err, 'strerror', None) or err})"
    )
    if complete_step is None:
        kept = "no checkpoint had been written yet"
    else:
        kept = f"the last complete checkpoint (step {complete_step}) is kept; continue with `resume={out_dir}`"
    return RunFolderWriteError(f"{reason}; training stopped and {kept}.")


# ---------------------------------------------------------------------------------------- the loop


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def run_training(
    task: TrainingTask,
    stream: BatchStream,
    out_dir: Path,
    options: LoopOptions,
    *,
    device: torch.device,
    info: DistInfo = DistInfo(),
    callbacks: TrainingCallbacks | None = None,
    resume: bool = False,
) -> TrainingResult:
    """Train ``task`` until ``options.steps`` optimizer steps; resume from ``out_dir`` when asked.

    Raises :class:`NonFiniteLossError` when a loss is NaN/inf (nothing is saved for that step) and
    re-raises ``KeyboardInterrupt`` after saving a checkpoint of the last finished step.
    """
    lock = run_folder_lock(Path(out_dir)) if info.is_main else contextlib.nullcontext()
    with lock:  # one run per folder, from loading its state to the last save
        return _run_training(task, stream, out_dir, options, device=device, info=info, callbacks=callbacks,
                             resume=resume)


def _run_training(
    task: TrainingTask,
    stream: BatchStream,
    out_dir: Path,
    options: LoopOptions,
    *,
    device: torch.device,
    info: DistInfo = DistInfo(),
    callbacks: TrainingCallbacks | None = None,
    resume: bool = False,
) -> TrainingResult:
    callbacks = callbacks or TrainingCallbacks()
    check_precision(device, options.precision)
    out_dir = Path(out_dir)
    last_path = out_dir / LAST_CHECKPOINT
    state_path = out_dir / STATE_FILE
    optimizers = optimizers_of(task)
    scaler = torch.amp.GradScaler(device.type, enabled=options.precision == "fp16")

    step = 0
    if resume:
        state = load_training_state(state_path)
        step = state.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise BadInputError(f"{state_path} is a damaged quantart training state (it has no valid step).")
        load_resume_model(task, out_dir, step, info)
        try:
            for name, optimizer in optimizers.items():
                optimizer.load_state_dict(state["optimizers"][name])
            scaler.load_state_dict(state["scaler"])
            stream.load_state_dict(state["data"])
            task.load_state_dict(state.get("task", {}))
            restore_rng_state(state["rng"])
        except (KeyError, IndexError, ValueError, TypeError, RuntimeError) as err:
            raise BadInputError(
                f"{state_path} does not fit this run (its optimizer or data state differs); it was written by another "
                "kind of run."
            ) from err
        if int(state.get("world_size", 1)) != info.world_size:
            callbacks.on_message(
                f"Resuming a run of {state.get('world_size')} processes with {info.world_size}: "
                "the data order from here on differs from an uninterrupted run."
            )
        if step >= options.steps:
            raise UsageError(
                f"{out_dir} already reached step {step} of {options.steps}; raise `steps` to train further."
            )
        callbacks.on_message(f"Resuming from step {step} (epoch {stream.epoch}).")

    if info.is_main:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderWriteError(
                f"Cannot create the run folder {out_dir} ({err.strerror or err}); pick another `out`."
            ) from err
        # Leftovers of a killed run: temp files nobody will finish, and metrics past the step we start from
        # (a fresh start in a folder whose first save never completed starts its metrics afresh too).
        removed = remove_stale_temps(out_dir)
        if removed:
            callbacks.on_message(f"Removed {removed} unfinished temp file(s) a killed run left in {out_dir}.")
        trim_metrics(out_dir / METRICS_FILE, step)
    saved_step = step if resume else None

    stop = StopRequest()

    def save(at_step: int, *, periodic: bool) -> None:
        nonlocal saved_step
        with stop.saving():  # a second Ctrl-C now takes effect when the save is complete, never in between
            if info.is_main:
                try:
                    _save_files(at_step, periodic=periodic)
                except (OSError, QuantartError) as err:
                    raise _write_failure(err, out_dir, saved_step) from err
                callbacks.on_checkpoint(at_step, last_path)
            saved_step = at_step

    def _save_files(at_step: int, *, periodic: bool) -> None:
        """previous.pt, last.pt, state.pt in that order: a kill at any point leaves a matching pair."""
        nonlocal saved_step
        keep_previous(last_path, out_dir / PREVIOUS_CHECKPOINT)
        task.save_model(last_path, at_step)
        state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "step": at_step,
            "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
            "scaler": scaler.state_dict(),
            "data": stream.state_dict(),
            "rng": capture_rng_state(),
            "task": task.state_dict(),
            "world_size": info.world_size,
        }
        save_training_state(state_path, state)
        saved_step = at_step  # last.pt and state.pt agree again: previous.pt is no longer needed
        (out_dir / PREVIOUS_CHECKPOINT).unlink(missing_ok=True)
        if periodic:
            keep_step_copy(out_dir, last_path, at_step, options.keep_checkpoints)

    start_step = step
    callbacks.on_start(start_step, options.steps)
    task.train()
    ctx = StepContext(device, options.precision, scaler, options.accumulate, options.grad_clip)
    log_sums: dict[str, torch.Tensor] = {}
    log_count = 0
    started = time.perf_counter()
    interval_start, interval_steps = started, 0
    last_record: dict[str, Any] = {}
    interrupted = False

    def check_finite() -> None:
        _check_finite(ctx.losses, step, info, device, last_path, saved_step)

    with stop:
        try:
            while step < options.steps:
                batches = [_to_device(stream.next(), device) for _ in range(options.accumulate)]
                for logs in train_step(task, batches, step, ctx, options.optimizer_order, check_finite):
                    for key, value in logs.items():
                        value = value.detach().float()
                        log_sums[key] = log_sums[key] + value if key in log_sums else value.clone()
                log_count += len(batches)
                step += 1
                interval_steps += 1
                task.after_step(step)

                record = None
                if step % options.log_every == 0 or step == options.steps:
                    now = time.perf_counter()
                    record = {"step": step, "epoch": stream.epoch, "lr": first_lr(optimizers)}
                    record.update({k: v.item() / max(log_count, 1) for k, v in log_sums.items()})
                    record.update(task.metrics(step))
                    record["it_per_s"] = interval_steps / max(now - interval_start, 1e-9)
                    record["elapsed_s"] = now - started
                    log_sums, log_count = {}, 0
                    interval_start, interval_steps = now, 0
                    last_record = record
                    if info.is_main:
                        try:
                            append_metrics(out_dir / METRICS_FILE, record)
                        except OSError as err:
                            raise _write_failure(err, out_dir, saved_step) from err
                callbacks.on_step(step, record)

                if options.sample_every and step % options.sample_every == 0 and info.is_main:
                    sample_path = out_dir / SAMPLES_DIR / f"step_{step:07d}.png"
                    try:
                        task.write_sample(sample_path)
                    except (OSError, QuantartError) as err:
                        raise _write_failure(err, out_dir, saved_step) from err
                    callbacks.on_sample(step, sample_path)
                if step % options.save_every == 0 or step == options.steps:
                    save(step, periodic=step % options.save_every == 0)
                if stop_agreed(stop.requested, info, device):
                    interrupted = True
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            if saved_step != step:
                save(step, periodic=False)
            callbacks.on_message(f"Interrupted: saved step {step} to {last_path}; continue with `resume={out_dir}`.")
            raise
    return TrainingResult(
        start_step=start_step,
        final_step=step,
        seconds=time.perf_counter() - started,
        last_record=last_record,
        checkpoint=last_path if saved_step is not None else None,
        interrupted=interrupted,
    )


def _check_finite(losses: list[torch.Tensor], step: int, info: DistInfo, device: torch.device, last_path: Path,
                  saved_step: int | None) -> None:
    """Stop before any optimizer steps on a NaN or infinite loss (every rank agrees)."""
    stacked = torch.stack(losses) if losses else torch.zeros(1, device=device)
    if any_rank(not bool(torch.isfinite(stacked).all()), info, device):
        kind = "NaN" if bool(torch.isnan(stacked).any()) else "infinite"
        kept = (
            f"{last_path} from step {saved_step} is kept" if saved_step is not None
            else "no checkpoint had been written yet"
        )
        raise NonFiniteLossError(
            f"The loss became {kind} at step {step + 1}; training stopped and {kept}.",
            hint="Try a lower `lr`, `grad_clip`, or `precision=fp32`.",
        )


def append_metrics(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, allow_nan=True) + "\n")
