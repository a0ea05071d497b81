"""The wheel installs unique top-level packages, ships the presets, and registers the stages."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from repo_root import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    pytest.importorskip("build", reason="the dev extra's 'build' package builds the wheel")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)],
                   check=True, capture_output=True, text=True)
    (wheel,) = out.glob("quantart-*.whl")
    return wheel


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"quantart_cli", "quantart_stages", "quantart_presets"}
    for stage, preset in [("train-vq", "wikiart"), ("train-vq", "tiny"), ("train-sga", "landscape2art")]:
        assert f"quantart_presets/{stage}/{preset}.toml" in names
    # The built-in model and the held-out paintings ship; the wheel stays small (issue: 60 MB at most).
    assert "quantart_cli/core/weights/builtin.safetensors" in names
    assert sum(n.startswith("quantart_cli/samples/paintings/") and n.endswith(".jpg") for n in names) == 8
    assert wheel.stat().st_size < 60 * 1024**2
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[quantart.stages]" in text and "stylize = quantart_stages.stylize:stage" in text


def test_presets_found_from_the_installed_wheel(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target",
                    str(target), str(wheel)], check=True)
    code = (
        "import quantart_presets, quantart_cli\n"
        "from quantart_cli.shell.presets import list_presets\n"
        "from quantart_cli.shell.app import main\n"
        f"assert quantart_presets.__file__.startswith({str(target)!r}), quantart_presets.__file__\n"
        f"assert quantart_cli.__file__.startswith({str(target)!r}), quantart_cli.__file__\n"
        "print(sorted(list_presets('train-vq')))\n"
        "main(['train-vq', '--preset', 'wikiart', '--print-config'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "'wikiart'" in out.stdout and "disc_start = 10000  # preset" in out.stdout
