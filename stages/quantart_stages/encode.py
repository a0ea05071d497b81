"""``quantart encode``: images to code indices with a VQGAN, and indices back to images."""

from __future__ import annotations

from pathlib import Path

from quantart_cli.plugin import RunContext, Stage, UsageError, cli_argument, cli_option
from quantart_stages.common import CheckpointReadingSettings, ImageReadingSettings, first_process_context


class EncodeSettings(CheckpointReadingSettings, ImageReadingSettings):
    inputs: list[str] = cli_argument("Images, folders or globs (code files with --decode).", default=[])
    ckpt: Path | None = cli_option(
        None, "VQGAN checkpoint (native, .safetensors or an original .ckpt), or the built-in model's: builtin:art (its "
        "art VQGAN: encodes and decodes) or builtin:photo (its photo VQGAN's encoder side: encodes only).")
    out: Path | None = cli_option(
        None, "Output folder (default ./codes, or ./decoded with --decode), or a .safetensors file with "
        "--single-file.", short="-o")
    decode: bool = cli_option(False, "Turn code files back into images.", aliases=("--reverse",))
    single_file: bool = cli_option(False, "Write one safetensors file for the whole dataset.")
    batch_size: int = cli_option(8, "Images per batch (images of equal size are batched together).", ge=1)
    size: int | None = cli_option(
        None, "Resize each image's longer side to this many pixels before encoding (default: as stored).", ge=16
    )
    overwrite: bool = cli_option(False, "Replace existing outputs (default: skip them).")


def run(settings: EncodeSettings, ctx: RunContext) -> int:
    from quantart_cli.core import split

    with split.joined() as info:
        main = first_process_context(ctx, info)
        with split.together(info):
            model, digest, device = _open(settings, info)
        if settings.decode:
            return _decode(settings, ctx, main, info, model, digest, device)
        return _encode(settings, ctx, main, info, model, digest, device)


def _open(settings: EncodeSettings, info):
    """(model, its checkpoint's SHA-256, device), every setting checked first."""
    if not settings.inputs:
        raise UsageError("encode needs at least one input: images, folders or globs (or code files with --decode).")
    if settings.ckpt is None:
        raise UsageError("encode needs --ckpt: a VQGAN checkpoint (train one with train-vq or import an original with "
                         "`quantart convert`), or builtin:art or builtin:photo for the built-in model's VQGANs.")
    from quantart_cli.core.io.checkpoint_format import checkpoint_sha256
    from quantart_cli.core.io.checkpoints import load_model
    from quantart_cli.core.split import process_device
    from quantart_cli.core.weights import BUILTIN_VQGANS, builtin_vqgan_sha256, load_builtin_vqgan

    device = process_device(settings.device, info)
    builtin = BUILTIN_VQGANS.get(str(settings.ckpt)) if not settings.ckpt.exists() else None
    if builtin == "photo" and settings.decode:
        raise UsageError("builtin:photo has no decoder (the built-in model keeps only the photo VQGAN's encoder "
                         "side), so its codes cannot be turned back into images; encode with builtin:art to decode.")
    if builtin is not None:
        return load_builtin_vqgan(builtin, device), builtin_vqgan_sha256(builtin), device
    model = load_model(settings.ckpt, device=device, expected_kind="vqgan", trust=settings.trust_checkpoint)
    return model, checkpoint_sha256(settings.ckpt), device


def _encode(settings: EncodeSettings, ctx: RunContext, main: RunContext, info, model, digest: str, device) -> int:
    """Images to code files. Images are batched within groups of ``batch_size`` consecutive inputs only, and under
    torchrun each process encodes whole groups (round-robin), so no code depends on the number of processes."""
    from quantart_cli.core import split
    from quantart_cli.core.data.sources import collect_images, list_notes, with_listing
    from quantart_cli.core.io.codes import CodeFile, encode_image_files, save_code_file

    listed: dict = {}
    with split.together(info):
        paths = collect_images(settings.inputs, listed=listed)
        for note in list_notes(listed):
            main.console.info(note)
        todo = _encode_plan(settings, main, paths)
    failures: list[str] = []

    def failed(path: Path, err: Exception) -> None:
        message = with_listing(str(err), listed.get(path))
        failures.append(message)
        if len(paths) > 1:
            ctx.console.warn(message)

    mine = split.share(todo, info.rank, info.world_size, group=settings.batch_size)

    def encoded(on_image=None):
        for start in range(0, len(mine), settings.batch_size):
            yield from encode_image_files(model, mine[start : start + settings.batch_size], device=device,
                                          batch_size=settings.batch_size, on_image=on_image, size=settings.size,
                                          on_error=failed, max_pixels=settings.max_pixels)

    n_embed = model.config.quantizer.n_embed
    factor = model.downsample_factor
    if settings.single_file:
        with split.together(info), main.console.progress("encoding", len(mine), unit="img") as bar:
            records = list(encoded(on_image=lambda _: bar.advance()))
        order = {str(path): index for index, path in enumerate(paths)}
        records = sorted((r for share in split.gather(records, info) for r in share), key=lambda r: order[r.source])
        target = settings.out or Path("codes.safetensors")
        with split.together(info):  # rank 0 writes the file of all records
            if records and info.is_main:
                save_code_file(target, CodeFile(records, digest, n_embed, factor))
                ctx.console.result(str(target))
        return _failures(split.gather(failures, info), len(paths), info)
    out_dir = settings.out or Path("codes")
    with split.together(info), main.console.progress("encoding", len(mine), unit="img") as bar:
        for record in encoded():
            target = save_code_file(out_dir / f"{Path(record.source).stem}.safetensors",
                                    CodeFile([record], digest, n_embed, factor))
            ctx.console.result(str(target))
            bar.advance()
    return _failures(split.gather(failures, info), len(todo), info)


def _encode_plan(settings: EncodeSettings, ctx: RunContext, paths: list[Path]) -> list[Path]:
    """The images to encode (all of them with ``--single-file``), checked against what exists."""
    if settings.single_file:
        target = settings.out or Path("codes.safetensors")
        if target.suffix != ".safetensors":
            raise UsageError(f"--single-file writes one .safetensors file; --out {target} has another suffix.")
        if target.exists() and not settings.overwrite:
            raise UsageError(f"{target} exists; pass --overwrite to replace it.")
        return paths
    out_dir = settings.out or Path("codes")
    todo = [p for p in paths if settings.overwrite or not (out_dir / f"{p.stem}.safetensors").exists()]
    if len(todo) < len(paths):
        ctx.console.info(f"skipping {len(paths) - len(todo)} image(s) already encoded in {out_dir} "
                         "(--overwrite re-encodes them)")
    stems: dict[str, Path] = {}
    for path in todo:
        if path.stem in stems:
            raise UsageError(f"{path} and {stems[path.stem]} would both write {out_dir / (path.stem + '.safetensors')};"
                             " encode them into different --out folders or use --single-file.")
        stems[path.stem] = path
    return todo


def _failures(per_process: list[list[str]], total: int, info) -> int:
    """A folder goes on past unreadable images (each process names its own); the run still ends non-zero, rank 0
    saying how many."""
    failures = [message for messages in per_process for message in messages]
    if failures:
        from quantart_cli.core.errors import SaidElsewhere
        from quantart_cli.plugin import BadInputError

        if not info.is_main:
            raise SaidElsewhere()
        if total == 1:
            raise BadInputError(failures[0])
        raise BadInputError(f"{len(failures)} of {total} images could not be encoded (each named above); "
                            f"{total - len(failures)} were.")
    return 0


def _decode(settings: EncodeSettings, ctx: RunContext, main: RunContext, info, model, digest: str, device) -> int:
    """Code files back to images; under torchrun each process decodes a share of the records."""
    from quantart_cli.core import split
    from quantart_cli.core.io.codes import decode_records
    from quantart_cli.core.io.images import save_image_atomic

    with split.together(info):
        todo = _decode_plan(settings, main, model, digest)
    mine = split.share(todo, info.rank, info.world_size)
    with split.together(info), main.console.progress("decoding", len(mine), unit="img") as bar:
        for (_, target), image in zip(mine, decode_records(model, [r for r, _ in mine], device=device), strict=True):
            save_image_atomic(image, target)
            ctx.console.result(str(target))
            bar.advance()
    return 0


def _decode_plan(settings: EncodeSettings, ctx: RunContext, model, digest: str) -> list:
    """(record, output image) of every code to decode: each output once (the first record for a name, or with
    ``--overwrite`` the last, as decoding them in turn would leave it), existing ones kept unless ``--overwrite``."""
    from quantart_cli.core.data.sources import collect_images
    from quantart_cli.core.io.codes import load_code_file

    files = collect_images(settings.inputs, extensions=(".safetensors",))
    out_dir = settings.out or Path("decoded")
    n_embed = model.config.quantizer.n_embed
    planned: dict[Path, object] = {}
    for path in files:
        code_file = load_code_file(path)
        if code_file.n_embed != n_embed:
            raise UsageError(f"{path} holds indices into a {code_file.n_embed}-code book but {settings.ckpt} "
                             f"has {n_embed} codes; decode with the checkpoint that encoded it.")
        if code_file.checkpoint_sha256 != digest:
            ctx.console.warn(f"{path} was encoded with another checkpoint (sha256 "
                             f"{code_file.checkpoint_sha256[:12]}); decoding with {settings.ckpt} anyway.")
        for record in code_file.records:
            target = out_dir / f"{Path(record.source).stem}.png"
            if settings.overwrite:
                planned.pop(target, None)  # the last record of a name wins, as when each overwrote the one before
            elif target in planned or target.exists():
                ctx.console.info(f"skipping {target}: it exists (--overwrite replaces it)")
                continue
            planned[target] = record
    return [(record, target) for target, record in planned.items()]


stage = Stage(
    name="encode",
    help="Encode images to code indices (and decode them back).",
    settings=EncodeSettings,
    run=run,
    description="Example: quantart encode photos/ --ckpt vq.pt --out codes/ ; quantart encode codes/ --decode "
    "--ckpt vq.pt --out decoded/   (--ckpt builtin:art: the built-in model's art VQGAN)",
)
