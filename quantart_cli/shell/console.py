"""Terminal output: the only module that knows about rich.

stdout carries results only (paths written, JSON lines, tables a user asked for); progress, notes, warnings
and errors go to stderr. ``--quiet`` silences notes and progress; a non-TTY stderr gets no progress bars
(no control characters in logs), just the notes. Notes, warnings and errors pass through ``spell``, which the
app sets to turn the options a library message names (`continuous_ckpt`) into their flags.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console as RichConsole
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from rich.progress import Progress


def displayable(text: str) -> str:
    """Text safe to print on any terminal: file names whose bytes are not UTF-8 (kept by Python as surrogates)
    show their odd bytes as ``\\xNN`` instead of breaking the output."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


#: Width of result tables when stdout is a file or a pipe (a terminal uses its own width, COLUMNS wins).
PIPED_WIDTH = 200


class ProgressHandle:
    """What a stage advances; a no-op when progress is hidden."""

    def __init__(self, progress: Progress | None, task_id: Any) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, n: float = 1, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task_id, advance=n, **self._fields(fields))

    def update(self, *, completed: float | None = None, total: float | None = None, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task_id, completed=completed, total=total, **self._fields(fields))

    @staticmethod
    def _fields(fields: dict[str, Any]) -> dict[str, Any]:
        status = fields.pop("status", None)
        if status is not None:
            fields["status"] = escape(str(status))
        return fields


class Console:
    def __init__(
        self,
        *,
        quiet: bool = False,
        debug: bool = False,
        force_terminal: bool | None = None,
        spell: Callable[[str], str] | None = None,
    ) -> None:
        self.quiet = quiet
        self.debug = debug
        #: Library messages -> the command line's words (identity unless the app sets one).
        self.spell: Callable[[str], str] = spell or (lambda text: text)
        self.err = RichConsole(stderr=True, force_terminal=force_terminal, highlight=False, soft_wrap=True)
        self.out = RichConsole(file=sys.stdout, highlight=False, soft_wrap=True)
        if not self.out.is_terminal and "COLUMNS" not in os.environ:
            self.out.width = PIPED_WIDTH  # result tables written to a file or a pipe are not cut at 80 columns

    # -- results (stdout) -------------------------------------------------------------------------------------
    def result(self, text: str) -> None:
        """A result line on stdout, printed verbatim (no markup), never silenced by --quiet."""
        sys.stdout.write(displayable(text) + "\n")
        sys.stdout.flush()

    def result_table(self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.out.print(self._table(title, columns, rows))

    def results_as_notes(self) -> Console:
        """A console for a step inside a larger job: its results become notes, stdout stays the job's own."""
        nested = Console(quiet=self.quiet, debug=self.debug, spell=self.spell)
        nested.err = self.err
        nested.result = nested.info  # type: ignore[method-assign]
        nested.result_table = nested.table  # type: ignore[method-assign]
        return nested

    def muted(self) -> Console:
        """A console for what another process says already (the processes of a torchrun job after the first share
        its notes): notes, warnings, tables and progress print nothing; results and errors still print."""
        silent = Console(quiet=True, debug=self.debug, spell=self.spell)
        silent.err = self.err
        silent.warn = lambda message: None  # type: ignore[method-assign]
        return silent

    # -- notes (stderr) ---------------------------------------------------------------------------------------
    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(escape(displayable(self.spell(message))))

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {escape(displayable(self.spell(message)))}")

    def error(self, message: str, hint: str | None = None) -> None:
        self.err.print(f"[bold red]error:[/bold red] {escape(displayable(self.spell(message)))}")
        if hint:
            self.err.print(f"[dim]hint:[/dim] {escape(displayable(self.spell(hint)))}")

    def table(self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A summary table on stderr (decoration, not a result)."""
        if not self.quiet:
            self.err.print(self._table(title, columns, rows))

    def print_exception(self) -> None:
        self.err.print_exception(show_locals=False)

    @staticmethod
    def _table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(escape(str(cell)) for cell in row))
        return table

    # -- progress (stderr) ------------------------------------------------------------------------------------
    @property
    def shows_progress(self) -> bool:
        return not self.quiet and self.err.is_terminal

    @contextmanager
    def progress(self, description: str, total: float | None, *, unit: str = "it") -> Iterator[ProgressHandle]:
        """A progress bar with count, rate, elapsed time and ETA; silent when quiet or not on a terminal."""
        if not self.shows_progress:
            yield ProgressHandle(None, None)
            return
        from rich.progress import (  # here, not at the top: --help never draws a bar
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("[cyan]{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        ]
        with Progress(*columns, console=self.err, transient=False) as progress:
            task_id = progress.add_task(description, total=total, status="", rate="")
            handle = _RateHandle(progress, task_id, unit)
            yield handle


class _RateHandle(ProgressHandle):
    """Adds a human rate column (it/s or s/it) computed by rich from the task's speed."""

    def __init__(self, progress: Progress, task_id: Any, unit: str) -> None:
        super().__init__(progress, task_id)
        self._unit = unit

    def _rate(self) -> str:
        assert self._progress is not None
        speed = self._progress.tasks[self._task_id].speed
        if not speed:
            return ""
        return f"{speed:.2f} {self._unit}/s" if speed >= 1 else f"{1 / speed:.1f} s/{self._unit}"

    def advance(self, n: float = 1, **fields: Any) -> None:
        super().advance(n, **fields)
        if self._progress is not None:
            self._progress.update(self._task_id, rate=self._rate())
