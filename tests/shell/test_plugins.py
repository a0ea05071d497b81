"""Stage discovery through the ``quantart.stages`` entry-point group, third-party and broken plugins."""

from __future__ import annotations

import ast
import importlib
import sys
import textwrap
from pathlib import Path

import pytest
from cli_support import assert_one_sentence, run_cli

from quantart_cli.shell.plugins import ENTRY_POINT_GROUP, discover_stages

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
DOCS_TEXT = DOCS.read_text(encoding="utf-8")
#: The complete stage docs/plugins.md shows, as written there.
HELLO_STAGE = DOCS_TEXT.split("```python\n", 1)[1].split("```", 1)[0]

ERRORS_STAGE = textwrap.dedent(
    '''
    from quantart_cli.plugin import (
        BadInputError, NotFoundError, OptionGroup, QuantartError, RunContext, Stage, StageSettings, UsageError,
        WriteError, cli_option,
    )


    class Knobs(OptionGroup):
        level: int = cli_option(0, "Which error to raise: 0 none, 1 bad input, 2 usage, 3 not found, 4 write.")


    class FailSettings(Knobs, StageSettings):
        pass


    def run(settings, ctx: RunContext):
        knobs = Knobs.pick(settings)
        errors = {1: BadInputError, 2: UsageError, 3: NotFoundError, 4: WriteError}
        if knobs.level in errors:
            error = errors[knobs.level](f"`level={knobs.level}` was asked for.")
            assert isinstance(error, QuantartError)
            raise error
        ctx.console.result(f"no error from {ctx.stage_name}")


    stage = Stage(name="fail", help="Raise the error asked for (a third-party stage).", settings=FailSettings, run=run)
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
    for name in ("hello_plugin", "broken_plugin", "fail_plugin"):
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


# -- the plugin interface: quantart_cli.plugin ------------------------------------------------------------------


def _documented_plugin_names() -> list[str]:
    """The first column of the table under docs/plugins.md's "What a stage imports" heading."""
    section = DOCS_TEXT.split("## What a stage imports", 1)[1].split("\n## ", 1)[0]
    return [line.split("`")[1] for line in section.splitlines() if line.startswith("| `")]


def test_the_plugin_module_exports_exactly_the_documented_names():
    import quantart_cli.plugin as plugin
    from quantart_cli.core import errors, options
    from quantart_cli.shell import plugins, settings

    documented = _documented_plugin_names()
    assert len(documented) == len(set(documented)) >= 10
    assert sorted(plugin.__all__) == sorted(documented)
    public = {name for name in vars(plugin) if not name.startswith("_") and name != "annotations"}
    assert public == set(documented)
    homes = (errors, options, plugins, settings)  # re-exported, not copies: isinstance and subclassing agree
    assert all(any(getattr(home, name, None) is getattr(plugin, name) for home in homes) for name in documented)


def test_the_documented_stage_imports_only_the_plugin_module():
    imported = [node for node in ast.walk(ast.parse(HELLO_STAGE)) if isinstance(node, (ast.Import, ast.ImportFrom))]
    modules = {node.module if isinstance(node, ast.ImportFrom) else alias.name
               for node in imported for alias in node.names}
    assert modules == {"quantart_cli.plugin"}


@pytest.mark.parametrize(("level", "code"), [(0, 0), (1, 1), (2, 2), (3, 3), (4, 1)])
def test_a_stage_written_against_the_plugin_module_alone_gets_errors_and_exit_codes(
    capsys, plugin_site, level, code
):
    _install_plugin(plugin_site, "quantart-fail", "fail_plugin", ERRORS_STAGE, "fail = fail_plugin:stage")
    result = run_cli(capsys, "fail", "--level", str(level))
    assert result.code == code, result.err
    if level:
        assert_one_sentence(result.err)
        assert f"--level {level} was asked for." in result.err  # the field shown as its flag
    else:
        assert result.out == "no error from fail\n"
    listing = run_cli(capsys, "--help")
    assert listing.code == 0 and "fail" in listing.out
