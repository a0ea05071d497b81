"""Video files: frames read as a stream and written back with the same frame count, rate and size, audio copied.

PyAV (the optional ``video`` extra: ``pip install "quantart[video]"``) brings FFmpeg inside its wheel, so no
system ffmpeg is needed. Frames are decoded and encoded one at a time (:func:`transform_video`): memory stays
bounded whatever the clip's length. The output is written through :func:`~quantart_cli.core.io.atomic.atomic_write`
(a temp file beside the target, renamed over it at the end), so Ctrl-C or a failure leaves no half-written file.
Each output container keeps its input's: ``.mp4`` and ``.mov`` and ``.mkv`` get H.264, ``.webm`` VP9, ``.gif``
GIF. The audio packets are copied unchanged (no re-encoding). A ``note`` (the stylize recipe) is stored as the
container's ``comment`` tag; a GIF has no such tag, so its note goes into a hidden sidecar as a BMP's does
(:func:`~quantart_cli.core.io.images.note_sidecar`); :func:`read_video_note` reads either.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from quantart_cli.core.errors import BadInputError, UsageError
from quantart_cli.core.io.atomic import atomic_write

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoInfo",
    "is_video",
    "read_frames",
    "read_video_note",
    "require_av",
    "transform_video",
    "video_info",
]

#: Suffix -> (FFmpeg muxer, video encoder) of the containers quantart reads and writes.
_CONTAINERS: dict[str, tuple[str, str]] = {
    ".mp4": ("mp4", "libx264"),
    ".m4v": ("mp4", "libx264"),
    ".mov": ("mov", "libx264"),
    ".mkv": ("matroska", "libx264"),
    ".webm": ("webm", "libvpx-vp9"),
    ".gif": ("gif", "gif"),
}

#: Suffixes taken as videos (``.gif`` only when animated, see :func:`is_video`).
VIDEO_EXTENSIONS: frozenset[str] = frozenset(_CONTAINERS)

#: The metadata tag that holds the note (the recipe).
NOTE_TAG = "comment"


def require_av(path: str | os.PathLike[str] | None = None) -> Any:
    """The ``av`` module, or a one-sentence UsageError naming the extra to install."""
    try:
        import av
    except ImportError as err:
        what = f" for {Path(path).name}" if path is not None else ""
        raise UsageError(f'quantart needs its optional video packages{what}: pip install "quantart[video]"') from err
    return av


def is_video(path: str | os.PathLike[str]) -> bool:
    """A video by its suffix; a ``.gif`` only when it has more than one frame (a still GIF is an image)."""
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        return False
    if suffix != ".gif":
        return True
    try:
        from PIL import Image

        with Image.open(path) as image:
            return getattr(image, "n_frames", 1) > 1
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class VideoInfo:
    """A clip's frame count (as the container says, else estimated from its duration; 0 when unknown), frame rate,
    size and whether it has audio."""

    frames: int
    fps: Fraction
    width: int
    height: int
    audio: bool


def _open_input(path: Path) -> Any:
    av = require_av(path)
    try:
        container = av.open(str(path), "r")
    except (av.error.FFmpegError, OSError) as err:
        raise BadInputError(f"Cannot read the video {path} ({err}).") from err
    if not container.streams.video:
        container.close()
        raise BadInputError(f"{path} has no video stream.")
    return container


def video_info(path: str | os.PathLike[str]) -> VideoInfo:
    path = Path(path)
    with _open_input(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        frames = int(stream.frames or 0)
        if not frames and container.duration:  # Matroska and WebM do not count their frames
            frames = round(container.duration / 1_000_000 * float(rate))
        return VideoInfo(frames=frames, fps=Fraction(rate), width=stream.codec_context.width,
                         height=stream.codec_context.height, audio=bool(container.streams.audio))


def read_frames(path: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """The clip's frames, one (H, W, 3) uint8 RGB array at a time."""
    path = Path(path)
    with _open_input(path) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def read_video_note(path: str | os.PathLike[str]) -> str | None:
    """The note :func:`transform_video` stored (None: none, or not a readable video)."""
    if Path(path).suffix.lower() == ".gif":
        from quantart_cli.core.io.images import read_image_note

        return read_image_note(path)
    try:
        av = require_av(path)
    except UsageError:
        return None
    try:
        with av.open(str(path), "r") as container:
            # Matroska and WebM spell their tags in capitals.
            tags = {key.lower(): value for key, value in container.metadata.items()}
            return tags.get(NOTE_TAG) or None
    except (av.error.FFmpegError, OSError):
        return None


def _pixel_format(encoder: str, width: int, height: int) -> str:
    if encoder == "gif":
        return "rgb8"
    # 4:2:0 chroma needs even sides; an odd-sized clip keeps full chroma instead.
    return "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"


def transform_video(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    transform: Callable[[np.ndarray], np.ndarray],
    *,
    note: str | None = None,
    quality: int = 18,
    on_frame: Callable[[], None] | None = None,
) -> int:
    """Write ``target``: every frame of ``source`` through ``transform`` ((H, W, 3) uint8 in and out, same size),
    at the same timestamps and frame rate, its audio copied, ``note`` as the ``comment`` tag; atomically.
    ``quality`` is the H.264/VP9 constant rate factor (lower: better). Returns the number of frames written."""
    source, target = Path(source), Path(target)
    suffix = target.suffix.lower()
    if suffix not in _CONTAINERS:
        raise UsageError(f"{target} is not a video file quantart writes ({', '.join(sorted(_CONTAINERS))}).")
    muxer, encoder = _CONTAINERS[suffix]
    av = require_av(source)
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with _open_input(source) as inp, av.open(str(tmp), "w", format=muxer) as out:
            in_video = inp.streams.video[0]
            width, height = in_video.codec_context.width, in_video.codec_context.height
            rate = in_video.average_rate or in_video.guessed_rate or Fraction(25)
            video = out.add_stream(encoder, rate=rate)
            video.width, video.height = width, height
            video.pix_fmt = _pixel_format(encoder, width, height)
            video.time_base = in_video.time_base
            if encoder != "gif":
                video.options = {"crf": str(quality)}
                if encoder == "libvpx-vp9":
                    video.options = {"crf": str(quality + 12), "b": "0"}
            audio = None
            if inp.streams.audio and muxer != "gif":
                audio = out.add_stream_from_template(inp.streams.audio[0])
            if note is not None and muxer != "gif":
                out.metadata[NOTE_TAG] = note
            streams = [in_video] + ([inp.streams.audio[0]] if audio is not None else [])
            for packet in inp.demux(*streams):
                if packet.stream is not in_video:
                    if packet.dts is None:
                        continue
                    packet.stream = audio
                    out.mux(packet)
                    continue
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as err:
                    raise BadInputError(f"Cannot decode the video {source} ({err}).") from err
                for frame in frames:
                    pixels = transform(frame.to_ndarray(format="rgb24"))
                    if pixels.shape != (height, width, 3):
                        raise BadInputError(f"a frame of {source} came back {pixels.shape}, not "
                                            f"{(height, width, 3)}")
                    made = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels, dtype=np.uint8), format="rgb24")
                    made.pts, made.time_base = frame.pts, frame.time_base
                    out.mux(video.encode(made))
                    count += 1
                    if on_frame is not None:
                        on_frame()
            out.mux(video.encode(None))

    atomic_write(target, write, what="video")
    if muxer == "gif":
        _gif_sidecar(target, note)
    return count


def _gif_sidecar(path: Path, note: str | None) -> None:
    import hashlib
    import json

    from quantart_cli.core.io.images import note_sidecar

    sidecar = note_sidecar(path)
    if note is None:
        sidecar.unlink(missing_ok=True)
        return
    record = json.dumps({"note": note, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    atomic_write(sidecar, lambda tmp: tmp.write_text(record, encoding="utf-8"), what="recipe sidecar")
