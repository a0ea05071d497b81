"""Architecture rules: the layering contracts hold (and catch what they promise), names are unique across
layers, one atomic writer, the help path never imports torch."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

from repo_root import REPO

CORE = REPO / "quantart_cli" / "core"
STAGES = REPO / "stages" / "quantart_stages"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env_path = f"{root}:{root / 'stages'}:{root / 'presets'}"  # this tree, ahead of the editable install
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], capture_output=True, text=True, cwd=root,
                          env={"PYTHONPATH": env_path, "PATH": str(LINT_IMPORTS.parent)})


def _copy_of_the_package(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for part in ("quantart_cli", "stages", "presets"):
        skip = shutil.ignore_patterns("*.safetensors", "*.jpg", "__pycache__")
        shutil.copytree(REPO / part, root / part, ignore=skip)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_lint_imports_contracts_hold():
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_a_core_module_reaching_rich_through_another_module_breaks_the_contract(tmp_path):
    root = _copy_of_the_package(tmp_path)
    (root / "quantart_cli" / "samples" / "pretty.py").write_text("import rich\n")  # outside the core
    (root / "quantart_cli" / "core" / "helper.py").write_text("from quantart_cli.samples import pretty\n")
    result = _lint_imports(root)
    assert result.returncode == 1
    assert "quantart_cli.core.helper -> quantart_cli.samples.pretty" in result.stdout
    assert "rich" in result.stdout


def test_an_import_cycle_in_the_core_breaks_the_contract(tmp_path):
    root = _copy_of_the_package(tmp_path)
    errors = root / "quantart_cli" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom quantart_cli.core import devices  # noqa: E402\n")
    result = _lint_imports(root)
    assert result.returncode == 1 and "No import cycles" in result.stdout and "BROKEN" in result.stdout


def test_an_import_cycle_between_stages_breaks_the_contract(tmp_path):
    root = _copy_of_the_package(tmp_path)
    common = root / "stages" / "quantart_stages" / "common.py"  # train_vq imports common; now common imports it
    common.write_text(common.read_text() + "\nfrom quantart_stages import train_vq  # noqa: E402,F401\n")
    result = _lint_imports(root)
    assert result.returncode == 1 and "No import cycles" in result.stdout and "BROKEN" in result.stdout
    assert "quantart_stages" in result.stdout


def test_the_shell_importing_the_plugin_module_breaks_the_contract(tmp_path):
    """quantart_cli.plugin is the top of the package: the shell reaching it makes a cycle (plugin imports the
    shell), the core reaching it imports the shell."""
    root = _copy_of_the_package(tmp_path)
    (root / "quantart_cli" / "shell" / "late.py").write_text("from quantart_cli import plugin  # noqa: F401\n")
    result = _lint_imports(root)
    assert result.returncode == 1 and "No import cycles" in result.stdout and ".shell -> .plugin" in result.stdout
    (root / "quantart_cli" / "shell" / "late.py").unlink()
    (root / "quantart_cli" / "core" / "late.py").write_text("from quantart_cli import plugin  # noqa: F401\n")
    result = _lint_imports(root)
    assert result.returncode == 1 and "The core imports neither the shell" in result.stdout


def _core_names() -> set[str]:
    modules = {p.stem for p in CORE.rglob("*.py") if p.stem != "__init__"}
    return modules | {p.name for p in CORE.rglob("*") if p.is_dir() and p.name != "__pycache__"}


def test_no_module_name_exists_in_both_the_core_and_the_stages():
    stage_names = {p.stem for p in STAGES.glob("*.py")} - {"__init__"}
    assert not stage_names & _core_names()


def test_one_atomic_writer():
    """Only core/io/atomic.py renames a temp file over a target; everything else writes through it."""
    renames = re.compile(r"os\.replace\(|os\.rename\(|\.rename\(|\.replace\(tmp|shutil\.move\(")
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in [*(REPO / "quantart_cli").rglob("*.py"), *STAGES.glob("*.py")]
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if renames.search(line) and path != CORE / "io" / "atomic.py"
    ]
    assert not offenders


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


def test_the_plugin_interface_imports_no_torch():
    loaded = _modules_after("import quantart_cli.plugin")
    assert "quantart_cli.plugin" in loaded and "torch" not in loaded


def test_stages_take_the_plugin_interface_from_quantart_cli_plugin():
    """The built-in stages are written like a third-party one: a name quantart_cli.plugin exports is imported from
    there, never from the module that defines it."""
    from quantart_cli.plugin import __all__ as interface

    offenders = [
        f"{path.name}:{node.lineno}: {alias.name} from {node.module}"
        for path in sorted(STAGES.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("quantart_cli.")
        and node.module != "quantart_cli.plugin"
        for alias in node.names if alias.name in interface
    ]
    assert not offenders, "\n".join(offenders)


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "quantart_cli", "--version"], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0 and out.stdout.startswith("quantart ")


def test_import_installs_no_hook_and_the_flat_layout_is_gone():
    """quantart 0.1's flat layout (quantart_cli.models, ...) was never released: no finder answers for it."""
    code = (
        "import sys\nbefore = list(sys.meta_path)\nimport quantart_cli\nassert sys.meta_path == before\n"
        "try:\n    import quantart_cli.models\nexcept ModuleNotFoundError:\n    pass\n"
        "else:\n    raise SystemExit('quantart_cli.models still imports')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ------------------------------------------------------------------------------- the core speaks no CLI

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
FIELD_MARK = re.compile(r"`([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)(?:=[^`\n]*)?`")


def _text_of(node: ast.AST) -> str:
    """A string expression's text, each interpolated value standing as X (f"--device {name}" -> "--device X")."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_text_of(part) if isinstance(part, ast.Constant) else "X" for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text_of(node.left) + _text_of(node.right)
    return ""


def _strings_in(node: ast.AST) -> list[str]:
    texts = [_text_of(n) for n in ast.walk(node) if isinstance(n, (ast.Constant, ast.JoinedStr))]
    return [t for t in texts if t]


def _is_error_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    return name.endswith(("Error", "Exception")) or (isinstance(func, ast.Call))  # raise type(err)(...)


def _assignments(nodes) -> dict[str, list[ast.AST]]:
    assigned: dict[str, list[ast.AST]] = {}
    for node in nodes:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
    return assigned


def core_error_messages() -> list[tuple[str, str]]:
    """(where, text) for every string that can end up in an error the core raises: inside a raise statement or
    an error's constructor, and what a local variable used there was assigned (a reason built beforehand)."""
    found = []
    for path in sorted(CORE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        constants = _assignments(tree.body)
        for scope in [*functions.values(), tree]:
            assigned = {**constants, **_assignments(ast.walk(scope))}
            for node in ast.walk(scope):
                if isinstance(node, ast.Raise) and node.exc is not None:
                    sources = [node.exc]
                elif _is_error_call(node):
                    sources = [node]
                else:
                    continue
                used = {n.id for source in sources for n in ast.walk(source) if isinstance(n, ast.Name)}
                sources += [value for name in used for value in assigned.get(name, [])]
                called = {n.func.id for source in sources for n in ast.walk(source)
                          if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in functions}
                sources += [n.value for name in called for n in ast.walk(functions[name])  # a reason built by a helper
                            if isinstance(n, ast.Return) and n.value is not None]
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                found += [(where, text) for source in sources for text in _strings_in(source)]
    return found


def test_core_errors_name_fields_not_flags():
    """Issue 27: a Python caller of the core is told the field to set (`continuous_ckpt`), never a flag
    (--continuous-ckpt); the CLI shows each field as its flag."""
    messages = core_error_messages()
    assert len(messages) > 300  # the scan sees the core's messages
    offenders = sorted({f"{where}: {text!r}" for where, text in messages if FLAG.search(text)})
    assert not offenders, "\n".join(offenders)


def test_every_field_a_core_error_names_is_an_option():
    """What the CLI turns into a flag must be a field some stage has (a typo would reach the user as is); a
    command's name (`encode`) stays as it is."""
    from quantart_cli.shell.fields import known_keys
    from quantart_cli.shell.plugins import discover_stages

    stages = discover_stages().stages
    keys = {key for loaded in stages.values() for key in known_keys(loaded.stage.settings)} | set(stages)
    named = {(where, mark) for where, text in core_error_messages() for mark in FIELD_MARK.findall(text)}
    assert len(named) > 20
    unknown = sorted(f"{where}: `{mark}`" for where, mark in named if mark not in keys)
    assert not unknown, "\n".join(unknown)
