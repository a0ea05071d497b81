"""Run the CLI in-process and capture what it printed, split into stdout and stderr; checks of what a run said."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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


def assert_one_sentence(err: str) -> None:
    """The run said what went wrong in exactly one ``error:`` line: no traceback, no "unexpected ..." fallback."""
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "unexpected" not in err, err


def assert_runs(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    """Run the stage on valid tiny inputs: it must work, so a later refusal is about the bad input alone."""
    result = run_cli(capsys, *args)
    assert result.code == 0, f"probe run of {args[0]} on valid tiny inputs failed: {result.err[-1500:]}"


def stylize_args(images: Path, ckpt: Path, out: Path, *extra: str) -> list[str]:
    """``stylize`` of ``img_0.png`` of ``images`` (the small_images fixture) in the style of its ``img_1.png``."""
    return ["stylize", str(images / "img_0.png"), "--style", str(images / "img_1.png"), "--ckpt", str(ckpt),
            "--out", str(out), "--device", "cpu", *extra]


def require_stylize(capsys: pytest.CaptureFixture[str], tmp_path: Path, images: Path, ckpt: Path) -> None:
    """``stylize_args`` must work on valid inputs first (see ``assert_runs``)."""
    assert_runs(capsys, stylize_args(images, ckpt, tmp_path / "probe.png"))


def subprocess_env() -> dict[str, str]:
    """The environment for a ``quantart`` subprocess: one thread (as in this process), unbuffered output."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    return env
