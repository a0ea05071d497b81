"""Architecture rules: the help path never imports torch; the core never imports the CLI shell's libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "quantart_cli"
#: The CLI shell: the only modules allowed to know about Typer, rich, pydantic-settings and platformdirs.
SHELL = {"shell/app.py", "shell/console.py", "shell/plugins.py", "shell/settings.py", "shell/paths.py",
         "shell/__init__.py", "__main__.py"}
FORBIDDEN_IN_CORE = {"typer", "rich", "pydantic_settings", "platformdirs", "click", "quantart_stages"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


CORE_MODULES = sorted(p for p in CORE.rglob("*.py") if p.relative_to(CORE).as_posix() not in SHELL)


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.relative_to(CORE).as_posix())
def test_core_module_stays_free_of_cli_libraries(path):
    bad = _imports(path) & FORBIDDEN_IN_CORE
    assert not bad, f"{path.name} imports {sorted(bad)}: the core must not depend on the CLI shell"


def test_nothing_in_the_library_imports_stages():
    for path in CORE.rglob("*.py"):
        assert "quantart_stages" not in _imports(path), path


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return set(out.stdout.split())


def test_help_does_not_import_torch():
    code = (
        "from quantart_cli.shell.app import main\n"
        "for args in (['--help'], ['stylize', '--help'], ['train-vq', '--help'], ['stages'], "
        "['train-sga', '--preset', 'tiny', '--print-config']):\n"
        "    assert main(args) == 0, args\n"
    )
    loaded = _modules_after(code)
    assert "torch" not in loaded
    assert "quantart_stages.stylize" in loaded  # the stages really were loaded


def test_package_import_is_lazy():
    loaded = _modules_after("import quantart_cli")
    assert "torch" not in loaded and "typer" not in loaded


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "quantart_cli", "--version"], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0 and out.stdout.startswith("quantart ")
