"""``quantart stylize``: the main job, a photo restyled after one or more paintings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator

from quantart_cli.core.errors import BadInputError, NotFoundError, SaidElsewhere, UsageError
from quantart_cli.core.options import cli_argument, cli_option
from quantart_cli.core.transfer.options import StylizeOptions
from quantart_cli.shell.plugins import RunContext, Stage
from quantart_stages.common import CheckpointReadingSettings, ImageReadingSettings, first_process_context


class StylizeSettings(CheckpointReadingSettings, ImageReadingSettings, StylizeOptions):
    """What to stylize and where to write it; the stylization knobs are :class:`StylizeOptions`' fields."""

    content: list[str] = cli_argument("Content images, folders or globs.", default=[])
    style: list[Path] = cli_option([], "Style (reference) image; repeat to blend several.", short="-s")
    ckpt: Path | None = cli_option(
        None,
        "Style-transfer checkpoint (or set QUANTART_CKPT). Default: the built-in model shipped with quantart, "
        "a small QuantArt model trained on 108 photos and 110 paintings: it takes a painting's palette and "
        "contrast but gives soft, blurry results (scores and limits in docs/model-card.md).",
    )
    continuous_ckpt: Path | None = cli_option(None, "Continuous model (train-sga --continuous) for --visual-fidelity.")
    out: Path | None = cli_option(None, "Output file (one input) or folder.", short="-o")
    suffix: str = cli_option("_stylized", "Appended to each output's file name.")
    format: Literal["png", "jpg", "webp", "same"] = cli_option("png", "Output image format.")
    overwrite: bool = cli_option(False, "Redo every output, also those up to date (and replace files quantart "
                                         "did not write).")
    skip_existing: bool = cli_option(
        False, "Keep every output that exists, even one made with another model, style or options."
    )
    json_output: bool = cli_option(False, "Print one JSON line per output with timings.", flag="--json")

    @field_validator("suffix")
    @classmethod
    def _suffix_is_a_name(cls, suffix: str) -> str:
        if "/" in suffix or "\\" in suffix or ".." in suffix:
            raise ValueError("it is added to file names, so it cannot contain '/', '\\' or '..'")
        return suffix


def naming(settings: StylizeSettings):
    from quantart_cli.core.transfer.files import OutputNaming

    return OutputNaming(out=settings.out, suffix=settings.suffix, format=settings.format)


def open_session(settings, ctx: RunContext, device=None):
    """The core stylization session of these settings (``ckpt``, ``continuous_ckpt``, ``device`` unless another is
    given, and the stylization knobs; ``quantart serve`` takes the same ones), its notes told to the user."""
    from quantart_cli.core.transfer.session import StylizeSession

    session = StylizeSession(settings.ckpt, settings.continuous_ckpt, options=StylizeOptions.pick(settings),
                             device=settings.device if device is None else device, trust=settings.trust_checkpoint)
    for note in session.notes:
        ctx.console.info(note)
    return session


@dataclass
class _Job:
    """What every process decided alike before stylizing: the session, the paintings, the outputs."""

    session: Any
    styles: list
    pairs: list[tuple[Path, Path]]
    plan: Any
    listed: dict


def run(settings: StylizeSettings, ctx: RunContext) -> int:
    from quantart_cli.core import split

    with split.joined() as info:
        return _run(settings, ctx, info)


def _run(settings: StylizeSettings, ctx: RunContext, info) -> int:
    """Under torchrun every process plans alike (rank 0 alone says so), stylizes its share of the outputs and
    counts with the others at the end; a single process has a share of everything."""
    from quantart_cli.core import split

    main = first_process_context(ctx, info)
    with split.together(info):  # all plan before any writes, so no process sees another's new output as current
        job = _plan(settings, main, info)
    if not job.plan.todo:
        return 0
    mine = split.share(job.plan.todo, info.rank, info.world_size)
    if info.enabled:
        main.console.info(f"splitting {len(job.plan.todo)} image(s) across {info.world_size} processes, each with "
                          "its own copy of the model")
    with split.together(info):
        failures = _stylize(settings, ctx, main, job, mine)
    failed = sum(split.gather(len(failures), info))
    written = len(job.plan.todo) - failed
    if len(job.pairs) > 1:
        main.console.info(f"done: {written} written, {len(job.plan.current)} skipped, {failed} failed")
    if failed:
        if not info.is_main:
            raise SaidElsewhere()
        raise BadInputError(
            f"{failed} of {len(job.pairs)} content images could not be stylized (each named above); "
            f"{written} were written."
        )
    return 0


def _plan(settings: StylizeSettings, ctx: RunContext, info) -> _Job:
    if not settings.content:
        raise UsageError("stylize needs at least one content image, folder or glob.")
    if not settings.style:
        raise UsageError("stylize needs --style, a reference painting (repeat --style to blend several).")
    if settings.overwrite and settings.skip_existing:
        raise UsageError("--overwrite redoes every output and --skip-existing keeps every existing one; pick one.")
    from quantart_cli.core.nn.attention import normalize_weights
    from quantart_cli.core.split import process_device

    normalize_weights(settings.style_weights, len(settings.style))  # before any file is read

    from quantart_cli.core.data.sources import collect_images, list_notes
    from quantart_cli.core.io.images import flattened_transparency, image_to_tensor, load_image
    from quantart_cli.core.transfer.files import check_outputs, is_earlier_output, plan_outputs

    # Everything is checked before anything is decided: inputs, styles, checkpoints, options.
    session = open_session(settings, ctx, process_device(settings.device, info))
    listed: dict = {}
    inputs = collect_images(settings.content, listed=listed)
    for note in list_notes(listed):
        ctx.console.info(note)
    styles = []
    for path in settings.style:
        painting = load_image(path, max_pixels=settings.max_pixels)
        if flattened_transparency(painting):
            ctx.console.info(f"{path} has transparent pixels: the model sees them filled with white")
        styles.append(image_to_tensor(painting))
    names = naming(settings)
    earlier = [p for p in inputs if is_earlier_output(names, p)]
    if earlier:
        ctx.console.info(
            f"leaving out {len(earlier)} input(s) that are outputs of an earlier run "
            f"(names ending in {settings.suffix!r} in the output folder or below it)"
        )
        inputs = [p for p in inputs if p not in earlier]
        if not inputs:
            raise NotFoundError("Every input is an output of an earlier stylize run; nothing left to stylize.")
    roots = [Path(item) for item in settings.content if Path(item).is_dir()]
    pairs = plan_outputs(names, inputs, roots)
    single_file = len(pairs) == 1 and pairs[0][1] == names.folder  # --out names the output file itself
    check_outputs(pairs, [*settings.style, *session.checkpoints], names.folder.parent if single_file else names.folder)

    plan = session.plan(pairs, session.recipe(settings.style), overwrite=settings.overwrite,
                        skip_existing=settings.skip_existing)
    if plan.foreign:
        shown = ", ".join(str(f) for f in plan.foreign[:3]) + (", ..." if len(plan.foreign) > 3 else "")
        raise UsageError(
            f"{len(plan.foreign)} output file(s) exist that quantart did not write ({shown}); --overwrite replaces "
            "them, --skip-existing keeps them, or pick another --out."
        )
    if plan.current:
        why = "up to date with this model, style and options"
        if settings.skip_existing:
            why = "already there (--skip-existing)"
        ctx.console.info(f"skipping {len(plan.current)} image(s) {why}; --overwrite redoes them")
    if plan.stale:
        ctx.console.info(f"redoing {len(plan.stale)} image(s) made with another model, style, input or options")
    return _Job(session, styles, pairs, plan, listed)


def _stylize(settings: StylizeSettings, ctx: RunContext, main: RunContext, job: _Job, todo: list) -> list[str]:
    """Stylize this process's ``todo`` (its lines through ``ctx``, notes and progress through ``main``); the
    sentences of the inputs that failed. The model is loaded here, once, by a process that has work."""
    if not todo:
        return []
    from quantart_cli.core.data.sources import with_listing
    from quantart_cli.core.transfer.files import stylize_file

    session = job.session
    stylizer = session.stylizer(job.styles)
    main.console.info(
        f"model {session.name} on {session.device}; {len(job.styles)} style image(s) encoded in "
        f"{session.load_seconds + stylizer.style_seconds:.1f}s"
    )

    failures: list[str] = []
    with main.console.progress("stylizing", len(todo), unit="img") as bar:
        for source, target, note in todo:
            record = stylize_file(stylizer, source, target, note, max_pixels=settings.max_pixels)
            if isinstance(record, str):
                record = with_listing(record, job.listed.get(source))
                if len(job.pairs) == 1:
                    raise BadInputError(record)
                ctx.console.warn(record)
                failures.append(record)
            else:
                if record.get("transparency_flattened"):
                    ctx.console.info(f"{source} has transparent pixels: they were filled with white (an output has "
                                     "no transparency)")
                ctx.console.result(json.dumps(record) if settings.json_output else str(target))
            bar.advance()
    return failures


stage = Stage(
    name="stylize",
    help="Stylize photos after a painting (the main job).",
    settings=StylizeSettings,
    run=run,
    description=(
        "Example: quantart stylize photo.jpg --style monet.jpg --alpha 0.8   (the built-in model; --ckpt MODEL.pt "
        "picks another, e.g. an imported original release checkpoint)"
    ),
)
