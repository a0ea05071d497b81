"""How fast ``quantart --help`` and ``quantart STAGE --help`` answer.

    python benchmarks/bench_help.py [--runs 7]

Each call is a fresh process, as a user's is; the help is rendered every time (there is no cache). Printed per
command: the median and fastest wall-clock time, and the median CPU time of the process (user + system), which
stays close to the wall-clock time of an idle machine when other work shares the CPU. The target (issue 27) is
under 0.5 s on a 2-core laptop CPU; importing Typer, rich and pydantic takes about 0.3 s of it.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["stylize", "--help"], ["train-vq", "--help"], ["evaluate", "--help"])


def seconds(args: list[str]) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of one ``quantart ARGS`` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "quantart_cli", *args], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="calls per command")
    options = parser.parse_args()
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("note: PYTHONDONTWRITEBYTECODE is set, so a checkout without __pycache__ compiles every module on every "
              "call (an installed package has its bytecode); unset it for figures a user sees")
    print(f"{'command':<26} {'wall median s':>13} {'wall min s':>10} {'cpu median s':>12}")
    for args in COMMANDS:
        runs = [seconds(args) for _ in range(options.runs)]
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        print(f"{'quantart ' + ' '.join(args):<26} {statistics.median(walls):>13.3f} {min(walls):>10.3f} "
              f"{statistics.median(cpus):>12.3f}")


if __name__ == "__main__":
    main()
