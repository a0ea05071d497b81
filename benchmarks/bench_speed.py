"""Stylize speed, quantart vs the original's computation, in one process and interleaved.

The paper's f16 configuration with random weights (time does not depend on them). "original" is
benchmarks/bench_models.py's re-statement of the original forward passes (attention on the full matrix,
x*sigmoid(x), nearest upsampling then conv, full-matrix VQ distances, contiguous tensors, ``torch.no_grad``)
loading *our* weights strictly; "ours" is the stylize engine (:class:`~quantart_cli.core.transfer.engine.Stylizer`)
as ``quantart stylize`` runs it. The original needs a style image of the content's size, so both get one.

Scenarios (``--scenarios``), each timed as one unit of work:

- ``single``: one photo after one painting (ours encodes the painting too: nothing is reused);
- ``folder``: ``--folder`` photos after one painting (ours encodes the painting once, as stylize does for a folder;
  the original code encodes it with every photo);
- ``alphas``: one photo at each of ``--alphas`` (ours: :meth:`Stylizer.sweep`, one encoding, one decode per
  alpha; the original has no alpha: one full run per value, blending ``alpha*zq_y + (1-alpha)*zq_c`` by hand).

Every repeat runs the original then ours (``--order`` flips it), so both see the same machine state; the
speed-up of each repeat is original / ours and is printed as min / median / max over ``--repeats``. The
outputs are compared every time: ``max_abs_diff`` (in [-1, 1] image units) and ``indices_equal`` (the
stylized latent's codes, ours vs the original's; ``--precision`` applies to the images only).

    OMP_NUM_THREADS=1 python benchmarks/bench_speed.py --sizes 256,512 --threads 1
    OMP_NUM_THREADS=1 python benchmarks/bench_speed.py --sizes 256 --threads 1 --precision bf16
    python benchmarks/bench_speed.py --device cuda --sizes 256,512,1024 --repeats 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import OrigStyleTransfer  # noqa: E402

from quantart_cli.core.config import StyleTransferConfig, tiny_vqgan_config  # noqa: E402
from quantart_cli.core.models import StyleTransfer  # noqa: E402
from quantart_cli.core.precision import stylize_precision  # noqa: E402
from quantart_cli.core.transfer.engine import Stylizer  # noqa: E402
from quantart_cli.core.transfer.options import StylizeOptions  # noqa: E402

SCENARIOS = ("single", "folder", "alphas")
#: ``f16``: the paper's model (every QuantArt preset); ``tiny``: the test configuration, to check the script runs.
CONFIGS = {
    "f16": StyleTransferConfig,
    "tiny": lambda: StyleTransferConfig(content=tiny_vqgan_config(), style=tiny_vqgan_config(), sga_blocks=1),
}


def smooth_image(size: int, seed: int, device: torch.device) -> Tensor:
    """A random image with some spatial structure, in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size, size, generator=gen) * 2 - 1
    return torch.nn.functional.avg_pool2d(x, 9, 1, 4).clamp(-1, 1).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], list[Tensor]], device: torch.device) -> tuple[float, list[Tensor]]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


class Pair:
    """Our model and the original's, with the same weights, and the work of each scenario for both."""

    def __init__(self, device: torch.device, precision: str = "fp32", config: str = "f16") -> None:
        torch.manual_seed(0)
        self.device = device
        self.precision, note = stylize_precision(device, precision)  # what stylize really runs; the JSON says it
        if note is not None:
            print(f"note: {note}", file=sys.stderr)
        self.ours = StyleTransfer(CONFIGS[config]()).eval().to(device)
        self.original = OrigStyleTransfer(CONFIGS[config]()).eval().to(device)
        self.original.load_state_dict(self.ours.state_dict(), strict=True)

    def original_run(self, contents: list[Tensor], style: Tensor, alphas: list[float]) -> list[Tensor]:
        model, outs = self.original, []
        with torch.no_grad():
            for content in contents:
                for alpha in alphas:  # one whole run per alpha: the original has no alpha of its own
                    quant_x, quant_y, _ = model.transfer_with_content(content, style)
                    if alpha != 1.0:
                        quant_y = alpha * quant_y + (1 - alpha) * quant_x
                    outs.append(model.decode(quant_y).clamp(-1, 1))
        return outs

    def ours_run(self, contents: list[Tensor], style: Tensor, alphas: list[float]) -> list[Tensor]:
        options = StylizeOptions(tiling="never", alpha=max(alphas), precision=self.precision)
        stylizer = Stylizer(self.ours, [style], options)
        if alphas == [1.0]:
            return [stylizer(content).image for content in contents]
        return [out.image for content in contents for out in stylizer.sweep(content, alphas)]

    def indices_equal(self, content: Tensor, style: Tensor) -> bool:
        with torch.no_grad():
            _, theirs = self.original.transfer(content, style)
        with torch.inference_mode():
            ours = self.ours.transfer(content, style).indices_y
        return bool(torch.equal(ours.cpu(), theirs.reshape(ours.shape).cpu()))


def run_scenario(pair: Pair, scenario: str, size: int, args: argparse.Namespace) -> dict:
    device = pair.device
    style = smooth_image(size, 2, device)
    count = args.folder if scenario == "folder" else 1
    contents = [smooth_image(size, 10 + i, device) for i in range(count)]
    alphas = [float(a) for a in args.alphas.split(",")] if scenario == "alphas" else [1.0]
    runs = {
        "original": lambda: pair.original_run(contents, style, alphas),
        "ours": lambda: pair.ours_run(contents, style, alphas),
    }
    order = ["original", "ours"] if args.order == "original-first" else ["ours", "original"]
    for name in order:  # warm-up: oneDNN / cuDNN pick their kernels
        for _ in range(args.warmup):
            runs[name]()
    seconds: dict[str, list[float]] = {name: [] for name in order}
    diff = 0.0
    for _ in range(args.repeats):
        outs = {}
        for name in order:
            elapsed, outs[name] = _timed(runs[name], device)
            seconds[name].append(elapsed)
        diff = max(diff, max(float((a - b).abs().max()) for a, b in zip(outs["ours"], outs["original"], strict=True)))
    ratios = sorted(o / u for o, u in zip(seconds["original"], seconds["ours"], strict=True))
    return {
        "scenario": scenario,
        "precision": pair.precision,
        "size": size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "images": count,
        "alphas": alphas,
        "repeats": args.repeats,
        "original_s_median": round(statistics.median(seconds["original"]), 3),
        "ours_s_median": round(statistics.median(seconds["ours"]), 3),
        "speedup_min": round(ratios[0], 3),
        "speedup_median": round(statistics.median(ratios), 3),
        "speedup_max": round(ratios[-1], 3),
        "max_abs_diff": float(f"{diff:.3g}"),
        "indices_equal": pair.indices_equal(contents[0], style),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--config", choices=list(CONFIGS), default="f16")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--folder", type=int, default=4, help="photos in the folder scenario")
    parser.add_argument("--alphas", default="0.25,0.5,0.75,1", help="style fidelities of the alphas scenario")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--order", choices=("original-first", "ours-first"), default="original-first")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="ours only (stylize --precision); the original always runs fp32")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pair = Pair(torch.device(args.device), args.precision, args.config)
    for size in (int(s) for s in args.sizes.split(",")):
        for scenario in args.scenarios.split(","):
            if scenario not in SCENARIOS:
                parser.error(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
            print(json.dumps(run_scenario(pair, scenario, size, args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
