"""Stage discovery through the ``quantart.stages`` entry-point group, third-party and broken plugins."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
from cli_support import run_cli

from quantart_cli.shell.plugins import ENTRY_POINT_GROUP, discover_stages

HELLO_STAGE = textwrap.dedent(
    '''
    from quantart_cli.shell.plugins import Stage
    from quantart_cli.core.options import cli_argument, cli_option
    from quantart_cli.shell.settings import StageSettings


    class HelloSettings(StageSettings):
        names: list[str] = cli_argument("Who to greet.", default=[])
        greeting: str = cli_option("Hello", "The greeting word.")
        shout: bool = cli_option(False, "Upper-case the result.")


    def run(settings, ctx):
        for name in settings.names:
            text = f"{settings.greeting}, {name}!"
            ctx.console.result(text.upper() if settings.shout else text)
        ctx.console.info(f"greeted {len(settings.names)} on {settings.device}")


    stage = Stage(name="hello", help="Greet people (a third-party stage).", settings=HelloSettings, run=run)
    '''
)


def _install_plugin(root: Path, dist: str, module: str, source: str, entry_points: str) -> None:
    """A minimal installed distribution: a module plus a dist-info with entry_points.txt."""
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"  # dist-info folder names use underscores
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_points}\n")


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in ("hello_plugin", "broken_plugin"):
        sys.modules.pop(name, None)
    importlib.invalidate_caches()


def test_builtin_stages_come_from_entry_points():
    discovery = discover_stages()
    assert {"train-vq", "train-sga", "encode", "stylize", "inspect-codebook"} <= set(discovery.stages)
    assert discovery.stages["stylize"].distribution.startswith("quantart ")
    assert not discovery.broken


def test_third_party_stage_runs_through_the_cli(capsys, plugin_site):
    _install_plugin(plugin_site, "quantart-hello", "hello_plugin", HELLO_STAGE, "hello = hello_plugin:stage")
    result = run_cli(capsys, "stages")
    assert "hello" in result.out and "quantart-hello 1.2.3" in result.out
    result = run_cli(capsys, "--device", "cpu", "hello", "Ada", "Alan", "--greeting", "Hi", "--shout")
    assert result.code == 0, result.err
    assert result.out == "HI, ADA!\nHI, ALAN!\n"
    assert "greeted 2 on cpu" in result.err
    assert run_cli(capsys, "hello", "--help").code == 0


def test_broken_plugin_warns_once_and_the_rest_works(capsys, plugin_site):
    _install_plugin(plugin_site, "quantart-broken", "broken_plugin", "raise ImportError('needs libfoo')\n",
                    "broken = broken_plugin:stage")
    result = run_cli(capsys, "stylize", "--print-config")
    assert result.code == 0
    assert result.err.count("warning") == 1
    assert "'broken'" in result.err and "quantart-broken" in result.err and "needs libfoo" in result.err
    result = run_cli(capsys, "stages")
    assert "failed to load" in result.out


def test_plugin_that_is_not_a_stage_is_reported(plugin_site):
    _install_plugin(plugin_site, "quantart-odd", "odd_plugin", "stage = 42\n", "odd = odd_plugin:stage")
    discovery = discover_stages()
    assert any(b.entry_point == "odd" and "Stage" in b.error for b in discovery.broken)
    sys.modules.pop("odd_plugin", None)


def test_a_single_installed_stage_still_dispatches(capsys, plugin_site, monkeypatch):
    _install_plugin(plugin_site, "quantart-hello", "hello_plugin", HELLO_STAGE, "hello = hello_plugin:stage")
    from quantart_cli.shell import plugins

    only_hello = [ep for ep in plugins.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == "hello"]
    monkeypatch.setattr(plugins.metadata, "entry_points", lambda group: only_hello)
    result = run_cli(capsys, "hello", "World")
    assert result.code == 0 and result.out == "Hello, World!\n"


def test_stage_definition_is_checked():
    from quantart_cli.shell.plugins import Stage
    from quantart_cli.shell.settings import StageSettings

    with pytest.raises(ValueError):
        Stage(name="Bad Name", help="x", settings=StageSettings, run=lambda s, c: 0)
    with pytest.raises(ValueError):
        Stage(name="ok", help="two\nlines", settings=StageSettings, run=lambda s, c: 0)
