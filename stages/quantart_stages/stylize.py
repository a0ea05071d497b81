"""``quantart stylize``: the main job, a photo restyled after one or more paintings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator, model_validator

from quantart_cli.core.errors import SaidElsewhere
from quantart_cli.core.transfer.options import StylizeOptions
from quantart_cli.plugin import BadInputError, NotFoundError, RunContext, Stage, UsageError, cli_argument, cli_option
from quantart_stages.common import CheckpointReadingSettings, ImageReadingSettings, first_process_context


class StylizeSettings(CheckpointReadingSettings, ImageReadingSettings, StylizeOptions):
    """What to stylize and where to write it; the stylization knobs are :class:`StylizeOptions`' fields."""

    content: list[str] = cli_argument(
        "Content images, videos (.mp4, .mov, .mkv, .webm, animated .gif), folders or globs.", default=[]
    )
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
        "a small QuantArt model trained on 108 photos and 110 paintings: it paints broad strokes in the painting's "
        "palette and loses small details (scores and limits in docs/model-card.md).",
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
    stability: float = cli_option(
        0.6,  # quantart_cli.core.transfer.video.DEFAULT_STABILITY (not imported here: it needs torch)
        "Videos: how much of the previous output frame a still part of the picture keeps (0: frames stylized one "
        "by one, which flickers); moving parts follow the new frame (docs/video.md).",
        ge=0.0,
        le=0.95,
    )

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
    def _masks_and_weights_fit_the_styles(self) -> StylizeSettings:
        # checked with the settings, so --print-config and presets see it too (torch-free)
        from quantart_cli.core.blend import check_style_weights

        if self.mask and len(self.mask) != len(self.style):
            raise UsageError(
                f"`mask` has {len(self.mask)} entries for {len(self.style)} style images; give one per style image "
                "(none for a painting without a mask), or give each --mask right after its --style."
            )
        if self.style:
            check_style_weights(self.style_weights, [m is not None for m in self.mask] or [False] * len(self.style))
        return self


def naming(settings: StylizeSettings):
    from quantart_cli.core.transfer.files import OutputNaming

    return OutputNaming(out=settings.out, suffix=settings.suffix, format=settings.format,
                        bit_depth=settings.bit_depth)


def open_session(settings, ctx: RunContext, device=None):
    """The core stylization session of these settings (``ckpt``, ``continuous_ckpt``, ``device`` unless another is
    given, and the stylization knobs; ``quantart serve`` takes the same ones), its notes told to the user."""
    from quantart_cli.core.transfer.session import StylizeSession

    session = StylizeSession(settings.ckpt, settings.continuous_ckpt, options=StylizeOptions.pick(settings),
                             device=settings.device if device is None else device, trust=settings.trust_checkpoint)
    for note in session.notes:
        ctx.console.info(note)
    return session


def mask_files(settings: StylizeSettings) -> list[Path | None] | None:
    """Each style image's mask (None for one without), or None when no painting has a mask (the settings have
    checked that the masks and the blend weights fit the styles)."""
    masks = list(settings.mask)
    return masks if any(m is not None for m in masks) else None


def read_masks(paths: list[Path | None] | None, max_pixels: int) -> list | None:
    """The masks as tensors (:func:`~quantart_cli.core.transfer.masks.load_mask`), None where a painting has none."""
    if paths is None:
        return None
    from quantart_cli.core.transfer.masks import load_mask

    return [None if p is None else load_mask(p, max_pixels=max_pixels) for p in paths]


@dataclass
class _Job:
    """What every process decided alike before stylizing: the session, the paintings, the outputs."""

    session: Any
    styles: list
    pairs: list[tuple[Path, Path]]
    plan: Any
    listed: dict
    masks: list | None  # the masks as tensors, None where a painting has none (None: no painting has one)
    bit_depths: dict[Path, int]  # per output


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
    from quantart_cli.core.split import process_device

    masks = mask_files(settings)

    from quantart_cli.core.data.sources import collect_images, list_notes
    from quantart_cli.core.io.images import IMAGE_EXTENSIONS, flattened_transparency, image_to_tensor, load_image
    from quantart_cli.core.io.video import VIDEO_EXTENSIONS, is_video, require_av
    from quantart_cli.core.transfer.files import check_outputs, is_earlier_output, plan_outputs

    # Everything is checked before anything is decided: inputs, styles, checkpoints, options.
    session = open_session(settings, ctx, process_device(settings.device, info))
    listed: dict = {}
    inputs = collect_images(settings.content, listed=listed, extensions=IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
    videos = [p for p in inputs if is_video(p)]
    if videos:
        require_av(videos[0])  # one sentence naming the extra, before any work
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
                        skip_existing=settings.skip_existing, bit_depths=bit_depths,
                        video={"stability": settings.stability})
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
    return _Job(session, styles, pairs, plan, listed, mask_tensors, bit_depths)


def _stylize(settings: StylizeSettings, ctx: RunContext, main: RunContext, job: _Job, todo: list) -> list[str]:
    """Stylize this process's ``todo`` (its lines through ``ctx``, notes and progress through ``main``); the
    sentences of the inputs that failed. The model is loaded here, once, by a process that has work."""
    if not todo:
        return []
    from quantart_cli.core.data.sources import with_listing
    from quantart_cli.core.io.video import is_video
    from quantart_cli.core.transfer.files import stylize_file
    from quantart_cli.core.transfer.video import stylize_video_file

    session = job.session
    stylizer = session.stylizer(job.styles, masks=job.masks)
    regions = f" ({sum(m is not None for m in job.masks)} with a mask)" if job.masks else ""
    main.console.info(
        f"model {session.name} on {session.device}; {len(job.styles)} style image(s){regions} encoded in "
        f"{session.load_seconds + stylizer.style_seconds:.1f}s"
    )

    # With videos the bar counts frames (an image is one), so its rate and ETA are per frame.
    clips = {source: _frame_count(source) for source, _, _ in todo if is_video(source)}
    total = sum(max(frames, 1) for frames in clips.values()) + len(todo) - len(clips)
    failures: list[str] = []
    with main.console.progress("stylizing", total, unit="frame" if clips else "img") as bar:
        for source, target, note in todo:
            if source in clips:
                record = stylize_video_file(stylizer, source, target, note, stability=settings.stability,
                                            on_frame=bar.advance)
            else:
                record = stylize_file(stylizer, source, target, note, max_pixels=settings.max_pixels,
                                      bit_depth=job.bit_depths[target])
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
            if source not in clips:
                bar.advance()
    return failures


def _frame_count(source: Path) -> int:
    """The clip's frame count for the progress bar (0 when unreadable: stylizing it says why)."""
    from quantart_cli.core.io.video import video_info
    from quantart_cli.plugin import QuantartError

    try:
        return video_info(source).frames
    except QuantartError:
        return 0


stage = Stage(
    name="stylize",
    help="Stylize photos after a painting (the main job).",
    settings=StylizeSettings,
    run=run,
    description=(
        "Example: quantart stylize photo.jpg --style monet.jpg --alpha 0.8   (the built-in model; --ckpt MODEL.pt "
        "picks another, e.g. an imported original release checkpoint). Videos too: quantart stylize clip.mp4 "
        "--style monet.jpg --out clip_art.mp4"
    ),
)
