"""How fast ``quantart --help`` and ``quantart STAGE --help`` answer, cold (first call) and warm (cached).

    python benchmarks/bench_help.py [--runs 5]

Each call is a fresh process, as a user's is; a temporary QUANTART_CACHE_DIR makes the first call cold. The
target (issue 17) is under 0.3 s for a warm call on a 2-core laptop CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = (["--help"], ["stylize", "--help"], ["train-vq", "--help"], ["evaluate", "--help"])


def seconds(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "quantart_cli", *args], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="warm calls per command (median reported)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "QUANTART_CACHE_DIR": str(Path(cache))}
        print(f"{'command':<22} {'cold s':>8} {'warm s (median)':>16}")
        for args in COMMANDS:
            cold = seconds(args, env)
            warm = statistics.median(seconds(args, env) for _ in range(options.runs))
            print(f"{'quantart ' + ' '.join(args):<22} {cold:>8.3f} {warm:>16.3f}")


if __name__ == "__main__":
    main()
