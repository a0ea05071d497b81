"""Write reference "stylizations" and their manifests, to calibrate ``quantart evaluate``.

    python scripts/make_baseline_outputs.py --photos PHOTOS... --paintings PAINTINGS... --out DIR [--size 512]

writes ``DIR/identity/`` (output = the photo: no stylization at all) and ``DIR/color_transfer/`` (each RGB
channel of the photo given the painting's mean and std: colours move, nothing else), each with a
``manifest.csv`` for ``quantart evaluate --manifest DIR/<kind>/manifest.csv``. Any metric worth reading ranks
the colour transfer above the identity on colour and below it on content.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from quantart_cli.core.data.sources import collect_images
from quantart_cli.core.io.images import save_image_atomic
from quantart_cli.core.metrics.inputs import ImageCache, ManifestRow, write_manifest
from quantart_cli.core.metrics.style import mean_std_color_transfer

BASELINES = {
    "identity": lambda photo, painting: photo,
    "color_transfer": mean_std_color_transfer,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", nargs="+", required=True, help="photo files, folders or globs")
    parser.add_argument("--paintings", nargs="+", required=True, help="painting files, folders or globs")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the baselines into")
    parser.add_argument("--size", type=int, default=512, help="longer side of every image (as evaluate's --size)")
    args = parser.parse_args()
    photos, paintings = collect_images(args.photos), collect_images(args.paintings)
    images = ImageCache(args.size)
    for kind, make in BASELINES.items():
        rows = []
        for photo in photos:
            for painting in paintings:
                target = args.out / kind / f"{photo.stem}__{painting.stem}.png"
                save_image_atomic(make(images(photo), images(painting)), target)
                rows.append(ManifestRow(stylized=target, content=photo, style=painting, group="all"))
        print(write_manifest(args.out / kind / "manifest.csv", rows))


if __name__ == "__main__":
    main()
