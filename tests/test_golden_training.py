"""Training is step-exact with the original QuantArt code (docs/training.md, "Step-exact with the original").

A golden file (tests/fixtures/quantart_train_steps_small.pt, README beside it; another file through
QUANTART_GOLDEN_TRAIN_STEPS) records four optimisation steps of the original code for stage 1 and stage 2: the
initial weights, the batches, every logged value, the quantizers' code indices and the final weights. These tests
build the project's models from the file's configuration, load its weights, and run the project's own training
code (the tasks and the loop `train-vq` / `train-sga` use) on its batches; then compare every logged value per
step (1e-5 relative), the code indices of every quantizer call (exactly) and the final weights (within a small
multiple of the file's own float32-vs-float64 spread per parameter). Every size, count and setting is read from
the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from golden_files import TRAIN_STEPS

from quantart_cli.core.config import AutoencoderConfig, QuantizerConfig, StyleTransferConfig, VQGANConfig
from quantart_cli.core.losses.config import StyleTransferLossConfig, VQGANLossConfig
from quantart_cli.core.losses.style_transfer import StyleTransferLoss
from quantart_cli.core.losses.vqgan import VQGANLoss
from quantart_cli.core.models import VQGAN, StyleTransfer
from quantart_cli.core.train.loop import run_training
from quantart_cli.core.train.options import LoopOptions
from quantart_cli.core.train.resume import METRICS_FILE
from quantart_cli.core.train.sga_task import StyleTransferTask
from quantart_cli.core.train.vq_task import VQGANTask

FIXTURE = TRAIN_STEPS
CPU = torch.device("cpu")
RELATIVE = 1e-5
#: Final weights may differ from the original's float32 run by this multiple of its float32-vs-float64 spread.
SPREAD_MULTIPLE = 10.0


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    assert FIXTURE.is_file(), f"golden training file {FIXTURE} is missing (QUANTART_GOLDEN_TRAIN_STEPS)"
    data = torch.load(FIXTURE, map_location="cpu", weights_only=True)
    assert data["format"] == "quantart_train_steps/1", data["format"]
    return data


# ------------------------------------------------------------------------------------ from the file


def _vqgan_config(cfg: Mapping[str, Any]) -> VQGANConfig:
    dd = cfg["ddconfig"]
    return VQGANConfig(
        autoencoder=AutoencoderConfig(
            ch=dd["ch"], ch_mult=tuple(dd["ch_mult"]), num_res_blocks=dd["num_res_blocks"],
            attn_resolutions=tuple(dd["attn_resolutions"]), resolution=dd["resolution"],
            in_channels=dd["in_channels"], out_ch=dd["out_ch"], z_channels=dd["z_channels"],
            double_z=dd["double_z"], dropout=dd["dropout"],
        ),
        quantizer=QuantizerConfig(n_embed=cfg["n_embed"], embed_dim=cfg["embed_dim"], beta=cfg["beta"],
                                  legacy_loss=cfg["legacy_vq_loss"]),
    )


def _check_optimizer(cfg: Mapping[str, Any], task: Any) -> None:
    """The file's Adam must be the project's: same betas and eps, no weight decay, no amsgrad."""
    for optimizer in task.optimizers().values():
        group = optimizer.param_groups[0]
        assert tuple(group["betas"]) == tuple(cfg["betas"]) and group["eps"] == cfg["eps"]
        assert group["weight_decay"] == cfg["weight_decay"] and group["amsgrad"] == cfg["amsgrad"]


class _Batches:
    """The file's batches, in order (the data source of the loop; the loop itself is the project's)."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches, self.position, self.epoch = batches, 0, 0

    def next(self) -> dict[str, torch.Tensor]:
        batch = self.batches[self.position]
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.position = state["position"]


def _images(hwc: torch.Tensor) -> torch.Tensor:
    """The original's ``get_input``: (B, H, W, C) -> contiguous (B, C, H, W) float."""
    return hwc.permute(0, 3, 1, 2).contiguous().float()


class _IndexRecorder:
    """Code indices of every call of the watched quantizers, in call order."""

    def __init__(self, quantizers: Mapping[str, torch.nn.Module]) -> None:
        self.calls: list[tuple[str, torch.Tensor]] = []
        self.handles = [q.register_forward_hook(self._hook(name)) for name, q in quantizers.items()]

    def _hook(self, name: str):
        def record(module, args, output) -> None:
            self.calls.append((name, output[2].indices.detach().clone()))

        return record

    def take(self) -> Iterator[tuple[str, torch.Tensor]]:
        calls, self.calls = self.calls, []
        return iter(calls)


def _run(task: Any, batches: list, steps: int, out: Path, order: str = "sequential") -> list[dict[str, float]]:
    options = LoopOptions(steps=steps, log_every=1, save_every=steps, sample_every=0, keep_checkpoints=0,
                          optimizer_order=order)
    run_training(task, _Batches(batches), out, options, device=CPU)
    return [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]


def _close(ours: float, theirs: float, theirs_f64: float, what: str) -> None:
    """1e-5 relative, or a small multiple of how far the original's own float32 run is from float64 where the
    trajectory is that sensitive (a few steps in, rounding noise that Adam amplified shows in the logits)."""
    tolerance = max(RELATIVE * abs(theirs), SPREAD_MULTIPLE * abs(theirs - theirs_f64)) + 1e-7
    assert abs(ours - theirs) <= tolerance, f"{what}: ours {ours!r}, original {theirs!r} (tolerance {tolerance:.2g})"


def _check_weights(ours: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor], spread: Mapping[str, float],
                   prefix: str, lr: float, steps: int, noise: set[str]) -> None:
    for name, want in theirs.items():
        got = ours[name].detach().float()
        worst = float((got - want.float()).abs().max())
        key = prefix + name
        # A parameter whose gradient is exactly 0 mathematically moves by Adam's normalised rounding noise, up to
        # about lr a step in either direction, in both runs independently.
        tolerance = 2 * lr * steps if key in noise else max(SPREAD_MULTIPLE * spread.get(key, 0.0), 1e-6)
        assert worst <= tolerance, f"{key}: final weights differ by {worst:.3g} (tolerance {tolerance:.3g})"


# ------------------------------------------------------------------------------------------- stage 1


STAGE1_LOGS = {
    "train/total_loss": "total", "train/aeloss": "total", "train/quant_loss": "vq", "train/nll_loss": "nll",
    "train/rec_loss": "nll", "train/p_loss": "perceptual", "train/d_weight": "d_weight",
    "train/disc_factor": "disc_factor", "train/g_loss": "g_loss",
    "train/discloss": "d_loss", "train/disc_loss": "d_loss", "train/logits_real": "logits_real",
    "train/logits_fake": "logits_fake",
}


def _stage1(stage: Mapping[str, Any]) -> tuple[VQGANTask, VQGAN]:
    cfg = stage["config"]
    loss_cfg = dict(cfg["loss_params"])
    assert not loss_cfg.pop("use_actnorm") and not loss_cfg.pop("disc_conditional")
    loss_cfg.pop("pixelloss_weight")  # stored but never used by the original
    model = VQGAN(_vqgan_config(cfg))
    model.load_state_dict(stage["init_generator"], strict=True)
    loss = VQGANLoss(VQGANLossConfig(**loss_cfg))
    loss.discriminator.load_state_dict(stage["init_discriminator"], strict=True)
    task = VQGANTask(model, loss, lr=cfg["lr"], device=CPU)
    _check_optimizer(cfg, task)
    return task, model


def test_stage1_four_steps_match_the_original(golden, tmp_path):
    _check_stage1(golden["stage1"], tmp_path / "run")


def test_the_joint_order_is_caught(golden, tmp_path):
    """The faster joint order (D on the fakes from before the generator's update, no D step before disc_start)
    is not the original's: the comparison must see it."""
    with pytest.raises(AssertionError, match="step [0-3] opt1|final weights|BatchNorm"):
        _check_stage1(golden["stage1"], tmp_path / "run", order="joint")


def _check_stage1(stage: Mapping[str, Any], out: Path, order: str = "sequential") -> None:
    cfg = stage["config"]
    task, model = _stage1(stage)
    recorder = _IndexRecorder({"quantize": model.quantize})
    batches = [{"image": _images(b["image"])} for b in stage["batches"]]
    records = _run(task, batches, cfg["num_steps"], out, order)
    calls = recorder.take()
    assert len(records) == len(stage["steps"]) == cfg["num_steps"]
    for step, (record, original) in enumerate(zip(records, stage["steps"], strict=True)):
        for phase in ("opt0", "opt1"):
            for key, value in original[phase]["log"].items():
                _close(record[STAGE1_LOGS[key]], float(value), float(original[phase]["log_f64"][key]),
                       f"step {step} {phase} {key}")
            for call in original[phase]["quantizer"]["quantize"]:
                name, indices = next(calls)
                assert torch.equal(indices.flatten(), call["indices"].flatten()), f"step {step} {phase} indices"
    _check_final_state(model, task, stage, cfg, "final_generator")


def _check_final_state(model: torch.nn.Module, task, stage: Mapping, cfg: Mapping, generator_key: str) -> None:
    """The trained model (``stage[generator_key]``), the discriminator and its BatchNorm statistics after the
    last step, each within the original's own float32-vs-float64 spread."""
    spread, noise_driven = stage["final_vs_f64_maxabs"], set(stage["noise_driven_params"])
    _check_weights(model.state_dict(), stage[generator_key], spread, "", cfg["lr"], cfg["num_steps"], noise_driven)
    _check_weights(task.loss.discriminator.state_dict(), stage["final_discriminator"], spread, "loss.discriminator.",
                   cfg["lr"], cfg["num_steps"], noise_driven)
    _check_bn(task.loss.discriminator, stage["final_discriminator_bn"], spread)


def _check_bn(discriminator: torch.nn.Module, theirs: Mapping[str, torch.Tensor], spread: Mapping[str, float]) -> None:
    """D's BatchNorm statistics: the same number of updates (D runs in every phase, as in the original) and values
    within the spread of the final weights."""
    ours = discriminator.state_dict()
    for name, want in theirs.items():
        if name.endswith("num_batches_tracked"):
            assert int(ours[name]) == int(want), f"{name}: {int(ours[name])} BatchNorm updates, original {int(want)}"
            continue
        worst = float((ours[name].float() - want.float()).abs().max())
        tolerance = max(SPREAD_MULTIPLE * spread.get("loss.discriminator." + name, 0.0), 1e-6)
        assert worst <= tolerance, f"{name}: differs by {worst:.3g} (tolerance {tolerance:.3g})"


# ------------------------------------------------------------------------------------------- stage 2


def _stage2_logs(record: Mapping[str, float], disc_weight: float) -> dict[str, float]:
    gan = disc_weight * record["disc_factor"] * record["g_loss"]
    return {
        "train/total_loss": record["total"], "train/aeloss": record["total"] - gan,
        "train/quant_x2y_loss": record["vq"], "train/reverse_loss": record["reverse"],
        "train/style_loss": record["style"], "train/d_weight": disc_weight, "train/disc_factor": record["disc_factor"],
        "train/g_loss": record["g_loss"], "train/discloss": record["d_loss"], "train/disc_loss": record["d_loss"],
        "train/logits_real": record["logits_real"], "train/logits_fake": record["logits_fake"],
    }


def _stage2(stage: Mapping[str, Any]) -> tuple[StyleTransferTask, StyleTransfer, float]:
    cfg = stage["config"]
    assert cfg["use_conv"] and cfg["use_selfatt"]  # the only SGA variant the original ships
    loss_cfg = dict(cfg["loss_params"])
    assert not loss_cfg.pop("disc_conditional") and loss_cfg.pop("G_step") == 1
    loss_cfg.pop("codebook2_weight")  # stored but never used by the original
    vq = _vqgan_config(cfg)
    model = StyleTransfer(StyleTransferConfig(content=vq, style=vq, sga_blocks=cfg["sga_blocks"],
                                              use_residual=cfg["use_residual"]))
    state = stage["init_state_dict"]
    prefix = "loss.discriminator."
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("loss.")}, strict=True)
    loss = StyleTransferLoss(StyleTransferLossConfig(**loss_cfg))
    loss.discriminator.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)},
                                       strict=True)
    task = StyleTransferTask(model, loss, lr=cfg["lr"], device=CPU)
    _check_optimizer(cfg, task)
    return task, model, loss_cfg["disc_weight"]


def test_stage2_four_steps_match_the_original(golden, tmp_path):
    stage = golden["stage2"]
    cfg = stage["config"]
    task, model, disc_weight = _stage2(stage)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("model_x2y.")}
    recorder = _IndexRecorder({"quantize_enc": model.quantize_enc, "quantize_dec": model.quantize_dec})
    batches = [{"content": _images(b[cfg["image_key1"]]), "style": _images(b[cfg["image_key2"]])}
               for b in stage["batches"]]
    records = _run(task, batches, cfg["num_steps"], tmp_path / "run")
    calls = list(recorder.take())
    assert len(records) == len(stage["steps"]) == cfg["num_steps"]
    at = 0
    for step, (record, original) in enumerate(zip(records, stage["steps"], strict=True)):
        ours = _stage2_logs(record, disc_weight)
        for phase in ("opt0", "opt1"):
            for key, value in original[phase]["log"].items():
                _close(ours[key], float(value), float(original[phase]["log_f64"][key]), f"step {step} {phase} {key}")
            # the original encodes the batch in each phase; the frozen encoders give the same codes, and the
            # project encodes each batch once: compare the content and style codes once, every x2y call per phase
            for name, recorded in original[phase]["quantizer"].items():
                wanted = recorded if phase == "opt0" else recorded[-1:]
                if name == "quantize_enc" and phase == "opt1":
                    continue
                for call in wanted:
                    got_name, indices = calls[at]
                    at += 1
                    assert got_name == name, (step, phase, got_name, name)
                    assert torch.equal(indices.flatten(), call["indices"].flatten()), f"step {step} {phase} {name}"
    assert at == len(calls)
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in frozen.items()) == bool(stage["frozen_parts_unchanged"])
    _check_final_state(model, task, stage, cfg, "final_model_x2y")
