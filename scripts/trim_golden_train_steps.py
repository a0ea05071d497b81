"""Derive a smaller copy of a four-step golden training file, with only what
tests/core/train/test_golden_training.py reads.

    python scripts/trim_golden_train_steps.py SOURCE OUT [--stages stage1 [stage2]]

Keeps the stages named (default both) and, in each, the configuration, the initial weights, the batches, per step
and optimizer the logged values with the original's spread over reduction orders (``log``, ``log_envelope``), the
code indices and whether the original's float32 and float64 runs chose the same ones (``indices_match_f64``), and
the final weights with their spread (``final_envelope_maxabs``, ``noise_driven_params``). Drops what the test does
not read: the float64 shadow values, losses, gradient and update norms, per-step BatchNorm statistics, index gaps.
Every value kept is copied as stored (tensors included), so the test gives the same result on the copy.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

FORMAT = "quantart_train_steps/1"
TOP_KEYS = ("format", "generated_with_torch", "emulation")
STAGE_KEYS = {
    "stage1": ("config", "init_generator", "init_discriminator", "batches", "final_generator", "final_discriminator",
               "final_discriminator_bn", "final_envelope_maxabs", "noise_driven_params", "envelope_variants"),
    "stage2": ("config", "init_state_dict", "batches", "final_model_x2y", "final_discriminator",
               "final_discriminator_bn", "frozen_parts_unchanged", "final_envelope_maxabs", "noise_driven_params",
               "envelope_variants"),
}
PHASE_KEYS = ("log", "log_envelope", "indices_match_f64")


def _phase(phase: dict[str, Any]) -> dict[str, Any]:
    kept = {key: phase[key] for key in PHASE_KEYS}
    kept["quantizer"] = {name: [{"indices": call["indices"]} for call in calls]
                         for name, calls in phase["quantizer"].items()}
    return kept


def trim(data: dict[str, Any], stages: tuple[str, ...]) -> dict[str, Any]:
    if data.get("format") != FORMAT:
        raise SystemExit(f"not a {FORMAT} file (format {data.get('format')!r})")
    out = {key: data[key] for key in TOP_KEYS}
    for name in stages:
        stage = data[name]
        if "log_envelope" not in stage["steps"][0]["opt0"]:
            raise SystemExit("this file has no log_envelope: trim a refreshed file (see ../shared/fixtures)")
        kept = {key: stage[key] for key in STAGE_KEYS[name]}
        kept["steps"] = [{"global_step": step["global_step"], "opt0": _phase(step["opt0"]),
                          "opt1": _phase(step["opt1"])} for step in stage["steps"]]
        out[name] = kept
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--stages", nargs="+", choices=sorted(STAGE_KEYS), default=sorted(STAGE_KEYS))
    args = parser.parse_args()
    data = torch.load(args.source, map_location="cpu", weights_only=True)
    torch.save(trim(data, tuple(args.stages)), args.out)
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB ({', '.join(args.stages)})")


if __name__ == "__main__":
    main()
