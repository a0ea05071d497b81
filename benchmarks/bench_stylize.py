"""Stylize latency and peak memory per image size: ours untiled, ours tiled, and the original's way.

Random-weight models (``--config f16``: the full QuantArt configuration, 6 SGA blocks; ``tiny``: the
test configuration). Every (size, mode) runs in a fresh subprocess, so its peak memory is its own:
on CPU the child's peak resident set (``ru_maxrss``, model weights included), on CUDA
``torch.cuda.max_memory_allocated``. One JSON line per (size, mode) on stdout:

    {"size": 1024, "mode": "tiled", "device": "cpu", "seconds": ..., "peak_mib": ..., "stages": {...}}

Modes:
- ``ours``: :class:`quantart_cli.core.transfer.engine.Stylizer` untiled, 256 px style reference;
- ``tiled``: the same with tiled encode/decode (``--tile``, ``--overlap``, ``--tile-norm``, ``--tile-memory``);
- ``original``: the original's computation (attention on the full matrix via bmm, x*sigmoid(x),
  nearest upsampling then conv, VQ distances on the full matrix, ``torch.no_grad``, no chunking;
  modules from benchmarks/bench_models.py loading our weights strictly). The original needs the
  reference to have the content's size, so it runs with a same-size reference, and ``ours-same-ref``
  runs ours on exactly that input for a fair comparison;
- ``compare``: tiled vs untiled agreement in grey levels (1/255): of the decoder alone on the same
  latent (``decode_mean_abs_255``), of the encoder (``content_codes_equal``: share of identical codes),
  and end to end (``pipeline_mean_abs_255``; code flips of random-weight quantizers dominate it).

    python benchmarks/bench_stylize.py --device cpu --config f16 --sizes 256,512,1024 \
        --modes ours,tiled,original,ours-same-ref,compare
    python benchmarks/bench_stylize.py --device cpu --config f16 --sizes 2048,4096 --modes tiled
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

MODES = ("ours", "tiled", "original", "ours-same-ref", "compare")


def _build(config_name: str, device):  # noqa: ANN001 - torch imported lazily
    import torch

    from quantart_cli.core.config import StyleTransferConfig, tiny_vqgan_config
    from quantart_cli.core.models import StyleTransfer

    torch.manual_seed(0)
    if config_name == "tiny":
        config = StyleTransferConfig(content=tiny_vqgan_config(), style=tiny_vqgan_config(), sga_blocks=1)
    else:
        config = StyleTransferConfig()
    return StyleTransfer(config).eval().to(device)


def _image(size: int, seed: int, device):  # noqa: ANN001
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size, size, generator=gen) * 2 - 1
    return torch.nn.functional.avg_pool2d(x, 9, 1, 4).clamp(-1, 1).to(device)


def _peak_mib(device) -> float:  # noqa: ANN001
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(args: argparse.Namespace) -> dict:
    import torch

    from quantart_cli.core.transfer.engine import Stylizer
    from quantart_cli.core.transfer.options import StylizeOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = _build(args.config, device)
    size = args.size
    content = _image(size, 1, device)
    tiled = StylizeOptions(
        tiling="always", tile=args.tile, overlap=args.overlap, tile_norm=args.tile_norm, tile_memory=args.tile_memory
    )
    untiled = StylizeOptions(tiling="never")
    record: dict = {
        "size": size,
        "mode": args.mode,
        "device": str(device),
        "config": args.config,
        "threads": torch.get_num_threads(),
    }
    if args.mode in ("ours", "tiled", "ours-same-ref"):
        style = _image(size if args.mode == "ours-same-ref" else 256, 2, device)
        if args.mode == "tiled":
            record.update(tile=args.tile, overlap=args.overlap, tile_norm=args.tile_norm, tile_memory=args.tile_memory)
        options = tiled if args.mode == "tiled" else untiled
        for _ in range(args.warmup):
            Stylizer(model, [style], options)(content)
        start = time.perf_counter()
        stylizer = Stylizer(model, [style], options)
        out = stylizer(content)
        record["seconds"] = round(time.perf_counter() - start, 3)
        record["stages"] = {k: round(v, 3) for k, v in out.timings.items()}
        record["stages"]["style"] = round(stylizer.style_seconds, 3)
    elif args.mode == "original":
        from bench_models import OrigStyleTransfer

        original = OrigStyleTransfer(model.config).eval().to(device)
        original.load_state_dict(model.state_dict(), strict=True)
        del model
        style = _image(size, 2, device)

        def run_original():  # noqa: ANN202
            with torch.no_grad():
                quant_y, _ = original.transfer(content, style)
                out = original.decode(quant_y).clamp(-1, 1)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return out

        for _ in range(args.warmup):
            run_original()
        start = time.perf_counter()
        run_original()
        record["seconds"] = round(time.perf_counter() - start, 3)
    else:  # compare
        from quantart_cli.core.transfer.tiling import decode_tiled

        style = _image(256, 2, device)
        whole = Stylizer(model, [style], untiled)
        parts = Stylizer(model, [style], tiled)
        with torch.inference_mode():
            padded = content
            z_whole = whole.latent(padded, tiled=False)
            z_tiled = parts.latent(padded, tiled=True)
            zq_whole = whole.branches[0].encode_content(padded, tiled=False)
            zq_tiled = parts.branches[0].encode_content(padded, tiled=True)
            start = time.perf_counter()
            dec_whole = model.decoder(model.post_quant_conv(z_whole)).clamp(-1, 1)
            record["untiled_decode_seconds"] = round(time.perf_counter() - start, 3)
            start = time.perf_counter()
            dec_tiled = decode_tiled(
                model.decoder,
                model.post_quant_conv(z_whole),
                tile=args.tile,
                overlap=args.overlap,
                norm_stats=args.tile_norm,
                buffer_bytes=tiled.buffer_bytes,
            ).clamp(-1, 1)
            record["tiled_decode_seconds"] = round(time.perf_counter() - start, 3)
            pipe_tiled = parts.decode(z_tiled, tiled=True).clamp(-1, 1)
        scale = 127.5  # [-1, 1] -> grey levels
        record.update(
            tile=args.tile,
            overlap=args.overlap,
            tile_norm=args.tile_norm,
            tile_memory=args.tile_memory,
            decode_mean_abs_255=round(float((dec_tiled - dec_whole).abs().mean()) * scale, 4),
            decode_max_abs_255=round(float((dec_tiled - dec_whole).abs().max()) * scale, 2),
            content_codes_equal=round(float((zq_whole == zq_tiled).all(dim=1).float().mean()), 4),
            pipeline_mean_abs_255=round(float((pipe_tiled - dec_whole).abs().mean()) * scale, 4),
            output_std=round(float(dec_whole.std()), 4),
        )
    record["peak_mib"] = round(_peak_mib(device), 1)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="256,512,1024,2048,4096")
    parser.add_argument("--config", choices=("f16", "tiny"), default="f16")
    parser.add_argument("--modes", default="ours,tiled,original,ours-same-ref")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--tile-norm", choices=("image", "tile"), default="image")
    parser.add_argument("--tile-memory", type=float, default=4.0, help="GiB of whole-image buffers (exact tiling).")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default).")
    parser.add_argument("--warmup", type=int, default=0, help="Untimed runs before the timed one (per child).")
    parser.add_argument("--max-untiled", type=int, default=1024, help="Largest size run untiled (ours, compare).")
    parser.add_argument("--max-original", type=int, default=1024, help="Largest size run the original way.")
    parser.add_argument("--timeout", type=float, default=3600.0, help="Seconds per child before it is stopped.")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return 0
    for size in (int(s) for s in args.sizes.split(",")):
        for mode in args.modes.split(","):
            if mode not in MODES:
                parser.error(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
            if (mode in ("ours", "compare") and size > args.max_untiled) or (
                mode in ("original", "ours-same-ref") and size > args.max_original
            ):
                continue
            command = [
                sys.executable,
                __file__,
                "--child",
                "--size",
                str(size),
                "--mode",
                mode,
                "--device",
                args.device,
                "--config",
                args.config,
                "--tile",
                str(args.tile),
                "--overlap",
                str(args.overlap),
                "--tile-norm",
                args.tile_norm,
                "--tile-memory",
                str(args.tile_memory),
                "--warmup",
                str(args.warmup),
                "--threads",
                str(args.threads),
            ]
            start = time.perf_counter()
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(
                    json.dumps({"size": size, "mode": mode, "error": f"timed out after {args.timeout:.0f}s"}),
                    flush=True,
                )
                continue
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                print(
                    json.dumps({"size": size, "mode": mode, "error": tail[:300], "returncode": done.returncode}),
                    flush=True,
                )
                continue
            record = json.loads(lines[-1])
            record["wall_seconds_with_startup"] = round(time.perf_counter() - start, 1)
            print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
