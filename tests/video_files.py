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


def jittered_frames(photo: np.ndarray, count: int = 24, *, noise: float = 4 / 255, brightness: float = 0.02,
                    seed: int = 0) -> list[np.ndarray]:
    """``count`` frames of one still ``photo`` (H, W, 3 uint8), each with its own Gaussian noise (``noise``, on the
    0..1 scale) and a brightness factor drawn from 1 ± ``brightness``: a tripod shot by a real sensor."""
    rng = np.random.default_rng(seed)
    base = photo.astype(np.float32) / 255.0
    frames = []
    for _ in range(count):
        gain = 1.0 + rng.uniform(-brightness, brightness)
        frame = base * gain + rng.normal(0.0, noise, base.shape).astype(np.float32)
        frames.append((np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    return frames


def panning_frames(photo: np.ndarray, count: int, width: int, step: int = 3) -> list[np.ndarray]:
    """``count`` windows ``width`` wide sliding ``step`` pixels right per frame over ``photo``."""
    assert photo.shape[1] >= width + step * (count - 1)
    return [np.ascontiguousarray(photo[:, i * step:i * step + width]) for i in range(count)]


def frame_change(frames: Sequence[np.ndarray]) -> float:
    """Mean |O(t+1) - O(t)| in 8-bit levels over the clip (the flicker measure)."""
    return float(np.mean([np.abs(b.astype(np.int16) - a.astype(np.int16)).mean()
                          for a, b in zip(frames, frames[1:], strict=False)]))


def frame_distance(ours: Sequence[np.ndarray], theirs: Sequence[np.ndarray]) -> list[float]:
    """Mean |a - b| in 8-bit levels of each pair of frames."""
    assert len(ours) == len(theirs)
    return [float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) for a, b in zip(ours, theirs, strict=True)]


def hide_pyav(monkeypatch) -> None:
    """Make ``import av`` fail for the rest of the test, as on a machine without the ``video`` extra."""
    import builtins
    import sys

    real_import = builtins.__import__

    def no_av(name, *args, **kwargs):
        if name == "av" or name.startswith("av."):
            raise ImportError("No module named 'av'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "av", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_av)
