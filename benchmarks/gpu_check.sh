#!/usr/bin/env bash
# The GPU check (issue 25), one command: the CUDA-marked tests, stylize at 512-4096 px in fp32/bf16/fp16, 50 training
# steps of train-vq and train-sga with and without AMP and torch.compile, and a torchrun step; prints one table.
#
#   bash benchmarks/gpu_check.sh                     # from the repository root, on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --out check.json    # also a JSON copy (or set QUANTART_GPU_CHECK_OUT=check.json)
#   bash benchmarks/gpu_check.sh --smoke             # the same code paths, tiny, on the CPU (what the tests run)
#   bash benchmarks/gpu_check.sh --help              # every option
#
# It fits in 8 minutes on one H100: parts that no longer fit the time budget (--budget, 450 s) are listed as not
# run. Exit status: 0 every row ok, 1 a row failed or did not run, 3 no CUDA GPU or a Python package missing.
# Needs no network and installs nothing into the environment: the repository's own code runs (its folders go first
# on PYTHONPATH); quantart's entry points and any wheels in .whl/ (or --wheels DIR) go to a private temporary
# folder. Without pydantic & co. (a bare CUDA image), fetch their wheels first on a machine with network:
#   python benchmarks/gpu_check.py --fetch-wheels .whl
# The table goes to stdout, progress to stderr. What each part does: the docstring of benchmarks/gpu_check.py and
# docs/benchmarks.md ("GPU check").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
exec "$PYTHON" benchmarks/gpu_check.py "$@"
