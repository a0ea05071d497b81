"""``quantart stylize``: the main job, a photo restyled after one or more paintings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator

from quantart_cli.core.errors import BadInputError, NotFoundError, UsageError
from quantart_cli.core.options import cli_argument, cli_option
from quantart_cli.core.transfer.options import StylizeOptions
from quantart_cli.shell.plugins import RunContext, Stage
from quantart_stages.common import CheckpointReadingSettings, ImageReadingSettings


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

    @model_validator(mode="after")
    def _weights_match_styles(self) -> StylizeSettings:
        if self.style_weights is not None and self.style and len(self.style_weights) != len(self.style):
            raise ValueError(
                f"--style-weights has {len(self.style_weights)} values for {len(self.style)} --style images"
            )
        return self


def naming(settings: StylizeSettings):
    from quantart_cli.core.transfer.files import OutputNaming

    return OutputNaming(out=settings.out, suffix=settings.suffix, format=settings.format)


def style_checkpoints(settings, ctx: RunContext) -> tuple[Path, Path | None]:
    """The model to stylize with (``--ckpt``, else the built-in model) and the continuous model, only kept for
    ``--visual-fidelity`` below 1 (which needs one). ``quantart serve`` takes the same three settings."""
    ckpt = settings.ckpt
    if ckpt is None:
        from quantart_cli.core.weights import builtin_model_path

        ckpt = builtin_model_path()
    continuous_ckpt = settings.continuous_ckpt
    if settings.visual_fidelity < 1.0 and continuous_ckpt is None:
        raise UsageError(
            f"--visual-fidelity {settings.visual_fidelity:g} needs --continuous-ckpt, a model trained "
            "with `quantart train-sga --continuous`; without one leave --visual-fidelity at 1."
        )
    if settings.visual_fidelity >= 1.0 and continuous_ckpt is not None:
        ctx.console.info("--continuous-ckpt is only used with --visual-fidelity below 1; ignoring it")
        continuous_ckpt = None
    return ckpt, continuous_ckpt


def run(settings: StylizeSettings, ctx: RunContext) -> int:
    if not settings.content:
        raise UsageError("stylize needs at least one content image, folder or glob.")
    if not settings.style:
        raise UsageError("stylize needs --style, a reference painting (repeat --style to blend several).")
    if settings.overwrite and settings.skip_existing:
        raise UsageError("--overwrite redoes every output and --skip-existing keeps every existing one; pick one.")
    ckpt, continuous_ckpt = style_checkpoints(settings, ctx)

    import time

    from quantart_cli.core.data.sources import collect_images, list_notes, with_listing
    from quantart_cli.core.devices import resolve_device
    from quantart_cli.core.io.checkpoint_read import check_kind
    from quantart_cli.core.io.checkpoints import load_model, read_checkpoint_header
    from quantart_cli.core.io.digest import file_sha256
    from quantart_cli.core.io.images import flattened_transparency, image_to_tensor, load_image
    from quantart_cli.core.precision import check_precision, stylize_precision
    from quantart_cli.core.transfer.engine import Stylizer
    from quantart_cli.core.transfer.files import (
        Recipe,
        check_outputs,
        is_earlier_output,
        output_state,
        plan_outputs,
        stylize_file,
    )

    # Everything is checked before anything is decided: inputs, styles, checkpoints, options.
    options = StylizeOptions.pick(settings)
    device = resolve_device(settings.device)
    check_precision(device, options.precision, training=False)
    precision, note = stylize_precision(device, options.precision)
    if note is not None:  # before the recipe: outputs made in fp32 record fp32
        ctx.console.info(note)
        options = options.model_copy(update={"precision": precision})
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
    for path in (ckpt, continuous_ckpt):
        if path is not None:
            check_kind(read_checkpoint_header(path, trust=settings.trust_checkpoint).kind, "style-transfer", Path(path))
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
    protected = [*settings.style, Path(ckpt), *([Path(continuous_ckpt)] if continuous_ckpt else [])]
    check_outputs(pairs, protected, names.folder.parent if single_file else names.folder)

    recipe = Recipe.of(file_sha256(Path(ckpt)), [file_sha256(p) for p in settings.style], options,
                       file_sha256(Path(continuous_ckpt)) if continuous_ckpt is not None else None)
    todo: list[tuple[Path, Path, str]] = []
    current, stale, foreign = [], [], []
    for source, target in pairs:
        note = recipe.note(file_sha256(source))
        state = "missing" if settings.overwrite else output_state(target, note)
        if state == "missing" or state == "stale" and not settings.skip_existing:
            todo.append((source, target, note))
            if state == "stale":
                stale.append(target)
        elif state == "foreign" and not settings.skip_existing:
            foreign.append(target)
        else:
            current.append(target)
    if foreign:
        shown = ", ".join(str(f) for f in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UsageError(
            f"{len(foreign)} output file(s) exist that quantart did not write ({shown}); --overwrite replaces them, "
            "--skip-existing keeps them, or pick another --out."
        )
    if current:
        why = "up to date with this model, style and options"
        if settings.skip_existing:
            why = "already there (--skip-existing)"
        ctx.console.info(f"skipping {len(current)} image(s) {why}; --overwrite redoes them")
    if stale:
        ctx.console.info(f"redoing {len(stale)} image(s) made with another model, style, input or options")
    if not todo:
        return 0

    start = time.perf_counter()
    model = load_model(ckpt, device=device, expected_kind="style-transfer", trust=settings.trust_checkpoint)
    continuous = None
    if continuous_ckpt is not None:
        continuous = load_model(
            continuous_ckpt, device=device, expected_kind="style-transfer", trust=settings.trust_checkpoint
        )
    load_seconds = time.perf_counter() - start
    stylizer = Stylizer(model, styles, options, continuous)
    from quantart_cli.core.weights import BUILTIN_MODEL_NAME

    shown = BUILTIN_MODEL_NAME if settings.ckpt is None else str(ckpt)
    ctx.console.info(
        f"model {shown} on {device}; {len(styles)} style image(s) encoded in "
        f"{load_seconds + stylizer.style_seconds:.1f}s"
    )

    failures: list[str] = []
    with ctx.console.progress("stylizing", len(todo), unit="img") as bar:
        for source, target, note in todo:
            record = stylize_file(stylizer, source, target, note, max_pixels=settings.max_pixels)
            if isinstance(record, str):
                record = with_listing(record, listed.get(source))
                if len(pairs) == 1:
                    raise BadInputError(record)
                ctx.console.warn(record)
                failures.append(record)
            else:
                if record.get("transparency_flattened"):
                    ctx.console.info(f"{source} has transparent pixels: they were filled with white (an output has "
                                     "no transparency)")
                ctx.console.result(json.dumps(record) if settings.json_output else str(target))
            bar.advance()
    written = len(todo) - len(failures)
    if len(pairs) > 1:
        ctx.console.info(f"done: {written} written, {len(current)} skipped, {len(failures)} failed")
    if failures:
        raise BadInputError(
            f"{len(failures)} of {len(pairs)} content images could not be stylized (each named above); "
            f"{written} were written."
        )
    return 0


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
