"""Ctrl-C during training: the first SIGINT stops after the current step, the second at once."""

from __future__ import annotations

import signal
import threading
from typing import Any

# ------------------------------------------------------------------------------------- Ctrl-C


class StopRequest:
    """First SIGINT asks the loop to stop after the current step (so the checkpoint is exact);
    a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> StopRequest:
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
