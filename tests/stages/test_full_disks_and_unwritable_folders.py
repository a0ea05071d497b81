"""A full disk or an unwritable folder, in every stage that writes: one sentence, the last complete file kept,
no partial or temp file left (docs/reliability.md, "Disk full and unwritable folders")."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from cli_support import assert_one_sentence, require_stylize, run_cli, stylize_args
from tiny_models import write_tiny_vq_preset

from quantart_cli.core.io.checkpoints import load_checkpoint
from quantart_cli.core.train.resume import load_training_state

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(capsys, preset: Path, small_images: Path, *args: str):
    return run_cli(capsys, "train-vq", "--preset", str(preset), "--data", str(small_images), "--device", "cpu", *args)


def _enospc(path) -> OSError:
    Path(path).write_bytes(b"PK\x03\x04 half a file")  # what a full disk leaves behind
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.mark.parametrize("target", ["last.pt", "state.pt"])
def test_disk_full_during_training_keeps_last_complete_checkpoint(capsys, tmp_path, small_images, monkeypatch, target):
    preset = write_tiny_vq_preset(tmp_path, steps=4)
    run = tmp_path / "run"
    real_save = torch.save
    calls = {"n": 0}

    def full_disk(obj, f, *args, **kwargs):
        if Path(f).name.startswith(f".{target}."):
            calls["n"] += 1
            if calls["n"] == 3:
                raise _enospc(f)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    result = _train(capsys, preset, small_images, "--out", str(run))
    monkeypatch.setattr(torch, "save", real_save)
    assert result.code == 1
    assert_one_sentence(result.err)
    assert "No space left on device" in result.err and "step 2" in result.err and "--resume" in result.err
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")], "a half-written temp file was left"
    # The complete pair of step 2 is there (last.pt itself when it was the write that failed).
    assert load_training_state(run / "state.pt")["step"] == 2
    kept = run / ("last.pt" if target == "last.pt" else "previous.pt")
    assert load_checkpoint(kept).step == 2

    result = _train(capsys, preset, small_images, "--resume", str(run))
    assert result.code == 0, result.err
    assert load_checkpoint(run / "last.pt").step == 4


def test_disk_full_writing_metrics_stops_cleanly(capsys, tmp_path, small_images, monkeypatch):
    import quantart_cli.core.train.loop as training

    preset = write_tiny_vq_preset(tmp_path, steps=4)
    real_append = training.append_metrics

    def append(path, record):
        if record["step"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_append(path, record)

    monkeypatch.setattr(training, "append_metrics", append)
    result = _train(capsys, preset, small_images, "--out", str(tmp_path / "run"))
    assert result.code == 1
    assert_one_sentence(result.err)
    assert "No space left on device" in result.err and "step 2" in result.err


def test_unwritable_training_folder_is_one_sentence(capsys, tmp_path, small_images):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")  # tests run as root, where chmod does not stop writes: a file does
    preset = write_tiny_vq_preset(tmp_path, steps=2)
    result = _train(capsys, preset, small_images, "--out", str(blocker / "run"))
    assert result.code == 1
    assert_one_sentence(result.err)
    assert str(blocker / "run") in result.err


def test_encode_into_unwritable_folder_is_one_sentence(capsys, tmp_path, small_images, tiny_vq):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    for extra in ([], ["--single-file"]):
        out = blocker / ("codes.safetensors" if extra else "codes")
        result = run_cli(capsys, "encode", str(small_images), "--ckpt", str(tiny_vq), "--out", str(out),
                         "--device", "cpu", *extra)
        assert result.code == 1, result.err
        assert_one_sentence(result.err)
        assert "a-file" in result.err


def test_encode_on_full_disk_is_one_sentence_and_leaves_no_partial_file(capsys, tmp_path, small_images, tiny_vq,
                                                                      monkeypatch):
    real_write_bytes = Path.write_bytes
    calls = {"n": 0}

    def full_disk(path, data):  # code files are serialized in memory, then written
        calls["n"] += 1
        if calls["n"] == 2:
            real_write_bytes(path, data[: len(data) // 2])  # what a full disk leaves behind
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    out = tmp_path / "codes"
    result = run_cli(capsys, "encode", str(small_images), "--ckpt", str(tiny_vq), "--out", str(out), "--device", "cpu")
    assert result.code == 1
    assert_one_sentence(result.err)
    assert "No space left on device" in result.err
    written = sorted(p.name for p in out.iterdir())
    assert written == ["img_0.safetensors"], written  # the first file is complete; no temp file remains


def _safetensors_disk_full(*args, **kwargs):
    from safetensors import SafetensorError

    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28) at path x")


def _disk_full(path, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_safetensors_writes_on_full_disk_are_one_sentence(capsys, tmp_path, small_images, tiny_vq, monkeypatch):
    """safetensors reports a full disk as SafetensorError, not OSError: convert still says it plainly (and encode,
    which serializes its code files in memory and writes the bytes itself, says the OSError)."""
    import safetensors.torch

    target = tmp_path / "out.safetensors"
    assert run_cli(capsys, "convert", str(tiny_vq), str(target)).code == 0
    before = target.read_bytes()
    monkeypatch.setattr(safetensors.torch, "save_file", _safetensors_disk_full)
    monkeypatch.setattr(Path, "write_bytes", _disk_full)
    result = run_cli(capsys, "convert", str(tiny_vq), str(target), "--overwrite")
    assert result.code == 1
    assert_one_sentence(result.err)
    assert "No space left on device" in result.err
    assert target.read_bytes() == before  # the old file is untouched
    result = run_cli(capsys, "encode", str(small_images), "--ckpt", str(tiny_vq), "--single-file",
                     "--out", str(tmp_path / "codes.safetensors"), "--device", "cpu")
    assert result.code == 1
    assert_one_sentence(result.err)
    assert "No space left on device" in result.err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_stylize_into_unwritable_folder_is_one_sentence(capsys, tmp_path, small_images, tiny_style_transfer):
    require_stylize(capsys, tmp_path, small_images, tiny_style_transfer)
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    result = run_cli(capsys, *stylize_args(small_images, tiny_style_transfer, blocker / "out.png"))
    assert result.code != 0
    assert_one_sentence(result.err)
    assert "a-file" in result.err


def test_stylize_on_full_disk_is_one_sentence(capsys, tmp_path, small_images, tiny_style_transfer, monkeypatch):
    require_stylize(capsys, tmp_path, small_images, tiny_style_transfer)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "styled"
    result = run_cli(capsys, *stylize_args(small_images, tiny_style_transfer, out / "a.png"))
    monkeypatch.undo()
    assert result.code == 1
    assert_one_sentence(result.err)
    assert "No space left on device" in result.err
    assert not out.exists() or [p.name for p in out.iterdir()] == []


#: What torch.save's zip writer says when the disk fills up, depending on where the write fails (torch 2.x).
TORCH_FULL_DISK_WORDS = [
    "[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file data/0",
    "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598",
    "basic_ios::clear: iostream error",
]


@pytest.mark.parametrize("words", TORCH_FULL_DISK_WORDS, ids=["stream-writer", "unexpected-pos", "iostream"])
def test_every_way_torch_save_reports_a_full_disk_is_the_full_disk_sentence(capsys, tmp_path, tiny_vq, monkeypatch,
                                                                            words):
    """Issue 25: "unexpected pos" came out as "unexpected RuntimeError"; through the CLI (convert to .pt) each is
    the one full-disk sentence, and the old file stays."""
    import shutil

    target = tmp_path / "copy.pt"
    target.write_bytes(b"the previous checkpoint")

    def full(*args, **kwargs):
        raise RuntimeError(words)

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    result = run_cli(capsys, "convert", str(tiny_vq), str(target), "--overwrite")
    assert result.code == 1, result.err
    assert_one_sentence(result.err)
    assert "No space left on device; nothing was replaced" in result.err and "unexpected" not in result.err
    assert target.read_bytes() == b"the previous checkpoint"
