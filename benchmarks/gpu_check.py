"""The GPU check (issue 25): CUDA tests, stylize, training steps and torchrun on one GPU; prints one table.

Run it from the repository root on a machine with a CUDA GPU (``benchmarks/gpu_check.sh`` is the same command):

    python benchmarks/gpu_check.py                       # the full check, within 8 minutes on one GPU
    python benchmarks/gpu_check.py --out check.json      # also write the table as JSON (or QUANTART_GPU_CHECK_OUT)
    python benchmarks/gpu_check.py --only compile --budget 590   # one part (setup always runs), more time
    python benchmarks/gpu_check.py --smoke               # the very same code paths, tiny, on the CPU (the test)
    python benchmarks/gpu_check.py --smoke --device cuda # the same, tiny, on the GPU: a quick first look

The table goes to stdout, progress lines to stderr. What runs, in this order; each part in processes of its own,
so a part that fails (an error, a crash, out of memory, its time limit) is one table row marked FAILED with a
one-line reason, and the rest still runs:

1. ``setup``: the environment (torch, CUDA, the GPU), random training images, two random-weight VQGANs of the
   ``train-vq --preset wikiart`` configuration (f16, the original's) for train-sga.
2. ``tests``: the tests marked ``gpu`` (``pytest -m gpu --slow``, pyproject.toml); on CUDA none may skip.
3. ``stylize``: the built-in model through the engine ``quantart stylize`` uses (``Stylizer``), a packaged photo
   resized to 512, 1024, 2048 and 4096 px, a packaged painting as the style, in fp32, bf16 and fp16
   (``--precision``); one warm-up run, then one timed run (CUDA synchronized; style encoding included); peak
   memory is ``torch.cuda.max_memory_allocated`` over the timed run (the model's weights included). bf16 and
   fp16 rows also give the mean difference from fp32 in grey levels (1/255).
4. ``train-vq`` and ``train-sga``: 50 steps of ``quantart train-vq --preset wikiart`` and ``quantart train-sga
   --preset art2art`` (random weights, the presets' batch sizes and 256 px, LPIPS off so nothing is downloaded,
   the discriminator on from step 0), through the CLI inside the child process, in fp32 and with bf16 AMP;
   steps/s over steps 11-50 from the run's metrics.jsonl, peak memory over the whole run.
5. ``torchrun``: ``python -m torch.distributed.run --nproc_per_node N -m quantart_cli train-vq`` for 10 steps;
   N is 2 where two GPUs (or, in smoke mode, the CPU on gloo) allow it. With one GPU N is 1, and a run with
   WORLD_SIZE 1 trains as a plain single process (no process group, no DDP wrapper): the row says so.
6. ``compile``: the same training runs with ``--compile`` (torch.compile), bf16 then fp32; the time of the first
   10 steps (compilation included) is in the row's note.
7. fp16 AMP training (the GradScaler path, for GPUs without bf16), last: the budget cuts the least needed first.

The whole check has a time budget (``--budget``, 450 s, so that it ends within 8 minutes): a part gets at most
what is left (stopped there, its row says ``cut``) and parts that no longer fit are ``not run``. The exit status
is 0 when every row is ok (or skipped), 1 when any failed, was cut or did not run, 3 when a Python package or
the GPU is missing.

Setup without network: the repository's own code is used (its folders go first on PYTHONPATH); where
``quantart`` is not installed, its entry points (how the CLI finds its subcommands) are written into a private
folder in the work directory. Packages the machine lacks can come as wheels: ``--wheels DIR`` (default
``.whl`` in the repository root, when present) installs them into that private folder, never into the
environment. ``--fetch-wheels DIR``, on a machine with network, downloads those a bare CUDA image usually lacks
(pydantic, platformdirs, lpips, pytorch-fid and their needs) for Python 3.12 on x86-64 Linux,
at the versions installed where it runs.

Smoke mode (``--smoke``) runs every part the same way, tiny: the ``tiny`` presets at 32 px, 4 training steps,
stylize at 32 and 64 px, torchrun with 2 processes on gloo, and torch.compile with the ``aot_eager`` backend
(dynamo and AOTAutograd trace the same graphs; no kernels are generated, which takes minutes on a CPU).
On the CPU fp16 is listed as skipped (it needs CUDA) and peak memory is not measured.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MARK = "GPU_CHECK "  # prefix of the JSON lines children print
#: Modules every part needs; the tests part also needs pytest.
REQUIRED_MODULES = ("torch", "torchvision", "numpy", "PIL", "safetensors", "pydantic", "typer", "rich", "platformdirs")
#: What a bare CUDA image (torch, torchvision, numpy, scipy, pillow, typer, rich, safetensors, opencv, pytest)
#: lacks of quantart's needs; --fetch-wheels downloads these.
WHEELS_FOR_A_CUDA_IMAGE = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions",
                           "platformdirs", "lpips", "pytorch-fid")
SIZES = (512, 1024, 2048, 4096)
PRECISIONS = ("fp32", "bf16", "fp16")
GROUPS = ("setup", "tests", "stylize", "train-vq", "train-sga", "torchrun", "compile")


# ------------------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Scale:
    """How big the check runs: the full GPU check or the tiny smoke run."""

    sizes: tuple[int, ...]
    steps: int
    log_every: int
    ddp_steps: int
    images: int
    image_px: int
    vq_preset: str
    sga_preset: str
    train_size: dict[str, int]  # stage -> --size where not the preset's
    limits: dict[str, float]
    budget: float
    compile_backend: str


FULL = Scale(sizes=SIZES, steps=50, log_every=10, ddp_steps=10, images=48, image_px=288, vq_preset="wikiart",
             sga_preset="art2art", train_size={},
             limits={"setup": 90, "tests": 150, "stylize": 180, "train": 150, "torchrun": 150, "compile": 300},
             budget=450, compile_backend="inductor")
SMOKE = Scale(sizes=(32, 64), steps=4, log_every=2, ddp_steps=4, images=6, image_px=64, vq_preset="tiny",
              sga_preset="tiny", train_size={"train-vq": 32},  # train-sga keeps 64 px: its D needs 8x8 latents
              limits={"setup": 300, "tests": 300, "stylize": 300, "train": 300, "torchrun": 300, "compile": 300},
              budget=3600, compile_backend="aot_eager")


@dataclass
class Row:
    part: str
    setting: str
    status: str = "ok"  # ok | FAILED | skipped | cut (stopped: the budget ran out) | not run (no budget left)
    seconds: float | None = None
    steps_per_s: float | None = None
    peak_mib: float | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def bad(self) -> bool:
        return self.status in ("FAILED", "cut", "not run")


@dataclass
class Child:
    """What a child process left: its JSON records, exit status, time, and the last line of its errors."""

    returncode: int | None
    records: list[dict[str, Any]]
    seconds: float
    timed_out: bool
    error_line: str
    stdout: str = ""
    cut: bool = False  # stopped because the check's time budget ran out, not at the part's own limit

    def reason(self, record: dict[str, Any] | None = None) -> str:
        """One line saying why it failed."""
        if self.timed_out:
            if self.cut:
                return f"stopped after {self.seconds:.0f} s: the check's time budget (--budget) ran out"
            return f"stopped at its time limit ({self.seconds:.0f} s)"
        said = (record or {}).get("error") or ""
        if self.error_line and self.error_line not in said:
            said = f"{said}: {self.error_line}" if said else self.error_line
        return _one_line(said or f"exited with status {self.returncode} and no message")


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_line(stderr: str) -> str:
    """The line of ``stderr`` that says what went wrong: the last error-like line, else the last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^(error|Error|[\w.]*(Error|Exception|Interrupt)\b)", line) or "out of memory" in line:
            return line
    return lines[-1] if lines else ""


class Check:
    """Runs the parts in order within the time budget and collects the rows."""

    def __init__(self, args: argparse.Namespace, scale: Scale, work: Path, env: dict[str, str]) -> None:
        self.args = args
        self.scale = scale
        self.work = work
        self.env = env
        self.device = args.device
        self.cuda = args.device.startswith("cuda")
        self.started = time.perf_counter()
        self.budget = args.budget if args.budget is not None else scale.budget
        self.rows: list[Row] = []
        self.setup: dict[str, Any] = {}
        self.no_gpu = False  # asked for CUDA, and torch sees none: nothing else can run
        self.budget_bound = False  # the running part's limit is what is left of the budget

    # -- running children

    def remaining(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def spawn(self, name: str, command: list[str], limit: float, extra_env: dict[str, str] | None = None) -> Child:
        """Run ``command`` (from the repository root) for at most ``limit`` seconds; its output goes to
        ``logs/NN-name.log`` in the work folder."""
        env = {**self.env, **(extra_env or {})}
        start = time.perf_counter()
        number = len(list((self.work / "logs").glob("*.log")))
        log = self.work / "logs" / f"{number:02d}-{re.sub(r'[^A-Za-z0-9.-]+', '-', name)}.log"
        # A session of its own, so a child stopped at its limit goes with everything it started (torchrun's
        # workers, DataLoader workers), and none of them keeps the GPU busy for the next part.
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, errors="replace", start_new_session=True)
        try:
            out, err = process.communicate(timeout=limit)
            code, timed_out = process.returncode, False
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            out, err = process.communicate()
            code, timed_out = None, True
        _kill_group(process.pid)  # leftovers of a child that ended (e.g. a torchrun worker that hung)
        log.write_text(f"$ {' '.join(command)}\n--- stdout\n{out}\n--- stderr\n{err}\n", encoding="utf-8")
        if self.args.verbose:
            sys.stderr.write(log.read_text(encoding="utf-8"))
        records = [json.loads(line[len(MARK):]) for line in out.splitlines() if line.startswith(MARK)]
        return Child(code, records, time.perf_counter() - start, timed_out, _error_line(err), out,
                     cut=timed_out and self.budget_bound)

    def failure(self, part: str, setting: str, child: Child, record: dict[str, Any] | None = None) -> Row:
        """The row of a part whose child failed (or was cut by the budget)."""
        return Row(part, setting, "cut" if child.cut else "FAILED", round(child.seconds, 2),
                   note=child.reason(record), details=record or {})

    def child_command(self, name: str, *args: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--child", name, "--device", self.device,
                "--work", str(self.work), *(["--smoke"] if self.args.smoke else []), *args]

    def run_part(self, group: str, labels: list[tuple[str, str]], limit_key: str, body) -> None:  # noqa: ANN001
        """Run ``body(limit) -> list[Row]`` unless the group is left out or the budget is spent."""
        if self.args.only and group not in self.args.only:
            return
        left = self.remaining()
        if left < min(10.0, self.budget / 4):  # too little to start a process that imports torch
            rows = [Row(part, setting, "not run", note=f"the time budget ({self.budget:.0f} s) was spent")
                    for part, setting in labels]
            self.rows.extend(rows)
            self.progress(rows)
            return
        limit = min(self.scale.limits[limit_key], left)
        self.budget_bound = left < self.scale.limits[limit_key]
        try:
            rows = body(limit)
        except Exception as err:  # a bug in this script must not hide the other parts
            rows = [Row(part, setting, "FAILED", note=_one_line(f"{type(err).__name__}: {err}"))
                    for part, setting in labels]
        self.rows.extend(rows)
        self.progress(rows)

    def progress(self, rows: list[Row]) -> None:
        for row in rows:
            sys.stderr.write(f"[gpu-check {time.perf_counter() - self.started:5.0f} s] {row.part} {row.setting}: "
                             f"{row.status}{' - ' + row.note if row.note and row.bad else ''}\n")
        sys.stderr.flush()

    # -- the parts

    def run(self) -> None:
        self.run_part("setup", [("setup", "environment, data, VQGANs")], "setup", self.part_setup)
        if self.no_gpu:
            return
        self.run_part("tests", [("tests", "pytest -m gpu")], "tests", self.part_tests)
        for precision in PRECISIONS:
            labels = [("stylize", f"{size} px {precision}") for size in self.scale.sizes]
            self.run_part("stylize", labels, "stylize", lambda limit, p=precision: self.part_stylize(p, limit))
        # Training: without and with AMP (bf16), the torchrun step, then torch.compile (slow to start), and
        # last fp16 AMP (its GradScaler path; for GPUs without bf16), so the budget cuts the least needed first.
        plan = [("fp32", False), ("bf16", False), (None, False), ("bf16", True), ("fp32", True), ("fp16", False)]
        for precision, compiled in plan:
            if precision is None:
                self.run_part("torchrun", [("torchrun", "train-vq")], "torchrun", self.part_torchrun)
                continue
            for stage in ("train-vq", "train-sga"):
                setting = f"{precision} compile" if compiled else precision
                self.run_part("compile" if compiled else stage, [(stage, setting)], "compile" if compiled else "train",
                              lambda limit, s=stage, p=precision, c=compiled: self.part_train(s, p, c, limit))

    def part_setup(self, limit: float) -> list[Row]:
        command = self.child_command("setup", "--images", str(self.scale.images), "--image-px",
                                     str(self.scale.image_px), "--vq-preset", self.scale.vq_preset)
        child = self.spawn("setup", command, limit)
        record = child.records[-1] if child.records else {}
        if child.returncode != 0 or "error" in record or not record:
            self.no_gpu = self.cuda and record.get("cuda_available") is False
            return [self.failure("setup", "environment, data, VQGANs", child, record)]
        self.setup = record
        return [Row("setup", "environment, data, VQGANs", "ok", round(child.seconds, 2), note=record["summary"],
                    details=record)]

    def part_tests(self, limit: float) -> list[Row]:
        marked = re.compile(r"^\s*@pytest\.mark\.gpu\b|^pytestmark\b.*\bmark\.gpu\b", re.MULTILINE)
        files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                       if marked.search(p.read_text(encoding="utf-8")))
        if not files:
            return [Row("tests", "pytest -m gpu", "FAILED", note="no test file carries the gpu marker")]
        command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "--slow", "-p", "no:cacheprovider", "-rs",
                   *files]
        child = self.spawn("tests", command, limit)
        seconds = round(child.seconds, 2)
        if child.timed_out:
            return [self.failure("tests", "pytest -m gpu", child)]
        stdout = child.stdout
        summary = [line for line in stdout.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", line)]
        counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary[-1])} \
            if summary else {}
        note = ", ".join(f"{n} {kind}" for kind, n in counts.items()) or child.reason()
        if child.returncode != 0:
            failing = [line for line in stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
            return [Row("tests", "pytest -m gpu", "FAILED", seconds, note=_one_line("; ".join([note, *failing[:2]])))]
        if self.cuda and (counts.get("skipped") or not counts.get("passed")):
            skipped = [line for line in stdout.splitlines() if line.startswith("SKIPPED")]
            return [Row("tests", "pytest -m gpu", "FAILED", seconds,
                        note=_one_line("; ".join([f"skipped on CUDA: {note}", *skipped[:1]])))]
        if not self.cuda:
            note += " (no CUDA here)"
        return [Row("tests", "pytest -m gpu", "ok", seconds, note=f"{note} in {len(files)} file(s)")]

    def unsupported(self, precision: str) -> str | None:
        """Why this device cannot run ``precision`` (a skipped row), or None."""
        if precision == "fp16" and not self.cuda:
            return "fp16 needs CUDA"
        if precision == "bf16" and self.cuda and self.setup.get("bf16") is False:
            return "this GPU has no bf16"
        return None

    def part_stylize(self, precision: str, limit: float) -> list[Row]:
        labels = [f"{size} px {precision}" for size in self.scale.sizes]
        why = self.unsupported(precision)
        if why:
            return [Row("stylize", label, "skipped", note=why) for label in labels]
        command = self.child_command("stylize", "--precision", precision, "--sizes",
                                     ",".join(map(str, self.scale.sizes)))
        child = self.spawn(f"stylize-{precision}", command, limit)
        by_size = {r["size"]: r for r in child.records if "size" in r}
        rows = []
        for size, label in zip(self.scale.sizes, labels, strict=True):
            record = by_size.get(size)
            if record is None:
                rows.append(self.failure("stylize", label, child))
            elif "error" in record:
                rows.append(Row("stylize", label, "FAILED", note=_one_line(record["error"]), details=record))
            else:
                note = "tiled" if record["tiled"] else "untiled"
                if record.get("diff_fp32_255") is not None:
                    note += f", {record['diff_fp32_255']:.2f} grey levels from fp32"
                if record.get("ran_as") is not None:
                    note += f", ran as {record['ran_as']} (no native {precision} here)"
                rows.append(Row("stylize", label, "ok", record["seconds"], peak_mib=record.get("peak_mib"), note=note,
                                details=record))
        return rows

    def train_args(self, stage: str, precision: str, out: Path, steps: int, log_every: int) -> list[str]:
        """The quantart command line of one training run (after the global options)."""
        data = Path(self.setup["data"]) if self.setup else self.work / "data"
        preset = self.scale.vq_preset if stage == "train-vq" else self.scale.sga_preset
        # --save-every beyond the end: one save, at the end (the loop always saves there), and no step_N.pt copy.
        args = [stage, "--preset", preset, "--steps", str(steps), "--log-every", str(log_every), "--sample-every",
                "0", "--save-every", str(10 * steps), "--precision", precision, "--out", str(out), "--set",
                "loss.disc_start=0"]
        if stage == "train-vq":
            args += ["--data", str(data / "content"), "--set", "loss.perceptual_weight=0"]
        else:
            args += ["--content-vq", str(self.setup.get("content_vq", "")), "--style-vq",
                     str(self.setup.get("style_vq", "")), "--content-data", str(data / "content"), "--style-data",
                     str(data / "style")]
        if stage in self.scale.train_size:
            args += ["--size", str(self.scale.train_size[stage])]
        return args

    def part_train(self, stage: str, precision: str, compiled: bool, limit: float) -> list[Row]:
        setting = f"{precision} compile" if compiled else precision
        why = self.unsupported(precision)
        if why:
            return [Row(stage, setting, "skipped", note=why)]
        if stage == "train-sga" and not self.setup.get("content_vq"):
            return [Row(stage, setting, "FAILED", note="setup failed: no stage-1 VQGANs to train from")]
        out = self.work / "runs" / f"{stage}-{setting.replace(' ', '-')}"
        args = self.train_args(stage, precision, out, self.scale.steps, self.scale.log_every)
        if compiled:
            args.append("--compile")
        backend = self.args.compile_backend or self.scale.compile_backend
        command = self.child_command("train", "--out-run", str(out), "--compile-backend", backend, "--", *args)
        child = self.spawn(out.name, command, limit)
        shutil.rmtree(out, ignore_errors=True)  # f16 checkpoints and optimizer states: about 1.5 GB a run
        record = child.records[-1] if child.records else {}
        if child.returncode != 0 or "error" in record or not record:
            return [self.failure(stage, setting, child, record)]
        note = f"batch {record['batch_size']}, {record['size']} px"
        if compiled:
            note += f", first {record['first_steps']} steps {record['first_seconds']:.1f} s"
        return [Row(stage, setting, "ok", round(child.seconds, 2), record["steps_per_s"], record.get("peak_mib"),
                    note, details=record)]

    def part_torchrun(self, limit: float) -> list[Row]:
        gpus = int(self.setup.get("cuda_devices", 0)) if self.cuda else 0
        procs = min(2, gpus) if self.cuda else 2
        procs = max(procs, 1)
        out = self.work / "runs" / "torchrun"
        steps = self.scale.ddp_steps
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr",
                   "127.0.0.1", "--master_port", str(_free_port()), "-m", "quantart_cli", "--quiet", "--device",
                   self.device, *self.train_args("train-vq", "fp32", out, steps, max(1, steps // 2))]
        extra = {} if self.cuda else {"GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
        child = self.spawn("torchrun", command, limit, extra)
        setting = f"train-vq, {procs} process{'es' if procs > 1 else ''}"
        records = _metrics(out)
        shutil.rmtree(out, ignore_errors=True)
        if child.returncode != 0 or not records:
            return [self.failure("torchrun", setting, child, {"error": "" if records else "no metrics written"})]
        note = "DDP over " + ("nccl" if self.cuda else "gloo")
        if procs == 1:
            note = "WORLD_SIZE 1 trains as one plain process (no process group); DDP needs 2 GPUs"
        return [Row("torchrun", setting, "ok", round(child.seconds, 2), _steady_rate(records)[0], None, note)]


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _steady_rate(records: list[dict[str, Any]]) -> tuple[float | None, int, float]:
    """(steps/s after the first logged interval, steps in that interval, its seconds) from metrics.jsonl."""
    if not records:
        return None, 0, 0.0
    first = records[0]
    if len(records) < 2:
        return None, first["step"], first["elapsed_s"]
    last = records[-1]
    rate = (last["step"] - first["step"]) / max(last["elapsed_s"] - first["elapsed_s"], 1e-9)
    return round(rate, 3), first["step"], first["elapsed_s"]


# ------------------------------------------------------------------------------------------------ children


def _emit(record: dict[str, Any]) -> None:
    print(MARK + json.dumps(record), flush=True)


def _sync(device) -> None:  # noqa: ANN001
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device) -> None:  # noqa: ANN001
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device) -> float | None:  # noqa: ANN001
    import torch

    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return None


def child_setup(args: argparse.Namespace) -> None:
    """The environment, random smooth training images and two random-weight VQGANs of the train-vq preset."""
    import numpy as np
    import torch
    from PIL import Image

    record: dict[str, Any] = {"torch": torch.__version__, "python": sys.version.split()[0],
                              "cuda_available": torch.cuda.is_available(),
                              "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0}
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            _emit({**record, "error": "torch sees no CUDA GPU"})
            return
        props = torch.cuda.get_device_properties(device)
        record.update(gpu=props.name, gpu_mib=round(props.total_memory / 2**20), cuda=torch.version.cuda,
                      cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported())
    data = Path(args.work) / "data"
    rng = np.random.default_rng(0)
    for domain in ("content", "style"):
        folder = data / domain
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(args.images):
            coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
            coarse.resize((args.image_px, args.image_px), Image.BICUBIC).save(folder / f"{i:03d}.jpg", quality=90)
    from quantart_cli.core.io.checkpoints import save_checkpoint
    from quantart_cli.core.models import VQGAN
    from quantart_cli.shell.plugins import discover_stages
    from quantart_cli.shell.settings import resolve_settings

    stage = discover_stages().stages["train-vq"].stage
    config = resolve_settings(stage.settings, stage="train-vq", preset=args.vq_preset, environ={}).settings.model
    for role, seed in (("content", 1), ("style", 2)):
        torch.manual_seed(seed)
        path = save_checkpoint(VQGAN(config), Path(args.work) / f"{role}_vq.pt")
        record[f"{role}_vq"] = str(path)
    record["data"] = str(data)
    where = f"{record['gpu']} ({record['gpu_mib']} MiB), CUDA {record['cuda']}" if "gpu" in record else "CPU"
    record["summary"] = f"torch {record['torch']}, {where}, {record['cuda_devices']} GPU(s)"
    _emit(record)


def child_stylize(args: argparse.Namespace) -> None:
    """One precision at every size: a warm-up run, then a timed one; bf16/fp16 also compared with fp32."""
    import torch
    import torch.nn.functional as F

    from quantart_cli.core.io.images import image_to_tensor, load_image
    from quantart_cli.core.transfer.engine import Stylizer
    from quantart_cli.core.transfer.options import StylizeOptions
    from quantart_cli.core.weights import load_builtin_model
    from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR

    device = torch.device(args.device)
    model = load_builtin_model(device)
    photo = image_to_tensor(load_image(sorted(CONTENT_DIR.glob("*.jpg"))[0]))
    style = image_to_tensor(load_image(PAINTINGS_DIR / "monet_water_lilies_1919.jpg")).to(device)

    ran: dict[str, str] = {}

    def once(content, precision: str):  # noqa: ANN001, ANN202
        with warnings.catch_warnings():  # bf16 on a CPU without it runs fp32 (recorded below)
            warnings.simplefilter("ignore", UserWarning)
            stylizer = Stylizer(model, [style], StylizeOptions(precision=precision))
        ran[precision] = stylizer.options.precision
        out = stylizer(content)
        _sync(device)
        return out

    for size in (int(s) for s in args.sizes.split(",")):
        record: dict[str, Any] = {"size": size, "precision": args.precision}
        try:
            content = F.interpolate(photo, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
            content = content.to(device)
            once(content, args.precision)  # warm-up: kernels, allocator, cuDNN's choices
            _sync(device)
            _reset_peak(device)
            start = time.perf_counter()
            out = once(content, args.precision)
            record["seconds"] = round(time.perf_counter() - start, 3)
            record["peak_mib"] = _peak_mib(device)
            record["tiled"] = out.tiled
            record["stages"] = {k: round(v, 3) for k, v in out.timings.items()}
            if not bool(torch.isfinite(out.image).all()):
                record["error"] = "the output holds NaN or infinite pixels"
            elif ran[args.precision] != args.precision:
                record["ran_as"] = ran[args.precision]  # e.g. bf16 on a CPU without native bf16
            elif args.precision != "fp32":
                exact = once(content, "fp32").image
                record["diff_fp32_255"] = round(float((out.image - exact).abs().mean()) * 127.5, 3)
        except Exception as err:
            record["error"] = _one_line(f"{type(err).__name__}: {err}")
        _emit(record)
        content = out = exact = None  # noqa: F841 - free the GPU memory before the next size
        if device.type == "cuda":
            torch.cuda.empty_cache()


def child_train(args: argparse.Namespace, cli_args: list[str]) -> None:
    """One training run through the CLI in this process; its rate from metrics.jsonl and its peak memory."""
    import functools

    import torch

    if args.compile_backend != "inductor":
        torch.compile = functools.partial(torch.compile, backend=args.compile_backend)  # smoke mode: no codegen
    from quantart_cli.shell.entry import main as quantart

    device = torch.device(args.device)
    _reset_peak(device)
    code = quantart(["--quiet", "--device", args.device, *cli_args])
    _sync(device)
    if code != 0:
        _emit({"error": f"quantart {cli_args[0]} exited with status {code}"})
        return
    out = Path(args.out_run)
    records = _metrics(out)
    rate, first_steps, first_seconds = _steady_rate(records)
    if rate is None:
        _emit({"error": f"{out / 'metrics.jsonl'} holds fewer than two records"})
        return
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    settings = tomllib.loads((out / "settings.toml").read_text(encoding="utf-8"))
    _emit({"steps_per_s": rate, "first_steps": first_steps, "first_seconds": round(first_seconds, 2),
           "steps": records[-1]["step"], "peak_mib": _peak_mib(device), "batch_size": settings["batch_size"],
           "size": settings["size"], "precision": settings["precision"], "compile": settings["compile"],
           "compile_backend": args.compile_backend if settings["compile"] else None,
           "last_losses": {k: records[-1][k] for k in ("total", "g_loss", "d_loss") if k in records[-1]}})


# ------------------------------------------------------------------------------------------------ setup


def child_environment(site: Path) -> dict[str, str]:
    """The children's environment: the repository's code first, the private site folder, no QUANTART_* of the
    caller's (a user's config must not change what is measured)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTART_")}
    paths = [str(REPO), str(REPO / "stages"), str(REPO / "presets"), str(site)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


PREFLIGHT = """
import importlib.util, importlib.metadata, json, sys
missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]
stages = sorted(e.name for e in importlib.metadata.entry_points(group="quantart.stages"))
print(json.dumps({"missing": missing, "stages": stages}))
"""


def preflight(env: dict[str, str], modules: tuple[str, ...]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", PREFLIGHT, *modules], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    if done.returncode != 0:
        return {"missing": list(modules), "stages": [], "error": _error_line(done.stderr)}
    return json.loads(done.stdout)


def write_entry_points(site: Path) -> None:
    """Make quantart's subcommands discoverable without installing it: its dist-info, entry points included."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    info = site / f"{project['name']}-{project['version']}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n",
                                   encoding="utf-8")
    lines = []
    for group, entries in [("console_scripts", project.get("scripts", {})),
                           *project.get("entry-points", {}).items()]:
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in entries.items()]
        lines.append("")
    (info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")


def install_wheels(folder: Path, site: Path) -> str | None:
    """Install the wheels in ``folder`` into ``site`` (no index, no dependencies); an error line or None."""
    wheels = sorted(glob.glob(str(folder / "*.whl")))
    if not wheels:
        return None
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--no-cache-dir", "--upgrade", "--target", str(site), *wheels], capture_output=True,
                          text=True)
    return None if done.returncode == 0 else _error_line(done.stderr) or "pip install failed"


def fetch_wheels(folder: Path) -> int:
    """Download what a bare CUDA image lacks, for CPython 3.12 on x86-64 Linux, at this environment's versions."""
    from importlib.metadata import PackageNotFoundError, version

    specs = []
    for name in WHEELS_FOR_A_CUDA_IMAGE:
        try:
            specs.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            specs.append(name)
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
                                             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", *platforms, "-d", str(folder), *specs]
    print(" ".join(command), file=sys.stderr)
    return subprocess.run(command).returncode


# ------------------------------------------------------------------------------------------------ the table


def render(rows: list[Row]) -> str:
    head = ("part", "setting", "status", "seconds", "steps/s", "peak MiB", "note")

    def cell(value: Any, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    body = [(r.part, r.setting, r.status, cell(r.seconds, 2), cell(r.steps_per_s, 2), cell(r.peak_mib, 0), r.note)
            for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head) - 1)]
    out = []
    for line in [head, tuple("-" * w for w in widths) + ("-" * 4,), *body]:
        cells = [text.rjust(w) if 3 <= i <= 5 else text.ljust(w)
                 for i, (text, w) in enumerate(zip(line[:-1], widths, strict=True))]
        out.append("  ".join([*cells, line[-1]]).rstrip())
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    cli_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, cli_args = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="Tiny sizes and steps (on the CPU unless --device).")
    parser.add_argument("--device", default=None, help="cuda (default) or cpu (the default with --smoke).")
    parser.add_argument("--out", type=Path, default=None,
                        help="Also write the table as JSON here (default: $QUANTART_GPU_CHECK_OUT, if set).")
    parser.add_argument("--only", default="", help=f"Comma-separated parts to run, of: {', '.join(GROUPS[1:])} "
                                                   "(setup always runs).")
    parser.add_argument("--budget", type=float, default=None,
                        help="Seconds for the whole check (default 450; 3600 with --smoke).")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend of the compile runs (default: inductor; aot_eager with --smoke).")
    parser.add_argument("--wheels", type=Path, default=None,
                        help="Install these wheels privately first (default: .whl in the repository, if present).")
    parser.add_argument("--fetch-wheels", type=Path, default=None, metavar="DIR",
                        help="Only download the wheels a bare CUDA image lacks into DIR (needs network), then exit.")
    parser.add_argument("--work", type=Path, default=None, help="Work folder (default: a new temporary one).")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder (logs of every child).")
    parser.add_argument("--verbose", action="store_true", help="Echo every child's output to stderr.")
    # children
    parser.add_argument("--child", choices=("setup", "stylize", "train"), help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--image-px", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--vq-preset", default="tiny", help=argparse.SUPPRESS)
    parser.add_argument("--out-run", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = "cpu" if args.smoke else "cuda"
    if not (args.device == "cpu" or re.fullmatch(r"cuda(:\d+)?", args.device)):
        parser.error(f"--device must be cuda, cuda:N or cpu, not {args.device!r}")
    args.only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = args.only - set(GROUPS)
    if unknown:
        parser.error(f"unknown part(s) in --only: {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS[1:])}")
    if args.only:
        args.only.add("setup")
    return args, cli_args


def main(argv: list[str] | None = None) -> int:
    args, cli_args = parse_args(argv)
    if args.child:
        if args.child == "setup":
            child_setup(args)
        elif args.child == "stylize":
            child_stylize(args)
        else:
            child_train(args, cli_args)
        return 0
    if args.fetch_wheels is not None:
        return fetch_wheels(args.fetch_wheels)

    scale = SMOKE if args.smoke else FULL
    out_json = args.out or (Path(os.environ["QUANTART_GPU_CHECK_OUT"]) if os.environ.get("QUANTART_GPU_CHECK_OUT")
                            else None)
    work = args.work or Path(tempfile.mkdtemp(prefix="quantart-gpu-check-"))
    work = work.resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    site = work / "site"
    site.mkdir(exist_ok=True)
    env = child_environment(site)
    for name in ("config", "cache", "runs"):
        env[f"QUANTART_{name.upper()}_DIR"] = str(work / "quantart" / name)
    wheels = args.wheels or (REPO / ".whl" if (REPO / ".whl").is_dir() else None)
    try:
        if wheels is not None:
            failed = install_wheels(wheels, site)
            if failed:
                print(f"gpu_check: the wheels in {wheels} did not install: {failed}", file=sys.stderr)
                return 3
        found = preflight(env, REQUIRED_MODULES)
        if "train-vq" not in found["stages"] and not found["missing"]:
            write_entry_points(site)
            found = preflight(env, REQUIRED_MODULES)
        if found["missing"] or "train-vq" not in found["stages"]:
            what = ", ".join(found["missing"]) or "quantart's subcommands (entry points)"
            print(f"gpu_check: {sys.executable} lacks {what}; install them, or put their wheels in .whl/ "
                  "(python benchmarks/gpu_check.py --fetch-wheels .whl, on a machine with network).", file=sys.stderr)
            return 3

        check = Check(args, scale, work, env)
        check.run()
        if check.no_gpu:
            print(f"gpu_check: torch sees no CUDA GPU ({sys.executable}); --smoke runs the check tiny on the CPU.",
                  file=sys.stderr)
            return 3
        total = time.perf_counter() - check.started
        failed_rows = [r for r in check.rows if r.bad]
        print(render(check.rows))
        print(f"\n{len(check.rows) - len(failed_rows)} of {len(check.rows)} rows ok, {len(failed_rows)} failed or not "
              f"run; {total:.0f} s ({'smoke, ' if args.smoke else ''}device {args.device}).")
        if out_json is not None:
            document = {"device": args.device, "smoke": args.smoke, "seconds": round(total, 1),
                        "budget_s": check.budget, "environment": check.setup, "ok": not failed_rows,
                        "rows": [vars(r) for r in check.rows]}
            out_json.parent.mkdir(parents=True, exist_ok=True)
            out_json.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        return 1 if failed_rows else 0
    finally:
        if args.keep:
            print(f"gpu_check: work folder kept: {work}", file=sys.stderr)
        elif args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
