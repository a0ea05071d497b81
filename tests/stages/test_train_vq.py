"""``quantart train-vq`` end to end on a tiny CPU config: run folder, exact resume (also --resume alone, with the
recorded settings), NaN stop, Ctrl-C, DDP, the learning-rate note."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from cli_support import run_cli
from image_files import smooth_images
from PIL import Image
from repo_root import REPO
from tiny_models import tiny_vq_config

from quantart_cli.core.codebook.stats import perplexity
from quantart_cli.core.config import VQGANConfig
from quantart_cli.core.data.datasets import ImageDataset
from quantart_cli.core.io.checkpoints import load_checkpoint, save_checkpoint
from quantart_cli.core.losses.config import VQGANLossConfig
from quantart_cli.core.losses.vqgan import VQGANLoss
from quantart_cli.core.models import VQGAN
from quantart_cli.core.train.batches import BatchStream
from quantart_cli.core.train.loop import run_training
from quantart_cli.core.train.options import LoopOptions
from quantart_cli.core.train.vq_task import VQGANTask, first_images, psnr, reconstruction_psnr
from quantart_cli.samples import CONTENT_DIR

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_PRESET = """\
steps = 4
batch_size = 2
lr = 1e-3
size = 32
workers = 0
save_every = 2
sample_every = 2
log_every = 1
keep_checkpoints = 1
random_crop = true
hflip = true

[loss]
perceptual_weight = 0.0
disc_start = 1
disc_ndf = 8
disc_num_layers = 2

[model.autoencoder]
ch = 32
ch_mult = [1, 2, 2]
num_res_blocks = 1
attn_resolutions = []
resolution = 32
z_channels = 16

[model.quantizer]
n_embed = 32
embed_dim = 16
"""


#: The model of TINY_PRESET, as tiny_vq_config's keywords.
TINY_FIELDS = {"ch": 32, "ch_mult": (1, 2, 2), "z_channels": 16, "n_embed": 32}


def tiny_config() -> VQGANConfig:
    return tiny_vq_config(**TINY_FIELDS)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Six small smooth images (gradients and blobs), one of them unreadable."""
    folder = smooth_images(tmp_path / "images", 6, size=(40, 48))
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


@pytest.fixture
def preset(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-test.toml"
    path.write_text(TINY_PRESET)
    return path


def _cli(capsys, preset: Path, images: Path, out: Path, *extra: str):
    return run_cli(capsys, "train-vq", "--preset", str(preset), "--data", str(images), "--out", str(out),
                   "--device", "cpu", *extra)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path)
    return {**ckpt.state_dict, **{f"D.{k}": v for k, v in ckpt.extra_state_dicts["discriminator"].items()}}


def test_run_folder_metrics_samples_and_summary(capsys, preset, images, tmp_path):
    out = tmp_path / "run"
    result = _cli(capsys, preset, images, out)
    assert result.code == 0, result.err
    assert result.out.strip() == str(out / "last.pt")
    assert "lr = 0.001 (from the preset tiny-test)" in result.err and "1 skipped" in result.err
    assert "PSNR" in result.err and "skipped images" in result.err
    ckpt = load_checkpoint(out / "last.pt", expected_kind="vqgan")
    assert ckpt.step == 4 and ckpt.config == tiny_config()
    assert ckpt.codebook_usage["quantize"].shape == (32,)
    assert sorted(p.name for p in out.glob("step_*.pt")) == ["step_0000004.pt"]  # keep_checkpoints = 1
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == ["step_0000002.png", "step_0000004.png"]
    with Image.open(out / "samples" / "step_0000004.png") as grid:
        assert grid.size == (4 * 36, 2 * 36)  # 4 inputs above 4 reconstructions, 2 px borders
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key in ("total", "rec_l1", "vq", "g_loss", "d_weight", "d_loss", "lr", "perplexity", "dead_codes", "it_per_s"):
        assert key in records[-1], key
    assert records[0]["d_loss"] == 0.0 and records[-1]["d_loss"] > 0.0  # disc_start = 1
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == 4 and set(state["optimizers"]) == {"autoencoder", "discriminator"}
    assert set(state["rng"]) >= {"python", "torch", "numpy", "cuda"}
    # an existing run is not overwritten by accident
    again = _cli(capsys, preset, images, out)
    assert again.code == 2 and "--resume" in again.err


def test_resume_ends_with_the_same_weights_as_a_straight_run(capsys, preset, images, tmp_path):
    straight = _cli(capsys, preset, images, tmp_path / "straight")
    assert straight.code == 0, straight.err
    first = _cli(capsys, preset, images, tmp_path / "split", "--steps", "2")
    assert first.code == 0, first.err
    second = run_cli(capsys, "train-vq", "--preset", str(preset), "--data", str(images), "--resume",
                     str(tmp_path / "split"), "--device", "cpu")
    assert second.code == 0, second.err
    assert "Resuming from step 2" in second.err
    a, b = _weights(tmp_path / "straight" / "last.pt"), _weights(tmp_path / "split" / "last.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    sa = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)
    sb = torch.load(tmp_path / "split" / "state.pt", weights_only=True)
    assert sa["data"] == sb["data"]
    exp_a = sa["optimizers"]["autoencoder"]["state"][0]["exp_avg"]
    assert torch.equal(exp_a, sb["optimizers"]["autoencoder"]["state"][0]["exp_avg"])


def test_resume_survives_a_damaged_last_checkpoint(capsys, preset, images, tmp_path):
    out = tmp_path / "run"
    assert _cli(capsys, preset, images, out, "--steps", "2", "--set", "keep_checkpoints=2").code == 0
    # A kill while last.pt was being replaced leaves state.pt (step 2) and a copy of step 2 beside it.
    damaged = (out / "last.pt").read_bytes()[:100]
    (out / "last.pt").unlink()  # a new inode, as a rename would leave: step_N.pt is a hard link to the old one
    (out / "last.pt").write_bytes(damaged)
    result = run_cli(capsys, "train-vq", "--preset", str(preset), "--data", str(images), "--resume",
                     str(out), "--device", "cpu", "--steps", "3")
    assert result.code == 0, result.err
    assert load_checkpoint(out / "last.pt").step == 3


def test_a_run_stopped_in_its_first_save_gets_a_clear_sentence(capsys, preset, images, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"partial")
    result = _cli(capsys, preset, images, out)
    assert result.code == 2
    assert "no state.pt" in result.err and "delete" in result.err and "Traceback" not in result.err


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(capsys, preset, images, tmp_path, monkeypatch):
    original = VQGANLoss.generator_loss

    def poisoned(self, inputs, recs, vq_loss, step, last_layer=None):
        total, logs = original(self, inputs, recs, vq_loss, step, last_layer)
        return (total * float("nan") if step >= 2 else total), logs

    monkeypatch.setattr(VQGANLoss, "generator_loss", poisoned)
    result = _cli(capsys, preset, images, tmp_path / "run")
    assert result.code == 1
    assert "NaN at step 3" in result.err and "step 2 is kept" in result.err
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt.step == 2 and all(torch.isfinite(v).all() for v in ckpt.state_dict.values())


def test_ctrl_c_saves_and_exits_130(capsys, preset, images, tmp_path, monkeypatch):
    original = VQGANTask.after_step

    def interrupting(self, step):
        original(self, step)
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(VQGANTask, "after_step", interrupting)
    result = _cli(capsys, preset, images, tmp_path / "run", "--steps", "10")
    assert result.code == 130
    assert "--resume" in result.err
    assert load_checkpoint(tmp_path / "run" / "last.pt").step == 3
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=True)["step"] == 3


def test_bf16_channels_last_accumulation_and_clipping_train(capsys, preset, images, tmp_path):
    out = tmp_path / "run"
    result = _cli(capsys, preset, images, out, "--steps", "1", "--precision", "bf16", "--channels-last",
                  "--accumulate", "2", "--grad-clip", "1.0", "--base-lr", "1e-4", "--set", "lr=null")
    assert result.code == 0, result.err
    assert "lr = 0.0004 (0.0001 x batch 2 x 1 process(es) x accumulate 2)" in result.err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and math.isfinite(records[0]["total"]) and records[0]["total"] > 0
    assert torch.load(out / "state.pt", weights_only=True)["data"] == {"epoch": 0, "position": 2}  # 2 micro-batches


def test_fp16_on_cpu_is_a_usage_error(capsys, preset, images, tmp_path):
    result = _cli(capsys, preset, images, tmp_path / "run", "--precision", "fp16")
    assert result.code == 2 and "fp16 needs a CUDA GPU" in result.err


def test_init_from_must_match_the_config(capsys, preset, images, tmp_path):
    other = tiny_vq_config(**{**TINY_FIELDS, "n_embed": 64})
    save_checkpoint(VQGAN(other), tmp_path / "other.pt")
    result = _cli(capsys, preset, images, tmp_path / "run", "--init-from", str(tmp_path / "other.pt"))
    assert result.code == 2 and "configuration differs" in result.err

    torch.manual_seed(5)
    source = VQGAN(tiny_config())
    save_checkpoint(source, tmp_path / "same.pt")
    result = _cli(capsys, preset, images, tmp_path / "run2", "--init-from", str(tmp_path / "same.pt"),
                  "--steps", "1", "--lr", "1e-12")
    assert result.code == 0, result.err
    trained = load_checkpoint(tmp_path / "run2" / "last.pt").state_dict
    start = source.state_dict()
    assert max(float((trained[k] - start[k]).abs().max()) for k in start) < 1e-6


def test_restart_dead_codes_reseeds_unused_codes_from_encoder_outputs(images, tmp_path):
    torch.manual_seed(0)
    model = VQGAN(tiny_config())
    loss = VQGANLoss(VQGANLossConfig(perceptual_weight=0.0, disc_start=100, disc_ndf=8, disc_num_layers=2))
    dataset = ImageDataset(images, size=32)
    task = VQGANTask(model, loss, lr=1e-12, device=torch.device("cpu"), restart_dead_codes=True, dead_code_window=1)
    before = model.quantize.embedding.weight.detach().clone()
    stream = BatchStream(dataset, batch_size=2, seed=0)
    run_training(task, stream, tmp_path / "run", LoopOptions(steps=1, save_every=100), device=torch.device("cpu"))
    after = model.quantize.embedding.weight.detach()
    changed = (after - before).abs().amax(dim=1) > 1e-6
    assert task.restarted_codes == int(changed.sum()) > 0
    latent = task._recent_latent.permute(0, 2, 3, 1).reshape(-1, 16)
    for code in after[changed]:  # every re-seeded code is one of the recent encoder outputs
        assert torch.isclose(latent, code.expand_as(latent), atol=1e-6).all(dim=1).any()


def test_perplexity_and_psnr_helpers():
    assert perplexity(torch.tensor([5, 5, 5, 5])) == pytest.approx(4.0)
    assert perplexity(torch.tensor([9, 0, 0])) == 1.0 and perplexity(torch.zeros(3, dtype=torch.long)) == 0.0
    x = torch.zeros(1, 3, 4, 4)
    assert float(psnr(x, x + 0.2)) == pytest.approx(10 * torch.log10(torch.tensor(1 / 0.01)).item(), rel=1e-5)


@pytest.mark.slow
def test_tiny_preset_improves_psnr_on_the_sample_photos(capsys, tmp_path):
    samples = CONTENT_DIR
    result = run_cli(capsys, "train-vq", "--preset", "tiny", "--data", str(samples), "--out", str(tmp_path / "run"),
                     "--device", "cpu", "--steps", "20", "--sample-every", "0")
    assert result.code == 0, result.err
    found = re.search(r"PSNR \(training images\)\W+([\d.]+) -> ([\d.]+) dB", result.err)
    assert found, result.err
    before, after = float(found.group(1)), float(found.group(2))
    assert after > before + 3.0, (before, after)


def test_short_training_improves_reconstruction_psnr(images, tmp_path):
    small = tiny_vq_config(ch=16, n_embed=32)
    torch.manual_seed(0)
    model = VQGAN(small)
    loss = VQGANLoss(VQGANLossConfig(perceptual_weight=0.0, disc_start=1000, disc_ndf=8, disc_num_layers=2))
    dataset = ImageDataset(images, size=32)
    eval_images = first_images(dataset, 6)
    before = reconstruction_psnr(model, eval_images)
    task = VQGANTask(model, loss, lr=2e-3, device=torch.device("cpu"))
    stream = BatchStream(dataset, batch_size=4, seed=0)
    run_training(task, stream, tmp_path / "run", LoopOptions(steps=40, save_every=1000), device=torch.device("cpu"))
    after = reconstruction_psnr(model, eval_images)
    assert after > before + 4.0, (before, after)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_WORKER = """
import os, sys, torch
from pathlib import Path
sys.path.insert(0, {tests!r})
from tiny_models import tiny_vq_config
from quantart_cli.core.data.datasets import ImageDataset
from quantart_cli.core.losses.config import VQGANLossConfig
from quantart_cli.core.losses.vqgan import VQGANLoss
from quantart_cli.core.models import VQGAN
from quantart_cli.core.train.vq_task import VQGANTask
from quantart_cli.core.train.batches import BatchStream
from quantart_cli.core.train.ddp import init_distributed, shutdown_distributed
from quantart_cli.core.train.loop import run_training
from quantart_cli.core.train.options import LoopOptions

device = torch.device("cpu")
info = init_distributed(device)
torch.manual_seed(100 + info.rank)  # different init per rank: DDP and the explicit broadcast must align them
model = VQGAN(tiny_vq_config(**{tiny_fields!r}))
loss = VQGANLoss(VQGANLossConfig(perceptual_weight=0.0, disc_start=1, disc_ndf=8, disc_num_layers=2))
task = VQGANTask(model, loss, lr=1e-3, device=device, info=info, restart_dead_codes=True, dead_code_window=2)
stream = BatchStream(ImageDataset({images!r}, size=32), batch_size=2, seed=0, info=info)
out = Path({out!r})
run_training(task, stream, out / "run", LoopOptions(steps=3, save_every=100, log_every=1), device=device, info=info)
torch.save({{**model.state_dict(), **{{"D." + k: v for k, v in loss.discriminator.state_dict().items()}}}},
           out / f"rank{{info.rank}}.pt")
shutdown_distributed()
"""


@pytest.mark.slow
def test_ddp_on_gloo_keeps_both_ranks_identical(images, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(DDP_WORKER.format(tests=str(REPO / "tests"), tiny_fields=TINY_FIELDS,
                                                        images=str(images), out=str(tmp_path))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), str(script)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # rank 0 alone writes
    assert json.loads(lines[-1])["d_loss"] > 0


def _tiny_run(capsys, tmp_path: Path, *extra: str):
    return run_cli(capsys, "train-vq", "--preset", "tiny", "--data", str(CONTENT_DIR), "--size", "32",
                   "--batch-size", "2", "--workers", "0", "--sample-every", "0", "--device", "cpu",
                   "--out", str(tmp_path / "run"), *extra)


def test_resume_alone_continues_with_the_recorded_settings(capsys, tmp_path):
    first = _tiny_run(capsys, tmp_path, "--steps", "2")
    assert first.code == 0, first.err
    assert (tmp_path / "run" / "settings.toml").is_file()
    resumed = run_cli(capsys, "train-vq", "--resume", str(tmp_path / "run"), "--steps", "4", "--quiet")
    assert resumed.code == 0, resumed.err
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 4
    conflict = run_cli(capsys, "train-vq", "--resume", str(tmp_path / "run"), "--steps", "6", "--size", "64")
    assert conflict.code == 2 and "--size" in conflict.err and "started with 32" in conflict.err
    assert conflict.err.count("error:") == 1


# --------------------------------------------------------------------------------------- training notes


def _train_vq(capsys, tmp_path: Path, *extra: str):
    return run_cli(capsys, "train-vq", "--preset", "tiny", "--data", str(CONTENT_DIR), "--size", "32", "--steps", "1",
                   "--sample-every", "0", "--save-every", "1", "--device", "cpu", "--out", str(tmp_path / "run"),
                   *extra)


def _lr_note(err: str) -> str:
    return next(line for line in err.splitlines() if "lr = " in line).split("lr = ", 1)[1]


def test_the_learning_rate_note_says_where_the_value_came_from(capsys, tmp_path, monkeypatch):
    """Issue 25: `lr = 0.0002 (--lr)` when the value came from the preset."""
    from_preset = _train_vq(capsys, tmp_path / "a")
    assert from_preset.code == 0, from_preset.err
    assert _lr_note(from_preset.err) == "0.0002 (from the preset tiny)."
    from_flag = _train_vq(capsys, tmp_path / "b", "--lr", "0.001")
    assert _lr_note(from_flag.err) == "0.001 (--lr)."
    monkeypatch.setenv("QUANTART_LR", "0.003")
    from_env = _train_vq(capsys, tmp_path / "c")
    assert _lr_note(from_env.err) == "0.003 (from QUANTART_LR)."
