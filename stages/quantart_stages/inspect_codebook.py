"""``quantart inspect-codebook``: what a codebook holds and how it is used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantart_cli.plugin import BadInputError, RunContext, Stage, UsageError, cli_argument, cli_option
from quantart_stages.common import CheckpointReadingSettings, json_safe

if TYPE_CHECKING:
    import torch

    from quantart_cli.core.codebook.stats import CodebookStats, UsageStats

#: Version of the ``--json`` document; bumped when a key is renamed or removed (adding keys keeps it).
SCHEMA_VERSION = 1


class InspectCodebookSettings(CheckpointReadingSettings):
    ckpt: Path | None = cli_argument("Checkpoint: VQGAN or style-transfer, native, safetensors or original.",
                                     default=None)
    data: list[Path] = cli_option([], "Images to encode for usage statistics (folder, list or CSV; repeatable).")
    json_output: bool = cli_option(False, "Print every figure as JSON on stdout.", flag="--json")
    atlas: Path | None = cli_option(None, "Write a PNG grid decoding every code, ordered by usage.")
    plot: Path | None = cli_option(None, "Write a PNG rank plot of code usage (needs --data or stored usage).")
    overwrite: bool = cli_option(False, "Replace an existing --atlas or --plot file.")
    top: int = cli_option(10, "How many of the most used codes to list.", ge=1)
    batch_size: int = cli_option(8, "Images per batch when encoding --data.", ge=1)
    size: int = cli_option(256, "Image size for encoding --data (multiple of 16).", ge=16, multiple_of=16)
    duplicate_factor: float = cli_option(
        0.1, "Near-duplicate codes: pairs within this fraction of the median nearest-neighbour distance.", ge=0)
    duplicate_distance: float | None = cli_option(
        None, "Near-duplicate codes: pairs within this absolute distance (overrides --duplicate-factor).", ge=0)
    atlas_latent: int = cli_option(
        2, "Atlas: side of the uniform latent each code is decoded from (2: 32x32 patches at factor 16).", ge=1, le=16)
    atlas_limit: int | None = cli_option(None, "Atlas: draw only the N most used codes (default: every code).", ge=1)


def run(settings: InspectCodebookSettings, ctx: RunContext) -> int:
    if settings.ckpt is None:
        raise UsageError("inspect-codebook needs a checkpoint: quantart inspect-codebook CKPT.")
    for option, target in (("--atlas", settings.atlas), ("--plot", settings.plot)):
        if target is not None and target.suffix.lower() != ".png":
            raise UsageError(f"{option} writes a PNG image; give a file name ending in .png, not {target.name}.")
        if target is not None and target.exists() and not settings.overwrite:
            raise UsageError(f"{option} {target} exists; pass --overwrite to replace it, or pick another name.")
        if target is not None and settings.ckpt is not None and target.resolve() == settings.ckpt.resolve():
            raise UsageError(f"{option} {target} is the checkpoint being inspected; pick another name.")

    from quantart_cli.core.codebook.stats import checkpoint_codebooks, codebook_from_state_dict, codebook_stats
    from quantart_cli.core.devices import resolve_device, set_memory_format
    from quantart_cli.core.io.checkpoints import load_checkpoint, model_from_checkpoint

    device = resolve_device(settings.device)
    ckpt = load_checkpoint(settings.ckpt, device=device, trust=settings.trust_checkpoint)
    specs = checkpoint_codebooks(ckpt.config)
    if not specs:
        raise BadInputError(f"{settings.ckpt} is a continuous style-transfer checkpoint, which has no codebook.")
    stored = {name: usage for name, usage in (ckpt.codebook_usage or {}).items()}
    if settings.plot is not None and not settings.data and not any(s.name in stored for s in specs):
        raise UsageError("--plot needs usage counts: pass --data images to encode, or use a checkpoint whose "
                         "training recorded codebook usage.")

    model = None
    if settings.data or settings.atlas is not None:
        model = set_memory_format(model_from_checkpoint(ckpt, device=device), True)  # as inference runs
    codebooks = {spec.name: codebook_from_state_dict(ckpt.state_dict, spec).to(device) for spec in specs}
    ckpt.state_dict = {}  # the model (if any) holds its own copy; free the checkpoint's

    data_info: dict[str, Any] | None = None
    data_usage: dict[str, torch.Tensor] = {}
    if settings.data:
        data_usage, data_info = _encode_data(settings, ctx, model, device)

    all_stats: list[CodebookStats] = []
    for spec in specs:
        label = "the codebook" if spec.role == "codebook" else f"the {spec.role} codebook"
        ctx.console.info(f"measuring {label} ({spec.quantizer.n_embed} codes)")
        all_stats.append(codebook_stats(
            codebooks[spec.name],
            name=spec.name,
            role=spec.role,
            l2_normalize=spec.quantizer.l2_normalize,
            stored_usage=stored.get(spec.name),
            data_usage=data_usage.get(spec.name),
            duplicate_factor=settings.duplicate_factor,
            duplicate_distance=settings.duplicate_distance,
            top=settings.top,
        ))

    outputs: dict[str, Any] = {"atlas": None, "plot": None}
    if settings.atlas is not None:
        outputs["atlas"] = _write_atlas(settings, ctx, model, ckpt.kind, data_usage, stored, device)
    if settings.plot is not None:
        outputs["plot"] = _write_plot(settings, specs, data_usage, stored)

    document = {
        "schema_version": SCHEMA_VERSION,
        "checkpoint": {
            "path": str(settings.ckpt),
            "kind": ckpt.kind,
            "format": ckpt.source_format,
            "step": ckpt.step,
        },
        "data": data_info,
        "codebooks": [stats.to_dict() for stats in all_stats],
        "outputs": outputs,
    }
    if settings.json_output:
        ctx.console.result(json.dumps(json_safe(document), indent=2))
    else:
        _print_tables(ctx, all_stats, settings.top)
        for key in ("atlas", "plot"):
            if outputs[key] is not None:
                ctx.console.result(outputs[key] if key == "plot" else outputs[key]["path"])
    return 0


# --- data ------------------------------------------------------------------------------------------------------


def _batches(paths: list[Path], size: int, batch_size: int, skipped: list[Path], warn):
    """Image batches (shorter side to ``size``, centre crop); unreadable images are skipped and listed."""
    import torch

    from quantart_cli.core.data.transforms import transform_image
    from quantart_cli.core.io.images import load_image

    pending: list[torch.Tensor] = []
    for path in paths:
        try:
            pending.append(transform_image(load_image(path), size))
        except BadInputError as err:
            skipped.append(path)
            warn(f"skipping {path}: {err}")
            yield None
            continue
        if len(pending) == batch_size:
            yield torch.stack(pending)
            pending = []
    if pending:
        yield torch.stack(pending)


def _encode_data(settings: InspectCodebookSettings, ctx: RunContext, model, device):
    from quantart_cli.core.codebook.stats import count_dataset_usage
    from quantart_cli.core.data.sources import collect_images

    paths = collect_images(settings.data)
    skipped: list[Path] = []
    with ctx.console.progress("encoding", len(paths), unit="img") as bar:
        def advance(n: int) -> None:
            bar.advance(n)

        def batches():
            for batch in _batches(paths, settings.size, settings.batch_size, skipped, ctx.console.warn):
                if batch is None:
                    bar.advance(1)  # a skipped image still counts as done
                else:
                    yield batch

        usage = count_dataset_usage(model, batches(), device=device, on_batch=advance)
    encoded = len(paths) - len(skipped)
    if encoded == 0:
        raise BadInputError(f"None of the {len(paths)} --data images could be read, so no usage was counted.")
    info = {
        "sources": [str(p) for p in settings.data],
        "images": encoded,
        "skipped": len(skipped),
        "size": settings.size,
    }
    return usage, info


# --- pictures --------------------------------------------------------------------------------------------------


def _write_atlas(settings, ctx: RunContext, model, kind: str, data_usage, stored, device) -> dict[str, Any]:
    import torch

    from quantart_cli.core.codebook.atlas import FRAME, render_atlas
    from quantart_cli.core.codebook.stats import usage_order
    from quantart_cli.core.io.images import save_image_atomic

    if kind == "vqgan":
        name, role = "quantize", "codebook"

        def decode(indices: torch.Tensor) -> torch.Tensor:
            return model.decode_indices(indices)
    else:
        name, role = "quantize_dec", "style"
        ctx.console.info("the atlas shows the style codebook: a style-transfer checkpoint has no decoder for "
                         "its content codebook")

        def decode(indices: torch.Tensor) -> torch.Tensor:
            return model.decode(model.quantize_dec.lookup(indices))

    n_codes = getattr(model, name).n_embed
    counts, source = (data_usage[name], "data") if name in data_usage else (stored.get(name), "stored")
    if counts is None:
        source = "index"
        ctx.console.info("no usage known (no --data, none stored in the checkpoint): atlas codes in index order")
        order = torch.arange(n_codes)
        unused = None
    else:
        order = usage_order(counts)
        unused = counts.detach().cpu() == 0
    if settings.atlas_limit is not None:
        order = order[: settings.atlas_limit]
    with ctx.console.progress("decoding codes", order.numel(), unit="code") as bar:
        image, layout = render_atlas(
            decode, order, unused=unused, latent_side=settings.atlas_latent, factor=model.downsample_factor,
            device=device, batch_size=max(1, 4 * settings.batch_size), on_batch=bar.advance,
        )
    save_image_atomic(image, settings.atlas)
    return {
        "path": str(settings.atlas),
        "codebook": role,
        "order_by": source,
        "latent_side": settings.atlas_latent,
        "tile": layout.tile,
        "frame": FRAME,
        "columns": layout.columns,
        "rows": layout.rows,
        "width": layout.width,
        "height": layout.height,
        "codes": order.tolist(),
    }


def _write_plot(settings, specs, data_usage, stored) -> str:
    from quantart_cli.core.codebook.atlas import render_rank_plot
    from quantart_cli.core.io.images import save_image_atomic

    series = []
    for spec in specs:
        if spec.name in data_usage:
            series.append((f"{spec.role} (data)", data_usage[spec.name]))
        elif spec.name in stored:
            series.append((f"{spec.role} (stored)", stored[spec.name]))
    save_image_atomic(render_rank_plot(series), settings.plot)
    return str(settings.plot)


# --- terminal --------------------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.3e}"
    return f"{value:.4g}"


def _usage_rows(label: str, usages: list[UsageStats | None]) -> list[list[str]]:
    def col(fn) -> list[str]:
        return [("-" if u is None else fn(u)) for u in usages]

    return [
        [f"{label}: tokens", *col(lambda u: str(u.total))],
        [f"{label}: used codes", *col(lambda u: str(u.used))],
        [f"{label}: dead codes", *col(lambda u: f"{u.dead} ({100 * u.dead_share:.1f}%)")],
        [f"{label}: perplexity", *col(lambda u: f"{_fmt(u.perplexity)} ({100 * u.perplexity_share:.1f}% of size)")],
        [f"{label}: entropy", *col(lambda u: f"{_fmt(u.entropy_nats)} nats = {_fmt(u.entropy_bits)} bits")],
    ]


def _print_tables(ctx: RunContext, all_stats: list[CodebookStats], top: int) -> None:
    columns = ["figure", *(s.role for s in all_stats)]

    def row(label: str, fn) -> list[str]:
        return [label, *(fn(s) for s in all_stats)]

    def closest(s: CodebookStats) -> str:
        if not s.near_duplicates.closest:
            return "-"
        pair = s.near_duplicates.closest[0]
        return f"{pair.a} & {pair.b} ({_fmt(pair.distance)})"

    rows = [
        row("codes x dim", lambda s: f"{s.size} x {s.dim}" + (" (unit norm)" if s.l2_normalize else "")),
        row("norm min / mean / max", lambda s: f"{_fmt(s.norm.min)} / {_fmt(s.norm.mean)} / {_fmt(s.norm.max)}"),
        row("norm std", lambda s: _fmt(s.norm.std)),
        row("NN distance min / median / max",
            lambda s: " / ".join(_fmt(v) for v in (s.nearest_neighbour.min, s.nearest_neighbour.median,
                                                   s.nearest_neighbour.max))),
        row("NN distance mean / std",
            lambda s: f"{_fmt(s.nearest_neighbour.mean)} / {_fmt(s.nearest_neighbour.std)}"),
        row("near-duplicate threshold",
            lambda s: _fmt(s.near_duplicates.threshold)
            + (f" ({s.near_duplicates.factor:g} x median NN)" if s.near_duplicates.rule == "relative" else "")),
        row("near-duplicate pairs / codes",
            lambda s: f"{s.near_duplicates.pairs} / {s.near_duplicates.codes}"),
        row("closest pair", closest),
    ]
    if any(s.stored_usage is not None for s in all_stats):
        rows += _usage_rows("stored usage", [s.stored_usage for s in all_stats])
    if any(s.data_usage is not None for s in all_stats):
        rows += _usage_rows("data usage", [s.data_usage for s in all_stats])
    ctx.console.result_table("codebook", columns, rows)

    for s in all_stats:
        usage, source = (s.data_usage, "data") if s.data_usage is not None else (s.stored_usage, "stored")
        if usage is None or not usage.top:
            continue
        ctx.console.result_table(
            f"most used codes ({s.role}, {source} usage)",
            ["rank", "code", "count", "share"],
            [[str(r + 1), str(t.code), str(t.count), f"{100 * t.share:.2f}%"] for r, t in enumerate(usage.top[:top])],
        )


stage = Stage(
    name="inspect-codebook",
    help="Show what a codebook holds and how it is used.",
    settings=InspectCodebookSettings,
    run=run,
    description="Example: quantart inspect-codebook vq.pt --data photos/ --atlas atlas.png --plot usage.png",
)
