"""Errors the library raises for bad input. Each carries one sentence for the user and an exit code.

The CLI renders these without a traceback (``--debug`` shows it); library users catch ``QuantartError``.
"""

from __future__ import annotations


class QuantartError(Exception):
    """Base class: ``str(err)`` is one clear sentence; ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class BadInputError(QuantartError):
    """The input exists but cannot be used (corrupt image, wrong kind of checkpoint, unreadable file)."""

    exit_code = 1


class UsageError(QuantartError):
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
