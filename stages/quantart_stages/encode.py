"""``quantart encode``: images to code indices with a VQGAN, and indices back to images."""

from __future__ import annotations

from pathlib import Path

from quantart_cli.plugin import RunContext, Stage, UsageError, cli_argument, cli_option
from quantart_stages.common import CheckpointReadingSettings, ImageReadingSettings


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
    if not settings.inputs:
        raise UsageError("encode needs at least one input: images, folders or globs (or code files with --decode).")
    if settings.ckpt is None:
        raise UsageError("encode needs --ckpt: a VQGAN checkpoint (train one with train-vq or import an original with "
                         "`quantart convert`), or builtin:art or builtin:photo for the built-in model's VQGANs.")
    from quantart_cli.core.devices import resolve_device
    from quantart_cli.core.io.checkpoint_format import checkpoint_sha256
    from quantart_cli.core.io.checkpoints import load_model
    from quantart_cli.core.weights import BUILTIN_VQGANS, builtin_vqgan_sha256, load_builtin_vqgan

    device = resolve_device(settings.device)
    builtin = BUILTIN_VQGANS.get(str(settings.ckpt)) if not settings.ckpt.exists() else None
    if builtin == "photo" and settings.decode:
        raise UsageError("builtin:photo has no decoder (the built-in model keeps only the photo VQGAN's encoder "
                         "side), so its codes cannot be turned back into images; encode with builtin:art to decode.")
    if builtin is not None:
        model = load_builtin_vqgan(builtin, device)
        digest = builtin_vqgan_sha256(builtin)
    else:
        model = load_model(settings.ckpt, device=device, expected_kind="vqgan", trust=settings.trust_checkpoint)
        digest = checkpoint_sha256(settings.ckpt)
    if settings.decode:
        return _decode(settings, ctx, model, digest, device)
    return _encode(settings, ctx, model, digest, device)


def _encode(settings: EncodeSettings, ctx: RunContext, model, digest: str, device) -> int:
    from quantart_cli.core.data.sources import collect_images, list_notes, with_listing
    from quantart_cli.core.io.codes import CodeFile, encode_image_files, save_code_file

    listed: dict = {}
    paths = collect_images(settings.inputs, listed=listed)
    for note in list_notes(listed):
        ctx.console.info(note)
    failures: list[str] = []

    def failed(path: Path, err: Exception) -> None:
        message = with_listing(str(err), listed.get(path))
        failures.append(message)
        if len(paths) > 1:
            ctx.console.warn(message)

    n_embed = model.config.quantizer.n_embed
    factor = model.downsample_factor
    if settings.single_file:
        target = settings.out or Path("codes.safetensors")
        if target.suffix != ".safetensors":
            raise UsageError(f"--single-file writes one .safetensors file; --out {target} has another suffix.")
        if target.exists() and not settings.overwrite:
            raise UsageError(f"{target} exists; pass --overwrite to replace it.")
        with ctx.console.progress("encoding", len(paths), unit="img") as bar:
            records = list(encode_image_files(model, paths, device=device, batch_size=settings.batch_size,
                                              on_image=lambda _: bar.advance(), size=settings.size,
                                              on_error=failed, max_pixels=settings.max_pixels))
        if records:
            save_code_file(target, CodeFile(records, digest, n_embed, factor))
            ctx.console.result(str(target))
        return _failures(failures, len(paths))
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
    with ctx.console.progress("encoding", len(todo), unit="img") as bar:
        for record in encode_image_files(model, todo, device=device, batch_size=settings.batch_size,
                                         size=settings.size, on_error=failed, max_pixels=settings.max_pixels):
            target = save_code_file(out_dir / f"{Path(record.source).stem}.safetensors",
                                    CodeFile([record], digest, n_embed, factor))
            ctx.console.result(str(target))
            bar.advance()
    return _failures(failures, len(todo))


def _failures(failures: list[str], total: int) -> int:
    """A folder goes on past unreadable images; the run still ends non-zero, naming how many."""
    if failures:
        from quantart_cli.plugin import BadInputError

        if total == 1:
            raise BadInputError(failures[0])
        raise BadInputError(f"{len(failures)} of {total} images could not be encoded (each named above); "
                            f"{total - len(failures)} were.")
    return 0


def _decode(settings: EncodeSettings, ctx: RunContext, model, digest: str, device) -> int:
    from quantart_cli.core.data.sources import collect_images
    from quantart_cli.core.io.codes import decode_records, load_code_file
    from quantart_cli.core.io.images import save_image_atomic

    files = collect_images(settings.inputs, extensions=(".safetensors",))
    out_dir = settings.out or Path("decoded")
    n_embed = model.config.quantizer.n_embed
    code_files = [(f, load_code_file(f)) for f in files]
    total = sum(len(cf.records) for _, cf in code_files)
    with ctx.console.progress("decoding", total, unit="img") as bar:
        for path, code_file in code_files:
            if code_file.n_embed != n_embed:
                raise UsageError(f"{path} holds indices into a {code_file.n_embed}-code book but {settings.ckpt} "
                                 f"has {n_embed} codes; decode with the checkpoint that encoded it.")
            if code_file.checkpoint_sha256 != digest:
                ctx.console.warn(f"{path} was encoded with another checkpoint (sha256 "
                                 f"{code_file.checkpoint_sha256[:12]}); decoding with {settings.ckpt} anyway.")
            for record, image in zip(code_file.records, decode_records(model, code_file.records, device=device),
                                     strict=True):
                target = out_dir / f"{Path(record.source).stem}.png"
                if target.exists() and not settings.overwrite:
                    ctx.console.info(f"skipping {target}: it exists (--overwrite replaces it)")
                else:
                    save_image_atomic(image, target)
                    ctx.console.result(str(target))
                bar.advance()
    return 0


stage = Stage(
    name="encode",
    help="Encode images to code indices (and decode them back).",
    settings=EncodeSettings,
    run=run,
    description="Example: quantart encode photos/ --ckpt vq.pt --out codes/ ; quantart encode codes/ --decode "
    "--ckpt vq.pt --out decoded/   (--ckpt builtin:art: the built-in model's art VQGAN)",
)
