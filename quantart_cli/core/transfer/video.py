"""Stylizing a video: every frame through one :class:`~quantart_cli.core.transfer.engine.Stylizer` (the paintings
encoded once), with temporal stability carried from frame to frame.

Stylizing frames one by one flickers: sensor noise and small brightness changes between frames move the content
latent across codebook boundaries, so the same wall gets other brush strokes in every frame.
:class:`TemporalStabilizer` holds the output still where the *photo* did not change: for each cell of
``cell`` x ``cell`` pixels it measures how much the frame differs from the previous one (after the block mean
smooths sensor noise away, and after a global brightness change is divided out), and keeps ``stability`` of the
previous output there, falling linearly to none at a change of ``threshold`` (on the 0..1 scale). Where the
photo moves, the cells change and the new frame's stylization is taken as it is, so the output follows motion.
Its cost is a few pooled differences per frame: nothing next to the model.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from quantart_cli.core.errors import QuantartError

if TYPE_CHECKING:
    from quantart_cli.core.transfer.engine import Stylizer

__all__ = ["DEFAULT_STABILITY", "TemporalStabilizer", "VideoStylizer", "stylize_video_file"]

#: How much of the previous output a still part of the picture keeps, by default.
DEFAULT_STABILITY = 0.6


class TemporalStabilizer:
    """Blends each stylized frame with the previous output where the photo changed little (module docstring).

    ``stability`` in [0, 1): 0 turns it off (frames as stylized one by one). ``threshold``: the per-cell change
    (mean over a cell, 0..1 scale) at and above which a cell is taken as moved. ``cell``: the side of a cell in
    pixels (the model's latent cell is 8 or 16 pixels)."""

    def __init__(self, stability: float = DEFAULT_STABILITY, *, threshold: float = 0.03, cell: int = 8) -> None:
        if not 0.0 <= stability < 1.0:
            raise ValueError(f"`stability` must be at least 0 and below 1, got {stability}")
        self.stability = float(stability)
        self.threshold = float(threshold)
        self.cell = int(cell)
        self._photo: Tensor | None = None
        self._output: Tensor | None = None

    def reset(self) -> None:
        self._photo = self._output = None

    def _cells(self, photo: Tensor) -> Tensor:
        unit = (photo.float() + 1.0) / 2.0  # [-1, 1] -> [0, 1]
        return F.avg_pool2d(unit, self.cell, ceil_mode=True)

    def __call__(self, photo: Tensor, stylized: Tensor) -> Tensor:
        """The output for this frame: ``photo`` the frame (1, 3, H, W) in [-1, 1], ``stylized`` its stylization
        (same size)."""
        cells = self._cells(photo)
        if self.stability == 0.0 or self._photo is None or self._output is None or \
                self._photo.shape != cells.shape or self._output.shape != stylized.shape:
            output = stylized
        else:
            previous = self._photo
            # A global brightness change is no motion: divided out with the median ratio over the cells (robust
            # to the part of the picture that really moved).
            ratio = (previous.mean(dim=1) / cells.mean(dim=1).clamp_min(0.02)).median()
            change = (cells * ratio - previous).abs().mean(dim=1, keepdim=True)
            keep = self.stability * (1.0 - change / self.threshold).clamp(0.0, 1.0)
            keep = F.interpolate(keep, scale_factor=self.cell, mode="bilinear", align_corners=False)
            keep = keep[..., : stylized.shape[-2], : stylized.shape[-1]].to(stylized.dtype)
            output = stylized + keep * (self._output - stylized)
        self._photo, self._output = cells, output
        return output


def frame_to_tensor(frame: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1] (as :func:`~quantart_cli.core.io.images.image_to_tensor`)."""
    tensor = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1))).to(device, torch.float32)
    return (tensor / 127.5 - 1.0).unsqueeze(0)


def tensor_to_frame(tensor: Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] -> (H, W, 3) uint8 (clamped and rounded as images are)."""
    pixels = ((tensor[0].detach().to("cpu", torch.float32).clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return pixels.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


class VideoStylizer:
    """Stylizes the frames of one clip in order: ``stylizer`` (paintings encoded once) for each frame, then the
    :class:`TemporalStabilizer`; an output frame has its input's size (``size`` resizes only what the model
    sees). Use one per clip, or :meth:`reset` between clips."""

    def __init__(self, stylizer: Stylizer, stability: float = DEFAULT_STABILITY) -> None:
        self.stylizer = stylizer
        self.stabilizer = TemporalStabilizer(stability)
        self.timings: dict[str, float] = {}

    def reset(self) -> None:
        self.stabilizer.reset()

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        photo = frame_to_tensor(frame, self.stylizer.device)
        result = self.stylizer(photo)
        for key, value in result.timings.items():
            self.timings[key] = self.timings.get(key, 0.0) + value
        image = result.image
        if image.shape[-2:] != photo.shape[-2:]:
            image = F.interpolate(image, size=photo.shape[-2:], mode="bicubic", align_corners=False)
        with torch.inference_mode():
            return tensor_to_frame(self.stabilizer(photo, image))


def stylize_video_file(
    stylizer: Stylizer,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    note: str | None = None,
    *,
    stability: float = DEFAULT_STABILITY,
    on_frame: Any = None,
) -> dict[str, Any] | str:
    """Stylize one clip into ``target`` (same container, frame count, rate and size; audio copied; written
    atomically with ``note`` inside); its record (input, output, size, frames, fps, seconds), or the error sentence
    when this clip cannot be stylized, so a batch goes on with the next input. ``on_frame()`` is called after each
    frame (progress)."""
    from quantart_cli.core.io.video import transform_video, video_info

    start = time.perf_counter()
    try:
        info = video_info(source)
        video = VideoStylizer(stylizer, stability)
        frames = transform_video(source, target, video, note=note, on_frame=on_frame)
    except QuantartError as err:
        return str(err)
    except RuntimeError as err:  # e.g. out of memory in the model
        return f"Could not stylize {source}: {err}".rstrip(".") + "."
    seconds = time.perf_counter() - start
    return {
        "input": str(source),
        "output": str(Path(target)),
        "width": info.width,
        "height": info.height,
        "frames": frames,
        "fps": float(info.fps),
        "stability": stability,
        "seconds": {"total": round(seconds, 4), **{k: round(v, 4) for k, v in video.timings.items()}},
    }
