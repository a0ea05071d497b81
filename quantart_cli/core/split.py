"""Files split across the processes of a torchrun job (``torchrun --nproc_per_node N -m quantart_cli stylize DIR``).

Every process reads the same settings and files and plans the same work list; :func:`share` hands each its part,
round-robin, so every item is done by exactly one process and the parts differ by at most one group. The processes
meet twice (:func:`together`): after planning, so none writes an output before all have decided which outputs are
stale, and at the end, so one process (rank 0) can count everyone's results; an error on any process stops them
all at the next meeting instead of leaving the others waiting. Only small Python objects travel (counts, error
sentences, code records), over a gloo group whatever the device, and a process that finished its share waits for
the others as long as they need (:data:`WAIT`). In a single process (no ``WORLD_SIZE`` above 1) every function
here is a pass-through: the share is everything, a meeting is nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Literal, TypeVar

import torch

from quantart_cli.core.errors import NotFoundError, SaidElsewhere, UsageError
from quantart_cli.core.train.ddp import DistInfo, dist_info_from_env

__all__ = ["WAIT", "gather", "joined", "process_device", "share", "together", "verdict"]

T = TypeVar("T")

#: How long a process waits at a meeting: a process whose images are larger finishes later, and that is no error
#: (a process that dies ends the job at once: torchrun stops the others).
WAIT = timedelta(hours=24)


def share(items: Sequence[T], rank: int, world_size: int, *, group: int = 1) -> list[T]:
    """The items process ``rank`` of ``world_size`` handles: consecutive groups of ``group`` items dealt
    round-robin (group k to process k mod ``world_size``), in their order. Every item lands in exactly one share and
    the shares' sizes differ by at most ``group``. With ``group`` > 1 a group stays together (``encode`` batches
    within a group only, so its batches do not depend on the number of processes)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not one of {world_size} processes")
    if group < 1:
        raise ValueError(f"group must be at least 1, got {group}")
    return [item for index, item in enumerate(items) if (index // group) % world_size == rank]


@contextmanager
def joined(environ: dict[str, str] | None = None) -> Iterator[DistInfo]:
    """This process's place in a torchrun job (RANK, WORLD_SIZE, LOCAL_RANK), inside the job's process group
    (joined here and left at the end, unless the caller joined one already); a plain process gets rank 0 of 1."""
    info = dist_info_from_env(environ)
    created = False
    if info.enabled:
        import torch.distributed as dist

        if not dist.is_available():
            raise UsageError("This PyTorch has no torch.distributed, so it cannot split work across processes; "
                             "run one process.")
        if not dist.is_initialized():
            dist.init_process_group(backend="gloo", timeout=WAIT)
            created = True
    try:
        yield info
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


def process_device(name: str, info: DistInfo, environ: dict[str, str] | None = None) -> torch.device:
    """The device this process runs on: ``name`` resolved and, under torchrun, the GPU of its LOCAL_RANK (each
    process its own) and, unless OMP_NUM_THREADS is set, the machine's cores divided among its processes."""
    from quantart_cli.core.devices import resolve_device

    env = os.environ if environ is None else environ
    device = resolve_device(name)
    if not info.enabled:
        return device
    local_processes = _int_env(env, "LOCAL_WORLD_SIZE", info.world_size)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if info.local_rank >= count:
            raise NotFoundError(
                f"torchrun started {local_processes} processes on this machine but it has {count} CUDA device(s); "
                f"start at most {count} per machine (each process takes its own GPU), or use `device=cpu`."
            )
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if "OMP_NUM_THREADS" not in env:
        torch.set_num_threads(max(1, _cores() // max(1, local_processes)))
    return device


def _int_env(env: Any, name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError as err:
        raise UsageError(f"{name} must be an integer ({err}).") from err


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def gather(value: T, info: DistInfo) -> list[T]:
    """``value`` from every process, by rank (every process gets the list); ``[value]`` in a single process."""
    if not info.enabled:
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * info.world_size
    dist.all_gather_object(values, value)
    return values


#: What a process tells the others of its error: (kind, sentence).
Said = tuple[str, str]


def _said(err: Exception) -> Said:
    return (type(err).__name__, str(err))


def verdict(said: Sequence[Said | None], rank: int) -> Literal["raise", "stop"] | None:
    """After a meeting, what process ``rank`` does, from what every process said (None: its block went well):
    carry on (None, when no process failed); ``"raise"`` its own error (rank 0 always does, another process only
    when its error differs from rank 0's); or ``"stop"`` quietly (another process says why)."""
    if all(entry is None for entry in said):
        return None
    mine = said[rank]
    if mine is not None and (rank == 0 or mine != said[0]):
        return "raise"
    return "stop"


@contextmanager
def together(info: DistInfo) -> Iterator[None]:
    """Run a block on every process, then meet: when the block raised anywhere, every process stops here.

    A process raises its own error unless rank 0 raised the same one (every process finds the same mistake in the
    same files: it is said once); a process whose block went well stops with :class:`SaidElsewhere` (exit code 0:
    the processes that say an error carry the job's failure), as does one whose error rank 0 says. In a single
    process the block runs as it is, its errors unchanged."""
    if not info.enabled:
        yield
        return
    error: Exception | None = None
    try:
        yield
    except Exception as err:  # any error, a bug too: the others must not wait for this process in vain
        error = err
    said = gather(None if error is None else _said(error), info)
    decided = verdict(said, info.rank)
    if decided == "raise" and error is not None:
        raise error
    if decided is not None:
        raise SaidElsewhere() from error
