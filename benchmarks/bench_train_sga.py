"""Stage-2 training speed: seconds per step from images vs from the latent cache.

Random-weight VQGANs (the speed does not depend on the weights) and random smooth images; each
step is a full training step (data, frozen encoders or cache read, SGA, losses, both optimizers).
Prints one JSON line per (config, source) and one with the speed-up per config.

    python benchmarks/bench_train_sga.py                      # tiny and f16 on the CPU
    python benchmarks/bench_train_sga.py --device cuda --configs f16 --batch-size 8 --steps 20
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from quantart_cli.core.cache.latents import LatentPairDataset, build_latent_cache
from quantart_cli.core.config import AutoencoderConfig, QuantizerConfig, VQGANConfig
from quantart_cli.core.data.datasets import UnpairedDataset
from quantart_cli.core.losses.config import StyleTransferLossConfig
from quantart_cli.core.losses.style_transfer import StyleTransferLoss
from quantart_cli.core.models import VQGAN, StyleTransfer
from quantart_cli.core.train.batches import BatchStream
from quantart_cli.core.train.sga_task import StyleTransferTask
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


def time_steps(task: StyleTransferTask, stream: BatchStream, device: torch.device, warmup: int, steps: int,
               order: str = "sequential") -> float:
    """Seconds per training step, phased as the loop's ``--optimizer-order`` does."""
    ctx = StepContext(device, "fp32", torch.amp.GradScaler(device.type, enabled=False), 1)
    task.train()
    names = tuple(task.optimizers())
    phases = [names] if order == "joint" else [(name,) for name in names]

    def one(step: int) -> None:
        batch = stream.next()
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        for phase in phases:
            for name in phase:
                task.optimizers()[name].zero_grad(set_to_none=True)
            task.micro_step(batch, step, ctx, phase)
            for name in phase:
                task.optimizers()[name].step()

    for step in range(warmup):
        one(step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        one(step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch-size", type=int, default=None, help="default: 2 on CPU, 8 on GPU")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--images", type=int, default=16, help="content and style images each")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--order", choices=("sequential", "joint"), default="sequential",
                        help="the loop's --optimizer-order (sequential: the original's, the default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch_size = args.batch_size or (8 if device.type == "cuda" else 2)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in args.configs:
            vq_config, size, blocks, ndf = CONFIGS[name]
            content_dir = write_images(root / name / "content", args.images, size, 0)
            style_dir = write_images(root / name / "style", args.images, size, 1)
            torch.manual_seed(0)
            content, style = VQGAN(vq_config).to(device), VQGAN(vq_config).to(device)
            model = StyleTransfer.from_vqgans(content, style, sga_blocks=blocks)
            del content, style
            loss_config = StyleTransferLossConfig(disc_ndf=ndf, disc_in_channels=vq_config.quantizer.embed_dim)
            images = UnpairedDataset(content_dir, style_dir, size=size, seed=0)
            start = time.perf_counter()
            cache = build_latent_cache(
                model,
                root / name / "cache",
                images.content_paths,
                images.style_paths,
                size=size,
                device=device,
                batch_size=batch_size,
            )
            build_s = time.perf_counter() - start
            factor = vq_config.autoencoder.downsample_factor
            cached = LatentPairDataset(cache, content_size=size // factor, style_size=size // factor, seed=0)
            seconds = {}
            for source, dataset in (("images", images), ("cache", cached)):
                task = StyleTransferTask(model, StyleTransferLoss(loss_config).to(device), lr=3.6e-5, device=device)
                stream = BatchStream(dataset, batch_size=batch_size, seed=0)
                seconds[source] = time_steps(task, stream, device, args.warmup, args.steps, args.order)
                print(
                    json.dumps(
                        {
                            "bench": "train_sga_step",
                            "config": name,
                            "source": source,
                            "device": str(device),
                            "batch_size": batch_size,
                            "size": size,
                            "threads": torch.get_num_threads(),
                            "s_per_step": round(seconds[source], 5),
                        }
                    ),
                    flush=True,
                )
            print(
                json.dumps(
                    {
                        "bench": "train_sga_speedup",
                        "config": name,
                        "device": str(device),
                        "batch_size": batch_size,
                        "speedup": round(seconds["images"] / seconds["cache"], 2),
                        "cache_build_s": round(build_s, 3),
                        "cached_images": 2 * args.images,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
