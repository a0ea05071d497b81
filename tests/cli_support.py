"""Run the CLI in-process and capture what it printed, split into stdout and stderr."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from quantart_cli.shell.app import main
from quantart_cli.shell.plugins import Stage


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], *args: str, extra_stages: list[Stage] | None = None) -> CliResult:
    capsys.readouterr()
    code = main(list(args), extra_stages=extra_stages)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)
