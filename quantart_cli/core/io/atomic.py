"""The one way quantart writes a file: a temp file beside it, fsync, rename over the target, fsync the folder.

Readers (and a run killed half-way) see either the old file or the complete new one, never a partial file.
The temp file is created with the user's umask (as ``open`` would create the target itself) and keeps that mode
even when the writer replaced it with a file of its own (safetensors writes 0600 files); its name is hidden and
unique (``.NAME.<random>.tmp``), and it is removed again when anything goes wrong.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from quantart_cli.core.errors import WriteError

__all__ = ["atomic_write", "io_reason", "temp_path_for"]


#: How ``torch.save``'s writer words a failed write (a full disk among others), depending on where it fails: its
#: zip writer's checks ("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598", "PytorchStreamWriter
#: failed writing file data/0") or the C++ stream under it ("basic_ios::clear: iostream error").
TORCH_WRITER_WORDS = ("PytorchStreamWriter failed", "inline_container.cc", "iostream error")


def temp_path_for(path: Path) -> Path:
    """A fresh hidden temp name in ``path``'s folder (``.NAME.<random>.tmp``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object], *, what: str = "") -> Path:
    """Create ``path``'s folder, call ``write(tmp)`` on a temp file beside ``path``, fsync it and rename it
    over ``path``. ``what`` names the file in errors ("checkpoint", "code file"); returns ``path``.

    A full disk or an unwritable folder raises :class:`WriteError` with the OS's reason; other exceptions
    from ``write`` (a bug, Ctrl-C) propagate unchanged. Either way no temp file is left behind.
    """
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(f"Cannot create the folder {path.parent} ({err.strerror or err}).") from err
    tmp = temp_path_for(path)
    try:
        with open(tmp, "xb") as created:  # exclusive: never another writer's temp; the umask decides the mode
            mode = os.fstat(created.fileno()).st_mode & 0o7777
        write(tmp)
        _keep_mode(tmp, mode)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        # rename(2) does nothing when both names are hard links to one file (a link-based write of bytes the
        # target already holds): the temp name is then still there.
        tmp.unlink(missing_ok=True)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        reason = io_reason(err, path.parent)
        if reason is not None:
            raise WriteError(f"Cannot write {label} ({reason}; nothing was replaced).") from err
        raise
    _fsync_dir(path.parent)
    return path


def _keep_mode(tmp: Path, mode: int) -> None:
    """Give ``tmp`` the mode it was created with, should the writer have put its own file there. A hard link to
    another file (a checkpoint kept as a link) is left as it is: its mode is that file's."""
    info = os.stat(tmp)
    if info.st_nlink == 1 and info.st_mode & 0o7777 != mode:
        with contextlib.suppress(OSError):  # a file system without POSIX modes: nothing to keep
            os.chmod(tmp, mode)


def io_reason(err: BaseException, folder: Path | None = None) -> str | None:
    """The OS's reason for an I/O failure ("No space left on device"), else None (not an I/O failure).

    safetensors reports a full disk as its own error type, not as an OSError; its text holds the reason.
    ``torch.save`` reports it as a RuntimeError of its zip writer without the reason, in one of several wordings
    (:data:`TORCH_WRITER_WORDS`): the free space of ``folder`` tells whether the disk is full.
    """
    if isinstance(err, OSError):
        return err.strerror or str(err) or type(err).__name__
    if isinstance(err, RuntimeError) and any(words in str(err) for words in TORCH_WRITER_WORDS):
        return _full_disk_or(folder, "PyTorch's file writer failed")
    if type(err).__name__ != "SafetensorError":
        return None
    text = str(err)
    marker = "I/O error: "
    if marker not in text:
        return None
    return text.split(marker, 1)[1].split(" (os error", 1)[0].strip() or text


def _full_disk_or(folder: Path | None, otherwise: str) -> str:
    import shutil

    try:
        full = folder is not None and shutil.disk_usage(folder).free < 64 * 1024 * 1024
    except OSError:
        full = False
    return "No space left on device" if full else otherwise


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable on POSIX; not possible (nor needed) on Windows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
