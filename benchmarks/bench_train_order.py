"""Seconds per training step of the two optimizer orders, ``sequential`` (the original's) against ``joint``.

A preset's model and loss (default: both stages' ``builtin-paint``: the VGG19 perceptual term in stage 1, the VGG19
image terms in stage 2, and a PatchGAN), its batch size and image size, the discriminator on from the first step
(``disc_start = 0``; ``--disc-off`` times the steps before ``disc_start`` instead, where the joint order skips the
discriminator), random weights and random smooth images (the time does not depend on them). One task per order runs
full steps (``train_step``: forwards, losses, backwards, both optimizers); after ``--warmup`` untimed steps each,
rounds of ``--steps`` steps alternate between the orders (which goes first alternates too), so both see the same
machine state; on a shared machine read the ratio, not the seconds. Prints one JSON line per stage.

    OMP_NUM_THREADS=1 python benchmarks/bench_train_order.py --threads 1 --steps 5 --repeats 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import tomllib
import torch

from quantart_cli.core.config import VQGANConfig
from quantart_cli.core.losses.config import StyleTransferLossConfig, VQGANLossConfig
from quantart_cli.core.losses.style_transfer import StyleTransferLoss
from quantart_cli.core.losses.vqgan import VQGANLoss
from quantart_cli.core.models import VQGAN, StyleTransfer
from quantart_cli.core.train.sga_task import StyleTransferTask
from quantart_cli.core.train.step import train_step
from quantart_cli.core.train.task import StepContext
from quantart_cli.core.train.vq_task import VQGANTask
from quantart_cli.shell.presets import builtin_preset_dir

ORDERS = ("sequential", "joint")


def preset(stage: str, name: str) -> dict[str, Any]:
    folder = builtin_preset_dir(stage)
    assert folder is not None, "quantart_presets is not importable (add presets/ to PYTHONPATH)"
    with open(folder / f"{name}.toml", "rb") as f:
        return tomllib.load(f)


def images(count: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 6, 6, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1) * 2 - 1


def vq_task(name: str, disc_start: int) -> tuple[Any, list[dict[str, torch.Tensor]]]:
    settings = preset("train-vq", name)
    torch.manual_seed(0)
    model = VQGAN(VQGANConfig(**settings["model"]))
    loss = VQGANLoss(VQGANLossConfig(**{**settings["loss"], "disc_start": disc_start}))
    task = VQGANTask(model, loss, lr=settings["lr"], device=torch.device("cpu"))
    batches = [{"image": images(settings["batch_size"], settings["size"], seed)} for seed in range(4)]
    return task, batches


def sga_task(name: str, content_vq: str, style_vq: str, disc_start: int) -> tuple[Any, list[dict[str, torch.Tensor]]]:
    settings = preset("train-sga", name)
    torch.manual_seed(0)
    content = VQGAN(VQGANConfig(**preset("train-vq", content_vq)["model"]))
    style = VQGAN(VQGANConfig(**preset("train-vq", style_vq)["model"]))
    model = StyleTransfer.from_vqgans(content, style, sga_blocks=settings.get("sga_blocks", 6),
                                      use_residual=settings.get("use_residual", True),
                                      sga_padding=settings.get("sga_padding", "zeros"))
    loss = StyleTransferLoss(StyleTransferLossConfig(**{**settings["loss"], "disc_start": disc_start,
                                                       "disc_in_channels": model.config.embed_dim}))
    task = StyleTransferTask(model, loss, lr=settings["lr"], device=torch.device("cpu"))
    size, batch = settings["size"], settings["batch_size"]
    batches = [{"content": images(batch, size, seed), "style": images(batch, size, 100 + seed)} for seed in range(4)]
    return task, batches


def stepper(build: Callable[[], tuple[Any, list]], order: str) -> Callable[[int], float]:
    """Seconds of ``count`` full steps of a fresh task in ``order``, per call."""
    task, batches = build()
    task.train()
    ctx = StepContext(torch.device("cpu"), "fp32", torch.amp.GradScaler("cpu", enabled=False), 1)
    done = 0

    def run(count: int) -> float:
        nonlocal done
        start = time.perf_counter()
        for _ in range(count):
            train_step(task, [batches[done % len(batches)]], done, ctx, order, check_finite=lambda: None)
            done += 1
        return time.perf_counter() - start

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", choices=("train-vq", "train-sga"), default=["train-vq", "train-sga"])
    parser.add_argument("--vq-preset", default="builtin-paint")
    parser.add_argument("--sga-preset", default="builtin-paint")
    parser.add_argument("--content-vq", default="builtin-photo", help="train-vq preset of stage 2's photo VQGAN")
    parser.add_argument("--style-vq", default="builtin-paint", help="train-vq preset of stage 2's art VQGAN")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round and order")
    parser.add_argument("--repeats", type=int, default=4, help="rounds per order")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--disc-off", action="store_true",
                        help="time the steps before disc_start instead (the joint order skips D there)")
    args = parser.parse_args()
    disc_start = 10**9 if args.disc_off else 0
    if args.threads:
        torch.set_num_threads(args.threads)
    builds = {
        "train-vq": (args.vq_preset, lambda: vq_task(args.vq_preset, disc_start)),
        "train-sga": (args.sga_preset, lambda: sga_task(args.sga_preset, args.content_vq, args.style_vq, disc_start)),
    }
    for stage in args.stages:
        name, build = builds[stage]
        run = {order: stepper(build, order) for order in ORDERS}
        for order in ORDERS:
            run[order](args.warmup)
        seconds: dict[str, list[float]] = {order: [] for order in ORDERS}
        for r in range(args.repeats):
            for order in ORDERS if r % 2 == 0 else ORDERS[::-1]:
                seconds[order].append(run[order](args.steps) / args.steps)
        ratios = sorted(j / s for j, s in zip(seconds["joint"], seconds["sequential"], strict=True))
        print(json.dumps({
            "bench": "train_order", "stage": stage, "preset": name, "discriminator": "off" if args.disc_off else "on",
            "threads": torch.get_num_threads(),
            "timed_steps_per_order": args.steps * args.repeats,
            **{f"{order}_s_per_step": [round(v, 3) for v in seconds[order]] for order in ORDERS},
            "joint_over_sequential_min": round(ratios[0], 3),
            "joint_over_sequential_median": round(statistics.median(ratios), 3),
            "joint_over_sequential_max": round(ratios[-1], 3),
        }), flush=True)


if __name__ == "__main__":
    main()
