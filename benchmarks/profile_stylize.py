"""Where stylize spends its time: torch.profiler over one f16 stylization, grouped by phase and by operator.

    python benchmarks/profile_stylize.py [--size 256] [--threads 1]

Random weights (time does not depend on them), the paper's f16 configuration, one content and one style image
of ``--size`` pixels, after one untimed warm-up run. Prints the phases (style encoding, content encoding, SGA,
decoding) and the operators that take most of the CPU time.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from quantart_cli.core.models import StyleTransfer
from quantart_cli.core.transfer.engine import Stylizer
from quantart_cli.core.transfer.options import StylizeOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = StyleTransfer().eval()
    content = torch.rand(1, 3, args.size, args.size) * 2 - 1
    style = torch.rand(1, 3, args.size, args.size) * 2 - 1
    options = StylizeOptions(tiling="never")
    with torch.inference_mode():
        Stylizer(model, [style], options)(content)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with record_function("style encoding"):
                stylizer = Stylizer(model, [style], options)
            with record_function("content: encode + SGA + decode"):
                result = stylizer(content)
    print(f"phases (engine timings, s): style {stylizer.style_seconds:.3f}, "
          + ", ".join(f"{k} {v:.3f}" for k, v in result.timings.items()))
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        totals[event.key] += event.self_cpu_time_total / 1e6
    whole = sum(totals.values())
    print(f"operators by self CPU time (total {whole:.3f} s):")
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {name:<40} {seconds:8.3f} s  {100 * seconds / whole:5.1f}%")


if __name__ == "__main__":
    main()
