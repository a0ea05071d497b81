"""Every file quantart writes is replaced whole or not at all (quantart_cli.core.io.atomic and its users):
a full disk keeps the old file, concurrent writers never expose half a file, hard links, the user's umask."""

from __future__ import annotations

import errno
import multiprocessing
import os
from pathlib import Path

import pytest
import torch
from cli_support import run_cli
from PIL import Image
from tiny_models import tiny_vq_config

from quantart_cli.core.errors import WriteError
from quantart_cli.core.io.images import save_image_atomic
from quantart_cli.core.models import VQGAN

pytestmark = pytest.mark.usefixtures("one_thread")


def test_save_image_atomic_on_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    save_image_atomic(Image.new("RGB", (8, 8), (255, 0, 0)), target)
    before = target.read_bytes()
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError, match="No space left on device"):
        save_image_atomic(Image.new("RGB", (8, 8), (0, 0, 255)), target)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


# ------------------------------------------------------------------------------------------ concurrency


def _write_repeatedly(path: str, colour: tuple[int, int, int], count: int) -> None:
    image = Image.new("RGB", (96, 96), colour)
    for _ in range(count):
        save_image_atomic(image, path)


def test_two_processes_saving_the_same_image_never_expose_half_a_file(tmp_path):
    target = tmp_path / "shared.png"
    colours = [(200, 30, 30), (30, 30, 200)]
    save_image_atomic(Image.new("RGB", (96, 96), colours[0]), target)
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_repeatedly, args=(str(target), c, 150)) for c in colours]
    for writer in writers:
        writer.start()
    reads = 0
    while any(w.is_alive() for w in writers) or reads < 20:
        with Image.open(target) as image:
            image.load()  # raises on a truncated file
            assert image.size == (96, 96)
            assert image.getpixel((48, 48)) in colours
        reads += 1
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0
    assert reads >= 20
    assert [p.name for p in tmp_path.iterdir()] == ["shared.png"], "temp files were left behind"


def test_a_link_write_onto_its_own_hard_link_leaves_no_temp_file(tmp_path):
    """rename(2) is a no-op when both names are links to one file (a kill can leave previous.pt linked to
    last.pt, and the next save links them again): the temp name must not stay behind (it did, once in ~3 runs
    of the SIGKILL test)."""
    from quantart_cli.core.io.atomic import atomic_write

    last, previous = tmp_path / "last.pt", tmp_path / "previous.pt"
    last.write_bytes(b"weights")
    os.link(last, previous)

    def link(tmp):
        tmp.unlink()
        os.link(last, tmp)

    atomic_write(previous, link)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "previous.pt"]
    assert previous.read_bytes() == b"weights"


def test_a_full_disk_during_torch_save_is_one_sentence(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError of its zip writer, without errno."""
    import shutil

    from quantart_cli.core.io.checkpoints import save_checkpoint as save

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    target = tmp_path / "vq.pt"
    target.write_bytes(b"the previous checkpoint")
    with pytest.raises(WriteError, match=r"No space left on device; nothing was replaced"):
        save(VQGAN(tiny_vq_config()), target)
    assert target.read_bytes() == b"the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["vq.pt"]


@pytest.mark.parametrize("elements", [10, 1_000_000])
def test_torch_saves_own_words_on_a_full_device_are_recognised(tmp_path, monkeypatch, elements):
    """The real messages of the installed torch: its writer pointed at /dev/full (every write fails with ENOSPC)."""
    import shutil

    from quantart_cli.core.io.checkpoints import save_checkpoint as save

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, **kw: real_save({"a": torch.zeros(elements)}, "/dev/full"))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(WriteError, match=r"No space left on device; nothing was replaced"):
        save(VQGAN(tiny_vq_config()), tmp_path / "vq.pt")
    assert list(tmp_path.iterdir()) == []


# --- every file follows the user's umask ----------------------------------------------------------------------------


def test_every_file_quantart_writes_follows_the_umask(capsys, tmp_path, photos):
    from quantart_cli.core.config import tiny_vqgan_config
    from quantart_cli.core.io.atomic import atomic_write
    from quantart_cli.core.io.checkpoints import save_checkpoint
    from quantart_cli.core.models import VQGAN

    def replaced_privately(tmp: Path) -> None:  # what safetensors does: its own file, mode 0600, renamed over tmp
        private = tmp.with_name(tmp.name + ".own")
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.replace(private, tmp)

    old = os.umask(0o027)
    try:
        vq = save_checkpoint(VQGAN(tiny_vqgan_config()), tmp_path / "vq.safetensors")
        written = [vq, save_checkpoint(VQGAN(tiny_vqgan_config()), tmp_path / "vq.pt"),
                   save_image_atomic(Image.new("RGB", (4, 4)), tmp_path / "x.png"),
                   atomic_write(tmp_path / "private.bin", replaced_privately)]
        encoded = run_cli(capsys, "encode", str(photos / "lhq_1.jpg"), "--ckpt", str(vq), "--out",
                          str(tmp_path / "codes"), "--device", "cpu")
        assert encoded.code == 0, encoded.err
        written += list((tmp_path / "codes").glob("*.safetensors"))
    finally:
        os.umask(old)
    assert len(written) == 5
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in written}
    assert set(modes.values()) == {oct(0o640)}, modes
