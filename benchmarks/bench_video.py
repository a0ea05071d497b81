"""Stylize video with the built-in model: frames per second with and without temporal stability, and flicker.

Speed: a clip of ``--frames`` frames panning over a packaged sample photo at ``--size`` (default 512) px square, in
the style of a packaged painting, stylized and encoded to H.264 (``transform_video`` + ``VideoStylizer``, as
``quantart stylize clip.mp4`` does) once with ``--stability`` and once with 0 (frames one by one); the paintings
are encoded once, outside the timing.

Flicker (the issue's measure): at ``--flicker-size`` px wide, a 24-frame clip of one photo with per-frame noise
(sigma 4/255) and +-2% brightness, and a clip panning 3 px a frame; both stylized with and without stability and
encoded alike. Reports the mean |O(t+1) - O(t)| (8-bit levels) of each and how far the stable frames are from the
one-by-one frames. Prints one JSON line.

    python benchmarks/bench_video.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _change(frames) -> float:
    import numpy as np

    pairs = zip(frames, frames[1:], strict=False)
    return float(np.mean([np.abs(b.astype(np.int16) - a.astype(np.int16)).mean() for a, b in pairs]))


def _apart(ours, theirs) -> list[float]:
    import numpy as np

    return [float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) for a, b in zip(ours, theirs, strict=True)]


def _write(path: Path, frames, fps: int = 24) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--stability", type=float, default=0.6)
    parser.add_argument("--flicker-size", type=int, default=192, help="0 skips the flicker measure")
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from quantart_cli.core.devices import resolve_device
    from quantart_cli.core.io.images import image_to_tensor, load_image
    from quantart_cli.core.io.video import read_frames, transform_video
    from quantart_cli.core.transfer.engine import Stylizer
    from quantart_cli.core.transfer.video import VideoStylizer
    from quantart_cli.core.weights import load_builtin_model
    from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = load_builtin_model(device)
    style = image_to_tensor(load_image(PAINTINGS_DIR / "monet_water_lilies_1919.jpg"))
    stylizer = Stylizer(model, [style.to(device)])
    photo = Image.open(CONTENT_DIR / "lhq_1.jpg").convert("RGB")
    rng = np.random.default_rng(0)
    report: dict = {"device": str(device), "threads": args.threads, "stability": args.stability}

    def run(source: Path, target: Path, stability: float) -> tuple[float, list]:
        begin = time.perf_counter()
        count = transform_video(source, target, VideoStylizer(stylizer, stability))
        seconds = time.perf_counter() - begin
        return count / seconds, list(read_frames(target))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        size, step = args.size, 3
        wide = np.asarray(photo.resize((size + step * args.frames, size), Image.BICUBIC))
        clip = _write(folder / "speed.mp4", [np.ascontiguousarray(wide[:, i * step:i * step + size])
                                             for i in range(args.frames)])
        stylizer(torch.zeros(1, 3, size, size, device=device))  # warm-up: allocator, kernels
        fps_off, _ = run(clip, folder / "off.mp4", 0.0)
        fps_on, _ = run(clip, folder / "on.mp4", args.stability)
        report.update({"size": size, "frames": args.frames, "fps_stable": round(fps_on, 3),
                       "fps_one_by_one": round(fps_off, 3)})

        if args.flicker_size:
            width = args.flicker_size
            height = width * 2 // 3 // 2 * 2
            still = np.asarray(photo.resize((width, height), Image.BICUBIC)).astype(np.float32) / 255
            noisy = []
            for _ in range(24):
                frame = still * (1 + rng.uniform(-0.02, 0.02)) + rng.normal(0, 4 / 255, still.shape)
                noisy.append((np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8))
            tripod = _write(folder / "tripod.mp4", noisy)
            _, steady = run(tripod, folder / "tripod_on.mp4", args.stability)
            _, single = run(tripod, folder / "tripod_off.mp4", 0.0)
            wide = np.asarray(photo.resize((width + 3 * 23, height), Image.BICUBIC))
            pan = _write(folder / "pan.mp4", [np.ascontiguousarray(wide[:, 3 * i:3 * i + width]) for i in range(24)])
            _, pan_steady = run(pan, folder / "pan_on.mp4", args.stability)
            _, pan_single = run(pan, folder / "pan_off.mp4", 0.0)
            apart = _apart(pan_steady, pan_single)
            report["flicker"] = {
                "size": [width, height],
                "tripod_change_stable": round(_change(steady), 3),
                "tripod_change_one_by_one": round(_change(single), 3),
                "tripod_apart_mean": round(float(np.mean(_apart(steady, single))), 3),
                "pan_change_stable": round(_change(pan_steady), 3),
                "pan_change_one_by_one": round(_change(pan_single), 3),
                "pan_apart_mean": round(float(np.mean(apart)), 3),
                "pan_apart_max": round(max(apart), 3),
            }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
