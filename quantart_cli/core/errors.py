"""Errors the library raises. Each carries one sentence for the user and an exit code.

A message names an option by its field name in backticks, as a Python caller sets it: `` `continuous_ckpt` ``,
or with a value, `` `device=cpu` ``. The CLI shows each as the flag that sets it (``--continuous-ckpt``,
``--device cpu``); the core itself never spells a flag. The CLI renders these errors without a traceback
(``--debug`` shows it); library users catch ``QuantartError``, or ``ValueError`` for a bad value.
"""

from __future__ import annotations

import re

#: An option named in a message: `name`, `table.name` or `name=value`.
OPTION_MARK = re.compile(r"`([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)(?:=([^`\n]*))?`")


class QuantartError(Exception):
    """Base class: ``str(err)`` is one clear sentence; ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    @property
    def fields(self) -> tuple[str, ...]:
        """The options the message and its hint name (``("visual_fidelity", "continuous_ckpt")``), in order."""
        text = f"{self.args[0] if self.args else ''} {self.hint or ''}"
        return tuple(dict.fromkeys(match.group(1) for match in OPTION_MARK.finditer(text)))


class BadInputError(QuantartError, ValueError):
    """The input exists but cannot be used (corrupt image, wrong kind of checkpoint, unreadable file)."""

    exit_code = 1


class UsageError(QuantartError, ValueError):
    """An option, preset or setting has a value that is not allowed."""

    exit_code = 2


class WriteError(QuantartError):
    """An output could not be written (disk full, unwritable folder); nothing half-written is left behind."""

    exit_code = 1


class NotFoundError(QuantartError):
    """A file, preset, checkpoint or capability the command needs is missing."""

    exit_code = 3


class UnsafeCheckpointError(BadInputError):
    """A checkpoint that can only be read by unpickling arbitrary Python objects."""


class NonFiniteLossError(QuantartError):
    """A loss turned NaN or infinite; the run stopped without overwriting the last good checkpoint."""

    exit_code = 1


class RunFolderWriteError(WriteError):
    """Writing to the run folder failed (disk full, unwritable folder); the last complete checkpoint is kept."""

    exit_code = 1


class SaidElsewhere(QuantartError):
    """This process stops because a process of the same torchrun job failed, and that process says why.

    Raised by :func:`quantart_cli.core.split.together` on the processes that must not repeat an error (one that
    rank 0 says as well, or another process's). The CLI prints nothing and exits 0: the process that says the
    error exits with its code, so the launcher (torchrun) fails the job and names that process as its cause.
    """

    exit_code = 0

    def __init__(self) -> None:
        super().__init__("Another process of this torchrun job failed; its error says why.")
