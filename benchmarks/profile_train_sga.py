"""Where a train-sga step spends its time, from images and from the latent cache: torch.profiler per operator.

    python benchmarks/profile_train_sga.py [--batch-size 2] [--threads 1] [--steps 2]

Random weights and random smooth images (time does not depend on them), the paper's f16 configuration
(256 px, 6 SGA blocks, ndf 64), the loop's default optimizer order. For each source, after one untimed
warm-up step, ``--steps`` steps run under torch.profiler; printed are the phases (data, frozen encoders,
SGA forward, losses + backward, optimizer steps) and the operators that take most of the CPU time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train_sga import CONFIGS, sga_step_setup  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--config", choices=list(CONFIGS), default="f16")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        setup = sga_step_setup(args.config, Path(tmp), batch_size=args.batch_size, images=2 * args.batch_size)
        for source in ("images", "cache"):
            step = setup.step_function(source)
            step(0)  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for i in range(args.steps):
                    step(i + 1)
            report(prof, source, args.steps, args.top)


def report(prof: profile, source: str, steps: int, top: int) -> None:
    phases: dict[str, float] = {}
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("phase: "):
            phases[event.key[len("phase: "):]] = event.cpu_time_total / 1e6 / steps
        elif event.key.startswith("aten::"):
            totals[event.key] += event.self_cpu_time_total / 1e6 / steps
    whole = sum(totals.values())
    print(f"\n== from {source}: {whole:.3f} s of operator time per step")
    print("phases (s per step): " + ", ".join(f"{k} {v:.3f}" for k, v in phases.items()))
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {name:<40} {seconds:8.3f} s  {100 * seconds / whole:5.1f}%")


if __name__ == "__main__":
    main()
