"""Stylizing image files: where each output goes, whether it is up to date, one file in and out.

The stylize stage collects the inputs, plans the outputs (:func:`plan_outputs`: a folder's subfolders are kept),
decides which are up to date from the *recipe* stored in each output (:class:`Recipe`: the model, the style
images, the input and every knob that changes pixels, as SHA-256s and values), builds a
:class:`~quantart_cli.core.transfer.engine.Stylizer` and walks the rest through :func:`stylize_file`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from quantart_cli.core.errors import QuantartError, UsageError
from quantart_cli.core.io.images import (
    SAVE_FORMATS,
    SIXTEEN_BIT_FORMATS,
    BitDepth,
    flattened_transparency,
    image_bit_depth,
    image_to_tensor,
    load_image,
    read_image_note,
    save_image_atomic,
)
from quantart_cli.core.io.limits import DEFAULT_MAX_PIXELS
from quantart_cli.core.io.video import VIDEO_EXTENSIONS, is_video, read_video_note
from quantart_cli.core.transfer.options import StylizeOptions

if TYPE_CHECKING:
    from quantart_cli.core.transfer.engine import Stylizer

__all__ = [
    "DEFAULT_OUT",
    "OutputNaming",
    "Recipe",
    "check_outputs",
    "is_earlier_output",
    "output_state",
    "plan_outputs",
    "stylize_file",
]

#: Knobs that change speed or memory only, never the pixels: changing them leaves outputs up to date.
PERFORMANCE_ONLY = frozenset({"tile_memory", "query_chunk_size"})

#: Knobs added after outputs started carrying recipes: recorded only when they differ from these defaults,
#: so outputs written before a knob existed stay up to date.
LATER_KNOBS: dict[str, Any] = {"precision": "fp32"}

#: Where outputs go when no ``--out`` is given.
DEFAULT_OUT = Path("stylized")

OutputFormat = Literal["png", "jpg", "webp", "same"]


@dataclass(frozen=True)
class OutputNaming:
    """How outputs are named: ``out`` (a folder, or one file), ``suffix`` after the input's stem, the format, and
    the bits per channel (``bit_depth``; None: 8, but ``format="same"`` keeps a 16-bit input 16-bit)."""

    out: Path | None = None
    suffix: str = "_stylized"
    format: OutputFormat = "png"
    bit_depth: BitDepth | None = None

    @property
    def folder(self) -> Path:
        return self.out or DEFAULT_OUT

    def extension(self, source: Path) -> str:
        """``.png`` etc.; ``same`` keeps the input's suffix when it can be written, else PNG. A video keeps its
        container (``.mp4`` stays ``.mp4``) whatever the format."""
        if is_video(source):
            return source.suffix.lower()
        if self.format == "same":
            suffix = source.suffix.lower()
            return suffix if suffix in SAVE_FORMATS else ".png"
        return "." + self.format

    def bit_depth_of(self, source: Path, target: Path) -> BitDepth:
        """Bits per channel of the output ``target`` of ``source``: ``bit_depth`` when set, else 16 for a 16-bit
        PNG or TIFF input under ``format="same"`` (its output has its format), else 8. ``bit_depth=16`` with an
        output that stores 8 bits per channel (JPEG, WebP, BMP) is refused in one sentence."""
        if target.suffix.lower() in VIDEO_EXTENSIONS and is_video(source):
            if self.bit_depth == 16:
                raise UsageError(f"`bit_depth=16` makes images; the video {target} is written with 8 bits per channel.")
            return 8
        kind = SAVE_FORMATS.get(target.suffix.lower())
        if self.bit_depth == 16 and kind not in SIXTEEN_BIT_FORMATS:
            label = "WebP" if kind == "WEBP" else kind
            raise UsageError(
                f"`bit_depth=16` needs PNG or TIFF outputs, but {target} would be a {label}, which stores 8 bits per "
                "channel; use `format=png` (or an `out` file ending in .png or .tif)."
            )
        if self.bit_depth is not None:
            return self.bit_depth
        if self.format == "same" and kind in SIXTEEN_BIT_FORMATS and image_bit_depth(source) == 16:
            return 16
        return 8


def plan_outputs(naming: OutputNaming, inputs: list[Path], roots: Sequence[Path] = ()) -> list[tuple[Path, Path]]:
    """(input, output) pairs: the input's name plus the suffix in the output folder (or ``out`` itself when it
    names one image file). An input found inside one of ``roots`` (the folders given as content) keeps its
    subfolder under the output folder, so equal names in different subfolders do not collide; two inputs that
    would still write the same file are refused with one sentence."""
    out = naming.folder
    if (out.suffix.lower() in SAVE_FORMATS or out.suffix.lower() in VIDEO_EXTENSIONS) and not out.is_dir():
        if len(inputs) != 1:
            raise UsageError(
                f"`out={out}` names one file but there are {len(inputs)} content images; give a folder instead."
            )
        video_in, video_out = is_video(inputs[0]), out.suffix.lower() in VIDEO_EXTENSIONS
        if video_in and out.suffix.lower() != inputs[0].suffix.lower():
            raise UsageError(f"`out={out}` must keep the video's container, {inputs[0].suffix.lower()}, like "
                             f"{inputs[0]}; name it ...{inputs[0].suffix.lower()}.")
        if video_out and not video_in:
            raise UsageError(f"`out={out}` names a video but {inputs[0]} is a photo; name an image file instead.")
        return [(inputs[0], out)]
    resolved_roots = [r.resolve() for r in roots]
    pairs: list[tuple[Path, Path]] = []
    claimed: dict[Path, Path] = {}
    for source in inputs:
        target = out / _subfolder(source, resolved_roots) / f"{source.stem}{naming.suffix}{naming.extension(source)}"
        if target in claimed:
            raise UsageError(
                f"{source} and {claimed[target]} would both write {target}; stylize them into different `out` folders."
            )
        claimed[target] = source
        pairs.append((source, target))
    return pairs


def _subfolder(source: Path, roots: Sequence[Path]) -> Path:
    resolved = source.resolve()
    for root in roots:
        try:
            return resolved.parent.relative_to(root)
        except ValueError:
            continue
    return Path()


@dataclass(frozen=True)
class Recipe:
    """What makes an output: SHA-256 of the model (and continuous model), of each style image (and its mask) and
    of the input, the blend weights and every knob that changes pixels. Stored as JSON inside each output (beside a
    BMP, see :func:`~quantart_cli.core.io.images.note_sidecar`)."""

    model: str
    styles: tuple[str, ...]
    options: dict[str, Any] = field(hash=False)
    continuous_model: str | None = None
    #: SHA-256 of each style image's mask (None: no mask); recorded only when some painting has one, so outputs
    #: made before masks existed stay up to date.
    masks: tuple[str | None, ...] | None = None

    @classmethod
    def of(cls, model: str, styles: Sequence[str], options: StylizeOptions, continuous_model: str | None,
           masks: Sequence[str | None] | None = None) -> Recipe:
        knobs = options.model_dump(mode="json", exclude=set(PERFORMANCE_ONLY))
        for name, default in LATER_KNOBS.items():
            if knobs.get(name) == default:
                del knobs[name]
        masks = tuple(masks) if masks is not None and any(m is not None for m in masks) else None
        return cls(model=model, styles=tuple(styles), options=knobs, continuous_model=continuous_model, masks=masks)

    def note(self, input_sha256: str, bit_depth: BitDepth = 8, video: dict[str, Any] | None = None) -> str:
        """The text stored in the output: this recipe plus the input's SHA-256 and, for a 16-bit output, its
        ``bit_depth`` (absent at 8 bits, so outputs written before 16-bit ones existed stay up to date), as
        canonical JSON; masks only when a painting has one; ``video``, a video's own knobs (its temporal
        stability), only for a video."""
        record: dict[str, Any] = {"recipe": 1, "model": self.model, "continuous_model": self.continuous_model,
                                  "styles": list(self.styles), "input": input_sha256, "options": self.options}
        if self.masks is not None:
            record["masks"] = list(self.masks)
        if bit_depth != 8:
            record["bit_depth"] = bit_depth
        if video is not None:
            record["video"] = video
        return json.dumps(record, sort_keys=True, separators=(",", ":"))


OutputState = Literal["missing", "current", "stale", "foreign"]


def output_state(target: Path, note: str) -> OutputState:
    """``missing``; ``current`` (made by this very recipe from this input); ``stale`` (made by quantart from
    another recipe or input: redo it); ``foreign`` (a file quantart did not write: leave it unless told)."""
    if not target.exists():
        return "missing"
    stored = read_video_note(target) if target.suffix.lower() in VIDEO_EXTENSIONS else read_image_note(target)
    if stored is None:
        return "foreign"
    try:
        json.loads(stored)
    except ValueError:
        return "foreign"
    return "current" if stored == note else "stale"


def check_outputs(pairs: Sequence[tuple[Path, Path]], protected: Sequence[Path], out: Path) -> None:
    """Outputs stay inside ``out`` (or are ``out`` itself) and never land on a file the run reads (an input, a
    style image, a checkpoint): refused in one sentence, ``--overwrite`` or not."""
    folder = out.resolve()
    reads = {p.resolve(): p for p in protected} | {source.resolve(): source for source, _ in pairs}
    for _, target in pairs:
        resolved = target.resolve()
        if resolved in reads:
            raise UsageError(
                f"{target} would overwrite {reads[resolved]}, which this run reads; pick another `out` or `suffix`."
            )
        if resolved != folder and folder not in resolved.parents:
            raise UsageError(f"{target} lies outside the output folder {out}; `suffix` cannot contain a path.")


def is_earlier_output(naming: OutputNaming, source: Path) -> bool:
    """An input that a previous run wrote (a folder given as both input and ``--out``): not stylized again. Its
    name ends in the suffix and it lies in the output folder or, since inputs keep their subfolders, below it."""
    if not naming.suffix or not source.stem.endswith(naming.suffix):
        return False
    folder = naming.folder.resolve()
    parent = source.parent.resolve()
    return parent == folder or folder in parent.parents


def stylize_file(
    stylizer: Stylizer,
    source: Path,
    target: Path,
    note: str | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    bit_depth: BitDepth = 8,
) -> dict[str, Any] | str:
    """Stylize one file and write it atomically (with ``note``, its recipe, inside; with ``bit_depth=16``, 16 bits
    per channel straight from the decoder's floats: PNG and TIFF only); returns its record (input, output, size,
    tiled, seconds per phase, ``bit_depth: 16`` for a 16-bit output, and ``transparency_flattened: true`` when
    transparent pixels of the input were filled with white), or the error sentence when this input cannot be
    stylized (unreadable, truncated, or failing in the model), so a batch goes on with the next one."""
    start = time.perf_counter()
    try:
        image = load_image(source, max_pixels=max_pixels)
    except QuantartError as err:
        return str(err)
    content = image_to_tensor(image)
    read_seconds = time.perf_counter() - start
    try:
        result = stylizer(content)
    except (QuantartError, RuntimeError) as err:  # e.g. out of memory on one huge image: the others still run
        return f"Could not stylize {source}: {err}".rstrip(".") + "."
    start = time.perf_counter()
    save_image_atomic(result.image, target, note=note, bit_depth=bit_depth)
    timings = {"read": read_seconds, **result.timings, "write": time.perf_counter() - start}
    timings["total"] = timings["read"] + timings["total"] + timings["write"]
    height, width = result.image.shape[-2:]
    record: dict[str, Any] = {
        "input": str(source),
        "output": str(target),
        "width": int(width),
        "height": int(height),
        "tiled": result.tiled,
        "seconds": {k: round(v, 4) for k, v in timings.items()},
    }
    if bit_depth != 8:
        record["bit_depth"] = bit_depth
    if flattened_transparency(image):
        record["transparency_flattened"] = True
    return record
