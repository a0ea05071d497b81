"""``torchrun --nproc_per_node 2 -m quantart_cli stylize|encode FOLDER`` on the CPU (gloo): each output written once,
by one process, with the bytes a single process writes; one summary; errors said once, no process left waiting.

Slow tier: each torchrun starts two Python processes that import torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import run_cli, subprocess_env
from image_files import smooth_images, truncated_jpeg

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _torchrun(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "quantart_cli", *map(str, args), "--device", "cpu"]
    env = {**subprocess_env(), "GLOO_SOCKET_IFNAME": "lo"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _lines(err: str, start: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(start)]


def _same_files(one: Path, two: Path) -> list[str]:
    names = sorted(str(p.relative_to(one)) for p in one.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(two)) for p in two.rglob("*") if p.is_file())
    assert all((one / name).read_bytes() == (two / name).read_bytes() for name in names), names
    return names


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Five 32x32 photos, two 32x48 ones among them and an unreadable JPEG in the middle."""
    folder = smooth_images(tmp_path / "photos", 5)
    for index, wide in enumerate(sorted(smooth_images(tmp_path / "wide", 2, seed=1, size=(32, 48)).iterdir())):
        wide.rename(folder / f"img_{index + 1}w.png")
    truncated_jpeg(folder / "img_2b.jpg")
    return folder


def test_stylize_split_across_two_processes_writes_what_one_process_writes(capsys, tmp_path, photos,
                                                                          tiny_style_transfer):
    style = smooth_images(tmp_path / "style", 1, seed=2) / "img_0.png"
    args = (photos, "--style", style, "--ckpt", tiny_style_transfer, "--json")
    one = run_cli(capsys, "stylize", *map(str, args), "--out", str(tmp_path / "one"), "--device", "cpu")
    assert one.code == 1 and "1 of 8 content images could not be stylized" in one.err, one.err

    two = _torchrun("stylize", *args, "--out", tmp_path / "two")
    assert two.returncode != 0
    outputs = [json.loads(line)["output"] for line in two.stdout.splitlines()]
    assert len(outputs) == len(set(outputs)) == 7  # each output written once, by one of the processes
    assert len(_same_files(tmp_path / "one", tmp_path / "two")) == 7
    # one summary for both processes; the unreadable photo named by the process that had it
    assert _lines(two.stderr, "splitting ") == ["splitting 8 image(s) across 2 processes, each with its own copy "
                                                "of the model"]
    assert len(_lines(two.stderr, "model ")) == 1
    assert _lines(two.stderr, "done: ") == ["done: 7 written, 0 skipped, 1 failed"]
    assert len(_lines(two.stderr, "warning: ")) == 1 and "img_2b.jpg" in _lines(two.stderr, "warning: ")[0]
    assert _lines(two.stderr, "error: ") == ["error: 1 of 8 content images could not be stylized (each named "
                                             "above); 7 were written."]

    again = _torchrun("stylize", *args, "--out", tmp_path / "two")  # every process plans from the same files
    assert _lines(again.stderr, "skipping ") == ["skipping 7 image(s) up to date with this model, style and "
                                                 "options; --overwrite redoes them"]
    assert _lines(again.stderr, "done: ") == ["done: 0 written, 7 skipped, 1 failed"]
    assert again.stdout == ""


def test_stylize_errors_are_said_once_and_no_process_waits_for_ever(tmp_path, photos, tiny_style_transfer):
    """A mistake every process finds is said by rank 0 alone; an error on one process only (an output it cannot
    write) is said by that process, and the other one stops too, after its own share."""
    no_style = _torchrun("stylize", photos, "--ckpt", tiny_style_transfer)
    assert no_style.returncode != 0
    assert _lines(no_style.stderr, "error: ") == ["error: stylize needs --style, a reference painting (repeat --style "
                                                  "to blend several)."]
    out = tmp_path / "out"
    (out / "img_3_stylized.png").mkdir(parents=True)  # the sixth of seven outputs: the second process's third
    (photos / "img_2b.jpg").unlink()
    blocked = _torchrun("stylize", photos, "--style", photos / "img_0.png", "--ckpt", tiny_style_transfer,
                        "--out", out, "--overwrite")
    assert blocked.returncode != 0
    assert _lines(blocked.stderr, "error: ") == [f"error: Cannot write image {out / 'img_3_stylized.png'} (Is a "
                                                 "directory; nothing was replaced)."]
    assert "local_rank: 1" in blocked.stderr  # torchrun names the process that failed, not the one that waited
    assert not _lines(blocked.stderr, "done: ")
    written = {p.name for p in out.iterdir() if p.is_file()}
    assert written == {f"img_{name}_stylized.png" for name in ("0", "1", "1w", "2", "2w", "4")}


def test_encode_and_decode_split_across_two_processes_write_what_one_process_writes(capsys, tmp_path, photos,
                                                                                    tiny_vq):
    """Batches are made within groups of --batch-size consecutive images, each group encoded by one process, so the
    codes do not depend on the number of processes (the unreadable image and the wider ones change batches)."""
    args = ("--ckpt", str(tiny_vq), "--batch-size", "2", "--device", "cpu")
    one = run_cli(capsys, "encode", str(photos), *args, "--out", str(tmp_path / "one"))
    assert one.code == 1 and "1 of 8 images could not be encoded" in one.err, one.err
    two = _torchrun("encode", photos, *args[:-2], "--out", tmp_path / "two")
    assert two.returncode != 0
    assert len(two.stdout.splitlines()) == len(_same_files(tmp_path / "one", tmp_path / "two")) == 7
    assert _lines(two.stderr, "error: ") == ["error: 1 of 8 images could not be encoded (each named above); 7 were."]

    single = run_cli(capsys, "encode", str(photos), *args, "--single-file", "--out", str(tmp_path / "one.safetensors"))
    assert single.code == 1, single.err
    both = _torchrun("encode", photos, *args[:-2], "--single-file", "--out", tmp_path / "two.safetensors")
    assert both.stdout == f"{tmp_path / 'two.safetensors'}\n"  # written once, by rank 0
    assert (tmp_path / "one.safetensors").read_bytes() == (tmp_path / "two.safetensors").read_bytes()

    decoded = run_cli(capsys, "encode", str(tmp_path / "one.safetensors"), "--decode", *args,
                      "--out", str(tmp_path / "decoded-one"))
    assert decoded.code == 0, decoded.err
    split = _torchrun("encode", tmp_path / "one.safetensors", "--decode", *args[:-2], "--out",
                      tmp_path / "decoded-two")
    assert split.returncode == 0, split.stderr[-3000:]
    assert len(split.stdout.splitlines()) == len(_same_files(tmp_path / "decoded-one", tmp_path / "decoded-two")) == 7
