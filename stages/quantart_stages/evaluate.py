"""``quantart evaluate``: measure how well a model stylizes (or score outputs made by anything)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator

from quantart_cli.plugin import RunContext, Stage, UsageError, cli_option
from quantart_stages.common import CheckpointReadingSettings, ImageReadingSettings, json_safe


class EvaluateSettings(CheckpointReadingSettings, ImageReadingSettings):
    content: list[str] = cli_option([], "Photos (files, folders, globs) to stylize and score.")
    style: list[str] = cli_option([], "Paintings (files, folders, globs) to stylize after and score against.")
    ckpt: Path | None = cli_option(None, "Style-transfer model to evaluate (default: the built-in model).")
    alpha: list[float] = cli_option([1.0], "Style fidelity values to evaluate, e.g. 0,0.5,1.", comma_list=True)
    limit: int | None = cli_option(None, "Score at most this many photo x painting pairs (per alpha).", ge=1)
    stylized: Path | None = cli_option(None, "Folder the manifest's stylized paths are relative to.")
    manifest: Path | None = cli_option(
        None, "CSV with columns stylized,content,style[,alpha]: score outputs made by anything."
    )
    size: int | None = cli_option(
        512, "Score (and stylize) every image with its longer side resized to this many pixels.", ge=16
    )
    networks: Literal["auto", "off", "random"] = cli_option(
        "auto",
        "Pretrained-network metrics: the bundled VGG19 ones (style, content loss, CFSD) offline, and LPIPS, "
        "style loss, CFSD, FID, ArtFID, whose weights auto downloads on first use (reported unavailable when it "
        "cannot); off skips them all; random uses untrained networks (tests only, meaningless figures).",
    )
    per_image: bool = cli_option(False, "Also print one row per scored pair.")
    json_output: bool = cli_option(False, "Print the result as JSON (metrics with direction and unit).",
                                   flag="--json")
    out: Path | None = cli_option(None, "Write the per-pair rows to this CSV file.", short="-o")
    save_stylized: Path | None = cli_option(
        None, "Write the outputs (PNG) and a manifest.csv that scores them again to this folder."
    )
    overwrite: bool = cli_option(False, "Replace an existing --out file or files in --save-stylized.")

    @field_validator("alpha")
    @classmethod
    def _alphas_are_style_fidelities(cls, alphas: list[float]) -> list[float]:
        # checked with the other settings, before any model is loaded (stylize's own check would come later)
        if not alphas:
            raise ValueError("give at least one value, e.g. 0,0.5,1")
        for alpha in alphas:
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"{alpha:g} is not between 0 and 1 (alpha is the style fidelity)")
        return alphas


def _mode(settings: EvaluateSettings) -> str:
    grid = bool(settings.content or settings.style)
    if settings.manifest is not None and grid:
        raise UsageError("evaluate takes either --content/--style (stylize and score) or --manifest (score "
                         "existing outputs), not both.")
    if settings.manifest is not None:
        if settings.save_stylized is not None or settings.ckpt is not None:
            raise UsageError("--ckpt and --save-stylized only apply when evaluate stylizes (--content/--style).")
        return "manifest"
    if settings.stylized is not None:
        raise UsageError("--stylized needs --manifest, the CSV that pairs each output with its photo and painting.")
    if not settings.content or not settings.style:
        raise UsageError("evaluate needs --content and --style (photos and paintings to stylize), or "
                         "--manifest FILE.csv to score existing outputs.")
    return "grid"


def run(settings: EvaluateSettings, ctx: RunContext) -> int:
    mode = _mode(settings)
    if settings.out is not None and settings.out.suffix.lower() != ".csv":
        raise UsageError(f"--out writes a CSV file; give a name ending in .csv, not {settings.out.name}.")
    if settings.out is not None and settings.out.exists() and not settings.overwrite:
        raise UsageError(f"--out {settings.out} exists; pass --overwrite to replace it, or pick another name.")
    if (settings.save_stylized is not None and not settings.overwrite and settings.save_stylized.is_dir()
            and any(settings.save_stylized.iterdir())):
        raise UsageError(f"--save-stylized {settings.save_stylized} is not empty; pass --overwrite to write into "
                         "it anyway, or pick an empty folder.")

    from quantart_cli.core.data.sources import collect_images
    from quantart_cli.core.devices import resolve_device
    from quantart_cli.core.metrics import inputs
    from quantart_cli.core.metrics.scoring import NETWORK_LABELS, load_networks, score_triples

    device = resolve_device(settings.device)
    if mode == "manifest":
        rows = inputs.read_manifest(settings.manifest, settings.stylized)
        total = len(rows)
        triples = inputs.triples_from_manifest(rows, settings.size, max_pixels=settings.max_pixels)
    else:
        photos, paintings = collect_images(settings.content), collect_images(settings.style)
        from quantart_cli.core.transfer.session import StylizeSession

        session = StylizeSession(settings.ckpt, device=device, trust=settings.trust_checkpoint)
        session.load()
        ctx.console.info(f"model {session.name} on {session.device}")
        pairs = len(photos) * len(paintings)
        total = min(pairs, settings.limit or pairs) * len(settings.alpha)

        def saved(rows: list) -> None:
            path = inputs.write_manifest(settings.save_stylized / "manifest.csv", rows)
            ctx.console.info(f"outputs and {path} written; score them again with "
                             f"quantart evaluate --manifest {path}")

        triples = inputs.stylize_triples(session, photos, paintings, settings.alpha, size=settings.size,
                                         limit=settings.limit, save_to=settings.save_stylized, on_manifest=saved,
                                         max_pixels=settings.max_pixels)
    networks = load_networks(settings.networks, device)
    for name, reason in networks.missing.items():
        if settings.networks == "auto":
            ctx.console.warn(f"{NETWORK_LABELS[name]} metrics unavailable: {reason}")
    with ctx.console.progress("evaluating", total, unit="pair") as bar:
        result = score_triples(triples, networks, progress=bar.advance)
    if settings.out is not None:
        _write_rows(settings.out, result.pairs)
        ctx.console.info(f"per-pair rows written to {settings.out}")
    if settings.json_output:
        ctx.console.result(json.dumps(json_safe(result.as_json()), indent=2, sort_keys=False))
    else:
        _print_tables(ctx, result, settings.per_image)
    return 0


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _print_tables(ctx: RunContext, result, per_image: bool) -> None:
    from quantart_cli.core.metrics.scoring import METRICS, NETWORK_LABELS

    groups = list(result.groups)
    arrows = {"lower": "lower is better", "higher": "higher is better", "reference": "reference"}
    rows = []
    for metric in METRICS:
        info = result.metrics[metric.name]
        values = [_fmt(result.groups[g][metric.name]) for g in groups]
        reason = info["reason"] or ""
        if len(reason) > 70:
            reason = "see the warning above"
        weights = "".join(f" ({NETWORK_LABELS[name]})" for name in metric.needs)
        note = arrows[metric.direction] + weights if info["available"] else f"unavailable: {reason}"
        rows.append([metric.name, *values, note])
    title = "alpha" if all(g != "all" for g in groups) else "group"
    ctx.console.result_table("stylization metrics (means per " + title + ")",
                             ["metric", *[f"{title} {g}" for g in groups], ""], rows)
    if per_image:
        pair_metrics = [m.name for m in METRICS if m.level == "pair" and result.metrics[m.name]["available"]]
        ctx.console.result_table(
            "per pair",
            ["group", "content", "style", *pair_metrics],
            [[r["group"], Path(r["content"]).stem, Path(r["style"]).stem, *[_fmt(r[m]) for m in pair_metrics]]
             for r in result.pairs],
        )


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    from quantart_cli.core.io.atomic import atomic_write

    buffer = io.StringIO()
    columns = list(rows[0]) if rows else ["group", "content", "style", "stylized"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    text = buffer.getvalue()
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what="CSV file")


stage = Stage(
    name="evaluate",
    help="Measure stylization: stylize photos x paintings and score them, or score existing outputs.",
    settings=EvaluateSettings,
    run=run,
    description=(
        "Examples: quantart evaluate --content photos/ --style paintings/ --alpha 0,0.5,1   |   "
        "quantart evaluate --manifest outputs/manifest.csv --json   (metrics: docs/evaluate.md)"
    ),
)
