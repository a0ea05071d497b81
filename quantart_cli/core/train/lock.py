"""One run per run folder: an OS-level lock held for the whole run, released on exit or crash.

Two trainings writing into one folder would interleave their checkpoints and states silently; the second
one is refused instead, naming the process that holds the folder. The lock is ``flock`` on a small file in
the folder (released by the kernel when the process ends, however it ends); where ``fcntl`` does not exist
(Windows) runs are not locked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from quantart_cli.core.errors import UsageError, WriteError

LOCK_FILE = ".quantart.lock"


@contextlib.contextmanager
def run_folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock for the block; a folder another live process holds raises :class:`UsageError`."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise WriteError(f"Cannot create the run folder {folder} ({err.strerror or err}); pick another `out`.") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip() or "another process"
            raise UsageError(
                f"{folder} is in use by a run in process {holder}; wait for it to finish or pick another `out`."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
