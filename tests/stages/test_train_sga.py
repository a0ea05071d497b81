"""``quantart train-sga`` on tiny random VQGANs: assembly, loss wiring, latent cache, resume, continuous variant."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_support import run_cli
from image_files import smooth_images
from PIL import Image
from tiny_models import seeded_vqgan, tiny_preset_vq_config, tiny_vq_config

from quantart_cli.core.cache.latents import (
    MANIFEST,
    CacheCallbacks,
    LatentCache,
    LatentPairDataset,
    build_latent_cache,
    cache_image,
    crop_and_flip,
)
from quantart_cli.core.config import VQGANConfig
from quantart_cli.core.data.datasets import UnpairedDataset
from quantart_cli.core.errors import UsageError
from quantart_cli.core.io.checkpoints import load_checkpoint, load_model, save_checkpoint
from quantart_cli.core.io.images import load_image
from quantart_cli.core.losses.config import StyleTransferLossConfig
from quantart_cli.core.losses.style_transfer import StyleTransferLoss
from quantart_cli.core.models import VQGAN, StyleTransfer
from quantart_cli.core.train.batches import BatchStream
from quantart_cli.core.train.loop import run_training
from quantart_cli.core.train.options import LoopOptions
from quantart_cli.core.train.sga_task import StyleTransferTask, assemble_style_transfer, load_vqgan_pair
from quantart_cli.core.train.step import generator_pass, optimizers_of
from quantart_cli.core.train.task import StepContext
from quantart_cli.samples import SAMPLES_DIR

pytestmark = pytest.mark.usefixtures("one_thread")

LOSS = StyleTransferLossConfig(disc_ndf=8, disc_in_channels=16, disc_start=0)

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
sga_blocks = 1

[loss]
disc_ndf = 8
disc_start = 1
"""


def vq_config(embed_dim: int = 16) -> VQGANConfig:
    return tiny_vq_config(ch=16, ch_mult=(1, 2, 2), z_channels=16, n_embed=32, embed_dim=embed_dim)


def random_vqgan(seed: int, embed_dim: int = 16) -> VQGAN:
    return seeded_vqgan(vq_config(embed_dim), seed, spread_codes=0.5)


@pytest.fixture
def vqgans(tmp_path: Path) -> tuple[Path, Path]:
    content, style = tmp_path / "photo_vq.pt", tmp_path / "art_vq.pt"
    save_checkpoint(random_vqgan(1), content, step=10)
    save_checkpoint(random_vqgan(2), style, step=20)
    return content, style


def _write_images(folder: Path, count: int, seed: int, size: tuple[int, int] = (40, 48)) -> Path:
    return smooth_images(folder, count, seed=seed, size=size)


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return _write_images(tmp_path / "content", 4, 0), _write_images(tmp_path / "style", 3, 1)


@pytest.fixture
def preset(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-sga.toml"
    path.write_text(TINY_PRESET)
    return path


def _model(vqgans, *, continuous: bool = False) -> StyleTransfer:
    content, style = load_vqgan_pair(*vqgans)
    torch.manual_seed(0)
    return assemble_style_transfer(content, style, sga_blocks=1, continuous=continuous)


def _task(model: StyleTransfer, lr: float = 1e-3, loss: StyleTransferLossConfig = LOSS) -> StyleTransferTask:
    torch.manual_seed(5)
    return StyleTransferTask(model, StyleTransferLoss(loss), lr=lr, device=torch.device("cpu"))


def _ctx() -> StepContext:
    return StepContext(torch.device("cpu"), "fp32", torch.amp.GradScaler("cpu", enabled=False), 1)


def _cli(capsys, preset: Path | str, vqgans, data, out: Path, *extra: str):
    vq = ("--content-vq", str(vqgans[0]), "--style-vq", str(vqgans[1]))
    return _train_sga(capsys, preset, data, *vq, "--out", str(out), *extra)


def _train_sga(capsys, preset: Path | str, data, *args: str):
    """``quantart train-sga`` with the preset (a file or a name), the data, on the CPU, and ``args``."""
    return run_cli(capsys, "train-sga", "--preset", str(preset), "--content-data", str(data[0]), "--style-data",
                   str(data[1]), "--device", "cpu", *args)


# ----------------------------------------------------------------------------------- assembly


def test_assembly_copies_the_right_parts_and_only_sga_and_d_train(vqgans, data, tmp_path):
    model = _model(vqgans)
    content, style = VQGAN(vq_config()), VQGAN(vq_config())
    content.load_state_dict(load_checkpoint(vqgans[0]).state_dict)
    style.load_state_dict(load_checkpoint(vqgans[1]).state_dict)
    pairs = {
        "encoder": content.encoder,
        "quant_conv": content.quant_conv,
        "quantize_enc": content.quantize,
        "encoder_real": style.encoder,
        "quant_conv_real": style.quant_conv,
        "quantize_dec": style.quantize,
        "post_quant_conv": style.post_quant_conv,
        "decoder": style.decoder,
    }
    for name, source in pairs.items():
        got = getattr(model, name).state_dict()
        assert all(torch.equal(got[k], v) for k, v in source.state_dict().items()), name
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"model_x2y"}

    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("model_x2y")}
    sga = {n: p.detach().clone() for n, p in model.model_x2y.named_parameters()}
    task = _task(model)
    disc = {n: p.detach().clone() for n, p in task.loss.discriminator.named_parameters()}
    images = UnpairedDataset(data[0], data[1], size=32, seed=0)
    batch = {k: torch.stack([images[i][k] for i in range(2)]) for k in ("content", "style")}
    task.train()
    generator_pass(task, batch, 0, _ctx(), joint=True)
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("model_x2y"))
    assert all(p.grad is not None for p in model.model_x2y.parameters())
    assert set(optimizers_of(task)) == {"sga", "discriminator"}
    assert optimizers_of(task)["sga"].param_groups[0]["betas"] == (0.5, 0.9)

    stream = BatchStream(images, batch_size=2, seed=0)
    run_training(task, stream, tmp_path / "run", LoopOptions(steps=2, log_every=1), device=torch.device("cpu"))
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in frozen.items())
    assert not all(torch.equal(after[f"model_x2y.{n}"], v) for n, v in sga.items())
    d_after = dict(task.loss.discriminator.named_parameters())
    assert not all(torch.equal(d_after[n], v) for n, v in disc.items())
    assert all(m.training is False for m in (model.encoder, model.decoder, model.quantize_dec))


# ------------------------------------------------------------------------------------- losses


def test_every_loss_term_matches_a_hand_computation(vqgans, data):
    model = _model(vqgans)
    task = _task(model)
    task.train()
    images = UnpairedDataset(data[0], data[1], size=32, seed=0)
    batch = {k: torch.stack([images[i][k] for i in range(2)]) for k in ("content", "style")}
    logs = generator_pass(task, batch, 3, _ctx(), joint=True)

    with torch.no_grad():
        quant_x = model.quantize_enc(model.quant_conv(model.encoder(batch["content"])))[0]
        quant_ref = model.quantize_dec(model.quant_conv_real(model.encoder_real(batch["style"])))[0]
        h = model.model_x2y(quant_x, quant_ref)
        quant_y, vq, _ = model.quantize_dec(h)
        codes = model.quantize_dec.embedding.weight
        nearest = codes[((h.permute(0, 2, 3, 1)[..., None, :] - codes) ** 2).sum(-1).argmin(-1)].permute(0, 3, 1, 2)
        assert torch.allclose(quant_y, nearest, atol=1e-6)
        vq_hand = ((nearest - h) ** 2).mean() * 1.25  # legacy loss, beta 0.25: both terms equal in value
        reverse = ((quant_y - quant_x) ** 2).mean()

        def stats(z):
            flat = z.flatten(2)
            return flat.mean(-1), (flat.var(-1, unbiased=True) + 1e-5).sqrt()

        (my, sy), (mr, sr) = stats(quant_y), stats(quant_ref)
        style_mean, style_std = ((my - mr) ** 2).mean(), ((sy - sr) ** 2).mean()
        disc = task.loss.discriminator
        g_loss = -disc(quant_y).mean()
        logits_real, logits_fake = disc(quant_ref), disc(quant_y)
        d_loss = 0.8 * 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())
    expected = {
        "reverse": reverse,
        "style_mean": style_mean,
        "style_std": style_std,
        "style": style_mean + style_std,
        "vq": vq_hand,
        "g_loss": g_loss,
        "disc_factor": torch.tensor(0.8),
        "total": reverse + vq_hand + 10.0 * (style_mean + style_std) + 1.0 * 0.8 * g_loss,
        "d_loss": d_loss,
        "logits_real": logits_real.mean(),
        "logits_fake": logits_fake.mean(),
    }
    assert torch.allclose(vq, vq_hand, atol=1e-6)
    for key, value in expected.items():
        assert torch.allclose(logs[key], value, rtol=1e-4, atol=1e-6), (key, logs[key], value)
    assert logs["style"] > 0 and logs["reverse"] > 0 and logs["vq"] > 0

    # before disc_start the GAN terms are out of the loss (factor 0); the generator's GAN term is still computed
    # and logged, as the original does, and the joint order skips D's loss
    task = _task(model, loss=LOSS.model_copy(update={"disc_start": 10}))
    early = generator_pass(task, batch, 3, _ctx(), joint=True)
    assert early["g_loss"] != 0 and early["d_loss"] == 0 and early["disc_factor"] == 0
    assert torch.allclose(early["total"], reverse + vq_hand + 10.0 * (style_mean + style_std), rtol=1e-4)


# ------------------------------------------------------------------------------ wrong pairings


def test_wrong_pairings_are_one_clear_sentence(capsys, preset, vqgans, data, tmp_path):
    transfer = tmp_path / "transfer.pt"
    save_checkpoint(_model(vqgans), transfer)
    result = _cli(capsys, preset, (transfer, vqgans[1]), data, tmp_path / "a")
    assert result.code == 2 and "Traceback" not in result.err
    assert str(transfer.name) in result.err and "style-transfer" in result.err and "VQGAN" in result.err

    wide = tmp_path / "wide_vq.pt"
    save_checkpoint(random_vqgan(3, embed_dim=8), wide)
    result = _cli(capsys, preset, (vqgans[0], wide), data, tmp_path / "b")
    assert result.code == 2
    assert vqgans[0].name in result.err and wide.name in result.err and "embed_dim" in result.err
    with pytest.raises(UsageError, match="embed_dim 16.*embed_dim 8"):
        load_vqgan_pair(vqgans[0], wide)


# --------------------------------------------------------------------------------- latent cache


def test_a_step_from_the_cache_matches_a_step_from_images(vqgans, data, tmp_path):
    images = UnpairedDataset(data[0], data[1], size=32, seed=7)
    model_a = _model(vqgans)
    cache = build_latent_cache(
        model_a, tmp_path / "cache", images.content_paths, images.style_paths, size=32, batch_size=3, shard_size=2
    )
    cached = LatentPairDataset(cache, content_size=8, style_size=8, seed=7)
    assert len(cached) == len(images) == 3
    for epoch in (0, 1):
        images.set_epoch(epoch)
        cached.set_epoch(epoch)
        assert [cached.style_index(i) for i in range(3)] == [images.style_index(i) for i in range(3)]
    images.set_epoch(0)
    cached.set_epoch(0)
    item, latent_item = images[1], cached[1]
    with torch.no_grad():
        quant_x, idx_x = model_a.encode_content(item["content"][None])
        quant_ref, _ = model_a.encode_style(item["style"][None])
    assert torch.allclose(latent_item["content_latent"], quant_x[0], atol=1e-5)
    assert torch.allclose(latent_item["style_latent"], quant_ref[0], atol=1e-5)
    assert torch.equal(latent_item["content_indices"], idx_x[0])

    # one micro-step on the same first batch: the same losses and gradients
    grads, logs = {}, {}
    for name, dataset in (("images", images), ("cache", cached)):
        model = _model(vqgans)
        task = _task(model)
        task.train()
        batch = BatchStream(dataset, batch_size=2, seed=3).next()
        logs[name] = generator_pass(task, batch, 0, _ctx(), joint=True)
        grads[name] = {
            n: p.grad for n, p in [*model.model_x2y.named_parameters(), *task.loss.discriminator.named_parameters()]
        }
    for key in ("total", "reverse", "style", "vq", "g_loss", "d_loss", "logits_real", "logits_fake"):
        assert torch.allclose(logs["images"][key], logs["cache"][key], rtol=1e-5, atol=1e-7), key
    for key, grad in grads["images"].items():
        assert torch.allclose(grad, grads["cache"][key], rtol=1e-4, atol=1e-7), key
    # and whole training steps through the loop give the same losses
    records = {}
    for name, dataset in (("images", images), ("cache", cached)):
        task = _task(_model(vqgans), lr=1e-4)
        records[name] = run_training(
            task,
            BatchStream(dataset, batch_size=2, seed=3),
            tmp_path / name,
            LoopOptions(steps=3, log_every=1),
            device=torch.device("cpu"),
        ).last_record
    for key in ("total", "reverse", "style", "vq", "d_loss"):
        assert records["images"][key] == pytest.approx(records["cache"][key], rel=1e-3, abs=1e-6), key


def test_latent_crops_and_flips_are_deterministic(vqgans, data, tmp_path):
    model = _model(vqgans)
    images = UnpairedDataset(data[0], data[1], size=32, seed=0)
    cache = build_latent_cache(
        model, tmp_path / "cache", images.content_paths, images.style_paths, size=32, resize="shorter-side"
    )
    latent, indices, _ = cache.get("content", 0)
    assert latent.shape == (16, 8, 9)  # 40x48 -> 32x36 (long side floored to a multiple of 4) -> 8x9
    codes = model.quantize_enc.embedding.weight
    assert torch.allclose(codes[indices].permute(2, 0, 1), latent, atol=1e-5)

    dataset = LatentPairDataset(cache, content_size=8, style_size=8, seed=0, random_crop=True, hflip=True)
    seen = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        a, b = dataset[0], dataset[0]
        assert torch.equal(a["content_latent"], b["content_latent"])
        assert torch.equal(a["style_latent"], b["style_latent"])
        crop = a["content_latent"]
        assert crop.shape == (16, 8, 8)
        windows = {(left, flip): latent[:, :, left : left + 8] for left in range(2) for flip in (False, True)}
        matches = [key for key, w in windows.items() if torch.equal(crop, w.flip(-1) if key[1] else w)]
        assert len(matches) == 1
        seen.add(matches[0])
        assert torch.allclose(codes[a["content_indices"]].permute(2, 0, 1), crop, atol=1e-5)
    assert len(seen) > 1  # crops and flips change with the epoch

    import random

    plain = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(2, 4, 6)
    same = crop_and_flip(plain, None, 4, rng=random.Random(1), random_crop=True, hflip=True)[0]
    assert torch.equal(same, crop_and_flip(plain, None, 4, rng=random.Random(1), random_crop=True, hflip=True)[0])
    assert torch.equal(crop_and_flip(plain, None, 4, rng=random.Random(1))[0], plain[:, :, 1:5])  # centred


class _Interrupt(CacheCallbacks):
    def __init__(self, after: int | None = None) -> None:
        self.after, self.encoded, self.start = after, 0, None

    def on_start(self, total: int, done: int) -> None:
        self.start = (total, done)

    def on_advance(self, items: int) -> None:
        self.encoded += items
        if self.after is not None and self.encoded >= self.after:
            raise KeyboardInterrupt


def test_cache_build_resumes_after_an_interrupt_and_refuses_other_settings(vqgans, data, tmp_path):
    model = _model(vqgans)
    images = UnpairedDataset(data[0], data[1], size=32, seed=0)
    folder = tmp_path / "cache"
    args = (model, folder, images.content_paths, images.style_paths)
    first = _Interrupt(after=3)
    with pytest.raises(KeyboardInterrupt):
        build_latent_cache(*args, size=32, shard_size=2, batch_size=1, callbacks=first)
    assert first.start == (7, 0)
    assert sorted(p.name for p in folder.glob("*.safetensors")) == ["content-00000.safetensors"]
    second = _Interrupt()
    cache = build_latent_cache(*args, size=32, shard_size=2, batch_size=1, callbacks=second)
    assert second.start == (7, 2) and second.encoded == 5
    third = _Interrupt()
    build_latent_cache(*args, size=32, shard_size=2, callbacks=third)
    assert third.start == (7, 7) and third.encoded == 0
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["continuous"] is False and manifest["size"] == 32
    assert manifest["fingerprints"]["content"] != manifest["fingerprints"]["style"]
    assert len(LatentCache(folder)) == len(cache) == 4

    with pytest.raises(UsageError, match="image size 32 instead of 16"):
        build_latent_cache(*args, size=16, shard_size=2)
    other = _model((vqgans[1], vqgans[1]))
    with pytest.raises(UsageError, match="other content encoder weights"):
        build_latent_cache(other, folder, images.content_paths, images.style_paths, size=32, shard_size=2)
    rebuilt = _Interrupt()
    build_latent_cache(
        other, folder, images.content_paths, images.style_paths, size=32, shard_size=2, rebuild=True, callbacks=rebuilt
    )
    assert rebuilt.start == (7, 0) and rebuilt.encoded == 7


# ------------------------------------------------------------------------------- CLI end to end


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path)
    return {**ckpt.state_dict, **{f"D.{k}": v for k, v in ckpt.extra_state_dicts["discriminator"].items()}}


def test_cli_run_folder_and_exact_resume(capsys, preset, vqgans, data, tmp_path):
    out = tmp_path / "straight"
    result = _cli(capsys, preset, vqgans, data, out)
    assert result.code == 0, result.err
    assert result.out.strip() == str(out / "last.pt")
    assert "lr = 0.001 (from the preset tiny-sga)" in result.err and "style loss" in result.err
    ckpt = load_checkpoint(out / "last.pt", expected_kind="style-transfer")
    assert ckpt.step == 4 and ckpt.config.sga_blocks == 1 and not ckpt.config.continuous
    assert ckpt.metadata["content_vq"]["sha256"] == load_checkpoint(vqgans[0]).sha256
    assert ckpt.metadata["trained_from"] == "images"
    assert "discriminator" in ckpt.extra_state_dicts
    with Image.open(out / "samples" / "step_0000004.png") as grid:
        assert grid.size == (3 * 36, 3 * 36)  # 3 pairs: content, style and result rows, 2 px borders
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key in (
        "total",
        "reverse",
        "style",
        "style_mean",
        "style_std",
        "vq",
        "g_loss",
        "disc_factor",
        "d_loss",
        "logits_real",
        "logits_fake",
        "perplexity_y",
        "codes_used_y",
        "lr",
    ):
        assert key in records[-1], key
    assert records[0]["d_loss"] == 0.0 and records[-1]["d_loss"] > 0.0  # disc_start = 1
    model = load_model(out / "last.pt")
    assert isinstance(model, StyleTransfer)
    assert _cli(capsys, preset, vqgans, data, out).code == 2  # an existing run is not overwritten

    first = _cli(capsys, preset, vqgans, data, tmp_path / "split", "--steps", "2")
    assert first.code == 0, first.err
    second = _train_sga(capsys, preset, data, "--resume", str(tmp_path / "split"))
    assert second.code == 0, second.err
    a, b = _weights(out / "last.pt"), _weights(tmp_path / "split" / "last.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]


def test_init_from_fine_tunes_a_style_transfer_checkpoint(capsys, preset, vqgans, data, tmp_path):
    first = _cli(capsys, preset, vqgans, data, tmp_path / "first", "--steps", "2")
    assert first.code == 0, first.err
    start = tmp_path / "first" / "last.pt"

    def fine_tune(out: Path, *extra: str, init: Path = start):
        return _train_sga(capsys, preset, data, "--init-from", str(init), "--out", str(out), *extra)

    tuned = fine_tune(tmp_path / "tuned", "--steps", "2", "--set", "loss.image_style_weight=0.5")
    assert tuned.code == 0, tuned.err
    before, after = load_checkpoint(start), load_checkpoint(tmp_path / "tuned" / "last.pt")
    assert after.step == 2  # a new run: its own step count, optimizer and settings
    assert after.metadata["init_from"]["sha256"] == before.sha256
    assert after.metadata["content_vq"] == before.metadata["content_vq"]  # where the VQGANs came from, carried on
    frozen = [k for k in before.state_dict if not k.startswith("model_x2y.")]
    assert frozen and all(torch.equal(before.state_dict[k], after.state_dict[k]) for k in frozen)
    sga = [k for k in before.state_dict if k.startswith("model_x2y.")]
    assert any(not torch.equal(before.state_dict[k], after.state_dict[k]) for k in sga)
    # it started from the checkpoint's SGA module, not a fresh one: two steps from it stay nearer it than two
    # steps from another initialisation
    fresh = _cli(capsys, preset, vqgans, data, tmp_path / "fresh", "--steps", "2", "--seed", "99")
    assert fresh.code == 0, fresh.err
    scratch = load_checkpoint(tmp_path / "fresh" / "last.pt")

    def distance(a, b, keys):
        return sum((a[k] - b[k]).abs().sum().item() for k in keys)

    far = distance(scratch.state_dict, before.state_dict, sga)
    assert distance(after.state_dict, before.state_dict, sga) < 0.5 * far
    # and its discriminator went on from the one saved beside the model, not from a fresh one
    d_before, d_after = before.extra_state_dicts["discriminator"], after.extra_state_dicts["discriminator"]
    d_scratch = scratch.extra_state_dicts["discriminator"]
    far = distance(d_scratch, d_before, list(d_before))
    assert distance(d_after, d_before, list(d_before)) < 0.5 * far

    wrong = fine_tune(tmp_path / "wrong", "--sga-blocks", "2")
    assert wrong.code == 2 and "sga_blocks = 1" in wrong.err and "--sga-blocks" in wrong.err
    both = fine_tune(tmp_path / "both", "--content-vq", str(vqgans[0]))
    assert both.code == 2 and "without --content-vq" in both.err
    vq = fine_tune(tmp_path / "vq-only", init=vqgans[0])
    assert vq.code != 0 and "style-transfer" in vq.err
    assert not any((tmp_path / name).exists() for name in ("wrong", "both", "vq-only"))


def test_cli_from_cache_with_crops_and_exact_resume(capsys, preset, vqgans, data, tmp_path):
    cache = tmp_path / "cache"
    extra = ("--cache", str(cache), "--random-crop", "--hflip")
    straight = _cli(capsys, preset, vqgans, data, tmp_path / "straight", *extra)
    assert straight.code == 0, straight.err
    assert json.loads((cache / MANIFEST).read_text())["resize"] == "shorter-side"
    assert load_checkpoint(tmp_path / "straight" / "last.pt").metadata["trained_from"] == "latent-cache"
    first = _cli(capsys, preset, vqgans, data, tmp_path / "split", *extra, "--steps", "2")
    assert first.code == 0, first.err
    assert "already encoded" in first.err
    second = _train_sga(capsys, preset, data, "--resume", str(tmp_path / "split"), *extra)
    assert second.code == 0, second.err
    a, b = _weights(tmp_path / "straight" / "last.pt"), _weights(tmp_path / "split" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    refused = _cli(capsys, preset, vqgans, data, tmp_path / "other", "--cache", str(cache))
    assert refused.code == 2 and "--rebuild-cache" in refused.err


def test_genre_filter_keeps_one_genre_of_style_images(capsys, preset, vqgans, data, tmp_path):
    (data[1].parent / "train_info.csv").write_text(
        "filename,artist,genre\nimg_0.png,a,landscape\nimg_1.png,b,portrait\nimg_2.png,c,Landscape\n"
    )
    result = _cli(capsys, preset, vqgans, data, tmp_path / "run", "--steps", "1", "--style-genre", "landscape")
    assert result.code == 0, result.err
    assert "2 style" in result.err and "train_info.csv" in result.err  # found beside the style folder
    result = _cli(
        capsys,
        preset,
        vqgans,
        data,
        tmp_path / "run2",
        "--steps",
        "1",
        "--style-genre",
        "portrait",
        "--style-genre-csv",
        str(data[1].parent / "train_info.csv"),
    )
    assert result.code == 0, result.err
    assert "on 4 pairs (4 content, 1 style" in result.err  # one style image: every content image is used


def test_continuous_variant_trains_and_saves_a_continuous_checkpoint(capsys, preset, vqgans, data, tmp_path):
    out = tmp_path / "run"
    result = _cli(capsys, preset, vqgans, data, out, "--continuous", "--cache", str(tmp_path / "cache"))
    assert result.code == 0, result.err
    model = load_model(out / "last.pt", expected_kind="style-transfer")
    assert model.config.continuous and not hasattr(model, "quantize_enc") and not hasattr(model, "quantize_dec")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["vq"] == 0.0 for r in records) and records[-1]["d_loss"] > 0
    cache = LatentCache(tmp_path / "cache")
    latent, indices, _ = cache.get("style", 0)
    image = cache_image(load_image(cache.paths("style")[0]), 32, "squash", 4)
    with torch.no_grad():
        direct = model.quant_conv_real(model.encoder_real(image[None]))[0]
    assert indices is None and cache.continuous
    assert torch.allclose(latent, direct, atol=1e-5)  # unquantized style latents: the discriminator's reals


def test_nan_loss_stops_and_keeps_the_last_checkpoint(capsys, preset, vqgans, data, tmp_path, monkeypatch):
    original = StyleTransferLoss.generator_loss

    def poisoned(self, quant_y, quant_x, quant_ref, vq_loss, step, **images):
        total, logs = original(self, quant_y, quant_x, quant_ref, vq_loss, step, **images)
        return (total * float("nan") if step >= 2 else total), logs

    monkeypatch.setattr(StyleTransferLoss, "generator_loss", poisoned)
    result = _cli(capsys, preset, vqgans, data, tmp_path / "run")
    assert result.code == 1 and "NaN at step 3" in result.err
    assert load_checkpoint(tmp_path / "run" / "last.pt").step == 2


def test_tiny_preset_lowers_the_style_loss_on_the_sample_images(capsys, tmp_path):
    """The shipped tiny preset on VQGANs shaped like train-vq's tiny preset (random weights, spread codes)."""
    config = tiny_preset_vq_config()
    paths = [
        save_checkpoint(seeded_vqgan(config, seed, spread_codes=0.5), tmp_path / f"vq{seed}.pt") for seed in (1, 2)
    ]
    out = tmp_path / "run"
    samples = SAMPLES_DIR  # the sample photos and paintings (the same files as ../shared/samples)
    result = _cli(capsys, "tiny", paths, (samples / "content", samples / "style"), out, "--steps", "40",
                  "--sample-every", "40")
    assert result.code == 0, result.err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 4
    assert records[-1]["style"] < 0.5 * records[0]["style"], [r["style"] for r in records]
    assert (out / "samples" / "step_0000040.png").is_file()


DDP_WORKER = """
import sys
from pathlib import Path
import torch
from quantart_cli.core.data.datasets import UnpairedDataset
from quantart_cli.core.cache.latents import LatentPairDataset, build_latent_cache
from quantart_cli.core.losses.config import StyleTransferLossConfig
from quantart_cli.core.losses.style_transfer import StyleTransferLoss
from quantart_cli.core.train.sga_task import StyleTransferTask, assemble_style_transfer, load_vqgan_pair
from quantart_cli.core.train.batches import BatchStream
from quantart_cli.core.train.ddp import init_distributed, shutdown_distributed
from quantart_cli.core.train.loop import run_training
from quantart_cli.core.train.options import LoopOptions

torch.set_num_threads(1)
device = torch.device("cpu")
info = init_distributed(device)
torch.manual_seed(100 + info.rank)  # different init per rank: DDP and the explicit broadcast must align them
model = assemble_style_transfer(*load_vqgan_pair({content_vq!r}, {style_vq!r}), sga_blocks=1)
loss = StyleTransferLoss(StyleTransferLossConfig(disc_ndf=8, disc_in_channels=16))
task = StyleTransferTask(model, loss, lr=1e-3, device=device, info=info)
images = UnpairedDataset({content!r}, {style!r}, size=32, seed=0)
out = Path({out!r})
cache = build_latent_cache(model, out / "cache", images.content_paths, images.style_paths, size=32, shard_size=1,
                           info=info)
dataset = LatentPairDataset(cache, content_size=8, style_size=8, seed=0, hflip=True)
stream = BatchStream(dataset, batch_size=1, seed=0, info=info)
run_training(task, stream, out / "run", LoopOptions(steps=3, save_every=100, log_every=1), device=device, info=info)
torch.save({{**model.state_dict(), **{{"D." + k: v for k, v in loss.discriminator.state_dict().items()}}}},
           out / f"rank{{info.rank}}.pt")
shutdown_distributed()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_on_gloo_shares_the_cache_build_and_keeps_both_ranks_identical(vqgans, data, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(
            DDP_WORKER.format(
                content_vq=str(vqgans[0]),
                style_vq=str(vqgans[1]),
                content=str(data[0]),
                style=str(data[1]),
                out=str(tmp_path),
            )
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(script),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 7  # 4 content + 3 style shards of 1
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[-1])["d_loss"] > 0


def test_the_cache_never_deletes_files_it_did_not_write(vqgans, data, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "content-000.safetensors").write_bytes(b"the user's own file")
    (folder / "notes.txt").write_text("also theirs")
    images = UnpairedDataset(data[0], data[1], size=32, seed=7)
    with pytest.raises(UsageError, match="nothing there was deleted"):
        build_latent_cache(_model(vqgans), folder, images.content_paths, images.style_paths, size=32)
    assert (folder / "content-000.safetensors").read_bytes() == b"the user's own file"
    assert (folder / "notes.txt").read_text() == "also theirs"


def test_latents_too_small_for_the_discriminator_are_one_sentence(capsys, preset, vqgans, data, tmp_path):
    """Found by the GPU check's smoke run: latents smaller than the latent PatchGAN takes ended the run inside
    torch ("unexpected RuntimeError: Calculated padded input size ..."); now refused before training."""
    result = _cli(capsys, preset, vqgans, data, tmp_path / "run", "--size", "16")
    assert result.code == 2, result.err
    assert result.err.startswith("error: --size 16 gives latents") and "disc_num_layers" in result.err
    assert not (tmp_path / "run" / "state.pt").exists()


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
def test_the_discriminator_size_rule_matches_torch(n_layers):
    from quantart_cli.core.nn.discriminator import NLayerDiscriminator, logits_side, min_input_side

    disc = NLayerDiscriminator(2, ndf=4, n_layers=n_layers).eval()
    for side in range(1, 40):
        try:
            got = disc(torch.zeros(1, 2, side, side)).shape[-1]
        except RuntimeError:
            got = 0
        assert logits_side(side, n_layers) == got, side
    assert logits_side(min_input_side(n_layers), n_layers) == 1
