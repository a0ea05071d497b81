"""The training loop shared by ``train-vq`` and ``train-sga``.

The loop owns what every trainer needs: seeding, a resumable seeded data order, mixed precision
(autocast, a GradScaler for fp16), gradient accumulation, gradient clipping, non-finite loss detection,
``metrics.jsonl``, sample and checkpoint cadence, exact resume and a clean Ctrl-C. What is trained and
how a micro-batch's losses are computed belongs to a :class:`TrainingTask` (e.g. ``train_vq.VQGANTask``).
Progress is reported through :class:`TrainingCallbacks`, so this module never touches the terminal.

Run folder: ``last.pt`` (the task's model checkpoint), ``state.pt`` (optimizers, scaler, step, RNG
states, data position; read with ``torch.load(weights_only=True)``), ``step_NNNNNNN.pt`` (older model
checkpoints, at most ``keep_checkpoints``), ``metrics.jsonl`` and ``samples/``. Every file is written to a
temp file and renamed, and while a checkpoint is being saved ``previous.pt`` holds (as a hard link) the one
before it: a run killed between writing ``last.pt`` and ``state.pt`` resumes from the step ``state.pt``
describes, with the matching weights.
Under torchrun (``WORLD_SIZE > 1``) every rank runs the loop; rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from quantart_cli.core.errors import BadInputError, NotFoundError, QuantartError, UnsafeCheckpointError, UsageError

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16"]

LAST_CHECKPOINT = "last.pt"
PREVIOUS_CHECKPOINT = "previous.pt"
STATE_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"
SAMPLES_DIR = "samples"
STATE_FORMAT = "quantart-training-state"
STATE_VERSION = 1
ADAM_BETAS = (0.5, 0.9)


class NonFiniteLossError(QuantartError):
    """A loss turned NaN or infinite; the run stopped without overwriting the last good checkpoint."""

    exit_code = 1


class RunFolderWriteError(QuantartError):
    """Writing to the run folder failed (disk full, unwritable folder); the last complete checkpoint is kept."""

    exit_code = 1


# ----------------------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job (``world_size == 1``: a plain single-process run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info_from_env(environ: Mapping[str, str] | None = None) -> DistInfo:
    """Read RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (defaults: a single process)."""
    env = os.environ if environ is None else environ
    try:
        return DistInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))
    except ValueError as err:
        raise UsageError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({err}).") from err


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched with WORLD_SIZE > 1 (nccl on CUDA, gloo otherwise)."""
    info = dist_info_from_env()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op in a single process)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Average ``.grad`` over ranks in one flat all-reduce (for modules not wrapped in DDP)."""
    if not info.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(module: torch.nn.Module, info: DistInfo) -> None:
    """Make every rank start from rank 0's weights."""
    if info.enabled:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm statistics) to every rank, as DDP's broadcast_buffers does."""
    if info.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


# ------------------------------------------------------------------------------------ seeds and RNG


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # numpy is optional
        pass
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain types, so ``torch.load(weights_only=True)`` reads them back."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    except ImportError:
        pass
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    if "numpy" in state:
        try:
            import numpy as np
        except ImportError:
            return
        npy = state["numpy"]
        keys = npy["keys"].numpy().astype(np.uint32)
        np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))


# ---------------------------------------------------------------------------------------- precision


def check_precision(device: torch.device, precision: str) -> None:
    """Refuse precisions the device cannot train in, with one sentence."""
    if precision not in ("fp32", "bf16", "fp16"):
        raise UsageError(f"Unknown precision {precision!r}; use fp32, bf16 or fp16.")
    if precision == "fp16" and device.type != "cuda":
        raise UsageError(
            "--precision fp16 needs a CUDA GPU (it relies on a CUDA gradient scaler); "
            f"use bf16 or fp32 on {device.type}."
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError("--precision bf16 is not supported by this GPU; use fp16 or fp32.")


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def scaled_lr(base_lr: float, batch_size: int, world_size: int, accumulate: int) -> float:
    """The original's rule: ``lr = base_lr x batch x GPUs x accumulation``."""
    return base_lr * batch_size * world_size * accumulate


# --------------------------------------------------------------------------------------------- data


class ResumableSampler(Sampler[int]):
    """DistributedSampler's order (seeded shuffle per epoch, padded equal shares per rank) that can
    restart mid-epoch: ``set_position(epoch, batch)`` skips the batches already consumed.

    An epoch always holds at least one full batch per rank (small datasets are repeated), and the
    last incomplete batch is dropped, so every step sees ``batch_size`` images on every rank.
    """

    def __init__(self, length: int, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if length < 1:
            raise BadInputError("The training set is empty.")
        self.length = length
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip_batches = 0

    def epoch_indices(self, epoch: int) -> list[int]:
        generator = torch.Generator()
        generator.manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        order = torch.randperm(self.length, generator=generator).tolist()
        per_rank = max(math.ceil(self.length / self.world_size), self.batch_size)
        total = per_rank * self.world_size
        while len(order) < total:
            order += order[: total - len(order)]
        share = order[self.rank : total : self.world_size]
        return share[: len(share) // self.batch_size * self.batch_size]

    @property
    def batches_per_epoch(self) -> int:
        return max(math.ceil(self.length / self.world_size), self.batch_size) // self.batch_size

    def set_position(self, epoch: int, batch: int) -> None:
        self.epoch, self.skip_batches = epoch, batch

    def __iter__(self) -> Iterator[int]:
        yield from self.epoch_indices(self.epoch)[self.skip_batches * self.batch_size :]

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip_batches) * self.batch_size


class BatchStream:
    """Endless batches over epochs with a resumable position ``(epoch, batch in epoch)``."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        seed: int,
        info: DistInfo = DistInfo(),
        workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        self.dataset = dataset
        self.sampler = ResumableSampler(
            len(dataset), batch_size=batch_size, seed=seed, rank=info.rank, world_size=info.world_size  # type: ignore[arg-type]
        )
        # A private generator: creating an iterator draws worker seeds, which must not move the global RNG.
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            drop_last=True,
            pin_memory=pin_memory,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )
        self.epoch = 0
        self.position = 0
        self._iterator: Iterator[Any] | None = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._iterator = None

    def next(self) -> Any:
        while True:
            if self._iterator is None:
                if self.position >= self.sampler.batches_per_epoch:
                    self.epoch, self.position = self.epoch + 1, 0
                self.sampler.set_position(self.epoch, self.position)
                set_epoch = getattr(self.dataset, "set_epoch", None)
                if set_epoch is not None:
                    set_epoch(self.epoch)
                self._iterator = iter(self.loader)
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._iterator = None
                self.epoch, self.position = self.epoch + 1, 0
                continue
            self.position += 1
            return batch


# ------------------------------------------------------------------------------------ task protocol


class StepContext:
    """Handed to :meth:`TrainingTask.micro_step`: autocast for forwards, ``backward`` for losses."""

    def __init__(self, device: torch.device, precision: str, scaler: torch.amp.GradScaler, accumulate: int) -> None:
        self.device = device
        self.precision = precision
        self.scaler = scaler
        self.accumulate = accumulate
        self.losses: list[torch.Tensor] = []

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast_context(self.device, self.precision)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of ``loss / accumulate`` (scaled for fp16); call it outside :meth:`autocast`."""
        self.losses.append(loss.detach().float().reshape(()))
        self.scaler.scale(loss / self.accumulate).backward()


class TrainingTask(Protocol):
    """The stage-specific half of training. Methods marked collective run on every rank at the same step."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers in the order they step each iteration (e.g. generator, then discriminator)."""
        ...

    def train(self) -> None:
        """Put the trained modules in training mode."""
        ...

    def micro_step(self, batch: Any, step: int, ctx: StepContext) -> Mapping[str, torch.Tensor]:
        """Forward and backward one micro-batch at global ``step`` (0-based); return 0-dim detached logs."""
        ...

    def no_sync(self) -> contextlib.AbstractContextManager[Any]:
        """Context for micro-batches whose gradients are not synchronised yet (DDP ``no_sync``)."""
        ...

    def before_optimizer_step(self, name: str) -> None:
        """Collective: e.g. average gradients that DDP does not handle."""
        ...

    def after_step(self, step: int) -> None:
        """Collective, after the optimizers stepped (``step`` counts finished steps)."""
        ...

    def metrics(self, step: int) -> dict[str, float]:
        """Collective, at log steps: extra metrics for ``metrics.jsonl`` (e.g. codebook health)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Small extra state for ``state.pt`` (tensors and plain types)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def save_model(self, path: Path, step: int) -> None:
        """Write the native model checkpoint (rank 0 only)."""
        ...

    def load_model(self, path: Path) -> int:
        """Restore weights from a checkpoint written by :meth:`save_model`; return its step."""
        ...

    def write_sample(self, path: Path) -> None:
        """Write a sample image (rank 0 only)."""
        ...


class TrainingCallbacks:
    """Progress hooks (no-ops here); a CLI maps them onto its progress bar. Called on every rank."""

    def on_start(self, start_step: int, total_steps: int) -> None:
        pass

    def on_step(self, step: int, record: dict[str, Any] | None) -> None:
        """After each step; ``record`` is the metrics line at log steps, else None."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        pass

    def on_sample(self, step: int, path: Path) -> None:
        pass

    def on_message(self, text: str) -> None:
        pass


@dataclass
class LoopOptions:
    steps: int
    accumulate: int = 1
    precision: Precision = "fp32"
    grad_clip: float | None = None
    log_every: int = 10
    save_every: int = 1000
    sample_every: int = 0
    keep_checkpoints: int = 3
    seed: int = 23


@dataclass
class TrainingResult:
    start_step: int
    final_step: int
    seconds: float
    last_record: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    interrupted: bool = False


# --------------------------------------------------------------------------------- state files


def save_training_state(path: Path, state: Mapping[str, Any]) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, rename: never half a state file."""
    from quantart_cli.core.io.checkpoints import _atomic_write  # one atomic-write implementation for the project

    _atomic_write(path, lambda tmp: torch.save(dict(state), tmp))
    return path


def load_training_state(path: Path) -> dict[str, Any]:
    """Read ``state.pt`` with the weights-only unpickler; anything else is one sentence, never a traceback.

    A state file is always written by quantart itself, so it is never fully unpickled (not even with
    ``--trust-checkpoint``): one that needs it was not written by quantart.
    """
    import pickle

    if not path.is_file():
        raise NotFoundError(f"{path} does not exist; --resume needs a run folder with last.pt and state.pt.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" in str(err).lower():
            raise UnsafeCheckpointError(
                f"{path} contains pickled Python objects that could run code when loaded, which quantart never "
                "writes into a training state, so it is refused (--trust-checkpoint does not apply to state.pt)."
            ) from err
        raise BadInputError(f"{path} is truncated or corrupt; it is not a readable quantart training state.") from err
    except Exception as err:  # damaged file, or not written by us
        raise BadInputError(f"{path} is truncated or corrupt; it is not a readable quantart training state.") from err
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise BadInputError(f"{path} is not a quantart training state.")
    version = state.get("version", 0)
    if not isinstance(version, int):
        raise BadInputError(f"{path} is a damaged quantart training state (its version is not a number).")
    if version > STATE_VERSION:
        raise BadInputError(f"{path} was written by a newer quantart; upgrade to resume it.")
    return state


def _step_checkpoint_name(step: int) -> str:
    return f"step_{step:07d}.pt"


def _keep_step_copy(out_dir: Path, last: Path, step: int, keep: int) -> None:
    """Keep ``last.pt`` as ``step_N.pt`` too (a hard link when possible) and prune beyond ``keep``."""
    if keep <= 0:
        return
    target = out_dir / _step_checkpoint_name(step)
    target.unlink(missing_ok=True)
    try:
        os.link(last, target)  # last.pt is later replaced by rename, so the link keeps this content
    except OSError:
        import shutil

        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(last, tmp)
        os.replace(tmp, target)
    older = sorted(out_dir.glob("step_*.pt"))
    for stale in older[:-keep]:
        stale.unlink(missing_ok=True)


def _link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` hold ``source``'s bytes via a temp name and a rename (a hard link when possible)."""
    import shutil

    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _keep_previous(last: Path, previous: Path) -> None:
    """Before ``last`` is replaced, keep its content reachable as ``previous`` until ``state.pt`` catches up."""
    if not last.is_file():
        return
    try:
        _link_or_copy(last, previous)
    except OSError as err:  # no room for a copy: saving goes on, only the kill-safety window is lost
        logger.warning("Could not keep %s as %s (%s).", last, previous, err)


def _remove_stale_temps(out_dir: Path) -> None:
    """Temp files of writes that a killed run never finished; they are never read, only in the way."""
    for pattern in (".*.pt.*.tmp", ".step_*.pt.tmp", f".{METRICS_FILE}.*.tmp"):
        for stale in out_dir.glob(pattern):
            with contextlib.suppress(OSError):
                stale.unlink()


def _trim_metrics(path: Path, step: int) -> None:
    """Drop metrics lines past ``step`` (they will be logged again) and a half-written last line."""
    if not path.is_file():
        return
    kept = []
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                logged = record.get("step") if isinstance(record, dict) else None
                if line.endswith("\n") and isinstance(logged, int) and logged <= step:
                    kept.append(line)
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(tmp, path)
    except OSError as err:  # metrics are a log: never a reason not to resume
        tmp.unlink(missing_ok=True)
        logger.warning("Could not tidy %s (%s).", path, err)


def _load_resume_model(task: TrainingTask, out_dir: Path, step: int, info: DistInfo) -> tuple[int, Path]:
    """Load the model checkpoint of ``step``: ``last.pt``, or the one a kill mid-save left as ``previous.pt``
    (or ``step_N.pt``). Returns (its step, its path)."""
    last_path = out_dir / LAST_CHECKPOINT
    candidates = [last_path, out_dir / PREVIOUS_CHECKPOINT, out_dir / _step_checkpoint_name(step)]
    found: list[str] = []
    for path in candidates:
        if not path.is_file():
            continue
        try:
            model_step = task.load_model(path)
        except UnsafeCheckpointError:
            raise
        except BadInputError as err:  # damaged: an older candidate may still match state.pt
            found.append(f"{path.name} cannot be used ({str(err).rstrip('.')})")
            continue
        found.append(f"{path.name} is from step {model_step}")
        if model_step != step:
            continue
        if path != last_path and info.is_main:
            # last.pt is newer than state.pt: a save was cut short. Make last.pt the complete one again.
            logger.info("Resuming from %s: %s is newer than %s.", path, LAST_CHECKPOINT, STATE_FILE)
            _link_or_copy(path, last_path)
        return model_step, path
    if not found:
        raise NotFoundError(f"{last_path} does not exist; --resume needs a run folder with last.pt and state.pt.")
    raise BadInputError(
        f"{out_dir / STATE_FILE} is from step {step} but no model checkpoint of that step is in {out_dir} "
        f"({'; '.join(found)}); the run folder is inconsistent."
    )


def _write_failure(err: BaseException, out_dir: Path, complete_step: int | None) -> RunFolderWriteError:
    reason = str(err).strip().rstrip(".") if isinstance(err, QuantartError) else (
        f"cannot write to {out_dir} ({getattr(err, 'strerror', None) or err})"
    )
    if complete_step is None:
        kept = "no checkpoint had been written yet"
    else:
        kept = f"the last complete checkpoint (step {complete_step}) is kept; continue with --resume {out_dir}"
    return RunFolderWriteError(f"{reason}; training stopped and {kept}.")


# ------------------------------------------------------------------------------------- Ctrl-C


class _StopRequest:
    """First SIGINT asks the loop to stop after the current step (so the checkpoint is exact);
    a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


# ---------------------------------------------------------------------------------------- the loop


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _params_with_grad(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


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
    callbacks = callbacks or TrainingCallbacks()
    check_precision(device, options.precision)
    out_dir = Path(out_dir)
    last_path = out_dir / LAST_CHECKPOINT
    state_path = out_dir / STATE_FILE
    optimizers = task.optimizers()
    scaler = torch.amp.GradScaler(device.type, enabled=options.precision == "fp16")

    step = 0
    if resume:
        state = load_training_state(state_path)
        step = state.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise BadInputError(f"{state_path} is a damaged quantart training state (it has no valid step).")
        _load_resume_model(task, out_dir, step, info)
        try:
            for name, optimizer in optimizers.items():
                optimizer.load_state_dict(state["optimizers"][name])
            scaler.load_state_dict(state["scaler"])
            stream.load_state_dict(state["data"])
            task.load_state_dict(state.get("task", {}))
            restore_rng_state(state["rng"])
        except (KeyError, IndexError, ValueError, TypeError, RuntimeError) as err:
            raise BadInputError(
                f"{state_path} does not fit this run ({type(err).__name__}); it was written by another kind of run."
            ) from err
        if int(state.get("world_size", 1)) != info.world_size:
            callbacks.on_message(
                f"Resuming a run of {state.get('world_size')} processes with {info.world_size}: "
                "the data order from here on differs from an uninterrupted run."
            )
        if step >= options.steps:
            raise UsageError(
                f"{out_dir} already reached step {step} of {options.steps}; raise --steps to train further."
            )
        callbacks.on_message(f"Resuming from step {step} (epoch {stream.epoch}).")

    if info.is_main:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderWriteError(
                f"Cannot create the run folder {out_dir} ({err.strerror or err}); pick another --out."
            ) from err
        # Leftovers of a killed run: temp files nobody will finish, and metrics past the step we start from
        # (a fresh start in a folder whose first save never completed starts its metrics afresh too).
        _remove_stale_temps(out_dir)
        _trim_metrics(out_dir / METRICS_FILE, step)
    saved_step = step if resume else None

    def save(at_step: int, *, periodic: bool) -> None:
        nonlocal saved_step
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
        _keep_previous(last_path, out_dir / PREVIOUS_CHECKPOINT)
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
            _keep_step_copy(out_dir, last_path, at_step, options.keep_checkpoints)

    start_step = step
    callbacks.on_start(start_step, options.steps)
    task.train()
    ctx = StepContext(device, options.precision, scaler, options.accumulate)
    log_sums: dict[str, torch.Tensor] = {}
    log_count = 0
    started = time.perf_counter()
    interval_start, interval_steps = started, 0
    last_record: dict[str, Any] = {}
    interrupted = False

    with _StopRequest() as stop:
        try:
            while step < options.steps:
                for optimizer in optimizers.values():
                    optimizer.zero_grad(set_to_none=True)
                ctx.losses = []
                for micro in range(options.accumulate):
                    batch = _to_device(stream.next(), device)
                    last_micro = micro == options.accumulate - 1
                    with contextlib.nullcontext() if last_micro else task.no_sync():
                        logs = task.micro_step(batch, step, ctx)
                    for key, value in logs.items():
                        value = value.detach().float()
                        log_sums[key] = log_sums[key] + value if key in log_sums else value.clone()
                    log_count += 1
                losses = torch.stack(ctx.losses) if ctx.losses else torch.zeros(1, device=device)
                if _any_rank(not bool(torch.isfinite(losses).all()), info, device):
                    kind = "NaN" if bool(torch.isnan(losses).any()) else "infinite"
                    kept = (
                        f"{last_path} from step {saved_step} is kept" if saved_step is not None
                        else "no checkpoint had been written yet"
                    )
                    raise NonFiniteLossError(
                        f"The loss became {kind} at step {step + 1}; training stopped and {kept}.",
                        hint="Try a lower --lr, --grad-clip, or --precision fp32.",
                    )
                for name, optimizer in optimizers.items():
                    if not _params_with_grad(optimizer):
                        continue  # e.g. the discriminator before disc_start
                    task.before_optimizer_step(name)
                    if options.grad_clip is not None:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(_params_with_grad(optimizer), options.grad_clip)
                    scaler.step(optimizer)
                scaler.update()
                step += 1
                interval_steps += 1
                task.after_step(step)

                record = None
                if step % options.log_every == 0 or step == options.steps:
                    now = time.perf_counter()
                    record = {"step": step, "epoch": stream.epoch, "lr": _first_lr(optimizers)}
                    record.update({k: v.item() / max(log_count, 1) for k, v in log_sums.items()})
                    record.update(task.metrics(step))
                    record["it_per_s"] = interval_steps / max(now - interval_start, 1e-9)
                    record["elapsed_s"] = now - started
                    log_sums, log_count = {}, 0
                    interval_start, interval_steps = now, 0
                    last_record = record
                    if info.is_main:
                        try:
                            _append_metrics(out_dir / METRICS_FILE, record)
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
                if _stop_agreed(stop.requested, info, device):
                    interrupted = True
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            if saved_step != step:
                save(step, periodic=False)
            callbacks.on_message(f"Interrupted: saved step {step} to {last_path}; continue with --resume {out_dir}.")
            raise
    return TrainingResult(
        start_step=start_step,
        final_step=step,
        seconds=time.perf_counter() - started,
        last_record=last_record,
        checkpoint=last_path if saved_step is not None else None,
        interrupted=interrupted,
    )


def _any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank (all ranks get the same answer)."""
    if not info.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def _stop_agreed(requested: bool, info: DistInfo, device: torch.device) -> bool:
    """Every rank must stop at the same step, or the others would hang in the next collective."""
    return _any_rank(requested, info, device)


def _first_lr(optimizers: Mapping[str, torch.optim.Optimizer]) -> float:
    for optimizer in optimizers.values():
        return float(optimizer.param_groups[0]["lr"])
    return 0.0


def _append_metrics(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, allow_nan=True) + "\n")


def save_image_rows(rows: Sequence[torch.Tensor], path: Path, *, pad: int = 2) -> Path:
    """Write batches of images in [-1, 1] as a grid PNG, one batch per row, with white borders (atomically)."""
    from quantart_cli.core.io.images import save_image_atomic

    lines = []
    for row in rows:
        tiles = [torch.nn.functional.pad(image, (pad, pad, pad, pad), value=1.0) for image in row.float().cpu()]
        lines.append(torch.cat(tiles, dim=2))
    width = max(line.shape[2] for line in lines)
    lines = [torch.nn.functional.pad(line, (0, width - line.shape[2]), value=1.0) for line in lines]
    return save_image_atomic(torch.cat(lines, dim=1).clamp(-1, 1), path)


def make_adam(params: Iterator[torch.nn.Parameter] | list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with the original's betas (0.5, 0.9)."""
    return torch.optim.Adam(list(params), lr=lr, betas=ADAM_BETAS)


__all__ = [
    "ADAM_BETAS",
    "BatchStream",
    "DistInfo",
    "LoopOptions",
    "NonFiniteLossError",
    "ResumableSampler",
    "StepContext",
    "TrainingCallbacks",
    "TrainingResult",
    "TrainingTask",
    "all_reduce_sum",
    "autocast_context",
    "average_gradients",
    "broadcast_buffers",
    "broadcast_parameters",
    "capture_rng_state",
    "check_precision",
    "dist_info_from_env",
    "init_distributed",
    "load_training_state",
    "make_adam",
    "restore_rng_state",
    "run_training",
    "save_image_rows",
    "save_training_state",
    "scaled_lr",
    "seed_everything",
    "shutdown_distributed",
]
