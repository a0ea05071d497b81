"""The shared training loop (quantart_cli.core.train.loop) with a toy task: order, resume (past a damaged last.pt
too), NaN, Ctrl-C, precision."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_vq_config
from torch import nn

from quantart_cli.core.errors import NonFiniteLossError, UsageError
from quantart_cli.core.io.checkpoints import load_checkpoint
from quantart_cli.core.models import VQGAN
from quantart_cli.core.precision import check_precision
from quantart_cli.core.train.batches import BatchStream, ResumableSampler
from quantart_cli.core.train.ddp import DistInfo
from quantart_cli.core.train.loop import run_training
from quantart_cli.core.train.optim import scaled_lr
from quantart_cli.core.train.options import LoopOptions
from quantart_cli.core.train.resume import (
    LAST_CHECKPOINT,
    METRICS_FILE,
    STATE_FILE,
    load_training_state,
    save_training_state,
)
from quantart_cli.core.train.rng import capture_rng_state, restore_rng_state
from quantart_cli.core.train.step import Adversary, Generator
from quantart_cli.core.train.task import TrainingCallbacks

pytestmark = pytest.mark.usefixtures("one_thread")


class PointsDataset(torch.utils.data.Dataset):
    def __init__(self, n: int = 10) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
        self.epochs_seen: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs_seen.append(epoch)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i], "index": torch.tensor(i)}


class CriticLoss(nn.Module):
    """The toy's discriminator side: a linear critic, its loss pulls its outputs on the inputs toward 0."""

    def __init__(self) -> None:
        super().__init__()
        self.discriminator = nn.Linear(4, 1)

    def disc_factor_at(self, step):
        return 1.0

    def discriminator_loss(self, real, fake, step):
        critic_loss = self.discriminator(real).pow(2).mean()
        return critic_loss, {"critic": critic_loss.detach()}


class ToyTask:
    """A linear regression with a linear 'critic' as its discriminator, enough to exercise the loop."""

    def __init__(self, seed: int = 0, poison_at: int | None = None) -> None:
        torch.manual_seed(seed)
        cpu = torch.device("cpu")
        self.model = nn.Linear(4, 1)
        self.loss = CriticLoss()
        self.critic = self.loss.discriminator
        self.generator = Generator("main", self.model, self.model.parameters(), lr=1e-2, device=cpu, info=DistInfo())
        self.adversary = Adversary(self.loss, lr=1e-2, device=cpu, info=DistInfo())
        self.poison_at = poison_at
        self.seen: list[int] = []
        self.extra = torch.zeros(3)

    def train(self):
        self.model.train()

    def forward(self, batch, ctx):
        return self.generator(batch["x"]).squeeze(-1)

    def generator_loss(self, batch, pred, step, ctx):
        self.seen.extend(batch["index"].tolist())
        loss = ((pred.float() - batch["y"]) ** 2).mean()
        loss = loss + 1e-3 * torch.rand(()) * pred.float().mean()  # a little randomness, so restored RNG states matter
        if self.poison_at is not None and step >= self.poison_at:
            loss = loss * float("nan")
        return loss, {"total": loss.detach()}

    def discriminator_inputs(self, batch, pred):
        return batch["x"], pred

    def after_step(self, step):
        self.extra[step % 3] += 1

    def metrics(self, step):
        return {"extra_sum": float(self.extra.sum())}

    def state_dict(self):
        return {"extra": self.extra.clone()}

    def load_state_dict(self, state):
        self.extra.copy_(state["extra"])

    def save_model(self, path: Path, step: int) -> None:
        from quantart_cli.core.io.atomic import atomic_write

        obj = {"model": self.model.state_dict(), "critic": self.critic.state_dict(), "step": step}
        atomic_write(path, lambda tmp: torch.save(obj, tmp))

    def load_model(self, path: Path) -> int:
        obj = torch.load(path, weights_only=True)
        self.model.load_state_dict(obj["model"])
        self.critic.load_state_dict(obj["critic"])
        return obj["step"]

    def write_sample(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("sample")


def _train(out: Path, steps: int, *, resume: bool = False, task: ToyTask | None = None, **options) -> tuple:
    task = task or ToyTask()
    dataset = PointsDataset()
    stream = BatchStream(dataset, batch_size=3, seed=5)
    opts = LoopOptions(steps=steps, **{"log_every": 2, "save_every": 4, "keep_checkpoints": 2, **options})
    result = run_training(task, stream, out, opts, device=torch.device("cpu"), resume=resume)
    return task, result


def test_scaled_lr_follows_the_original_rule():
    assert scaled_lr(4.5e-6, 5, 2, 3) == pytest.approx(4.5e-6 * 30)


def test_sampler_is_seeded_sharded_and_restartable():
    full = [ResumableSampler(10, batch_size=3, seed=1, rank=r, world_size=2).epoch_indices(4) for r in range(2)]
    assert all(len(s) == 3 for s in full)  # 5 per rank, one full batch of 3 each
    assert not set(full[0]) & set(full[1])
    again = ResumableSampler(10, batch_size=3, seed=1, rank=0, world_size=2).epoch_indices(4)
    assert again == full[0]
    one_rank = ResumableSampler(10, batch_size=3, seed=1)
    assert one_rank.epoch_indices(5) != one_rank.epoch_indices(4)  # reshuffled each epoch
    sampler = ResumableSampler(10, batch_size=3, seed=1)
    sampler.set_position(2, 1)
    assert list(sampler) == sampler.epoch_indices(2)[3:9]
    # fewer images than a batch: repeated so a step always gets a full batch
    assert len(ResumableSampler(2, batch_size=5, seed=0).epoch_indices(0)) == 5


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    import numpy as np

    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = capture_rng_state()
    save_training_state(tmp_path / "s.pt", {"format": "quantart-training-state", "version": 1, "rng": state})
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    loaded = load_training_state(tmp_path / "s.pt")
    restore_rng_state(loaded["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_fp16_on_cpu_is_refused_in_one_sentence():
    with pytest.raises(UsageError, match="`precision=fp16` needs a CUDA GPU"):
        check_precision(torch.device("cpu"), "fp16")
    check_precision(torch.device("cpu"), "bf16")


def test_loop_writes_metrics_checkpoints_and_bounded_step_copies(tmp_path):
    task, result = _train(tmp_path, 12, sample_every=6)
    assert result.final_step == 12
    lines = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 6, 8, 10, 12]
    for key in ("total", "critic", "lr", "it_per_s", "epoch", "extra_sum"):
        assert key in lines[-1]
    assert lines[-1]["total"] < lines[0]["total"]  # it learns
    assert sorted(p.name for p in tmp_path.glob("step_*.pt")) == ["step_0000008.pt", "step_0000012.pt"]
    assert (tmp_path / LAST_CHECKPOINT).is_file() and (tmp_path / STATE_FILE).is_file()
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_0000006.png", "step_0000012.png"]
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert state["step"] == 12 and set(state["optimizers"]) == {"main", "discriminator"}


@pytest.mark.parametrize("accumulate", [1, 2])
def test_resume_is_exact(tmp_path, accumulate):
    straight, _ = _train(tmp_path / "a", 10, accumulate=accumulate)
    first, _ = _train(tmp_path / "b", 5, accumulate=accumulate)
    resumed, result = _train(tmp_path / "b", 10, resume=True, task=ToyTask(seed=99), accumulate=accumulate)
    assert result.start_step == 5 and result.final_step == 10
    assert first.seen + resumed.seen == straight.seen  # same data order across the resume
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(straight.extra, resumed.extra)


def test_resuming_a_finished_run_says_so(tmp_path):
    _train(tmp_path, 4)
    with pytest.raises(UsageError, match="already reached step 4"):
        _train(tmp_path, 4, resume=True)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"NaN at step 7.*step 4 is kept"):
        _train(tmp_path, 12, task=ToyTask(poison_at=6))
    assert torch.load(tmp_path / LAST_CHECKPOINT, weights_only=True)["step"] == 4
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["step"] == 4


def test_ctrl_c_saves_the_finished_step_and_resume_continues(tmp_path):
    class InterruptAt3(TrainingCallbacks):
        messages: list[str] = []

        def on_step(self, step, record):
            if step == 3:
                os.kill(os.getpid(), signal.SIGINT)

        def on_message(self, text):
            self.messages.append(text)

    callbacks = InterruptAt3()
    task = ToyTask()
    stream = BatchStream(PointsDataset(), batch_size=3, seed=5)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in a background job
    with pytest.raises(KeyboardInterrupt):
        run_training(task, stream, tmp_path, LoopOptions(steps=10, save_every=100), device=torch.device("cpu"),
                     callbacks=callbacks)
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["step"] == 3
    assert any(f"`resume={tmp_path}`" in m for m in callbacks.messages)
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler restored
    straight, _ = _train(tmp_path / "straight", 10, save_every=100)
    resumed, _ = _train(tmp_path, 10, resume=True, save_every=100, task=ToyTask(seed=7))
    assert torch.equal(straight.model.weight, resumed.model.weight)


def test_a_second_ctrl_c_during_the_save_does_not_tear_it(tmp_path, monkeypatch):
    """The first Ctrl-C stops after the step and saves; a second one arriving mid-save (between last.pt and
    state.pt, the worst moment) waits for the save to complete: the files agree and resume is exact."""
    import quantart_cli.core.train.resume as resume_module

    real_save_state = resume_module.save_training_state
    calls = {"n": 0}

    def state_save_with_second_interrupt(path, state):
        calls["n"] += 1
        os.kill(os.getpid(), signal.SIGINT)  # the impatient second Ctrl-C, while last.pt is already new
        return real_save_state(path, state)

    class InterruptAt3(TrainingCallbacks):
        def on_step(self, step, record):
            if step == 3:
                os.kill(os.getpid(), signal.SIGINT)

    import quantart_cli.core.train.loop as loop_module

    monkeypatch.setattr(loop_module, "save_training_state", state_save_with_second_interrupt)
    stream = BatchStream(PointsDataset(), batch_size=3, seed=5)
    with pytest.raises(KeyboardInterrupt):
        run_training(ToyTask(), stream, tmp_path, LoopOptions(steps=10, save_every=100), device=torch.device("cpu"),
                     callbacks=InterruptAt3())
    assert calls["n"] == 1
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["step"] == 3
    assert torch.load(tmp_path / LAST_CHECKPOINT, weights_only=True)["step"] == 3
    monkeypatch.setattr(loop_module, "save_training_state", real_save_state)
    straight, _ = _train(tmp_path / "straight", 10, save_every=100)
    resumed, _ = _train(tmp_path, 10, resume=True, save_every=100, task=ToyTask(seed=7))
    assert torch.equal(straight.model.weight, resumed.model.weight)


def test_sigterm_stops_like_ctrl_c_after_the_step_with_a_complete_save(tmp_path):
    class TermAt2(TrainingCallbacks):
        def on_step(self, step, record):
            if step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    stream = BatchStream(PointsDataset(), batch_size=3, seed=5)
    with pytest.raises(KeyboardInterrupt):
        run_training(ToyTask(), stream, tmp_path, LoopOptions(steps=10, save_every=100), device=torch.device("cpu"),
                     callbacks=TermAt2())
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


def test_a_second_run_into_a_folder_in_use_is_refused_with_the_holders_pid(tmp_path):
    from quantart_cli.core.errors import UsageError
    from quantart_cli.core.train.lock import run_folder_lock

    with run_folder_lock(tmp_path / "run"):
        stream = BatchStream(PointsDataset(), batch_size=3, seed=5)
        with pytest.raises(UsageError, match=rf"in use by a run in process {os.getpid()}"):
            run_training(ToyTask(), stream, tmp_path / "run", LoopOptions(steps=2), device=torch.device("cpu"))
    _train(tmp_path / "run", 2)  # released: the folder can be used again
    assert not (tmp_path / "run" / ".quantart.lock").exists()


def test_bf16_autocast_on_cpu_trains(tmp_path):
    _, result = _train(tmp_path, 4, precision="bf16")
    assert result.final_step == 4 and result.last_record["total"] == result.last_record["total"]


def test_grad_clip_limits_the_update(tmp_path):
    clipped, _ = _train(tmp_path / "c", 1, grad_clip=1e-12)
    free, _ = _train(tmp_path / "f", 1)
    start = ToyTask()
    # Adam's first step is ~lr * sign(g) unless |g| falls far below its eps (1e-8): clipping to 1e-12 does that
    free_move = (free.model.weight - start.model.weight).abs().max()
    clipped_move = (clipped.model.weight - start.model.weight).abs().max()
    assert free_move > 1e-3 and clipped_move < 1e-3 * free_move


def test_dist_info_single_process_by_default():
    info = DistInfo()
    assert info.is_main and not info.enabled


def test_damaged_last_checkpoint_falls_back_to_the_step_copy(tmp_path, small_images):
    """A last.pt damaged after the fact (bit rot, a copy gone wrong) is skipped for step_N.pt of state.pt's step
    (Python API: the train-vq stage reads last.pt's header before the loop starts)."""
    from quantart_cli.core.data.datasets import ImageDataset
    from quantart_cli.core.losses.config import VQGANLossConfig
    from quantart_cli.core.losses.vqgan import VQGANLoss
    from quantart_cli.core.train.batches import BatchStream
    from quantart_cli.core.train.loop import run_training
    from quantart_cli.core.train.options import LoopOptions
    from quantart_cli.core.train.vq_task import VQGANTask

    def train(steps: int, resume: bool) -> int:
        torch.manual_seed(0)
        loss = VQGANLoss(VQGANLossConfig(perceptual_weight=0.0, disc_start=1, disc_ndf=8, disc_num_layers=1))
        task = VQGANTask(VQGAN(tiny_vq_config()), loss, lr=1e-3, device=torch.device("cpu"))
        stream = BatchStream(ImageDataset([small_images], size=32), batch_size=2, seed=0)
        options = LoopOptions(steps=steps, save_every=1, keep_checkpoints=2)
        return run_training(task, stream, run, options, device=torch.device("cpu"), resume=resume).final_step

    run = tmp_path / "run"
    assert train(2, resume=False) == 2
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").unlink()  # break the hard link to step_0000002.pt before damaging it
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    assert train(3, resume=True) == 3
    assert load_checkpoint(run / "last.pt").step == 3
