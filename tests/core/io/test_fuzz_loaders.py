"""Fuzzing the image loader and the checkpoint loader with truncated, bit-flipped, random and mislabeled files.

Every case must end in a valid result or a ``QuantartError`` (one sentence for the user): never another
exception, never a hang (each case runs under an alarm). A seeded generator keeps the cases the same on
every run, so a failure names a case that can be replayed.
"""

from __future__ import annotations

import io
import random
import signal
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import seeded_vqgan, tiny_vq_config

from quantart_cli.core.errors import QuantartError
from quantart_cli.core.io.checkpoint_format import LoadedCheckpoint
from quantart_cli.core.io.checkpoints import load_checkpoint, read_checkpoint_header, save_checkpoint
from quantart_cli.core.io.images import load_image
from quantart_cli.core.models import VQGAN

CASE_SECONDS = 5  # far above any honest case (milliseconds); only a hang reaches it
MAX_PIXELS = 1 << 20  # a mutated header may declare a huge image: refuse it rather than decode it


class _Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def alarm(signum, frame):
        raise _Hang

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def mutations(data: bytes, rng: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    """Truncations (including inside the header), byte flips, spliced garbage and overwritten spans."""
    for _ in range(count):
        kind = rng.choice(["truncate", "truncate-header", "flip", "flip-many", "splice", "zero-span"])
        if kind == "truncate":
            cut = rng.randrange(1, len(data))
            yield f"truncate@{cut}", data[:cut]
        elif kind == "truncate-header":
            cut = rng.randrange(1, min(64, len(data)))
            yield f"truncate-header@{cut}", data[:cut]
        elif kind in ("flip", "flip-many"):
            mutated = bytearray(data)
            positions = [rng.randrange(len(data)) for _ in range(1 if kind == "flip" else rng.randint(2, 32))]
            for pos in positions:
                mutated[pos] ^= 1 << rng.randrange(8)
            yield f"{kind}@{positions[:3]}", bytes(mutated)
        elif kind == "splice":
            pos = rng.randrange(len(data))
            yield f"splice@{pos}", data[:pos] + rng.randbytes(rng.randint(1, 64)) + data[pos:]
        else:
            pos = rng.randrange(len(data))
            yield f"zero-span@{pos}", data[:pos] + bytes(min(256, len(data) - pos)) + data[pos + 256:]


def run_cases(cases: list[tuple[str, str, bytes]], folder: Path, load: Callable[[Path], object],
              valid: Callable[[object], bool], seconds: int = CASE_SECONDS) -> dict[str, int]:
    """Write each case under its file name, load it, and collect every outcome that is not allowed."""
    bad: list[str] = []
    outcomes = {"valid": 0, "refused": 0}
    for index, (label, name, data) in enumerate(cases):
        path = folder / f"{index:04d}_{name}"
        path.write_bytes(data)
        try:
            with time_limit(seconds):
                result = load(path)
        except QuantartError as err:
            message = str(err)
            if not message or "\n" in message or "Traceback" in message:
                bad.append(f"{label} ({name}): QuantartError that is not one sentence: {message!r}")
            outcomes["refused"] += 1
        except _Hang:
            bad.append(f"{label} ({name}): no answer within {seconds} s")
        except Exception as err:  # noqa: BLE001 - exactly what this test hunts for
            bad.append(f"{label} ({name}): {type(err).__name__}: {str(err)[:200]}")
        else:
            if not valid(result):
                bad.append(f"{label} ({name}): returned an invalid result {type(result).__name__}")
            outcomes["valid"] += 1
        finally:
            path.unlink(missing_ok=True)
    assert not bad, f"{len(bad)} of {len(cases)} cases misbehaved:\n" + "\n".join(bad[:20])
    return outcomes


def test_harness_reports_crashes_hangs_and_rambling_errors(tmp_path: Path) -> None:
    import time

    from quantart_cli.core.errors import BadInputError

    def misbehave(path: Path) -> object:
        kind = path.read_bytes()
        if kind == b"crash":
            raise KeyError("x")
        if kind == b"hang":
            time.sleep(3)
        if kind == b"ramble":
            raise BadInputError("line one\nline two")
        return None

    for kind in (b"crash", b"hang", b"ramble"):
        with pytest.raises(AssertionError, match="1 of 1 cases misbehaved"):
            run_cases([("self-test", "x.bin", kind)], tmp_path, misbehave, lambda r: True, seconds=1)


# ------------------------------------------------------------------------------------------------ images


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def image_seeds() -> dict[str, bytes]:
    """Small valid files in every format and several modes the loader handles."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8), "RGB")
    rgba = Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), "RGBA")
    gray16 = Image.fromarray(rng.integers(0, 65535, (16, 12), dtype=np.uint16))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate on load
    return {
        "rgb.png": _encoded(rgb, "PNG"),
        "rgba.png": _encoded(rgba, "PNG"),
        "palette.png": _encoded(rgb.convert("P"), "PNG", transparency=0),
        "gray16.png": _encoded(gray16, "PNG"),
        "rgb.jpg": _encoded(rgb, "JPEG", quality=90, exif=exif.tobytes()),
        "cmyk.jpg": _encoded(rgb.convert("CMYK"), "JPEG"),
        "progressive.jpg": _encoded(rgb, "JPEG", progressive=True),
        "rgb.webp": _encoded(rgb, "WEBP", quality=80),
        "rgb.gif": _encoded(rgb.convert("P"), "GIF"),
        "rgb.bmp": _encoded(rgb, "BMP"),
        "rgb.tif": _encoded(rgb, "TIFF", compression="tiff_lzw"),
    }


def _valid_image(result: object) -> bool:
    return isinstance(result, Image.Image) and result.mode == "RGB" and min(result.size) >= 1


def test_fuzz_image_loader(tmp_path: Path) -> None:
    rng = random.Random(20230)
    seeds = image_seeds()
    cases: list[tuple[str, str, bytes]] = []
    for name, data in seeds.items():
        cases.append(("intact", name, data))
        cases += [(label, name, mutated) for label, mutated in mutations(data, rng, 22)]
    suffixes = [".png", ".jpg", ".webp", ".gif", ".bmp", ".tif"]
    for name, data in seeds.items():  # mislabeled: a valid image under another format's suffix
        cases.append(("mislabeled", f"{name}{rng.choice(suffixes)}", data))
    magics = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBP", b"GIF89a", b"BM", b"II*\x00"]
    for i in range(30):  # random bytes, some behind a real magic number
        body = rng.randbytes(rng.randint(0, 300))
        cases.append(("random", f"r{i}{rng.choice(suffixes)}", (rng.choice(magics) if i % 2 else b"") + body))
    cases.append(("empty", "empty.png", b""))
    cases.append(("checkpoint-as-image", "ckpt.png", b"PK\x03\x04" + rng.randbytes(200)))
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcomes = run_cases(cases, tmp_path, lambda p: load_image(p, max_pixels=MAX_PIXELS), _valid_image)
    # A damaged header or EXIF block is the loader's business (an error or a log line), not a Python warning
    # printed on the user's terminal.
    assert [str(w.message) for w in caught if w.category is UserWarning] == []
    assert len(cases) >= 280
    assert outcomes["valid"] >= len(seeds) and outcomes["refused"] >= 100, outcomes


def test_fuzz_huge_declared_image_is_refused_not_decoded(tmp_path: Path) -> None:
    """A 20-byte change turns a tiny PNG into one that declares 60000 x 60000 pixels."""
    data = bytearray(_encoded(Image.new("RGB", (8, 8)), "PNG"))
    data[16:24] = (60000).to_bytes(4, "big") * 2  # IHDR width and height (the CRC no longer matches)
    path = tmp_path / "huge.png"
    path.write_bytes(bytes(data))
    with time_limit(CASE_SECONDS), pytest.raises(QuantartError):
        load_image(path, max_pixels=MAX_PIXELS)


# ------------------------------------------------------------------------------------------- checkpoints


def _tiny_model() -> VQGAN:
    return seeded_vqgan(tiny_vq_config(ch=4, resolution=16, z_channels=4, n_embed=8), 0)


def checkpoint_seeds(folder: Path) -> dict[str, bytes]:
    model = _tiny_model()
    native = save_checkpoint(model, folder / "seed.pt", step=3, codebook_usage={"quantize": torch.arange(8)})
    safetensors = save_checkpoint(model, folder / "seed.safetensors", step=3)
    legacy = folder / "legacy.pt"
    torch.save(torch.load(native, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    lightning = folder / "lightning.ckpt"
    torch.save({"state_dict": model.state_dict(), "global_step": 7}, lightning)
    return {p.name: p.read_bytes() for p in (native, safetensors, legacy, lightning)}


def _zip_with_member_replaced(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """A well-formed zip whose data.pkl or one tensor record is swapped for garbage (CRC stays valid)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    names = source.namelist()
    victim = rng.choice([n for n in names if n.endswith("data.pkl")] + rng.sample(names, 2))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for name in names:
            content = source.read(name)
            if name == victim:
                content = rng.randbytes(len(content) or 8) if rng.random() < 0.5 else content[: len(content) // 2]
            target.writestr(name, content)
    return f"zip-member:{victim.rsplit('/', 1)[-1]}", out.getvalue()


def _valid_checkpoint(result: object) -> bool:
    return isinstance(result, LoadedCheckpoint) and result.kind in ("vqgan", "style-transfer")


def test_fuzz_checkpoint_loader(tmp_path: Path) -> None:
    rng = random.Random(4242)
    seeds = checkpoint_seeds(tmp_path)
    cases: list[tuple[str, str, bytes]] = []
    for name, data in seeds.items():
        cases.append(("intact", name, data))
        cases += [(label, name, mutated) for label, mutated in mutations(data, rng, 45)]
    for _ in range(20):
        label, data = _zip_with_member_replaced(seeds["seed.pt"], rng)
        cases.append((label, "member.pt", data))
    # Mislabeled: every seed under every other suffix (files are recognised by content).
    for name, data in seeds.items():
        for suffix in (".pt", ".safetensors", ".ckpt", ".png"):
            cases.append(("mislabeled", f"{name}{suffix}", data))
    header = b'{"__metadata__": {"format": "quantart"}}'
    for i in range(20):
        cases.append(("random", f"r{i}.pt", rng.randbytes(rng.randint(1, 400))))
        # A safetensors-looking length prefix with garbage (and sometimes a huge declared header).
        length = rng.choice([len(header), 2**40, rng.randint(0, 500)])
        cases.append(("random-safetensors", f"s{i}.safetensors", length.to_bytes(8, "little") + header))
    cases.append(("image-as-checkpoint", "photo.pt", _encoded(Image.new("RGB", (8, 8)), "PNG")))
    cases.append(("empty", "empty.pt", b""))
    outcomes = run_cases(cases, tmp_path, load_checkpoint, _valid_checkpoint)
    assert len(cases) >= 250
    assert outcomes["valid"] >= len(seeds) and outcomes["refused"] >= 100, outcomes


def test_fuzz_checkpoint_header_reader(tmp_path: Path) -> None:
    """The listing path (headers only, memory-mapped) obeys the same rule on a smaller sample."""
    rng = random.Random(77)
    seeds = checkpoint_seeds(tmp_path)
    cases = [(label, name, mutated) for name, data in seeds.items() for label, mutated in mutations(data, rng, 12)]
    run_cases(cases, tmp_path, read_checkpoint_header, lambda header: hasattr(header, "kind"))
