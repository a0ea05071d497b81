"""Checkpoints that would run code when unpickled are refused by every stage that reads one (docs/reliability.md,
"Malicious checkpoints"): the stage first runs on valid tiny inputs, then the bad file is refused, its payload
never runs, and the message names --trust-checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_support import assert_runs, require_stylize, run_cli, stylize_args
from tiny_models import write_tiny_vq_preset

pytestmark = pytest.mark.usefixtures("one_thread")


class _CreatesMarker:
    """Unpickling this runs ``open(marker, "w")``: a real code-execution payload, harmless in a tmp dir."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def write_malicious(path: Path, marker: Path, *, legacy: bool = False) -> Path:
    """A file that looks like a quantart checkpoint (or state) and runs code when fully unpickled."""
    payload = {
        "format": "quantart",
        "format_version": 1,
        "kind": "vqgan",
        "state_dict": {"encoder.conv_in.weight": torch.zeros(1)},
        "metadata": {"step": 1, "hook": _CreatesMarker(marker)},
    }
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    return path


def assert_refused(result, marker: Path) -> None:
    assert result.code != 0, result.err
    assert not marker.exists(), "the checkpoint's payload ran"
    assert "--trust-checkpoint" in result.err, result.err
    assert "Traceback" not in result.err and "unexpected" not in result.err, result.err


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_malicious_checkpoint_refused_by_encode_convert_inspect(capsys, tmp_path, small_images, legacy):
    marker = tmp_path / "pwned"
    evil = write_malicious(tmp_path / "evil.pt", marker, legacy=legacy)
    mislabeled = write_malicious(tmp_path / "evil.safetensors", marker, legacy=legacy)
    runs = {
        "encode": ("encode", str(small_images), "--ckpt", str(evil), "--out", str(tmp_path / "codes"), "--device",
                   "cpu"),
        "encode --decode": ("encode", str(tmp_path), "--decode", "--ckpt", str(evil), "--device", "cpu"),
        "convert": ("convert", str(evil), str(tmp_path / "out.pt")),
        "convert (named .safetensors)": ("convert", str(mislabeled), str(tmp_path / "out2.pt")),
        "inspect-codebook": ("inspect-codebook", str(evil), "--device", "cpu"),
    }
    for name, args in runs.items():
        result = run_cli(capsys, *args)
        assert_refused(result, marker)
        assert result.code == 1, (name, result.err)
    assert not (tmp_path / "out.pt").exists() and not (tmp_path / "codes").exists()


def test_malicious_checkpoint_refused_by_train_vq_init_and_resume(capsys, tmp_path, small_images):
    marker = tmp_path / "pwned"
    preset = write_tiny_vq_preset(tmp_path, steps=2)
    evil = write_malicious(tmp_path / "evil.pt", marker)
    base = ("train-vq", "--preset", str(preset), "--data", str(small_images), "--device", "cpu")

    result = run_cli(capsys, *base, "--out", str(tmp_path / "fresh"), "--init-from", str(evil))
    assert_refused(result, marker)

    # A real run, then its last.pt (and separately its state.pt) replaced by the payload.
    run = tmp_path / "run"
    assert run_cli(capsys, *base, "--out", str(run)).code == 0
    good_last = (run / "last.pt").read_bytes()
    write_malicious(run / "last.pt", marker)
    result = run_cli(capsys, *base, "--steps", "3", "--resume", str(run))
    assert_refused(result, marker)

    (run / "last.pt").write_bytes(good_last)
    write_malicious(run / "state.pt", marker)
    result = run_cli(capsys, *base, "--steps", "3", "--resume", str(run))
    assert_refused(result, marker)
    assert "state.pt" in result.err


def test_malicious_checkpoint_refused_by_train_sga(capsys, tmp_path, small_images, tiny_vq):
    base = ["train-sga", "--content-data", str(small_images), "--style-data", str(small_images), "--steps", "1",
            "--batch-size", "1", "--size", "32", "--workers", "0", "--device", "cpu", "--sample-every", "0"]
    assert_runs(capsys, [*base, "--content-vq", str(tiny_vq), "--style-vq", str(tiny_vq), "--out",
                         str(tmp_path / "probe")])
    marker = tmp_path / "pwned"
    evil = write_malicious(tmp_path / "evil.pt", marker)
    for option, other in (("--content-vq", "--style-vq"), ("--style-vq", "--content-vq")):
        result = run_cli(capsys, *base, option, str(evil), other, str(tiny_vq), "--out", str(tmp_path / option[2:]))
        assert_refused(result, marker)
    # --resume of the probe's run with the payload planted as last.pt, then as state.pt.
    run = tmp_path / "probe"
    resume = [*base, "--steps", "2", "--content-vq", str(tiny_vq), "--style-vq", str(tiny_vq), "--resume", str(run)]
    good_last = (run / "last.pt").read_bytes()
    write_malicious(run / "last.pt", marker)
    assert_refused(run_cli(capsys, *resume), marker)
    (run / "last.pt").write_bytes(good_last)
    write_malicious(run / "state.pt", marker)
    assert_refused(run_cli(capsys, *resume), marker)


def test_malicious_checkpoint_refused_by_stylize(capsys, tmp_path, small_images, tiny_style_transfer):
    require_stylize(capsys, tmp_path, small_images, tiny_style_transfer)
    marker = tmp_path / "pwned"
    evil = write_malicious(tmp_path / "evil.pt", marker)
    result = run_cli(capsys, *stylize_args(small_images, evil, tmp_path / "a.png"))
    assert_refused(result, marker)
    result = run_cli(capsys, *stylize_args(small_images, tiny_style_transfer, tmp_path / "b.png",
                                            "--continuous-ckpt", str(evil), "--visual-fidelity", "0.5"))
    assert_refused(result, marker)
