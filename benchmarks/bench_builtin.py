"""Stylize a 512x512 photo with the built-in model: seconds per image (target: 10 s or less, 2 CPU threads).

The photo is a packaged sample resized to ``--size`` (default 512), the style a packaged held-out painting at
its own size (512 px long side). Prints one JSON line: median, min and max over ``--repeats`` runs after one
warm-up, the time of each stage (encode, sga, decode) of the median run, and the model's load time.

    python benchmarks/bench_builtin.py --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from quantart_cli.core.devices import resolve_device
    from quantart_cli.core.io.images import image_to_tensor, load_image
    from quantart_cli.core.transfer.engine import Stylizer
    from quantart_cli.core.transfer.options import StylizeOptions
    from quantart_cli.core.weights import load_builtin_model
    from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    start = time.perf_counter()
    model = load_builtin_model(device)
    load_seconds = time.perf_counter() - start
    photo = image_to_tensor(load_image(sorted(CONTENT_DIR.glob("*.jpg"))[0]))
    photo = F.interpolate(photo, size=(args.size, args.size), mode="bicubic", align_corners=False).clamp(-1, 1)
    style = image_to_tensor(load_image(PAINTINGS_DIR / "monet_water_lilies_1919.jpg"))

    def once() -> tuple[float, dict[str, float]]:
        begin = time.perf_counter()
        stylizer = Stylizer(model, [style.to(device)], StylizeOptions(alpha=args.alpha))
        out = stylizer(photo.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - begin, {k: round(v, 3) for k, v in out.timings.items()}

    once()  # warm-up: allocator, kernels
    runs = sorted((once() for _ in range(args.repeats)), key=lambda r: r[0])
    seconds = [r[0] for r in runs]
    median_run = runs[len(runs) // 2]
    print(json.dumps({
        "size": args.size, "device": str(device), "threads": args.threads, "alpha": args.alpha,
        "seconds_median": round(statistics.median(seconds), 3), "seconds_min": round(seconds[0], 3),
        "seconds_max": round(seconds[-1], 3), "stages": median_run[1], "load_seconds": round(load_seconds, 3),
        "style_encoding_included": True,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
