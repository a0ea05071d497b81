"""Draw the fidelity-knob grid of docs/stylize.md: rows = --visual-fidelity, columns = --alpha.

    python docs/images/fidelity_grid.py MODEL.pt CONTINUOUS.pt photo.jpg style.jpg out.png [--size 64]

Uses the Python API (``StyleTransfer.stylize``), so it shows exactly what ``quantart stylize`` does.
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw

from quantart_cli.core.io.checkpoints import load_model
from quantart_cli.core.io.images import load_image, save_image_atomic
from quantart_cli.core.transfer.engine import stylize_images

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
VISUAL = (1.0, 0.5, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("model", "continuous", "photo", "style", "out"):
        parser.add_argument(name)
    parser.add_argument("--size", type=int, default=None, help="stylize at this size (the model's training size)")
    parser.add_argument("--tile", type=int, default=128)
    args = parser.parse_args()
    model = load_model(args.model, expected_kind="style-transfer")
    continuous = load_model(args.continuous, expected_kind="style-transfer")
    photo, style = load_image(args.photo), load_image(args.style)
    tile, label_w, header = args.tile, 90, 22
    sheet = Image.new("RGB", (label_w + tile * (len(ALPHAS) + 1), header + tile * len(VISUAL)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((label_w + 6, 6), "photo", fill="black")
    for c, alpha in enumerate(ALPHAS, 1):
        draw.text((label_w + c * tile + 6, 6), f"alpha {alpha:g}", fill="black")
    for r, visual in enumerate(VISUAL):
        y = header + r * tile
        draw.text((6, y + tile // 2 - 6), f"visual {visual:g}", fill="black")
        sheet.paste(photo.resize((tile, tile)), (label_w, y))
        for c, alpha in enumerate(ALPHAS, 1):
            result = stylize_images(model, photo, style, alpha=alpha, visual_fidelity=visual,
                                    continuous_model=continuous, size=args.size, style_size=args.size)
            sheet.paste(result.resize((tile, tile), Image.Resampling.BICUBIC), (label_w + c * tile, y))
    save_image_atomic(sheet, args.out)


if __name__ == "__main__":
    main()
