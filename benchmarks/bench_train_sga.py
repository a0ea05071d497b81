"""Stage-2 training speed: seconds per step from images vs from the latent cache.

Random-weight VQGANs (the speed does not depend on the weights) and random smooth images; each
step is a full training step (data, frozen encoders or cache read, SGA, losses, both optimizers).
The two sources run in one process, interleaved (``--repeats`` rounds of ``--steps`` steps from images,
then from the cache), so both see the same machine state; the speed-up is taken per round and printed as
min / median / max. Prints one JSON line per (config, source) and one with the speed-up per config.

    python benchmarks/bench_train_sga.py --configs f16 --threads 1      # the paper's configuration, CPU
    python benchmarks/bench_train_sga.py --device cuda --configs f16 --batch-size 8 --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.profiler import record_function

from quantart_cli.core.cache.latents import LatentPairDataset, build_latent_cache
from quantart_cli.core.config import AutoencoderConfig, QuantizerConfig, VQGANConfig
from quantart_cli.core.data.datasets import UnpairedDataset
from quantart_cli.core.losses.config import StyleTransferLossConfig
from quantart_cli.core.losses.style_transfer import StyleTransferLoss
from quantart_cli.core.models import VQGAN, StyleTransfer
from quantart_cli.core.train.batches import BatchStream
from quantart_cli.core.train.sga_task import StyleTransferTask
from quantart_cli.core.train.step import train_step
from quantart_cli.core.train.task import StepContext

CONFIGS = {
    # the shape of train-vq's tiny preset, trained by train-sga's tiny preset (64 px, 2 SGA blocks)
    "tiny": (
        VQGANConfig(
            autoencoder=AutoencoderConfig(
                ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=1, attn_resolutions=(), resolution=64, z_channels=32
            ),
            quantizer=QuantizerConfig(n_embed=128, embed_dim=32),
        ),
        64,
        2,
        16,
    ),
    # every QuantArt preset: f16, 256 px, 6 SGA blocks, ndf 64
    "f16": (VQGANConfig(), 256, 6, 64),
}


def write_images(folder: Path, count: int, size: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(count):
        coarse = torch.rand(3, 6, 6, generator=g)
        smooth = torch.nn.functional.interpolate(coarse[None], size=(size, size), mode="bicubic")[0]
        pixels = (smooth.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)
    return folder


@dataclass
class SGAStepSetup:
    """A stage-2 model, its loss and both data sources (images, latent cache) for timing training steps."""

    model: StyleTransfer
    loss_config: StyleTransferLossConfig
    datasets: dict[str, Any]
    device: torch.device
    batch_size: int
    cache_build_s: float
    order: str = "sequential"

    def step_function(self, source: str, seed: int = 0) -> Callable[[int], None]:
        """One full training step per call (data, latents, both optimizer phases), from ``source``.

        Phases are marked for torch.profiler as ``phase: data``, ``phase: latents`` (frozen encoders or
        the cache read), and by the step itself ``phase: generator`` and ``phase: discriminator`` (forward, loss,
        backward, step; ``phase: generator and discriminator`` in the joint order).
        """
        device = self.device
        task = StyleTransferTask(self.model, StyleTransferLoss(self.loss_config).to(device), lr=3.6e-5, device=device)
        task.train()
        stream = BatchStream(self.datasets[source], batch_size=self.batch_size, seed=seed)
        ctx = StepContext(device, "fp32", torch.amp.GradScaler(device.type, enabled=False), 1)
        read_latents = task.latents

        def latents(batch: Any, context: StepContext | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            with record_function("phase: latents"):
                return read_latents(batch, context)

        task.latents = latents  # type: ignore[method-assign]  # the real method, marked for the profiler

        def one(step: int) -> None:
            with record_function("phase: data"):
                batch = stream.next()
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            train_step(task, [batch], step, ctx, self.order, check_finite=lambda: None)  # marks its phases
            if device.type == "cuda":
                torch.cuda.synchronize()

        return one


def sga_step_setup(config: str, root: Path, *, batch_size: int, images: int, device: str | torch.device = "cpu",
                   order: str = "sequential") -> SGAStepSetup:
    """Random-weight VQGANs of ``config``, ``images`` random content and style images, and their latent cache."""
    device = torch.device(device)
    vq_config, size, blocks, ndf = CONFIGS[config]
    content_dir = write_images(root / config / "content", images, size, 0)
    style_dir = write_images(root / config / "style", images, size, 1)
    torch.manual_seed(0)
    content, style = VQGAN(vq_config).to(device), VQGAN(vq_config).to(device)
    model = StyleTransfer.from_vqgans(content, style, sga_blocks=blocks)
    loss_config = StyleTransferLossConfig(disc_ndf=ndf, disc_in_channels=vq_config.quantizer.embed_dim)
    from_images = UnpairedDataset(content_dir, style_dir, size=size, seed=0)
    start = time.perf_counter()
    cache = build_latent_cache(model, root / config / "cache", from_images.content_paths, from_images.style_paths,
                               size=size, device=device, batch_size=batch_size)
    build_s = time.perf_counter() - start
    factor = vq_config.autoencoder.downsample_factor
    cached = LatentPairDataset(cache, content_size=size // factor, style_size=size // factor, seed=0)
    return SGAStepSetup(model, loss_config, {"images": from_images, "cache": cached}, device, batch_size, build_s,
                        order)


def time_steps(step: Callable[[int], None], first: int, steps: int) -> float:
    """Seconds per step over ``steps`` calls of ``step`` numbered from ``first``."""
    start = time.perf_counter()
    for i in range(first, first + steps):
        step(i)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch-size", type=int, default=None, help="default: 2 on CPU, 8 on GPU")
    parser.add_argument("--steps", type=int, default=3, help="steps per timed round and source")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (images, cache, images, ...)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--images", type=int, default=8, help="content and style images each")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--order", choices=("sequential", "joint"), default="sequential",
                        help="the loop's --optimizer-order (sequential: the original's, the default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch_size = args.batch_size or (8 if device.type == "cuda" else 2)

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            setup = sga_step_setup(name, Path(tmp), batch_size=batch_size, images=args.images, device=device,
                                   order=args.order)
            steps = {source: setup.step_function(source) for source in ("images", "cache")}
            done = dict.fromkeys(steps, 0)
            for source, step in steps.items():
                for _ in range(args.warmup):
                    step(done[source])
                    done[source] += 1
            seconds: dict[str, list[float]] = {source: [] for source in steps}
            for _ in range(args.repeats):
                for source, step in steps.items():
                    seconds[source].append(time_steps(step, done[source], args.steps))
                    done[source] += args.steps
            ratios = sorted(i / c for i, c in zip(seconds["images"], seconds["cache"], strict=True))
            for source, values in seconds.items():
                print(json.dumps({"bench": "train_sga_step", "config": name, "source": source, "device": str(device),
                                  "batch_size": batch_size, "threads": torch.get_num_threads(),
                                  "s_per_step_median": round(statistics.median(values), 5),
                                  "s_per_step": [round(v, 5) for v in values]}), flush=True)
            print(json.dumps({"bench": "train_sga_speedup", "config": name, "device": str(device),
                              "batch_size": batch_size, "order": args.order, "repeats": args.repeats,
                              "speedup_min": round(ratios[0], 2), "speedup_median": round(statistics.median(ratios), 2),
                              "speedup_max": round(ratios[-1], 2), "cache_build_s": round(setup.cache_build_s, 3),
                              "cached_images": 2 * args.images}), flush=True)


if __name__ == "__main__":
    main()
