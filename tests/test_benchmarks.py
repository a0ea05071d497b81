"""The speed benchmarks keep running (tiny configurations); their figures are read by people, never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_bench_speed_compares_ours_with_the_original_in_one_run() -> None:
    lines = [json.loads(line) for line in _run("bench_speed.py", "--config", "tiny", "--sizes", "32", "--repeats",
                                               "2", "--folder", "2", "--alphas", "0,1", "--threads", "1").splitlines()]
    assert [r["scenario"] for r in lines] == ["single", "folder", "alphas"]
    for record in lines:
        assert record["speedup_min"] <= record["speedup_median"] <= record["speedup_max"]
        assert record["max_abs_diff"] < 1e-4 and record["indices_equal"], record  # the same stylization


def test_bench_train_sga_interleaves_both_sources_and_the_profile_names_the_phases() -> None:
    out = _run("bench_train_sga.py", "--configs", "tiny", "--steps", "1", "--repeats", "2", "--images", "2",
               "--threads", "1")
    speedup = [json.loads(line) for line in out.splitlines() if '"train_sga_speedup"' in line]
    assert len(speedup) == 1 and speedup[0]["speedup_min"] <= speedup[0]["speedup_max"]
    profile = _run("profile_train_sga.py", "--config", "tiny", "--steps", "1", "--batch-size", "2")
    assert "== from images" in profile and "== from cache" in profile
    assert "latents" in profile and "generator" in profile and "disc" in profile
