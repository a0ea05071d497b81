"""Small video clips for tests, made on the spot with PyAV (the ``video`` extra, in the dev extra).

``write_clip(path, frames)`` encodes (H, W, 3) uint8 frames into ``path``'s container (H.264 for .mp4/.mov/.mkv,
VP9 for .webm, GIF for .gif), optionally with a silent audio track; ``moving_frames`` gives coloured frames that
change over time; ``read_all`` decodes a clip back into a list of frames (for small test clips only).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

_ENCODERS = {".mp4": ("mp4", "libx264"), ".mov": ("mov", "libx264"), ".mkv": ("matroska", "libx264"),
             ".webm": ("webm", "libvpx-vp9"), ".gif": ("gif", "gif")}


def moving_frames(count: int, width: int = 64, height: int = 48, seed: int = 0) -> list[np.ndarray]:
    """Frames of a smooth random picture that slides one pixel right per frame."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 1, (width + count) // 8 + 2, 3)).astype(np.float32)
    big = np.kron(coarse, np.ones((8, 8, 1), np.float32))
    return [np.ascontiguousarray(big[:height, i:i + width].astype(np.uint8)) for i in range(count)]


def write_clip(path: Path, frames: Sequence[np.ndarray], fps: int | Fraction = 12, *, audio: bool = False,
               quality: int = 10) -> Path:
    import av

    muxer, encoder = _ENCODERS[path.suffix.lower()]
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format=muxer) as container:
        video = container.add_stream(encoder, rate=fps)
        video.width, video.height = width, height
        video.pix_fmt = "rgb8" if encoder == "gif" else "yuv420p"
        if encoder == "libx264":
            video.options = {"crf": str(quality)}
        sound = None
        if audio:
            sound = container.add_stream("aac" if encoder == "libx264" else "libopus", rate=48000)
            sound.layout = "mono"
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            samples = int(48000 * len(frames) / float(fps))
            for start in range(0, samples, 960):
                chunk = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 48000, start
                for packet in sound.encode(chunk):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def read_all(path: Path) -> list[np.ndarray]:
    from quantart_cli.core.io.video import read_frames

    return list(read_frames(path))
