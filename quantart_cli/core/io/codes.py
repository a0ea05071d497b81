"""Code-index files: images encoded to VQGAN code indices, and decoded back.

A code file is a ``.safetensors`` file. Each image is one integer tensor ``(h, w)`` of code indices
(``indices`` for a single image, ``indices.N`` for a dataset file), and the metadata (JSON strings) records
for each image its source path, original size and the padding added to reach a multiple of the model's
downsampling factor, plus the codebook size and the SHA-256 of the checkpoint that produced it, so decoding
can check it uses the same codebook.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from quantart_cli.core.devices import set_memory_format
from quantart_cli.core.errors import BadInputError, NotFoundError, QuantartError
from quantart_cli.core.io.atomic import atomic_write
from quantart_cli.core.io.images import (
    MIN_LATENT_SIDE,
    crop_padding,
    load_image_tensor,
    pad_to_multiple,
    resize_longer_side,
    tensor_to_image,
)
from quantart_cli.core.io.limits import DEFAULT_MAX_PIXELS
from quantart_cli.core.models import VQGAN

CODE_FORMAT = "quantart-codes"
CODE_FORMAT_VERSION = 1


@dataclass
class CodeRecord:
    """The code indices of one image and what is needed to turn them back into an image of its size."""

    indices: torch.Tensor  # (h, w) int64
    width: int
    height: int
    padding: tuple[int, int, int, int]  # left, right, top, bottom, in pixels
    source: str

    def meta(self, key: str) -> dict[str, Any]:
        return {"key": key, "source": self.source, "width": self.width, "height": self.height,
                "padding": list(self.padding)}


@dataclass
class CodeFile:
    records: list[CodeRecord]
    checkpoint_sha256: str
    n_embed: int
    downsample_factor: int


def _index_dtype(n_embed: int) -> torch.dtype:
    return torch.int16 if n_embed <= torch.iinfo(torch.int16).max else torch.int32


@torch.inference_mode()
def encode_image_files(
    model: VQGAN,
    paths: Sequence[Path],
    *,
    device: torch.device,
    batch_size: int = 8,
    on_image: Callable[[Path], None] | None = None,
    size: int | None = None,
    on_error: Callable[[Path, QuantartError], None] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[CodeRecord]:
    """Encode images of any size (padded to the model's factor, reflect, and to at least two latent cells per side)
    in batches of equal padded size; with ``size`` each image's longer side is first resized to that many pixels
    (the record keeps the resized size). An image that cannot be read is passed to ``on_error`` and left out
    (without it, the error is raised)."""
    factor = model.downsample_factor
    set_memory_format(model, True)  # inference runs channels-last (faster convolutions on a CPU)
    pending: list[tuple[Path, torch.Tensor, tuple[int, int, int, int], int, int]] = []

    def flush() -> Iterator[CodeRecord]:
        batch = torch.cat([item[1] for item in pending]).to(device)
        indices = model.encode_to_indices(batch).cpu()
        for (path, _, padding, width, height), idx in zip(pending, indices, strict=True):
            if on_image is not None:
                on_image(path)
            yield CodeRecord(idx.to(torch.int64), width, height, padding, str(path))
        pending.clear()

    for path in paths:
        try:
            image = load_image_tensor(path, max_pixels=max_pixels)
        except QuantartError as err:
            if on_error is None:
                raise
            on_error(path, err)
            continue
        if size is not None:
            image = resize_longer_side(image, size)
        height, width = image.shape[-2:]
        padded, padding = pad_to_multiple(image, factor, min_size=MIN_LATENT_SIDE * factor)
        if pending and (padded.shape != pending[0][1].shape or len(pending) >= batch_size):
            yield from flush()
        pending.append((path, padded, padding, width, height))
    if pending:
        yield from flush()


@torch.inference_mode()
def decode_records(model: VQGAN, records: Iterable[CodeRecord], *, device: torch.device) -> Iterator[Image.Image]:
    """Indices back to images, with the encoding's padding cropped away."""
    set_memory_format(model, True)
    for record in records:
        indices = record.indices.to(device=device, dtype=torch.int64).unsqueeze(0)
        image = crop_padding(model.decode_indices(indices), record.padding)
        yield tensor_to_image(image[0].float())


def save_code_file(path: str | os.PathLike[str], code_file: CodeFile) -> Path:
    """Write records atomically (:func:`~quantart_cli.core.io.atomic.atomic_write`); the same records always give
    the same bytes."""
    path = Path(path)
    single = len(code_file.records) == 1
    dtype = _index_dtype(code_file.n_embed)
    tensors: dict[str, torch.Tensor] = {}
    metas = []
    for i, record in enumerate(code_file.records):
        key = "indices" if single else f"indices.{i}"
        tensors[key] = record.indices.to(dtype).contiguous()
        metas.append(record.meta(key))
    metadata = {
        "format": CODE_FORMAT,
        "format_version": str(CODE_FORMAT_VERSION),
        "checkpoint_sha256": code_file.checkpoint_sha256,
        "n_embed": str(code_file.n_embed),
        "downsample_factor": str(code_file.downsample_factor),
        "records": json.dumps(metas),
    }
    data = _sorted_header(save(tensors, metadata=metadata))
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), what="code file")


def _sorted_header(data: bytes) -> bytes:
    """A safetensors file with its JSON header's keys sorted. safetensors writes the metadata in the order of a hash
    map, which differs from one save to the next; sorted, the same records always give the same bytes. The
    header stays padded with spaces to a multiple of 8 bytes, as safetensors' own writer leaves it, and the
    offsets it holds still point into the unchanged tensor data after it."""
    size = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + size]), sort_keys=True, separators=(",", ":")).encode("utf-8")
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + data[8 + size :]


def load_code_file(path: str | os.PathLike[str]) -> CodeFile:
    """Read a code file written by :func:`save_code_file`; anything else is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"Code file {path} does not exist.")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise BadInputError(f"{path} is not a readable safetensors code file ({err}).") from err
    if metadata.get("format") != CODE_FORMAT:
        raise BadInputError(f"{path} is a safetensors file but not a quantart code file (written by `encode`).")
    try:
        metas = json.loads(metadata["records"])
        n_embed, factor = int(metadata["n_embed"]), int(metadata["downsample_factor"])
        if not isinstance(metas, list) or n_embed < 1 or factor < 1:
            raise ValueError("records must be a list and n_embed, downsample_factor positive")
        records = [_record(tensors, m, n_embed, factor) for m in metas]
        return CodeFile(records, str(metadata["checkpoint_sha256"]), n_embed, factor)
    except (KeyError, ValueError, TypeError, AttributeError, RecursionError) as err:
        raise BadInputError(f"Code file {path} is damaged: {_reason(err)}.") from err


def _record(tensors: dict[str, torch.Tensor], meta: Any, n_embed: int, factor: int) -> CodeRecord:
    """One record, checked: integer indices of rank 2 within the codebook, sizes that fit the grid."""
    if not isinstance(meta, dict):
        raise ValueError("a record is not a table")
    indices = tensors[meta["key"]]
    if indices.dtype.is_floating_point or indices.dtype == torch.bool or indices.dim() != 2:
        raise ValueError(f"record {meta['key']!r} holds {indices.dtype} indices of shape {tuple(indices.shape)}, "
                         "not a 2-D integer grid")
    indices = indices.to(torch.int64)
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n_embed):
        raise ValueError(f"record {meta['key']!r} has indices outside the codebook of {n_embed} codes")
    width, height = int(meta["width"]), int(meta["height"])
    padding = tuple(int(p) for p in meta["padding"])
    grid_h, grid_w = indices.shape
    if len(padding) != 4 or min(padding) < 0 or width < 1 or height < 1:
        raise ValueError(f"record {meta['key']!r} has an impossible size or padding")
    if (width + padding[0] + padding[1], height + padding[2] + padding[3]) != (grid_w * factor, grid_h * factor):
        raise ValueError(
            f"record {meta['key']!r}: size {width}x{height} and padding do not fit its {grid_w}x{grid_h} grid"
        )
    return CodeRecord(indices, width, height, padding, str(meta["source"]))  # type: ignore[arg-type]


def _reason(err: BaseException) -> str:
    if isinstance(err, KeyError):
        return f"its metadata lacks {err}"
    if isinstance(err, RecursionError):
        return "its metadata is nested too deeply"
    return str(err).rstrip(".") or "its metadata does not make sense"
