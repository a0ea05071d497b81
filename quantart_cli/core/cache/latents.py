"""Latent cache for stage-2 training: encode both datasets once, then train from the stored latents.

Stage 2 never trains the encoders and every loss term lives in latent space, so the content and
style latents of an image never change during training. :func:`build_latent_cache` encodes every
image once with the frozen encoders of a :class:`~quantart_cli.core.models.StyleTransfer` and stores
what the training step would have computed: the quantized latents and their code indices (or the
continuous latents for the continuous variant).

Folder layout::

    manifest.json                  what the cache was made from (see below)
    content-00000.safetensors      items 0..shard_size-1 of the content list: latent.{i}, indices.{i}
    style-00000.safetensors        the same for the style list

The manifest records a fingerprint of the frozen encoder-side weights of each side (plus the
checkpoint files' SHA-256 when known), the image size, the resize mode, whether the latents are
continuous, and both path lists. A cache made from anything else is refused with a sentence naming
what differs (``rebuild=True`` re-encodes it). Shards are written atomically and a shard that exists
is complete, so an interrupted build continues where it stopped; items that could not be decoded are
listed in their shard's metadata and replaced at training time by the next readable item, as
:class:`~quantart_cli.core.data.datasets.UnpairedDataset` does.

Resize modes: ``squash`` (the original: every image to ``size x size``) or ``shorter-side`` (shorter
side to ``size``, the longer one rounded down to a multiple of the downsampling factor; used with
random crops, which :class:`LatentPairDataset` then takes in latent space at multiples of the
factor). Encoding runs in fp32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from quantart_cli.core.data.datasets import EpochMixin, item_rng, shared_zeros
from quantart_cli.core.data.transforms import ResizeFilter, resize_image, transform_image
from quantart_cli.core.devices import set_memory_format
from quantart_cli.core.errors import BadInputError, QuantartError, UsageError
from quantart_cli.core.io.images import image_to_tensor, load_image
from quantart_cli.core.io.limits import DEFAULT_MAX_PIXELS
from quantart_cli.core.train.ddp import DistInfo

logger = logging.getLogger(__name__)

CACHE_FORMAT = "quantart-latent-cache"
CACHE_VERSION = 1
MANIFEST = "manifest.json"
ROLES = ("content", "style")

ResizeMode = Literal["squash", "shorter-side"]

_CONTENT_SIDE = ("encoder", "quant_conv", "quantize_enc")
_STYLE_SIDE = ("encoder_real", "quant_conv_real", "quantize_dec")


# ------------------------------------------------------------------------------------- fingerprints


def weights_fingerprint(modules: Sequence[tuple[str, nn.Module]]) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of the modules' state dicts."""
    digest = hashlib.sha256()
    for prefix, module in modules:
        for key, tensor in sorted(module.state_dict().items()):
            value = tensor.detach().to("cpu").contiguous().reshape(-1)  # any memory order: the same bytes
            digest.update(f"{prefix}.{key}:{tuple(tensor.shape)}:{value.dtype}".encode())
            digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def encoder_fingerprints(model: nn.Module) -> dict[str, str]:
    """Fingerprints of the frozen weights that make the content and the style latents of ``model``."""
    out = {}
    for role, names in (("content", _CONTENT_SIDE), ("style", _STYLE_SIDE)):
        parts = [(name, getattr(model, name)) for name in names if getattr(model, name, None) is not None]
        out[role] = weights_fingerprint(parts)
    return out


# ----------------------------------------------------------------------------------------- progress


class CacheCallbacks:
    """Progress hooks of a cache build (no-ops here); a CLI maps them onto a progress bar."""

    def on_start(self, total: int, done: int) -> None:
        """``total`` items in both lists, ``done`` of them already encoded by an earlier run."""

    def on_advance(self, items: int) -> None:
        pass

    def on_message(self, text: str) -> None:
        pass


# ------------------------------------------------------------------------------------------ building


@dataclass(frozen=True)
class CacheSpec:
    """What a cache is made from; two caches with equal specs hold the same latents."""

    size: int
    resize: ResizeMode
    continuous: bool
    fingerprints: dict[str, str]
    content_paths: tuple[str, ...]
    style_paths: tuple[str, ...]
    shard_size: int = 256
    resize_filter: ResizeFilter = "opencv-linear"

    def paths(self, role: str) -> tuple[str, ...]:
        return self.content_paths if role == "content" else self.style_paths

    def shards(self, role: str) -> int:
        return -(-len(self.paths(role)) // self.shard_size)


def shorter_side_size(width: int, height: int, size: int, factor: int) -> tuple[int, int]:
    """(width, height) with the shorter side at ``size`` and the longer one rounded down to a multiple of ``factor``."""
    if width <= height:
        return size, max(size, int(height * size / width) // factor * factor)
    return max(size, int(width * size / height) // factor * factor), size


def cache_image(
    image: Image.Image, size: int, resize: ResizeMode, factor: int, resize_filter: ResizeFilter = "opencv-linear"
) -> Tensor:
    """An image as the cache encodes it: ``squash`` exactly as the training dataset does, else shorter side."""
    if resize == "squash":
        return transform_image(image, size, resize="squash", resize_filter=resize_filter)
    resized = resize_image(image, *shorter_side_size(*image.size, size, factor), resize_filter)
    return image_to_tensor(resized, batch=False)


class _Images(Dataset):
    """Decoded, resized images of one shard, or None for a file that cannot be decoded."""

    def __init__(self, paths: Sequence[str], start: int, size: int, resize: ResizeMode, factor: int,
                 resize_filter: ResizeFilter) -> None:
        self.paths, self.start, self.size, self.resize, self.factor = paths, start, size, resize, factor
        self.resize_filter = resize_filter

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None]:
        try:
            image = load_image(self.paths[i], max_pixels=DEFAULT_MAX_PIXELS)
        except QuantartError as err:
            logger.warning("Skipping image in the latent cache: %s", err)
            return self.start + i, None
        return self.start + i, cache_image(image, self.size, self.resize, self.factor, self.resize_filter)


def _shard_path(folder: Path, role: str, shard: int) -> Path:
    return folder / f"{role}-{shard:05d}.safetensors"


def _manifest_dict(spec: CacheSpec, checkpoints: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "size": spec.size,
        "resize": spec.resize,
        "resize_filter": spec.resize_filter,
        "continuous": spec.continuous,
        "fingerprints": dict(spec.fingerprints),
        "shard_size": spec.shard_size,
        "checkpoints": checkpoints or {},
        "content": {"count": len(spec.content_paths), "paths": list(spec.content_paths)},
        "style": {"count": len(spec.style_paths), "paths": list(spec.style_paths)},
    }


def _mismatch(manifest: dict[str, Any], spec: CacheSpec) -> str | None:
    """What differs between an existing manifest and the wanted spec, in words (None: nothing)."""
    if manifest.get("format") != CACHE_FORMAT or manifest.get("version") != CACHE_VERSION:
        return "another format"
    fingerprints = manifest.get("fingerprints", {})
    for role in ROLES:
        if fingerprints.get(role) != spec.fingerprints[role]:
            return f"other {role} encoder weights (another {role} checkpoint)"
    if manifest.get("continuous") != spec.continuous:
        return "continuous latents" if manifest.get("continuous") else "quantized latents"
    if manifest.get("size") != spec.size:
        return f"image size {manifest.get('size')} instead of {spec.size}"
    if manifest.get("resize") != spec.resize:
        return f"resize mode {manifest.get('resize')!r} instead of {spec.resize!r} (`random_crop` changes it)"
    if manifest.get("resize_filter", "antialias") != spec.resize_filter:
        return f"resize filter {manifest.get('resize_filter', 'antialias')!r} instead of {spec.resize_filter!r}"
    if manifest.get("shard_size") != spec.shard_size:
        return f"shard size {manifest.get('shard_size')} instead of {spec.shard_size}"
    for role in ROLES:
        if manifest.get(role, {}).get("paths") != list(spec.paths(role)):
            return f"another list of {role} images"
    return None


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BadInputError(f"{path} is not a readable latent-cache manifest ({err}).") from err


def _write_json_atomic(path: Path, obj: Any) -> None:
    from quantart_cli.core.io.atomic import atomic_write

    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj), encoding="utf-8"), what="latent-cache manifest")


def _clear(folder: Path) -> None:
    (folder / MANIFEST).unlink(missing_ok=True)  # first: a half-cleared folder is never taken as valid
    for role in ROLES:
        for stale in folder.glob(f"{role}-*.safetensors"):
            stale.unlink()


def _barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


@torch.no_grad()
def _encode(model: nn.Module, role: str, images: Tensor) -> tuple[Tensor, Tensor | None]:
    return model.encode_content(images) if role == "content" else model.encode_style(images)


def _batches(loader: DataLoader, batch_size: int) -> Iterator[tuple[list[int], Tensor | None, list[int]]]:
    """Group decoded images of equal shape into batches; yields (indices, images, failed indices)."""
    pending: list[tuple[int, Tensor]] = []
    failed: list[int] = []
    for index, image in loader:
        if image is None:
            failed.append(index)
            continue
        if pending and (pending[0][1].shape != image.shape or len(pending) == batch_size):
            yield [i for i, _ in pending], torch.stack([t for _, t in pending]), failed
            pending, failed = [], []
        pending.append((index, image))
    if pending or failed:
        yield [i for i, _ in pending], torch.stack([t for _, t in pending]) if pending else None, failed


def _encode_shard(
    model: nn.Module,
    spec: CacheSpec,
    role: str,
    shard: int,
    folder: Path,
    *,
    device: torch.device,
    batch_size: int,
    workers: int,
    callbacks: CacheCallbacks,
) -> None:
    from safetensors.torch import save_file

    from quantart_cli.core.io.atomic import atomic_write

    paths = spec.paths(role)
    start = shard * spec.shard_size
    chunk = paths[start : start + spec.shard_size]
    factor = (
        model.config.content.autoencoder.downsample_factor
        if role == "content"
        else model.config.style.autoencoder.downsample_factor
    )
    dataset = _Images(chunk, start, spec.size, spec.resize, factor, spec.resize_filter)
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    tensors: dict[str, Tensor] = {}
    failed: list[int] = []
    for indices, images, bad in _batches(loader, batch_size):
        failed += bad
        if images is not None:
            latents, codes = _encode(model, role, images.to(device))
            for j, index in enumerate(indices):
                tensors[f"latent.{index}"] = latents[j].float().cpu().contiguous().clone()
                if codes is not None:
                    tensors[f"indices.{index}"] = codes[j].to(torch.int32).cpu().contiguous().clone()
        callbacks.on_advance(len(indices) + len(bad))
    metadata = {
        "role": role,
        "shard": str(shard),
        "start": str(start),
        "count": str(len(chunk)),
        "failed": json.dumps(sorted(failed)),
    }
    atomic_write(_shard_path(folder, role, shard), lambda tmp: save_file(tensors, tmp, metadata=metadata),
                 what="latent-cache shard")


def build_latent_cache(
    model: nn.Module,
    folder: str | os.PathLike[str],
    content_paths: Sequence[str | os.PathLike[str]],
    style_paths: Sequence[str | os.PathLike[str]],
    *,
    size: int,
    resize: ResizeMode = "squash",
    resize_filter: ResizeFilter = "opencv-linear",
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    workers: int = 0,
    shard_size: int = 256,
    rebuild: bool = False,
    checkpoints: dict[str, Any] | None = None,
    callbacks: CacheCallbacks | None = None,
    info: DistInfo = DistInfo(),
) -> LatentCache:
    """Encode every content and style image with ``model``'s frozen encoders into ``folder`` and open it.

    ``model`` is a :class:`~quantart_cli.core.models.StyleTransfer`; its ``config.continuous`` decides
    whether quantized or continuous latents are stored. Shards already present are kept (resume);
    a folder made from other weights or settings raises :class:`UsageError` unless ``rebuild``.
    Under torchrun every rank encodes its share of the shards. ``checkpoints`` is provenance
    recorded in the manifest (e.g. the stage-1 files and their SHA-256).
    """
    callbacks = callbacks or CacheCallbacks()
    folder = Path(folder)
    device = torch.device(device)
    if resize not in ("squash", "shorter-side"):
        raise UsageError(f"The latent cache's resize mode must be 'squash' or 'shorter-side', got {resize!r}.")
    spec = CacheSpec(
        size=size,
        resize=resize,
        continuous=bool(model.config.continuous),
        fingerprints=encoder_fingerprints(model),
        content_paths=tuple(str(Path(p).absolute()) for p in content_paths),
        style_paths=tuple(str(Path(p).absolute()) for p in style_paths),
        shard_size=shard_size,
        resize_filter=resize_filter,
    )
    if info.is_main:
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{folder} is a file; `cache` needs a folder.")
        folder.mkdir(parents=True, exist_ok=True)
        manifest = _read_manifest(folder)
        if manifest is not None:
            differs = _mismatch(manifest, spec)
            if differs is not None and not rebuild:
                raise UsageError(
                    f"The latent cache {folder} was made from {differs}; use another `cache` folder "
                    "or add `rebuild_cache` to re-encode it."
                )
            if differs is not None:
                callbacks.on_message(f"Rebuilding the latent cache {folder}: it was made from {differs}.")
                _clear(folder)
                manifest = None
        elif any(next(folder.glob(f"{role}-*.safetensors"), None) is not None for role in ROLES):
            # the manifest is written before any shard, so these were not made by a cache build: not ours to delete
            raise UsageError(
                f"{folder} holds content-/style-*.safetensors files but no latent-cache manifest, so quantart did not "
                "write them; use an empty `cache` folder (nothing there was deleted)."
            )
        if manifest is None:
            _write_json_atomic(folder / MANIFEST, _manifest_dict(spec, checkpoints))
    _barrier(info)

    jobs = [(role, shard) for role in ROLES for shard in range(spec.shards(role))]
    pending = [(r, s) for r, s in jobs if not _shard_path(folder, r, s).is_file()]
    total = len(spec.content_paths) + len(spec.style_paths)

    def items(role: str, shard: int) -> int:
        return len(spec.paths(role)[shard * shard_size : (shard + 1) * shard_size])

    done = total - sum(items(r, s) for r, s in pending)
    mine = pending[info.rank :: info.world_size]
    _barrier(info)  # every rank lists the missing shards before any rank writes one
    callbacks.on_start(total, done)
    if mine:
        was_training = model.training
        set_memory_format(model.eval(), True)  # as inference runs (training sets the order it trains in itself)
        try:
            for role, shard in mine:
                _encode_shard(
                    model,
                    spec,
                    role,
                    shard,
                    folder,
                    device=device,
                    batch_size=batch_size,
                    workers=workers,
                    callbacks=callbacks,
                )
        finally:
            model.train(was_training)
    _barrier(info)
    return LatentCache(folder)


# ------------------------------------------------------------------------------------------- reading


class LatentCache:
    """A finished cache folder: latents by role and item index, with unreadable items substituted."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        from safetensors import safe_open

        self.folder = Path(folder)
        manifest = _read_manifest(self.folder)
        if manifest is None or manifest.get("format") != CACHE_FORMAT:
            raise BadInputError(f"{self.folder} is not a quantart latent cache (no {MANIFEST}).")
        self.manifest = manifest
        self.continuous = bool(manifest["continuous"])
        self.shard_size = int(manifest["shard_size"])
        self.counts = {role: int(manifest[role]["count"]) for role in ROLES}
        self.failed: dict[str, set[int]] = {role: set() for role in ROLES}
        for role in ROLES:
            for shard in range(-(-self.counts[role] // self.shard_size)):
                path = _shard_path(self.folder, role, shard)
                if not path.is_file():
                    raise BadInputError(f"The latent cache {self.folder} is incomplete: {path.name} is missing.")
                with safe_open(str(path), framework="pt") as f:
                    self.failed[role].update(json.loads((f.metadata() or {}).get("failed", "[]")))
            if len(self.failed[role]) >= max(self.counts[role], 1):
                raise BadInputError(f"None of the {role} images in the latent cache {self.folder} could be decoded.")
        self._handles: dict[tuple[int, str, int], Any] = {}

    def __len__(self) -> int:
        return self.counts["content"]

    @property
    def fingerprints(self) -> dict[str, str]:
        return dict(self.manifest["fingerprints"])

    def paths(self, role: str) -> list[str]:
        return list(self.manifest[role]["paths"])

    def readable_index(self, role: str, index: int) -> int:
        """``index`` or, when that image could not be decoded, the next readable one (wrapping)."""
        count = self.counts[role]
        for step in range(count):
            candidate = (index + step) % count
            if candidate not in self.failed[role]:
                return candidate
        raise BadInputError(f"None of the {role} images in the latent cache could be decoded.")

    def _handle(self, role: str, shard: int) -> Any:
        from safetensors import safe_open

        key = (os.getpid(), role, shard)  # one handle per process: DataLoader workers open their own
        if key not in self._handles:
            self._handles[key] = safe_open(str(_shard_path(self.folder, role, shard)), framework="pt")
        return self._handles[key]

    def get(self, role: str, index: int) -> tuple[Tensor, Tensor | None, int]:
        """(latent (C, h, w) fp32, indices (h, w) int64 or None, the item index actually read)."""
        index = self.readable_index(role, index)
        handle = self._handle(role, index // self.shard_size)
        latent = handle.get_tensor(f"latent.{index}")
        indices = None if self.continuous else handle.get_tensor(f"indices.{index}").long()
        return latent, indices, index

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}  # file handles do not cross process boundaries
        return state


def crop_and_flip(
    latent: Tensor,
    indices: Tensor | None,
    target: int,
    *,
    rng: random.Random,
    random_crop: bool = False,
    hflip: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Crop a (C, h, w) latent (and its (h, w) indices) to ``target x target`` and maybe flip it.

    Offsets are random with ``random_crop`` (drawn from ``rng``), else centred; ``hflip`` flips with
    probability 0.5 (drawn from ``rng`` after the offsets).
    """
    height, width = latent.shape[-2:]
    if height < target or width < target:
        raise BadInputError(f"A cached latent of {height}x{width} is smaller than the training size {target}x{target}.")
    if random_crop:
        top, left = rng.randint(0, height - target), rng.randint(0, width - target)
    else:
        top, left = (height - target) // 2, (width - target) // 2
    latent = latent[:, top : top + target, left : left + target]
    if indices is not None:
        indices = indices[top : top + target, left : left + target]
    if hflip and rng.random() < 0.5:
        latent = latent.flip(-1)
        indices = None if indices is None else indices.flip(-1)
    return latent.contiguous(), None if indices is None else indices.contiguous()


class LatentPairDataset(EpochMixin, Dataset):
    """Stage-2 pairs from a :class:`LatentCache`, paired exactly like ``UnpairedDataset``.

    Items: ``{"content_latent", "style_latent": (C, t, t) float32, "content_indices", "style_indices"
    (absent for continuous caches), "content_index", "style_index": int}``. ``content_size`` and
    ``style_size`` are the latent sides ``t`` (image size / downsampling factor). With ``random_crop``
    the crop offsets are drawn per (seed, epoch, item), so a crop is a crop of the image at multiples
    of the factor; ``hflip`` flips the latent (and its indices) with probability 0.5.
    """

    def __init__(
        self,
        cache: LatentCache,
        *,
        content_size: int,
        style_size: int,
        seed: int = 0,
        random_crop: bool = False,
        hflip: bool = False,
    ) -> None:
        self.cache = cache
        self.content_size, self.style_size = content_size, style_size
        self.seed, self.random_crop, self.hflip = seed, random_crop, hflip
        n_content, n_style = cache.counts["content"], cache.counts["style"]
        self._length = min(n_content, n_style) if n_style > 1 else n_content
        self._epoch = shared_zeros(1, torch.int64)

    def __len__(self) -> int:
        return self._length

    def style_index(self, index: int) -> int:
        """The style item drawn for content item ``index`` this epoch: the rule of ``UnpairedDataset``."""
        return item_rng(self.seed, self.epoch, index, "pair").randrange(self.cache.counts["style"])

    def _side(self, role: str, index: int, target: int, epoch: int, item: int) -> tuple[Tensor, Tensor | None, int]:
        latent, indices, read = self.cache.get(role, index)
        rng = item_rng(self.seed, epoch, item, f"{role}-latent")
        latent, indices = crop_and_flip(
            latent, indices, target, rng=rng, random_crop=self.random_crop, hflip=self.hflip
        )
        return latent, indices, read

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for a dataset of {self._length} pairs")
        epoch = self.epoch
        content, content_codes, content_read = self._side("content", index, self.content_size, epoch, index)
        style, style_codes, style_read = self._side("style", self.style_index(index), self.style_size, epoch, index)
        item: dict[str, Any] = {
            "content_latent": content,
            "style_latent": style,
            "content_index": content_read,
            "style_index": style_read,
        }
        if content_codes is not None and style_codes is not None:
            item["content_indices"], item["style_indices"] = content_codes, style_codes
        return item


__all__ = [
    "CACHE_FORMAT",
    "MANIFEST",
    "CacheCallbacks",
    "CacheSpec",
    "LatentCache",
    "LatentPairDataset",
    "build_latent_cache",
    "cache_image",
    "crop_and_flip",
    "encoder_fingerprints",
    "shorter_side_size",
    "weights_fingerprint",
]
