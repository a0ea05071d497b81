"""Ctrl-C (or SIGTERM) during training: the first stops after the current step, the second at once, but never
in the middle of a checkpoint save (it then takes effect as soon as the save is complete)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

# ------------------------------------------------------------------------------------- Ctrl-C


class StopRequest:
    """First SIGINT asks the loop to stop after the current step (so the checkpoint is exact);
    a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False
        self._saving = False
        self._interrupt_pending = False

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            # SIGTERM (a job scheduler's polite stop) is handled like Ctrl-C: finish the step, save, exit.
            self._previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            for sig in self._previous:
                signal.signal(sig, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            if self._saving:  # a torn save would be worse than a second's wait
                self._interrupt_pending = True
                return
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def saving(self) -> Iterator[None]:
        """While a checkpoint is written, a second Ctrl-C waits for the save to complete."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False
        if self._interrupt_pending:
            self._interrupt_pending = False
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
