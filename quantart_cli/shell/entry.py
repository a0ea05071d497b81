"""The console script ``quantart`` (and ``python -m quantart_cli``): the Typer app's :func:`~.app.main`.

``--help`` renders from the stages' settings every time; the help path imports Typer, rich, pydantic and the
stage modules, never torch (``tests/project/test_import_rules.py``), and answers in under half a second
(``benchmarks/bench_help.py``).
"""

from __future__ import annotations

from quantart_cli.shell.app import main

__all__ = ["main"]
