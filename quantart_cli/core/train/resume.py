"""The run folder and exact resume.

Run folder: ``last.pt`` (the task's model checkpoint), ``state.pt`` (optimizers, scaler, step, RNG
states, data position; read with ``torch.load(weights_only=True)``), ``step_NNNNNNN.pt`` (older model
checkpoints, at most ``keep_checkpoints``), ``metrics.jsonl`` and ``samples/``. Every file is written to a
temp file and renamed, and while a checkpoint is being saved ``previous.pt`` holds (as a hard link) the one
before it: a run killed between writing ``last.pt`` and ``state.pt`` resumes from the step ``state.pt``
describes, with the matching weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from quantart_cli.core.errors import BadInputError, NotFoundError, QuantartError, UnsafeCheckpointError
from quantart_cli.core.io.atomic import atomic_write
from quantart_cli.core.train.ddp import DistInfo
from quantart_cli.core.train.task import TrainingTask

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pt"
PREVIOUS_CHECKPOINT = "previous.pt"
STATE_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"
SAMPLES_DIR = "samples"
STATE_FORMAT = "quantart-training-state"
STATE_VERSION = 1


# --------------------------------------------------------------------------------- state files


def save_training_state(path: Path, state: Mapping[str, Any]) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, rename: never half a state file."""
    return atomic_write(path, lambda tmp: torch.save(dict(state), tmp), what="training state")


def load_training_state(path: Path) -> dict[str, Any]:
    """Read ``state.pt`` with the weights-only unpickler; anything else is one sentence, never a traceback.

    A state file is always written by quantart itself, so it is never fully unpickled (not even with
    ``--trust-checkpoint``): one that needs it was not written by quantart.
    """
    import pickle

    if not path.is_file():
        raise NotFoundError(f"{path} does not exist; `resume` needs a run folder with last.pt and state.pt.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" in str(err).lower():
            raise UnsafeCheckpointError(
                f"{path} contains pickled Python objects that could run code when loaded, which quantart never "
                "writes into a training state, so it is refused (`trust_checkpoint` does not apply to state.pt)."
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


def keep_step_copy(out_dir: Path, last: Path, step: int, keep: int) -> None:
    """Keep ``last.pt`` as ``step_N.pt`` too (a hard link when possible) and prune beyond ``keep``."""
    if keep <= 0:
        return
    target = out_dir / _step_checkpoint_name(step)
    target.unlink(missing_ok=True)
    try:
        os.link(last, target)  # last.pt is later replaced by rename, so the link keeps this content
    except OSError:
        atomic_write(target, lambda tmp: shutil.copyfile(last, tmp), what="checkpoint copy")
    older = sorted(out_dir.glob("step_*.pt"))
    for stale in older[:-keep]:
        stale.unlink(missing_ok=True)


def _link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` hold ``source``'s bytes, atomically (a hard link when possible, else a copy)."""
    if target.exists() and os.path.samefile(source, target):
        return  # already the same file (a kill left previous.pt linked to last.pt)

    def link(tmp: Path) -> None:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)

    atomic_write(target, link, what="checkpoint link")


def keep_previous(last: Path, previous: Path) -> None:
    """Before ``last`` is replaced, keep its content reachable as ``previous`` until ``state.pt`` catches up."""
    if not last.is_file():
        return
    try:
        _link_or_copy(last, previous)
    except QuantartError as err:  # no room for a copy: saving goes on, only the kill-safety window is lost
        logger.warning("Could not keep %s as %s (%s).", last, previous, err)


def remove_stale_temps(out_dir: Path) -> int:
    """Temp files of writes that a killed run never finished (only our own naming); they are never read, only in
    the way. Returns how many were removed."""
    removed = 0
    for pattern in (".*.pt.*.tmp", ".step_*.pt.tmp", f".{METRICS_FILE}.*.tmp", ".*.toml.*.tmp"):
        for stale in out_dir.glob(pattern):
            with contextlib.suppress(OSError):
                stale.unlink()
                removed += 1
    return removed


def trim_metrics(path: Path, step: int) -> None:
    """Drop metrics lines past ``step`` (they will be logged again) and a half-written last line."""
    if not path.is_file():
        return
    kept = []
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
        atomic_write(path, lambda tmp: tmp.write_text("".join(kept), encoding="utf-8"), what="metrics log")
    except (OSError, QuantartError) as err:  # metrics are a log: never a reason not to resume
        logger.warning("Could not tidy %s (%s).", path, err)


def load_resume_model(task: TrainingTask, out_dir: Path, step: int, info: DistInfo) -> tuple[int, Path]:
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
        raise NotFoundError(f"{last_path} does not exist; `resume` needs a run folder with last.pt and state.pt.")
    raise BadInputError(
        f"{out_dir / STATE_FILE} is from step {step} but no model checkpoint of that step is in {out_dir} "
        f"({'; '.join(found)}); the run folder is inconsistent."
    )
