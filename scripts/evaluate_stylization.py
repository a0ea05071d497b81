#!/usr/bin/env python3
"""Score how well a style-transfer model stylizes photos x paintings at alphas 0, 0.5 and 1.

    python scripts/evaluate_stylization.py --photos DIR_OR_FILES... --paintings DIR_OR_FILES... \
        [--ckpt MODEL] [--size 512] [--baselines] [--sheet grid.png] [--json]

Without --ckpt the built-in model is scored. --baselines also scores two references that need no model,
to calibrate the figures: a per-channel mean/std colour transfer (colours move, layout kept) and the
painting pasted in place of the photo (colours match, layout lost). The figures are those of
docs/model-card.md (quantart_cli.core.metrics.grid.StylizationReport).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from quantart_cli.core.data.sources import collect_images
from quantart_cli.core.metrics.grid import DEFAULT_ALPHAS, evaluate_stylization, load_images, stylization_report
from quantart_cli.core.metrics.style import mean_std_color_transfer


def pasted(photo: torch.Tensor, painting: torch.Tensor) -> torch.Tensor:
    return F.interpolate(painting, size=photo.shape[-2:], mode="bilinear", align_corners=False, antialias=True)


def baseline(photos, paintings, transfer):
    outputs = {}
    for (p, photo) in photos.items():
        for (s, painting) in paintings.items():
            for alpha in DEFAULT_ALPHAS:
                full = transfer(photo, painting)
                outputs[(p, s, alpha)] = (1 - alpha) * photo + alpha * full
    return stylization_report(photos, paintings, outputs)


def describe(name: str, report, seconds: float | None = None) -> str:
    by_alpha = ", ".join(f"{alpha:g}: {swd:.4f}" for alpha, swd in zip(report.alphas, report.swd_by_alpha, strict=True))
    extra = f"  ({seconds:.0f} s)" if seconds is not None else ""
    return (
        f"{name}{extra}\n"
        f"  pairs {report.pairs}; SWD photo->painting {report.swd_photo:.4f}, "
        f"output->painting {report.swd_output:.4f}\n"
        f"  SWD ratio {report.swd_ratio:.3f} (target <= 0.7)\n"
        f"  own painting nearer {100 * report.own_painting_rate:.1f}% (target >= 85%); "
        f"outputs of two paintings differ by {report.painting_difference:.2f}/255 (target >= 6)\n"
        f"  SWD by alpha {by_alpha}; strictly falling: {report.alpha_monotone}\n"
        f"  luminance SSIM to the photo {report.content_ssim:.3f} (target >= 0.30)\n"
        f"  texture ratio {report.texture_ratio:.3f} (1: the photo's texture; lower: nearer the painting's); "
        f"detail {report.detail:.3f} of the painting's (the photo's: {report.photo_detail:.3f})"
    )


def save_sheet(path, photos, paintings, outputs, tile=160):
    from PIL import Image

    from quantart_cli.core.io.images import save_image_atomic, tensor_to_image

    names = list(paintings)
    rows = [(p, s) for p in photos for s in names]
    sheet = Image.new("RGB", (tile * (2 + len(DEFAULT_ALPHAS)), tile * len(rows)), "white")
    for r, (p, s) in enumerate(rows):
        cells = [photos[p], paintings[s], *[outputs[(p, s, alpha)] for alpha in DEFAULT_ALPHAS]]
        for c, cell in enumerate(cells):
            sheet.paste(tensor_to_image(cell).resize((tile, tile)), (c * tile, r * tile))
    save_image_atomic(sheet, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", nargs="+", required=True)
    parser.add_argument("--paintings", nargs="+", required=True)
    parser.add_argument("--ckpt", default=None, help="style-transfer checkpoint (default: the built-in model)")
    parser.add_argument("--size", type=int, default=None, help="resize every image's longer side first")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--baselines", action="store_true")
    parser.add_argument("--sheet", default=None, help="write a contact sheet of every output here")
    parser.add_argument("--json", action="store_true", help="print the model's report as one JSON line")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    photos = load_images(collect_images(args.photos), args.size)
    paintings = load_images(collect_images(args.paintings), args.size)
    if args.baselines:
        print(describe("mean/std colour transfer", baseline(photos, paintings, mean_std_color_transfer)))
        print(describe("painting pasted", baseline(photos, paintings, pasted)))

    from quantart_cli.core.io.checkpoints import load_model
    from quantart_cli.core.weights import builtin_model_path

    ckpt = args.ckpt or builtin_model_path()
    model = load_model(ckpt, device="cpu", expected_kind="style-transfer")
    start = time.perf_counter()
    report, outputs = evaluate_stylization(model, photos, paintings)
    print(describe(f"model {ckpt}", report, time.perf_counter() - start))
    if args.json:
        print(json.dumps(report.as_dict()))
    if args.sheet:
        save_sheet(args.sheet, photos, paintings, outputs)
        print(f"contact sheet: {args.sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
