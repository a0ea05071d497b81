"""``quantart stylize``: the main job, a photo restyled after one or more paintings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator

from quantart_cli.core.transfer.options import StylizeOptions
from quantart_cli.plugin import BadInputError, NotFoundError, RunContext, Stage, UsageError, cli_argument, cli_option
from quantart_stages.common import CheckpointReadingSettings, ImageReadingSettings


class StylizeSettings(CheckpointReadingSettings, ImageReadingSettings, StylizeOptions):
    """What to stylize and where to write it; the stylization knobs are :class:`StylizeOptions`' fields."""

    content: list[str] = cli_argument("Content images, folders or globs.", default=[])
    style: list[Path] = cli_option([], "Style (reference) image; repeat to blend several.", short="-s")
    mask: list[Path | None] = cli_option(
        [],
        "Mask for the --style just before it: that painting takes the mask's white fully, its black not at all, "
        "grey partly; paintings without a mask (else the photo) fill the rest (docs/stylize.md, Regions).",
        follows="style",
    )
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
    bit_depth: Literal[8, 16] | None = cli_option(
        None,
        "Bits per channel of the outputs: 16 writes PNG (or TIFF) from the decoder's floats, with no 8-bit step "
        "(JPEG and WebP store 8 and are refused). Default: 8, but --format same keeps a 16-bit input 16-bit.",
    )
    overwrite: bool = cli_option(False, "Redo every output, also those up to date (and replace files quantart "
                                         "did not write).")
    skip_existing: bool = cli_option(
        False, "Keep every output that exists, even one made with another model, style or options."
    )
    json_output: bool = cli_option(False, "Print one JSON line per output with timings.", flag="--json")

    @field_validator("bit_depth", mode="before")
    @classmethod
    def _bit_depth_as_number(cls, value: object) -> object:
        # The command line and QUANTART_BIT_DEPTH give the choice as text ("16").
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("mask", mode="before")
    @classmethod
    def _no_mask_is_none(cls, masks: object) -> object:
        """An empty entry or ``none`` is a painting without a mask (the lists line up with ``style``)."""
        if isinstance(masks, (list, tuple)):
            return [None if m is None or str(m).strip().lower() in ("", "none") else m for m in masks]
        return masks

    @field_validator("suffix")
    @classmethod
    def _suffix_is_a_name(cls, suffix: str) -> str:
        if "/" in suffix or "\\" in suffix or ".." in suffix:
            raise ValueError("it is added to file names, so it cannot contain '/', '\\' or '..'")
        return suffix

    @model_validator(mode="after")
    def _one_weight_per_style(self) -> StylizeSettings:
        # the engine's own count (torch-free), made with the settings so --print-config and presets see it too
        if self.style_weights is not None and self.style:
            from quantart_cli.core.blend import normalize_weights

            normalize_weights(self.style_weights, len(self.style))
        return self


def naming(settings: StylizeSettings):
    from quantart_cli.core.transfer.files import OutputNaming

    return OutputNaming(out=settings.out, suffix=settings.suffix, format=settings.format,
                        bit_depth=settings.bit_depth)


def open_session(settings, ctx: RunContext):
    """The core stylization session of these settings (``ckpt``, ``continuous_ckpt``, ``device`` and the
    stylization knobs; ``quantart serve`` takes the same ones), its notes told to the user."""
    from quantart_cli.core.transfer.session import StylizeSession

    session = StylizeSession(settings.ckpt, settings.continuous_ckpt, options=StylizeOptions.pick(settings),
                             device=settings.device, trust=settings.trust_checkpoint)
    for note in session.notes:
        ctx.console.info(note)
    return session


def mask_files(settings: StylizeSettings) -> list[Path | None] | None:
    """Each style image's mask (None for one without), or None when no painting has a mask; the counts and the
    blend weights are checked before any file is read."""
    from quantart_cli.core.transfer.masks import check_style_weights

    masks = list(settings.mask)
    if masks and len(masks) != len(settings.style):
        raise UsageError(
            f"`mask` has {len(masks)} entries for {len(settings.style)} style images; give one per style image "
            "(none for a painting without a mask), or give each --mask right after its --style."
        )
    masks = masks if any(m is not None for m in masks) else []
    check_style_weights(settings.style_weights, [m is not None for m in masks] or [False] * len(settings.style))
    return masks or None


def read_masks(paths: list[Path | None] | None, max_pixels: int) -> list | None:
    """The masks as tensors (:func:`~quantart_cli.core.transfer.masks.load_mask`), None where a painting has none."""
    if paths is None:
        return None
    from quantart_cli.core.transfer.masks import load_mask

    return [None if p is None else load_mask(p, max_pixels=max_pixels) for p in paths]


def run(settings: StylizeSettings, ctx: RunContext) -> int:
    if not settings.content:
        raise UsageError("stylize needs at least one content image, folder or glob.")
    if not settings.style:
        raise UsageError("stylize needs --style, a reference painting (repeat --style to blend several).")
    if settings.overwrite and settings.skip_existing:
        raise UsageError("--overwrite redoes every output and --skip-existing keeps every existing one; pick one.")
    masks = mask_files(settings)  # before any file is read

    from quantart_cli.core.data.sources import collect_images, list_notes, with_listing
    from quantart_cli.core.io.images import flattened_transparency, image_to_tensor, load_image
    from quantart_cli.core.transfer.files import check_outputs, is_earlier_output, plan_outputs, stylize_file

    # Everything is checked before anything is decided: inputs, styles, checkpoints, options.
    session = open_session(settings, ctx)
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
    mask_tensors = read_masks(masks, settings.max_pixels)
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
    check_outputs(pairs, [*settings.style, *(m for m in masks or [] if m is not None), *session.checkpoints],
                  names.folder.parent if single_file else names.folder)

    bit_depths = {target: names.bit_depth_of(source, target) for source, target in pairs}
    plan = session.plan(pairs, session.recipe(settings.style, mask_files=masks), overwrite=settings.overwrite,
                        skip_existing=settings.skip_existing, bit_depths=bit_depths)
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
    if not plan.todo:
        return 0

    stylizer = session.stylizer(styles, masks=mask_tensors)
    regions = f" ({sum(m is not None for m in masks)} with a mask)" if masks else ""
    ctx.console.info(
        f"model {session.name} on {session.device}; {len(styles)} style image(s){regions} encoded in "
        f"{session.load_seconds + stylizer.style_seconds:.1f}s"
    )

    failures: list[str] = []
    with ctx.console.progress("stylizing", len(plan.todo), unit="img") as bar:
        for source, target, note in plan.todo:
            record = stylize_file(stylizer, source, target, note, max_pixels=settings.max_pixels,
                                  bit_depth=bit_depths[target])
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
    written = len(plan.todo) - len(failures)
    if len(pairs) > 1:
        ctx.console.info(f"done: {written} written, {len(plan.current)} skipped, {len(failures)} failed")
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
