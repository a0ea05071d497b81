"""Encode / decode / transfer / stylize speed and peak memory: quantart vs the original's way.

The full f16 QuantArt configuration with random weights. "original" is a faithful re-statement of
the original forward passes (taming / QuantArt): attention via bmm on the full attention matrix,
swish as x*sigmoid(x), nearest upsampling then conv, VQ distances on the full matrix, everything
under ``torch.no_grad`` like the original test loop. It loads *our* state dict with strict=True, so
both run the same weights. Prints one JSON line per (op, size):

    {"op": "encode", "size": 256, "ours_s": ..., "original_s": ..., "speedup": ..., "median_speedup": ...,
     "ours_peak_mib": ..., "original_peak_mib": ..., "max_abs_diff": ..., "indices_equal": ...}

Times (batch 1) are the minimum over ``--repeats`` runs after one warm-up, ours and original
interleaved so both see the same machine load; the median ratio and the process CPU time
(minimum, all threads; robust on a shared machine, especially with ``--threads 1``) are printed too.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the memory held before the op; on CPU the rise of the
process's resident-set high-water mark (reset through /proc/self/clear_refs before each op;
ru_maxrss deltas where that is unavailable, which can under-report).

    python benchmarks/bench_models.py --device cpu --sizes 256,512 --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quantart_cli.core.config import AutoencoderConfig, StyleTransferConfig, VQGANConfig  # noqa: E402
from quantart_cli.core.models import VQGAN, StyleTransfer  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The original's way (same parameter names, so our state dicts load strictly).


def _orig_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32 if channels >= 32 else 1, num_channels=channels, eps=1e-6, affine=True)


def _orig_swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


class OrigResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.cin, self.cout = cin, cout
        self.norm1 = _orig_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2 = _orig_norm(cout)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(_orig_swish(self.norm1(x)))
        h = self.conv2(self.dropout(_orig_swish(self.norm2(h))))
        if self.cin != self.cout:
            x = self.nin_shortcut(x)
        return x + h


class OrigAttnBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _orig_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, key: Tensor | None = None) -> Tensor:
        h_ = self.norm(x)
        k_in = h_ if key is None else self.norm(key)
        q, k, v = self.q(h_), self.k(k_in), self.v(k_in)
        b, c, h, w = q.shape
        q = q.reshape(b, c, h * w).permute(0, 2, 1)
        k = k.reshape(b, c, h * w)  # the original assumes the reference has the query's size
        weights = torch.softmax(torch.bmm(q, k) * (int(c) ** (-0.5)), dim=2)
        v = v.reshape(b, c, h * w)
        h_ = torch.bmm(v, weights.permute(0, 2, 1)).reshape(b, c, h, w)
        return x + self.proj_out(h_)


class OrigDownsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class OrigUpsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _OrigMid(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = OrigResnetBlock(channels, channels)
        self.attn_1 = OrigAttnBlock(channels)
        self.block_2 = OrigResnetBlock(channels, channels)


class OrigEncoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.nres, self.nblocks = len(cfg.ch_mult), cfg.num_res_blocks
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, 1, 1)
        in_mult, res, self.down = (1, *cfg.ch_mult), cfg.resolution, nn.ModuleList()
        for i in range(self.nres):
            level, cin, cout = nn.Module(), cfg.ch * in_mult[i], cfg.ch * cfg.ch_mult[i]
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(self.nblocks):
                level.block.append(OrigResnetBlock(cin, cout))
                cin = cout
                if res in cfg.attn_resolutions:
                    level.attn.append(OrigAttnBlock(cin))
            if i != self.nres - 1:
                level.downsample = OrigDownsample(cin)
                res //= 2
            self.down.append(level)
        self.mid = _OrigMid(cin)
        self.norm_out = _orig_norm(cin)
        self.conv_out = nn.Conv2d(cin, cfg.z_channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        hs = [self.conv_in(x)]
        for i in range(self.nres):
            for j in range(self.nblocks):
                h = self.down[i].block[j](hs[-1])
                if len(self.down[i].attn) > 0:
                    h = self.down[i].attn[j](h)
                hs.append(h)  # the original keeps every level's output alive
            if i != self.nres - 1:
                hs.append(self.down[i].downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1])))
        return self.conv_out(_orig_swish(self.norm_out(h)))


class OrigDecoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.nres, self.nblocks = len(cfg.ch_mult), cfg.num_res_blocks
        cin = cfg.ch * cfg.ch_mult[-1]
        res = cfg.resolution // 2 ** (self.nres - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, 3, 1, 1)
        self.mid = _OrigMid(cin)
        self.up = nn.ModuleList()
        for i in reversed(range(self.nres)):
            level, cout = nn.Module(), cfg.ch * cfg.ch_mult[i]
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(self.nblocks + 1):
                level.block.append(OrigResnetBlock(cin, cout))
                cin = cout
                if res in cfg.attn_resolutions:
                    level.attn.append(OrigAttnBlock(cin))
            if i != 0:
                level.upsample = OrigUpsample(cin)
                res *= 2
            self.up.insert(0, level)
        self.norm_out = _orig_norm(cin)
        self.conv_out = nn.Conv2d(cin, cfg.out_ch, 3, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i in reversed(range(self.nres)):
            for j in range(self.nblocks + 1):
                h = self.up[i].block[j](h)
                if len(self.up[i].attn) > 0:
                    h = self.up[i].attn[j](h)
            if i != 0:
                h = self.up[i].upsample(h)
        return self.conv_out(_orig_swish(self.norm_out(h)))


class OrigVectorQuantizer(nn.Module):
    def __init__(self, n_e: int, e_dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.n_e, self.e_dim, self.beta = n_e, e_dim, beta
        self.embedding = nn.Embedding(n_e, e_dim)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = z.permute(0, 2, 3, 1).contiguous()
        flat = z.view(-1, self.e_dim)
        weight = self.embedding.weight
        d = (
            torch.sum(flat**2, dim=1, keepdim=True)
            + torch.sum(weight**2, dim=1)
            - 2 * torch.einsum("bd,dn->bn", flat, weight.t())
        )
        indices = torch.argmin(d, dim=1)
        z_q = self.embedding(indices).view(z.shape)
        loss = torch.mean((z_q.detach() - z) ** 2) + self.beta * torch.mean((z_q - z.detach()) ** 2)
        z_q = z + (z_q - z).detach()
        return z_q.permute(0, 3, 1, 2).contiguous(), loss, indices.view(z.shape[:-1])


class OrigVQGAN(nn.Module):
    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        ae, q = cfg.autoencoder, cfg.quantizer
        self.encoder, self.decoder = OrigEncoder(ae), OrigDecoder(ae)
        self.quantize = OrigVectorQuantizer(q.n_embed, q.embed_dim, q.beta)
        self.quant_conv = nn.Conv2d(ae.z_channels, q.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(q.embed_dim, ae.z_channels, 1)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.quantize(self.quant_conv(self.encoder(x)))

    def decode(self, quant: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(quant))


class OrigSGABlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.res_block = OrigResnetBlock(channels, channels)
        self.self_attn_block = OrigAttnBlock(channels)
        self.attn_block = OrigAttnBlock(channels)

    def forward(self, x: Tensor, ref: Tensor) -> Tensor:
        return self.attn_block(self.self_attn_block(self.res_block(x)), ref)


class OrigSGA(nn.Module):
    def __init__(self, channels: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(OrigSGABlock(channels) for _ in range(blocks))

    def forward(self, x: Tensor, ref: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x, ref)
        return x


class OrigStyleTransfer(nn.Module):
    def __init__(self, cfg: StyleTransferConfig) -> None:
        super().__init__()
        c, s = cfg.content, cfg.style
        self.encoder, self.encoder_real = OrigEncoder(c.autoencoder), OrigEncoder(s.autoencoder)
        self.decoder = OrigDecoder(s.autoencoder)
        self.quantize_enc = OrigVectorQuantizer(c.quantizer.n_embed, c.quantizer.embed_dim)
        self.quantize_dec = OrigVectorQuantizer(s.quantizer.n_embed, s.quantizer.embed_dim)
        self.quant_conv = nn.Conv2d(c.autoencoder.z_channels, c.quantizer.embed_dim, 1)
        self.quant_conv_real = nn.Conv2d(s.autoencoder.z_channels, s.quantizer.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(s.quantizer.embed_dim, s.autoencoder.z_channels, 1)
        self.model_x2y = OrigSGA(cfg.embed_dim, cfg.sga_blocks)

    def transfer(self, x: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        _, quant_y, indices_y = self.transfer_with_content(x, ref)
        return quant_y, indices_y

    def transfer_with_content(self, x: Tensor, ref: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``transfer`` that also returns the content latent ``quant_x`` (for blending by alpha by hand)."""
        quant_x, _, _ = self.quantize_enc(self.quant_conv(self.encoder(x)))
        quant_ref, _, _ = self.quantize_dec(self.quant_conv_real(self.encoder_real(ref)))
        h = self.model_x2y(quant_x, quant_ref)
        quant_y, _, indices_y = self.quantize_dec(h)
        return quant_x, quant_y, indices_y

    def decode(self, quant: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(quant))


# ---------------------------------------------------------------------------------------------
# Measurement.


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_CLEAR_REFS = Path("/proc/self/clear_refs")


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _timed(
    fn: Callable[[], object], device: torch.device, mode: Callable[[], object]
) -> tuple[tuple[float, float], object]:
    """((wall seconds, process CPU seconds), result) of one call."""
    with mode():  # type: ignore[attr-defined]
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        _sync(device)
        return (time.perf_counter() - start, time.process_time() - start_cpu), result


def time_pair(
    ours: Callable[[], object], original: Callable[[], object], device: torch.device, repeats: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float]], object, object]:
    """Seconds per call of both, interleaved so both see the same machine load; plus last results."""
    _timed(ours, device, torch.inference_mode)  # warm-up (oneDNN / cuDNN kernel selection)
    _timed(original, device, torch.no_grad)
    ours_times, original_times = [], []
    for _ in range(repeats):
        seconds, ours_out = _timed(ours, device, torch.inference_mode)
        ours_times.append(seconds)
        seconds, original_out = _timed(original, device, torch.no_grad)
        original_times.append(seconds)
    return ours_times, original_times, ours_out, original_out


def peak_memory_mib(fn: Callable[[], object], device: torch.device, mode: Callable[[], object]) -> float:
    """Peak memory of one call above the level before it, MiB."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        _timed(fn, device, mode)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    exact = _reset_peak()
    base = _rss_kib("VmRSS") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _timed(fn, device, mode)
    top = _rss_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(0, (top or 0) - (base or 0)) / 1024


def _max_diff(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


Case = tuple[Callable[[], object], Callable[[], object]]


def _cases(
    ours_vq: VQGAN,
    orig_vq: OrigVQGAN,
    ours_st: StyleTransfer | None,
    orig_st: OrigStyleTransfer | None,
    image: Tensor,
    style: Tensor,
    latent: Tensor | None,
    features: Tensor | None,
) -> dict[str, Case]:
    """(ours, original) callables per op, on the same inputs."""
    cases: dict[str, Case] = {
        "encode": (lambda: ours_vq.encode(image), lambda: orig_vq.encode(image)),
    }
    if latent is not None:
        cases["decode"] = (lambda: ours_vq.decode(latent), lambda: orig_vq.decode(latent))
    if features is not None:
        # One 512-channel self-attention block (decoder.mid.attn_1) on a latent of the image's size.
        ours_attn, orig_attn = ours_vq.decoder.mid.attn_1, orig_vq.decoder.mid.attn_1
        features_cl = features.contiguous(memory_format=torch.channels_last)
        cases["attention"] = (lambda: ours_attn(features_cl), lambda: orig_attn(features))
    if ours_st is not None and orig_st is not None:
        cases["transfer"] = (lambda: ours_st.transfer(image, style), lambda: orig_st.transfer(image, style))
        cases["stylize"] = (
            lambda: ours_st(image, style),
            lambda: orig_st.decode(orig_st.transfer(image, style)[0]),
        )
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="256,512", help="comma-separated image sides (multiples of 16)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--ops",
        default="encode,decode,transfer,stylize",
        help="any of encode, decode, transfer, stylize, attention (one 512-ch attention block at size/16)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    torch.manual_seed(0)

    vq_config = VQGANConfig()  # the f16 model of every QuantArt preset
    ours_vq = VQGAN(vq_config).eval().to(device)
    orig_vq = OrigVQGAN(vq_config).eval().to(device)
    orig_vq.load_state_dict(ours_vq.state_dict(), strict=True)
    ours_st = orig_st = None
    if {"transfer", "stylize"} & set(ops):
        ours_st = StyleTransfer(StyleTransferConfig()).eval().to(device)
        orig_st = OrigStyleTransfer(StyleTransferConfig()).eval().to(device)
        orig_st.load_state_dict(ours_st.state_dict(), strict=True)

    for size in (int(s) for s in args.sizes.split(",")):
        gen = torch.Generator().manual_seed(size)
        image = (torch.rand(1, 3, size, size, generator=gen) * 2 - 1).to(device)
        style = (torch.rand(1, 3, size, size, generator=gen) * 2 - 1).to(device)
        latent = features = None
        if "decode" in ops:
            with torch.inference_mode():
                latent = ours_vq.encode(image)[0].clone()
        if "attention" in ops:
            channels = ours_vq.decoder.mid.attn_1.channels
            side = size // ours_vq.downsample_factor
            features = torch.randn(1, channels, side, side, generator=gen).to(device)
        cases = _cases(ours_vq, orig_vq, ours_st, orig_st, image, style, latent, features)
        for op in ops:
            ours_fn, orig_fn = cases[op]
            ours_times, orig_times, ours_out, orig_out = time_pair(ours_fn, orig_fn, device, args.repeats)
            ours_mib = peak_memory_mib(ours_fn, device, torch.inference_mode)
            orig_mib = peak_memory_mib(orig_fn, device, torch.no_grad)
            record: dict[str, object] = {"op": op, "size": size, "device": str(device)}
            record["threads"] = torch.get_num_threads()
            if op == "encode":
                record["max_abs_diff"] = _max_diff(ours_out[0], orig_out[0])
                record["indices_equal"] = bool(torch.equal(ours_out[2].indices.cpu(), orig_out[2].cpu()))
            elif op == "transfer":
                record["max_abs_diff"] = _max_diff(ours_out.quant_y, orig_out[0])
                record["indices_equal"] = bool(torch.equal(ours_out.indices_y.cpu(), orig_out[1].cpu()))
            else:
                record["max_abs_diff"] = _max_diff(ours_out, orig_out)
            ours_wall, orig_wall = [t[0] for t in ours_times], [t[0] for t in orig_times]
            ours_s, orig_s = min(ours_wall), min(orig_wall)
            ours_cpu, orig_cpu = min(t[1] for t in ours_times), min(t[1] for t in orig_times)
            record.update(
                ours_s=round(ours_s, 4),
                original_s=round(orig_s, 4),
                speedup=round(orig_s / ours_s, 3),
                median_speedup=round(statistics.median(orig_wall) / statistics.median(ours_wall), 3),
                ours_cpu_s=round(ours_cpu, 4),
                original_cpu_s=round(orig_cpu, 4),
                cpu_time_speedup=round(orig_cpu / ours_cpu, 3),
                ours_peak_mib=round(ours_mib, 1),
                original_peak_mib=round(orig_mib, 1),
            )
            print(json.dumps(record), flush=True)
            del ours_out, orig_out
            gc.collect()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
