"""``quantart demo``: stylization at a glance with the built-in model, and optionally the whole pipeline.

By default the demo stylizes the sample photos after the eight public-domain paintings that ship with the
package (none of them seen in training) with the built-in model, plus an alpha strip (0, 0.5, 1), and
writes one contact sheet. ``--train`` also runs every training stage on the samples with the ``tiny``
presets (a photo VQGAN, an art VQGAN fine-tuned from it, an SGA module from a latent cache) and adds that
model's results to the sheet, labelled as such: it shows that each stage runs, not what a trained model
does. Training runs the real stages (``train-vq``, ``train-sga``); stylizing runs the stylization session
``quantart stylize`` runs (:class:`~quantart_cli.core.transfer.session.StylizeSession`), with each model loaded
once, so the outputs are the very files ``quantart stylize`` would write.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from quantart_cli.plugin import BadInputError, RunContext, Stage, StageSettings, UsageError, cli_option
from quantart_cli.shell.settings import resolve_settings

DEFAULT_OUT = Path("quantart-demo")
STRIP_ALPHAS = (0.0, 0.5, 1.0)
#: The built-in model stylizes the samples at this size by default (the 256 px photos enlarged): strokes show there.
BUILTIN_SIZE = 512
#: Paintings of the close-up sheet, by file stem, when present: the strongest brushwork of the samples.
CLOSEUP_PAINTINGS = ("vangogh_starry_night_rhone", "hokusai_great_wave")


class DemoSettings(StageSettings):
    out: Path | None = cli_option(None, "Folder for everything the demo writes (default: ./quantart-demo, "
                                  "or a numbered sibling if that exists).", short="-o")
    train: bool = cli_option(False, "Also train tiny models on the samples (every stage runs; a few minutes) "
                             "and show their results on the sheet.")
    vq_steps: int = cli_option(200, "With --train: training steps of each tiny VQGAN.", ge=1)
    sga_steps: int = cli_option(150, "With --train: training steps of the tiny SGA module.", ge=1)
    alphas: list[float] = cli_option(list(STRIP_ALPHAS), "Style fidelities of the alpha strip, e.g. 0,0.5,1.",
                                     comma_list=True)
    seed: int = cli_option(23, "With --train: random seed of every training step.")
    size: int = cli_option(BUILTIN_SIZE, "Longer side, in pixels, of the built-in model's results and the close-up "
                           "(256: a quicker look, about a quarter of the time).", ge=32)


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
    return resolve_settings(stage.settings, stage=stage.name, preset=preset, flags=flags, environ={}).settings


@dataclasses.dataclass
class _Panel:
    """One model's results: ``images[(photo stem, painting stem, alpha)]`` -> file."""

    title: str
    images: dict[tuple[str, str, float], Path] = dataclasses.field(default_factory=dict)


def run(settings: DemoSettings, ctx: RunContext) -> int:
    import time

    from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR, STYLE_DIR

    for alpha in settings.alphas:
        if not 0.0 <= alpha <= 1.0:
            raise UsageError(f"--alphas values must lie in [0, 1], got {alpha:g}")
    out = _fresh_folder(settings.out)
    console = ctx.console
    _one_thread_on_cpu(settings.device)
    step_ctx = dataclasses.replace(ctx, console=console.results_as_notes())
    photos = sorted(CONTENT_DIR.glob("*.jpg"))
    paintings = sorted(PAINTINGS_DIR.glob("*.jpg"))
    strip_painting = paintings[0]
    timings: list[tuple[str, float]] = []
    written: list[tuple[str, Path]] = []
    # stylize with the built-in model, [--train: two VQGANs, the SGA module, stylize with it], the two sheets
    total_steps = 1 + (4 if settings.train else 0) + 2

    def timed(label: str, work) -> None:
        console.info(f"[{len(timings) + 1}/{total_steps}] {label}")
        start = time.perf_counter()
        code = work()
        if code:
            raise UsageError(f"the demo step '{label}' failed (exit code {code}).")
        timings.append((label, time.perf_counter() - start))

    builtin = _Panel("Built-in model (quantart_cli/core/weights/builtin.safetensors); none of these paintings "
                     "was in its training set")
    count = len(photos) * (len(paintings) + len([a for a in settings.alphas if a != 1.0]))
    timed(f"stylizing {len(photos)} photos after {len(paintings)} paintings and an alpha strip with the built-in "
          f"model ({count} images)",
          lambda: _stylize(None, settings, out / "stylized", builtin, photos, paintings, strip_painting,
                           settings.size))
    written.append(("stylized images (built-in model)", out / "stylized"))
    panels = [builtin]

    if settings.train:
        tiny = _train_tiny(settings, step_ctx, out, timed, written, CONTENT_DIR, STYLE_DIR)
        tiny_panel = _Panel(f"Tiny model trained by this demo on the 4 sample images ({settings.vq_steps} + "
                            f"{settings.sga_steps} steps): a pipeline check, not a stylizer")
        train_size = 64  # the tiny presets' training size: such models only know that scale
        timed("stylizing with the tiny model",
              lambda: _stylize(tiny, settings, out / "stylized-tiny", tiny_panel, photos, paintings[:2],
                               strip_painting, train_size))
        written.append(("stylized images (tiny model)", out / "stylized-tiny"))
        panels.append(tiny_panel)

    sheet = out / "contact_sheet.png"
    timed("drawing the contact sheet",
          lambda: _contact_sheet(sheet, photos, paintings, strip_painting, settings.alphas, panels))
    written.append(("contact sheet", sheet))
    closeup = out / "closeup.png"
    chosen = [p for p in paintings if p.stem in CLOSEUP_PAINTINGS] or paintings[:2]
    timed(f"drawing the close-up sheet ({settings.size} px)",
          lambda: _closeup_sheet(closeup, photos, chosen, builtin, settings.size))
    written.append((f"close-up at {settings.size} px", closeup))

    console.table("quantart demo", ["step", "seconds"], [(label, f"{sec:.1f}") for label, sec in timings])
    console.table(None, ["written", "path"], [(what, str(path)) for what, path in written])
    console.result(str(sheet))
    return 0


def _stylize(ckpt: Path | None, settings: DemoSettings, folder: Path, panel: _Panel, photos: list[Path],
             paintings: list[Path], strip_painting: Path, size: int) -> int:
    """Every photo after each painting at alpha 1 and after the strip's painting at the strip's alphas, photos and
    paintings at ``size`` px, written as ``quantart stylize`` writes them, by one stylization session (``ckpt``
    None: the built-in model, loaded once for all)."""
    from quantart_cli.core.io.images import image_to_tensor, load_image
    from quantart_cli.core.transfer.files import OutputNaming, plan_outputs, stylize_file
    from quantart_cli.core.transfer.session import StylizeSession

    session = StylizeSession(ckpt, device=settings.device)
    jobs = [(p, 1.0) for p in paintings] + [(strip_painting, a) for a in settings.alphas if a != 1.0]
    for painting, alpha in jobs:
        suffix = f"_{painting.stem}_alpha{alpha:g}"
        options = session.with_options(alpha=alpha, size=size, style_size=size)
        plan = session.plan(plan_outputs(OutputNaming(out=folder, suffix=suffix), photos),
                            session.recipe([painting], options))
        stylizer = session.stylizer([image_to_tensor(load_image(painting))], options)
        for source, target, note in plan.todo:
            record = stylize_file(stylizer, source, target, note)
            if isinstance(record, str):
                raise BadInputError(record)
        for photo in photos:
            panel.images[(photo.stem, painting.stem, alpha)] = folder / f"{photo.stem}{suffix}.png"
    return 0


def _train_tiny(settings: DemoSettings, step_ctx: RunContext, out: Path, timed, written, content_dir: Path,
                style_dir: Path) -> Path:
    """Train the tiny photo VQGAN, the art VQGAN fine-tuned from it, and the SGA module; returns the model."""
    from quantart_stages import train_sga, train_vq

    common = {"device": settings.device, "seed": settings.seed}
    vq_runs = {"photo": (out / "vq-photo", content_dir), "art": (out / "vq-art", style_dir)}
    for name, (folder, data) in vq_runs.items():
        # As the original fine-tunes its WikiArt VQGAN from the ImageNet one, the art VQGAN starts from the
        # photo VQGAN: the two latent spaces then stay related, which is what the SGA module and alpha rely on.
        init = {"init_from": vq_runs["photo"][0] / "last.pt"} if name == "art" else {}
        vq_settings = _step_settings(train_vq.stage, "tiny", {
            **common, **init, "data": [data], "out": folder, "steps": settings.vq_steps, "sample_every": 0,
            "save_every": settings.vq_steps})
        how = "fine-tuned from the photo VQGAN, " if init else ""
        timed(f"training the tiny {name} VQGAN ({how}{settings.vq_steps} steps on {data.name}/)",
              lambda s=vq_settings: train_vq.run(s, step_ctx))
        written.append((f"tiny {name} VQGAN", folder / "last.pt"))

    sga_dir = out / "sga"
    sga_settings = _step_settings(train_sga.stage, "tiny", {
        **common, "content_vq": vq_runs["photo"][0] / "last.pt", "style_vq": vq_runs["art"][0] / "last.pt",
        "content_data": [content_dir], "style_data": [style_dir], "out": sga_dir, "cache": out / "latent-cache",
        "steps": settings.sga_steps, "sample_every": 0, "save_every": settings.sga_steps})
    timed(f"training the tiny SGA module ({settings.sga_steps} steps)", lambda: train_sga.run(sga_settings, step_ctx))
    written.append(("tiny style-transfer model", sga_dir / "last.pt"))
    return sga_dir / "last.pt"


def _one_thread_on_cpu(device: str) -> None:
    """The demo's models are small: on a CPU one thread is nearly as fast as several, and it does not collapse
    when other programs compete for the cores (OpenMP threads then wait on each other). OMP_NUM_THREADS wins."""
    import os

    import torch

    from quantart_cli.core.devices import resolve_device

    if resolve_device(device).type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def _label(name: str) -> str:
    return name.replace("_", " ")


def _contact_sheet(path: Path, photos: list[Path], paintings: list[Path], strip_painting: Path,
                   alphas: list[float], panels: list[_Panel], tile: int = 160) -> int:
    """Per panel: a title, a header row of the paintings, one row per photo (the photo, then its result after
    each painting at alpha 1), and an alpha strip (photo, the strip's alphas, the painting)."""
    from PIL import Image, ImageDraw

    from quantart_cli.core.io.images import load_image, save_image_atomic

    title_h, label_h, gap = 26, 18, 12
    strip = list(alphas)
    rows = 1 + 2 * len(photos)  # per panel: header, photo rows, alpha-strip rows
    panel_height = title_h + rows * (tile + label_h) + gap
    columns = 1 + max(len(paintings), len(strip) + 1)
    sheet = Image.new("RGB", (tile * columns, panel_height * len(panels)), "white")
    draw = ImageDraw.Draw(sheet)

    def cell(source: Path, col: int, y: int, label: str) -> None:
        image = load_image(source)
        scale = tile / max(image.size)  # fit the cell, enlarging small results (the tiny model's 64 px)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BICUBIC)
        sheet.paste(image, (col * tile + (tile - image.width) // 2, y + (tile - image.height) // 2))
        draw.text((col * tile + 4, y + tile + 3), label[:26], fill="black")

    y = 0
    for panel in panels:
        draw.text((6, y + 7), panel.title, fill="black")
        y += title_h
        used = [p for p in paintings if any(key[1] == p.stem for key in panel.images)]
        for c, painting in enumerate(used, start=1):
            cell(painting, c, y, _label(painting.stem))
        y += tile + label_h
        for photo in photos:
            cell(photo, 0, y, f"photo {photo.stem}")
            for c, painting in enumerate(used, start=1):
                cell(panel.images[(photo.stem, painting.stem, 1.0)], c, y, "alpha 1")
            y += tile + label_h
        for photo in photos:
            cell(photo, 0, y, f"photo {photo.stem}")
            for c, alpha in enumerate(strip, start=1):
                cell(panel.images[(photo.stem, strip_painting.stem, alpha)], c, y, f"alpha {alpha:g}")
            cell(strip_painting, len(strip) + 1, y, _label(strip_painting.stem))
            y += tile + label_h
        y += gap
    save_image_atomic(sheet, path)
    return 0


def _closeup_sheet(path: Path, photos: list[Path], paintings: list[Path], panel: _Panel, tile: int) -> int:
    """One row per photo and painting: the photo, the painting and the built-in model's result at alpha 1, each
    at ``tile`` px, so the strokes can be seen."""
    from PIL import Image

    from quantart_cli.core.io.images import load_image, save_image_atomic

    rows = [(photo, painting) for photo in photos for painting in paintings]
    sheet = Image.new("RGB", (3 * tile, len(rows) * tile), "white")
    for r, (photo, painting) in enumerate(rows):
        for c, source in enumerate((photo, painting, panel.images[(photo.stem, painting.stem, 1.0)])):
            image = load_image(source)
            scale = tile / max(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BICUBIC)
            sheet.paste(image, (c * tile + (tile - image.width) // 2, r * tile + (tile - image.height) // 2))
    save_image_atomic(sheet, path)
    return 0


stage = Stage(
    name="demo",
    help="Stylize the built-in samples with the built-in model and write a contact sheet (--train: every stage).",
    settings=DemoSettings,
    run=run,
    description="Example: quantart demo --out demo/   (under a minute on a 2-core CPU; --train adds a few minutes)",
)
