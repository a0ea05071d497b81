"""Architecture rules: the layering contracts hold (and catch what they promise), names are unique across
layers, one atomic writer, the help path never imports torch."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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
