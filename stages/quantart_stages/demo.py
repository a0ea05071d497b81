"""``quantart demo``: the whole pipeline on the built-in sample images, in minutes on a laptop CPU.

Trains a tiny VQGAN on the sample photos and one on the sample paintings, trains a tiny SGA module
between them (from a latent cache), stylizes every photo after every painting at each ``--alphas`` value,
and writes a contact sheet. Every step is the real stage, run with its ``tiny`` preset: nothing here is
special-cased, so what the demo shows is what the commands do.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from quantart_cli.errors import UsageError
from quantart_cli.plugins import RunContext, Stage
from quantart_cli.settings import StageSettings, cli_option, resolve_settings

DEFAULT_OUT = Path("quantart-demo")


class DemoSettings(StageSettings):
    out: Path | None = cli_option(None, "Folder for everything the demo writes (default: ./quantart-demo, "
                                  "or a numbered sibling if that exists).", short="-o")
    vq_steps: int = cli_option(200, "Training steps of each tiny VQGAN.", ge=1)
    sga_steps: int = cli_option(150, "Training steps of the tiny SGA module.", ge=1)
    alphas: list[float] = cli_option([0.5, 1.0], "Style fidelities to render, e.g. 0.5,1.0.", comma_list=True)
    seed: int = cli_option(23, "Random seed of every training step.")


def _fresh_folder(requested: Path | None) -> Path:
    if requested is not None:
        if requested.exists() and (not requested.is_dir() or any(requested.iterdir())):
            raise UsageError(f"{requested} exists and is not an empty folder; pick another --out.")
        return requested
    candidate, n = DEFAULT_OUT, 1
    while candidate.exists():
        n += 1
        candidate = DEFAULT_OUT.with_name(f"{DEFAULT_OUT.name}-{n}")
    return candidate


def _step_settings(stage: Stage, preset: str | None, flags: dict[str, Any]) -> StageSettings:
    """A sub-stage's settings: its preset and our flags only (the user's QUANTART_* variables do not leak in)."""
    return resolve_settings(stage.settings, stage=stage.presets, preset=preset, flags=flags, environ={}).settings


def run(settings: DemoSettings, ctx: RunContext) -> int:
    import time

    from quantart_cli.samples import CONTENT_DIR, STYLE_DIR
    from quantart_stages import stylize, train_sga, train_vq

    out = _fresh_folder(settings.out)
    console = ctx.console
    _one_thread_on_cpu(settings.device)
    step_ctx = dataclasses.replace(ctx, console=console.results_as_notes())
    photos = sorted(CONTENT_DIR.glob("*.jpg"))
    paintings = sorted(STYLE_DIR.glob("*.jpg"))
    timings: list[tuple[str, float]] = []
    written: list[tuple[str, Path]] = []

    def timed(label: str, work) -> None:
        console.info(f"[{len(timings) + 1}/5] {label}")
        start = time.perf_counter()
        code = work()
        if code:
            raise UsageError(f"the demo step '{label}' failed (exit code {code}).")
        timings.append((label, time.perf_counter() - start))

    common = {"device": settings.device, "seed": settings.seed}
    vq_runs = {"photo": (out / "vq-photo", CONTENT_DIR), "art": (out / "vq-art", STYLE_DIR)}
    for name, (folder, data) in vq_runs.items():
        # As the original fine-tunes its WikiArt VQGAN from the ImageNet one, the art VQGAN starts from the
        # photo VQGAN: the two latent spaces then stay related, which is what the SGA module and alpha rely on.
        init = {"init_from": vq_runs["photo"][0] / "last.pt"} if name == "art" else {}
        vq_settings = _step_settings(train_vq.stage, "tiny", {
            **common, **init, "data": [data], "out": folder, "steps": settings.vq_steps, "sample_every": 0,
            "save_every": settings.vq_steps})
        how = "fine-tuned from the photo VQGAN, " if init else ""
        timed(f"training the {name} VQGAN ({how}{settings.vq_steps} steps on {data.name}/)",
              lambda s=vq_settings: train_vq.run(s, step_ctx))
        written.append((f"{name} VQGAN", folder / "last.pt"))

    train_size = vq_settings.size
    sga_dir = out / "sga"
    sga_settings = _step_settings(train_sga.stage, "tiny", {
        **common, "content_vq": vq_runs["photo"][0] / "last.pt", "style_vq": vq_runs["art"][0] / "last.pt",
        "content_data": [CONTENT_DIR], "style_data": [STYLE_DIR], "out": sga_dir, "cache": out / "latent-cache",
        "steps": settings.sga_steps, "sample_every": 0, "save_every": settings.sga_steps})
    timed(f"training the SGA module ({settings.sga_steps} steps)", lambda: train_sga.run(sga_settings, step_ctx))
    written.append(("style-transfer model", sga_dir / "last.pt"))

    stylized = out / "stylized"
    results: dict[tuple[str, str, float], Path] = {}

    def stylize_all() -> int:
        for painting in paintings:
            for alpha in settings.alphas:
                suffix = f"_{painting.stem}_alpha{alpha:g}"
                # Tiny models trained on 64 px images only know that scale: stylize at the training size.
                s = _step_settings(stylize.stage, None, {
                    "device": settings.device, "content": [str(p) for p in photos], "style": [painting],
                    "ckpt": sga_dir / "last.pt", "alpha": alpha, "out": stylized, "suffix": suffix,
                    "size": train_size, "style_size": train_size})
                code = stylize.run(s, step_ctx)
                if code:
                    return code
                for photo in photos:
                    results[(photo.stem, painting.stem, alpha)] = stylized / f"{photo.stem}{suffix}.png"
        return 0

    timed(f"stylizing {len(photos)} photos x {len(paintings)} paintings x {len(settings.alphas)} alphas",
          stylize_all)
    written.append(("stylized images", stylized))

    sheet = out / "contact_sheet.png"
    timed("drawing the contact sheet", lambda: _contact_sheet(sheet, photos, paintings, settings.alphas, results))
    written.append(("contact sheet", sheet))

    console.table("quantart demo", ["step", "seconds"], [(label, f"{sec:.1f}") for label, sec in timings])
    console.table(None, ["written", "path"], [(what, str(path)) for what, path in written])
    console.result(str(sheet))
    return 0


def _one_thread_on_cpu(device: str) -> None:
    """The demo's models are tiny: on a CPU one thread is as fast as several, and it does not collapse when
    other programs compete for the cores (OpenMP threads then wait on each other). OMP_NUM_THREADS wins."""
    import os

    import torch

    from quantart_cli.devices import resolve_device

    if resolve_device(device).type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def _contact_sheet(path: Path, photos: list[Path], paintings: list[Path], alphas: list[float],
                   results: dict[tuple[str, str, float], Path], tile: int = 192) -> int:
    """One row per (photo, painting): photo | painting | a result per alpha, with a header row of labels."""
    from PIL import Image, ImageDraw

    from quantart_cli.imageio import load_image, save_image_atomic

    header = 28
    columns = ["photo", "painting", *[f"alpha {a:g}" for a in alphas]]
    rows = [(photo, painting) for photo in photos for painting in paintings]
    sheet = Image.new("RGB", (tile * len(columns), header + tile * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(columns):
        draw.text((c * tile + 8, 8), label, fill="black")
    for r, (photo, painting) in enumerate(rows):
        cells = [photo, painting, *[results[(photo.stem, painting.stem, a)] for a in alphas]]
        for c, cell in enumerate(cells):
            image = load_image(cell).resize((tile, tile), Image.Resampling.BICUBIC)
            sheet.paste(image, (c * tile, header + r * tile))
    save_image_atomic(sheet, path)
    return 0


stage = Stage(
    name="demo",
    help="Run the whole pipeline on the built-in samples: train, stylize, contact sheet.",
    settings=DemoSettings,
    run=run,
    description="Example: quantart demo --out demo/   (about 3-5 minutes on a 2-core CPU, no downloads)",
)
