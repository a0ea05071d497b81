"""Where stylize spends its time: torch.profiler over one f16 stylization, grouped by phase and by operator.

    python benchmarks/profile_stylize.py [--size 256] [--threads 1]

Random weights (time does not depend on them), the paper's f16 configuration, one content and one style image
of ``--size`` pixels (written as JPEG files first, so reading them is measured too), after one untimed warm-up
run. Prints the phases (image reading, style encoding, content encoding, SGA, decoding, PNG writing, as
``quantart stylize`` does them) and the operators that take most of the CPU time.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from quantart_cli.core.io.images import load_image_tensor, save_image_atomic, tensor_to_image
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
    folder = Path(tempfile.mkdtemp())
    for name, seed in (("content.jpg", 1), ("style.jpg", 2)):
        noise = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        tensor_to_image(torch.nn.functional.avg_pool2d(noise, 9, 1, 4)).save(folder / name, quality=95)
    options = StylizeOptions(tiling="never")
    io_seconds: dict[str, float] = {}

    def timed_io(label: str, fn):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        with record_function(label):
            out = fn()
        io_seconds[label] = time.perf_counter() - start
        return out

    with torch.inference_mode():
        warm = load_image_tensor(folder / "content.jpg")
        Stylizer(model, [warm], options)(warm)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            content = timed_io("read photo", lambda: load_image_tensor(folder / "content.jpg"))
            style = timed_io("read painting", lambda: load_image_tensor(folder / "style.jpg"))
            with record_function("style encoding"):
                stylizer = Stylizer(model, [style], options)
            with record_function("content: encode + SGA + decode"):
                result = stylizer(content)
            timed_io("write PNG", lambda: save_image_atomic(result.image, folder / "out.png", note="recipe"))
    shutil.rmtree(folder)
    print(f"phases (engine timings, s): style {stylizer.style_seconds:.3f}, "
          + ", ".join(f"{k} {v:.3f}" for k, v in result.timings.items())
          + "; image I/O: " + ", ".join(f"{k} {v:.3f}" for k, v in io_seconds.items()))
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
