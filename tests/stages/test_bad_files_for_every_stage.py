"""A reliability probe through the command line: bad files for every file input of every stage.

Each case (seeded, so a failure names a case that replays) runs one command with one bad input: empty,
text, random, truncated, mislabelled, hostile (absurd or deeply nested headers, wrong types, code-executing
pickles, huge declared images). Every case must end non-zero with exactly one ``error:`` sentence that is not
the "unexpected ..." fallback, print no traceback, and leave every file of the sandbox as it was.
``test_probe_figures`` prints the tally that docs/reliability.md quotes.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from cli_support import run_cli
from PIL import Image
from safetensors.torch import save_file
from tiny_models import tiny_st_config, tiny_vq_config

from quantart_cli.core.io.checkpoints import save_checkpoint
from quantart_cli.core.models import VQGAN, StyleTransfer

TINY = tiny_vq_config(ch=32, z_channels=16)


class _Executes:
    """A pickle that would run code when unpickled (it must be refused, not run)."""

    def __reduce__(self):
        return (print, ("this ran",))


def _png(width: int = 32, height: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 60, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _huge_declared_png() -> bytes:
    data = bytearray(_png())
    data[16:24] = struct.pack(">II", 200_000, 200_000)  # IHDR width/height; the CRC no longer matches
    return bytes(data)


def _safetensors_with(header: object, raw: bytes | None = None) -> bytes:
    text = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text


def _bad_images(rng: random.Random) -> dict[str, bytes]:
    png = _png()
    return {
        "empty": b"", "text": b"just some words\n", "random": rng.randbytes(2048),
        "truncated png": png[: len(png) // 2], "huge declared png": _huge_declared_png(),
    }


def _bad_checkpoints(rng: random.Random, good: bytes) -> dict[str, bytes]:
    nested = "[" * 5000 + "]" * 5000
    buffer = io.BytesIO()
    torch.save({"state_dict": {}, "hook": _Executes()}, buffer)
    return {
        "empty": b"", "text": b"not a checkpoint\n", "random": rng.randbytes(4096),
        "truncated zip": good[: len(good) // 3],
        "zip with a broken member": _broken_zip(good),
        "absurd safetensors header": struct.pack("<Q", 1 << 60) + b"{}",
        "nested safetensors header": _safetensors_with(None, nested.encode()),
        "wrong-typed safetensors metadata": _safetensors_with({"__metadata__": {"format": ["quantart"], "kind": 3}}),
        "code-executing pickle": buffer.getvalue(),
        "an image named .pt": _png(),
    }


def _broken_zip(good: bytes) -> bytes:
    """The checkpoint's pickle (its structure) reversed, every tensor intact."""
    source = zipfile.ZipFile(io.BytesIO(good))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, data[::-1] if item.filename.endswith("data.pkl") else data)
    return out.getvalue()


def _bad_code_files(rng: random.Random, tmp: Path) -> dict[str, bytes]:
    def code(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
        path = tmp / f"code-{rng.random()}.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        return path.read_bytes()

    base = {"format": "quantart-codes", "format_version": "1", "checkpoint_sha256": "0" * 64, "n_embed": "16",
            "downsample_factor": "2"}
    record = {"key": "indices", "width": 8, "height": 8, "padding": [0, 0, 0, 0], "source": "x.png"}
    grid = torch.zeros(4, 4, dtype=torch.int16)
    return {
        "not a code file": code({"indices": grid}, {"format": "other"}),
        "float indices": code({"indices": grid.float()}, {**base, "records": json.dumps([record])}),
        "indices out of range": code({"indices": grid + 99}, {**base, "records": json.dumps([record])}),
        "size that does not fit": code({"indices": grid}, {**base, "records": json.dumps([{**record, "width": 3}])}),
        "nested records": code({"indices": grid}, {**base, "records": "[" * 5000 + "]" * 5000}),
        "records of the wrong type": code({"indices": grid}, {**base, "records": json.dumps({"a": 1})}),
        "random": rng.randbytes(512),
    }


def _bad_manifests(rng: random.Random, photo: Path) -> dict[str, bytes]:
    return {
        "binary": rng.randbytes(300), "empty": b"", "header only": b"stylized,content,style\n",
        "wrong header": b"a,b\n1,2\n", "missing file": f"stylized,content,style\nnone.png,{photo},{photo}\n".encode(),
        "alpha not a number": f"stylized,content,style,alpha\n{photo},{photo},{photo},high\n".encode(),
    }


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("probe")
    photos = root / "photos"
    photos.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i, 90, 160)).save(photos / f"p{i}.png")
    torch.manual_seed(0)
    vq = save_checkpoint(VQGAN(TINY), root / "vq.pt")
    st = save_checkpoint(StyleTransfer(tiny_st_config(TINY)), root / "st.pt")
    return {"root": root, "photos": photos, "photo": photos / "p0.png", "vq": vq, "st": st}


def _cases(sandbox: dict[str, Path]) -> list[tuple[str, str, bytes, Callable[[Path], list[str]]]]:
    """(stage, what, bad bytes, argv for a bad file at a path)."""
    rng = random.Random(18)
    s = sandbox
    out = str(s["root"] / "out")
    cases: list[tuple[str, str, bytes, Callable[[Path], list[str]]]] = []
    for name, data in _bad_images(rng).items():
        cases += [
            ("stylize", f"content image: {name}", data,
             lambda p: ["stylize", str(p), "--style", str(s["photo"]), "--ckpt", str(s["st"]), "-o", out]),
            ("stylize", f"style image: {name}", data,
             lambda p: ["stylize", str(s["photo"]), "--style", str(p), "--ckpt", str(s["st"]), "-o", out]),
            ("encode", f"image: {name}", data, lambda p: ["encode", str(p), "--ckpt", str(s["vq"]), "--out", out]),
            ("evaluate", f"photo: {name}", data,
             lambda p: ["evaluate", "--content", str(p), "--style", str(s["photo"]), "--ckpt", str(s["st"]),
                        "--networks", "off", "--size", "32"]),
        ]
    good = s["vq"].read_bytes()
    for name, data in _bad_checkpoints(rng, good).items():
        cases += [
            ("stylize", f"checkpoint: {name}", data,
             lambda p: ["stylize", str(s["photo"]), "--style", str(s["photo"]), "--ckpt", str(p), "-o", out]),
            ("encode", f"checkpoint: {name}", data,
             lambda p: ["encode", str(s["photo"]), "--ckpt", str(p), "--out", out]),
            ("inspect-codebook", f"checkpoint: {name}", data, lambda p: ["inspect-codebook", str(p)]),
            ("convert", f"checkpoint: {name}", data, lambda p: ["convert", str(p), str(s["root"] / "converted.pt")]),
            ("train-sga", f"stage-1 checkpoint: {name}", data,
             lambda p: ["train-sga", "--preset", "tiny", "--content-vq", str(p), "--style-vq", str(s["vq"]),
                        "--content-data", str(s["photos"]), "--style-data", str(s["photos"]), "--out",
                        str(s["root"] / "sga-run")]),
        ]
    for name, data in _bad_code_files(rng, s["root"]).items():
        cases.append(("encode --decode", f"code file: {name}", data,
                      lambda p: ["encode", str(p), "--decode", "--ckpt", str(s["vq"]), "--out", out]))
    for name, data in _bad_manifests(rng, s["photo"]).items():
        cases.append(("evaluate", f"manifest: {name}", data,
                      lambda p: ["evaluate", "--manifest", str(p), "--networks", "off", "--size", "32"]))
    return cases


def _suffix(stage: str, what: str) -> str:
    if "manifest" in what:
        return ".csv"
    if "code file" in what:
        return ".safetensors"
    if "checkpoint" in what:
        return ".safetensors" if "safetensors" in what else ".pt"
    return ".jpg" if "png" not in what else ".png"


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "out" not in p.parts}


def _probe(capsys, sandbox) -> dict[str, list[str]]:
    outcomes: dict[str, list[str]] = {"one sentence": [], "internal error": [], "traceback": [], "exit 0": [],
                                      "rambling": [], "inputs changed": []}
    for index, (stage, what, data, argv) in enumerate(_cases(sandbox)):
        bad = sandbox["root"] / "bad" / f"case{index}{_suffix(stage, what)}"
        bad.parent.mkdir(exist_ok=True)
        bad.write_bytes(data)
        before = _digests(sandbox["root"])
        result = run_cli(capsys, *argv(bad), "--device", "cpu")
        label = f"{stage} / {what}: {result.err.strip()[:200]}"
        errors = [line for line in result.err.splitlines() if line.startswith("error:")]
        if result.code == 0:
            outcomes["exit 0"].append(label)
        elif "Traceback" in result.err:
            outcomes["traceback"].append(label)
        elif any("unexpected" in line for line in errors):
            outcomes["internal error"].append(label)
        elif len(errors) != 1:
            outcomes["rambling"].append(label)
        else:
            outcomes["one sentence"].append(label)
        after = _digests(sandbox["root"])
        if any(after.get(name) != digest for name, digest in before.items()):
            outcomes["inputs changed"].append(label)
    return outcomes


def test_every_bad_input_of_every_stage_ends_in_one_sentence_and_changes_nothing(capsys, sandbox):
    outcomes = _probe(capsys, sandbox)
    problems = {k: v for k, v in outcomes.items() if k != "one sentence" and v}
    assert not problems, json.dumps(problems, indent=1)
    assert len(outcomes["one sentence"]) >= 60
    with capsys.disabled():
        print(f"\nreliability probe: {len(outcomes['one sentence'])} bad inputs across 7 commands, each one sentence; "
              "0 internal errors, 0 tracebacks, 0 inputs changed")


def test_a_code_executing_checkpoint_never_runs(capsys, sandbox):
    buffer = io.BytesIO()
    torch.save({"state_dict": {}, "hook": _Executes()}, buffer)
    path = sandbox["root"] / "evil.pt"
    path.write_bytes(buffer.getvalue())
    result = run_cli(capsys, "inspect-codebook", str(path), "--device", "cpu")
    assert result.code != 0 and "this ran" not in result.out + result.err
