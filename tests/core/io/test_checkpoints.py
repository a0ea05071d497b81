"""Checkpoints: native .pt and .safetensors round trips, conversion, import of original files, bad files."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from golden_files import FORWARD, SPEC_KEYS
from tiny_models import tiny_st_config, tiny_vq_config

from quantart_cli.core.config import AutoencoderConfig, QuantizerConfig, StyleTransferConfig, VQGANConfig
from quantart_cli.core.errors import BadInputError, NotFoundError, UnsafeCheckpointError, UsageError
from quantart_cli.core.io.checkpoint_format import checkpoint_sha256
from quantart_cli.core.io.checkpoints import (
    check_state_dict_fits,
    convert_checkpoint,
    load_checkpoint,
    load_model,
    read_checkpoint_header,
    save_checkpoint,
)
from quantart_cli.core.io.original import import_original_state_dict, infer_config

SPEC = SPEC_KEYS
FIXTURE = FORWARD


# --- tiny models ---------------------------------------------------------------------------------------------


def tiny_vqgan_cfg(n_embed: int = 16, **overrides) -> VQGANConfig:
    # 8/16 channels use the 1-group GroupNorm rule; level 1 (nominal 128 px) gets attention.
    fields = {"attn_resolutions": (128,), "resolution": 256, **overrides}
    return tiny_vq_config(n_embed=n_embed, embed_dim=8, **fields)


def tiny_style_cfg(continuous: bool = False) -> StyleTransferConfig:
    return tiny_st_config(tiny_vqgan_cfg(n_embed=16), style=tiny_vqgan_cfg(n_embed=32, ch=16), sga_blocks=2,
                          continuous=continuous)


def make_vqgan(seed: int = 0, config: VQGANConfig | None = None):
    from quantart_cli.core.models import VQGAN

    torch.manual_seed(seed)
    return VQGAN(config or tiny_vqgan_cfg()).eval()


def make_style(seed: int = 0, continuous: bool = False):
    from quantart_cli.core.models import StyleTransfer

    torch.manual_seed(seed)
    model = StyleTransfer(tiny_style_cfg(continuous)).eval()
    with torch.no_grad():  # default init leaves some tensors constant; make every weight informative
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def vqgan_output(model, x: torch.Tensor) -> torch.Tensor:
    """Reconstruction through the five named submodules only (no reliance on helper methods)."""
    with torch.no_grad():
        z_q = model.quantize(model.quant_conv(model.encoder(x)))[0]
        return model.decoder(model.post_quant_conv(z_q))


def style_output(model, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x, ref)


def image(seed: int, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g) * 2 - 1


def assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b) or set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def original_layout(model) -> dict[str, torch.Tensor]:
    """What an original file holds: our keys plus the loss.* entries the original registers."""
    state = dict(model.state_dict())
    state["loss.perceptual_loss.scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
    state["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(64, 3, 3, 3)
    state["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 4, 4)
    state["loss.discriminator.main.3.num_batches_tracked"] = torch.tensor(12)
    return state


# --- native and safetensors files (their round trip for every model: tests/core/test_model_contract.py) -------------


def test_native_file_is_plain_weights_only_dict(tmp_path: Path) -> None:
    model = make_vqgan()
    path = save_checkpoint(model, tmp_path / "vq.pt", step=3)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "quantart" and raw["format_version"] == 1 and raw["kind"] == "vqgan"
    assert raw["config"] == model.config.model_dump(mode="json")
    assert set(raw["metadata"]) >= {"step", "codebook_usage", "created", "quantart_version"}
    assert "extra_state_dicts" not in raw


def test_overwrite_is_atomic_and_keeps_umask_permissions(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "vq.pt"
    save_checkpoint(make_vqgan(seed=0), path, step=1)
    save_checkpoint(make_vqgan(seed=1), path, step=2)
    assert load_checkpoint(path).step == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["vq.pt"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_save_rejects_bad_metadata(tmp_path: Path) -> None:
    model = make_vqgan()
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(model, tmp_path / "a.pt", extra={"obj": object()})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(model, tmp_path / "a.pt", extra={"step": 3})
    assert not list(tmp_path.iterdir())


def test_sha256_and_short_hash(tmp_path: Path) -> None:
    path = save_checkpoint(make_vqgan(), tmp_path / "vq.safetensors")
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert checkpoint_sha256(path) == expected
    ckpt = load_checkpoint(path)
    assert ckpt.sha256 == expected and ckpt.short_hash == expected[:12]


def test_header_of_safetensors_reads_no_tensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_vqgan()
    path = save_checkpoint(model, tmp_path / "vq.safetensors", step=9, codebook_usage={"quantize": torch.ones(16)})
    import safetensors.torch

    def refuse(*args, **kwargs):
        raise AssertionError("header reading must not load tensors")

    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    header = read_checkpoint_header(path)
    assert header.kind == "vqgan" and header.config == model.config
    assert header.metadata["step"] == 9 and header.metadata["codebook_usage"] == ["quantize"]
    assert header.source_format == "safetensors"


def test_header_of_native_pt(tmp_path: Path) -> None:
    model = make_style()
    path = save_checkpoint(model, tmp_path / "st.pt", step=4)
    header = read_checkpoint_header(path)
    assert (header.kind, header.config, header.metadata["step"]) == ("style-transfer", model.config, 4)


# --- conversion ----------------------------------------------------------------------------------------------


def test_convert_both_ways(tmp_path: Path) -> None:
    model = make_vqgan(seed=3)
    usage = {"quantize": torch.randint(0, 9, (16,))}
    src = save_checkpoint(model, tmp_path / "a.pt", step=77, codebook_usage=usage, extra={"note": "x"})
    st = tmp_path / "b.safetensors"
    convert_checkpoint(src, st)
    back = tmp_path / "c.pt"
    convert_checkpoint(st, back)
    for path, fmt in ((st, "safetensors"), (back, "native")):
        ckpt = load_checkpoint(path)
        assert ckpt.source_format == fmt
        assert ckpt.config == model.config and ckpt.step == 77 and ckpt.metadata["note"] == "x"
        assert torch.equal(ckpt.codebook_usage["quantize"], usage["quantize"])
        assert_same_state(ckpt.state_dict, model.state_dict())
    last = load_checkpoint(back)
    assert last.metadata["converted_from"]["file"] == "b.safetensors"
    assert last.metadata["converted_from"]["sha256"] == checkpoint_sha256(st)
    with pytest.raises(UsageError, match=r"\.pt or \.safetensors"):
        convert_checkpoint(src, tmp_path / "out.bin")


# --- original checkpoints ----------------------------------------------------------------------------------------


class LightningCallbackState:
    """A non-tensor object like the ones Lightning pickles into its checkpoints."""

    def __init__(self) -> None:
        self.best_model_path = "/logs/last.ckpt"


def test_lightning_ckpt_with_objects_needs_trust(tmp_path: Path) -> None:
    model = make_vqgan(seed=4)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": original_layout(model), "global_step": 5, "callbacks": LightningCallbackState()}, path)

    with pytest.raises(UnsafeCheckpointError) as excinfo:
        load_checkpoint(path)
    message = str(excinfo.value)
    assert "`trust_checkpoint=true`" in message and "code" in message  # the field a Python caller sets
    assert excinfo.value.fields == ("trust_checkpoint",)
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint_header(path)

    ckpt = load_checkpoint(path, trust=True, expected_kind="vqgan")
    assert ckpt.source_format == "original" and ckpt.step == 5
    assert ckpt.config == model.config
    assert not any(k.startswith("loss.") for k in ckpt.state_dict)
    assert set(ckpt.extra_state_dicts["discriminator"]) == {"main.0.weight", "main.3.num_batches_tracked"}
    assert ckpt.metadata["imported"]["dropped_loss_keys"] == 2
    loaded = load_model(path, trust=True)
    x = image(3)
    assert torch.equal(vqgan_output(loaded, x), vqgan_output(model, x))


def test_trusted_import_survives_missing_lightning_classes(tmp_path: Path) -> None:
    # The class lives in a module that exists only while saving, like pytorch_lightning on another machine.
    fake = types.ModuleType("pytorch_lightning_fake_callbacks")

    class ModelCheckpoint(dict):
        pass

    ModelCheckpoint.__module__ = fake.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    fake.ModelCheckpoint = ModelCheckpoint
    sys.modules[fake.__name__] = fake
    model = make_vqgan(seed=5)
    state = ModelCheckpoint(monitor="val/rec_loss")
    state.extra = torch.tensor(1.0)
    path = tmp_path / "last.ckpt"
    try:
        torch.save({"state_dict": original_layout(model), "callbacks": {ModelCheckpoint: state}}, path)
    finally:
        del sys.modules[fake.__name__]
    ckpt = load_checkpoint(path, trust=True)
    assert_same_state(ckpt.state_dict, model.state_dict())


def test_weights_only_lightning_dict_needs_no_trust(tmp_path: Path) -> None:
    model = make_style(seed=6)
    path = tmp_path / "plain.ckpt"
    state = dict(model.state_dict())
    state["loss.discriminator.main.0.weight"] = torch.randn(4, 8, 4, 4)
    torch.save({"state_dict": state, "global_step": 11, "epoch": 2, "pytorch-lightning_version": "1.0.8"}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.kind == "style-transfer" and ckpt.source_format == "original"
    assert ckpt.config == model.config
    assert ckpt.step == 11 and ckpt.metadata["imported"]["epoch"] == 2
    assert ckpt.metadata["imported"]["pytorch_lightning_version"] == "1.0.8"


def test_bare_state_dict_with_ddp_prefix_and_original_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = make_style(seed=7, continuous=True)
    bare = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, bare)
    ckpt = load_checkpoint(bare)
    # A continuous model stores no codebook, so its unused n_embed cannot be recovered.
    expected = model.config.model_dump()
    got = ckpt.config.model_dump()
    for side in ("content", "style"):
        del expected[side]["quantizer"]["n_embed"], got[side]["quantizer"]["n_embed"]
    assert got == expected and ckpt.config.continuous
    assert_same_state(ckpt.state_dict, model.state_dict())

    st = tmp_path / "orig.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, st)
    assert load_checkpoint(st).source_format == "original"
    assert read_checkpoint_header(st).config == ckpt.config


def test_convert_imports_original(tmp_path: Path) -> None:
    model = make_vqgan(seed=8)
    src = tmp_path / "last.ckpt"
    torch.save({"state_dict": original_layout(model), "global_step": 42, "cb": LightningCallbackState()}, src)
    with pytest.raises(UnsafeCheckpointError):
        convert_checkpoint(src, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    convert_checkpoint(src, tmp_path / "x.safetensors", trust=True)
    ckpt = load_checkpoint(tmp_path / "x.safetensors")  # now safe to load without trust
    assert ckpt.source_format == "safetensors" and ckpt.step == 42
    assert ckpt.metadata["converted_from"]["format"] == "original"
    assert "main.0.weight" in ckpt.extra_state_dicts["discriminator"]
    assert_same_state(ckpt.state_dict, model.state_dict())


# --- config inference from the real key lists ---------------------------------------------------------------------


def keys_state_dict(name: str) -> dict[str, torch.Tensor]:
    path = SPEC / name
    assert path.is_file(), f"{path} is missing"
    state = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        dims = tuple(int(d) for d in re.findall(r"\d+", shape))
        state[key] = torch.empty(dims, dtype=getattr(torch, dtype), device="meta")
    return state


@pytest.mark.parametrize(
    ("name", "n_embed"), [("taming_vqgan_f16_keys.txt", 1024), ("taming_vqgan_f16_keys_16384.txt", 16384)]
)
def test_infer_stage1_f16(name: str, n_embed: int) -> None:
    imported = import_original_state_dict(keys_state_dict(name))
    expected = VQGANConfig(quantizer=QuantizerConfig(n_embed=n_embed))
    assert imported.config == expected
    assert imported.config.autoencoder == AutoencoderConfig()  # the f16 defaults
    assert len(imported.state_dict) == 343 and len(imported.extra_state_dicts["discriminator"]) == 22
    check_state_dict_fits(imported.config, imported.state_dict, source=name)


@pytest.mark.parametrize(
    ("name", "continuous"), [("quantart_stage2_keys.txt", False), ("quantart_stage2_continuous_keys.txt", True)]
)
def test_infer_stage2(name: str, continuous: bool) -> None:
    imported = import_original_state_dict(keys_state_dict(name))
    assert imported.config == StyleTransferConfig(continuous=continuous)
    assert imported.config.sga_blocks == 6
    assert "discriminator" in imported.extra_state_dicts
    check_state_dict_fits(imported.config, imported.state_dict, source=name)


def test_infer_config_of_unusual_shapes() -> None:
    from quantart_cli.core.models import VQGAN

    config = VQGANConfig(
        autoencoder=AutoencoderConfig(
            ch=16,
            ch_mult=(1, 2, 4),
            num_res_blocks=3,
            attn_resolutions=(128, 64),
            in_channels=4,
            out_ch=1,
            z_channels=12,
        ),
        quantizer=QuantizerConfig(n_embed=7, embed_dim=5),
    )
    state = VQGAN(config).state_dict()
    assert infer_config(state) == config


def test_inconsistent_original_is_rejected_by_name() -> None:
    state = keys_state_dict("taming_vqgan_f16_keys.txt")
    state["decoder.up.1.block.0.conv1.weight"] = torch.empty(128, 200, 3, 3, device="meta")
    imported = import_original_state_dict(state)
    with pytest.raises(BadInputError, match=r"decoder\.up\.1\.block\.0\.conv1\.weight has shape \(128, 200, 3, 3\)"):
        check_state_dict_fits(imported.config, imported.state_dict, source="x")
    del state["quantize.embedding.weight"]
    with pytest.raises(BadInputError, match="no codebook"):
        import_original_state_dict(state)


@pytest.fixture(scope="module")
def reference() -> dict:
    assert FIXTURE.is_file(), f"golden file {FIXTURE} is missing (QUANTART_GOLDEN)"
    return torch.load(FIXTURE, weights_only=True)


def test_reference_fixture_stage1_import(reference: dict, tmp_path: Path) -> None:
    imported = import_original_state_dict(reference["stage1"]["state_dict"])
    ae = imported.config.autoencoder
    assert (ae.ch, ae.z_channels, ae.num_res_blocks, ae.ch_mult) == (32, 64, 2, (1, 1, 2, 2, 4))
    assert ae.model_dump() == {**reference["ddconfig"], "ch_mult": (1, 1, 2, 2, 4), "attn_resolutions": (16,),
                               "norm_groups": 32}
    assert (imported.config.quantizer.n_embed, imported.config.quantizer.embed_dim) == (128, 64)
    path = tmp_path / "stage1.pth"
    torch.save(reference["stage1"]["state_dict"], path)
    model = load_model(path, expected_kind="vqgan")
    with torch.no_grad():
        z = model.quant_conv(model.encoder(reference["stage1"]["input"]))
        indices = model.quantize(z)[2].indices
    assert torch.equal(indices.reshape(-1), reference["stage1"]["indices"].reshape(-1))


def test_reference_fixture_stage2_import(reference: dict) -> None:
    imported = import_original_state_dict(reference["stage2"]["state_dict"])
    config = imported.config
    assert isinstance(config, StyleTransferConfig) and not config.continuous
    assert config.sga_blocks == 6 and config.embed_dim == 64
    assert config.style.autoencoder.ch == 32 and config.style.autoencoder.z_channels == 64
    assert config.content.quantizer.n_embed == config.style.quantizer.n_embed == 128
    check_state_dict_fits(config, imported.state_dict, source="fixture")


# --- bad files ----------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(BadInputError, match="folder"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", "empty"),
        (random.Random(0).randbytes(4096), "neither a PyTorch file nor a safetensors file"),
        (b"hello world, this is a text file\n", "neither a PyTorch file nor a safetensors file"),
    ],
)
def test_unrecognised_bytes(tmp_path: Path, content: bytes, pattern: str) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(BadInputError, match=pattern):
        load_checkpoint(path)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated(tmp_path: Path, suffix: str, keep: float) -> None:
    path = save_checkpoint(make_vqgan(), tmp_path / f"vq{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(BadInputError, match="truncated"):
        load_checkpoint(path)


def test_truncated_legacy_pickle(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save(
        {"state_dict": {"encoder.conv_in.weight": torch.ones(8, 3, 3, 3)}}, path, _use_new_zipfile_serialization=False
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(BadInputError, match="truncated or corrupt"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("obj", "pattern"),
    [
        (torch.zeros(3, 4), r"a single tensor of shape \(3, 4\)"),
        ({"weights": [1, 2], "lr": 0.1}, "keys weights, lr"),
        ({"fc.weight": torch.zeros(2, 2)}, "some other model"),
        ({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, "some other model"),
        ([1, 2, 3], "a list of 3 items"),
        ({"format": "diffusers"}, "not a quantart checkpoint"),
    ],
)
def test_pt_holding_something_else(tmp_path: Path, obj: object, pattern: str) -> None:
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(BadInputError, match=pattern):
        load_checkpoint(path)


def test_wrong_kind(tmp_path: Path) -> None:
    path = save_checkpoint(make_style(), tmp_path / "st.pt")
    with pytest.raises(BadInputError, match="is a style-transfer checkpoint but a VQGAN checkpoint was expected"):
        load_checkpoint(path, expected_kind="vqgan")
    path = save_checkpoint(make_vqgan(), tmp_path / "vq.safetensors")
    with pytest.raises(BadInputError, match="is a VQGAN checkpoint but a style-transfer checkpoint was expected"):
        load_model(path, expected_kind="style-transfer")


def _rewrite_native(path: Path, **changes) -> None:
    raw = torch.load(path, weights_only=True)
    raw.update(changes)
    torch.save(raw, path)


def test_state_dict_not_fitting_config(tmp_path: Path) -> None:
    model = make_vqgan()
    path = save_checkpoint(model, tmp_path / "vq.pt")
    raw = torch.load(path, weights_only=True)
    raw["state_dict"]["quant_conv.weight"] = torch.zeros(8, 4, 1, 1)
    torch.save(raw, path)
    with pytest.raises(
        BadInputError, match=r"quant_conv\.weight has shape \(8, 4, 1, 1\) but the model needs \(8, 8, 1, 1\)"
    ):
        load_checkpoint(path)
    del raw["state_dict"]["quant_conv.weight"]
    torch.save(raw, path)
    with pytest.raises(BadInputError, match=r"lacks quant_conv\.weight"):
        load_model(path)
    raw["state_dict"]["quant_conv.weight"] = torch.zeros(8, 8, 1, 1)
    raw["state_dict"]["decoder.extra.weight"] = torch.zeros(1)
    torch.save(raw, path)
    with pytest.raises(BadInputError, match=r"has decoder\.extra\.weight"):
        load_checkpoint(path)


def test_unsupported_format_version_and_bad_config(tmp_path: Path) -> None:
    path = save_checkpoint(make_vqgan(), tmp_path / "vq.pt")
    _rewrite_native(path, format_version=2)
    with pytest.raises(BadInputError, match="format version 2.*upgrade quantart"):
        load_checkpoint(path)
    _rewrite_native(path, format_version=1, config={"autoencoder": {"ch": -3}})
    with pytest.raises(BadInputError, match=r"config this quantart cannot use \(autoencoder\.ch"):
        load_checkpoint(path)
    _rewrite_native(path, kind="gan")
    with pytest.raises(BadInputError, match="unknown model kind 'gan'"):
        load_checkpoint(path)


def test_safetensors_without_known_content(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "x.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(BadInputError, match="neither a quantart checkpoint nor an original"):
        load_checkpoint(path)


class _CreatesFile:
    """Unpickling this would create a file: the kind of payload a malicious checkpoint carries."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {"encoder.conv_in.weight": torch.ones(1)}, "x": _CreatesFile(marker)}
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    for call in (load_checkpoint, read_checkpoint_header, load_model):
        with pytest.raises(UnsafeCheckpointError, match="`trust_checkpoint=true`"):
            call(path)
    with pytest.raises(UnsafeCheckpointError):
        convert_checkpoint(path, tmp_path / "out.pt")
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.ckpt"]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupted_bytes_never_leak_a_torch_error(tmp_path: Path, suffix: str) -> None:
    """Flipped, dropped or cut bytes either still load or give a BadInputError, never another exception."""
    path = save_checkpoint(make_vqgan(), tmp_path / f"vq{suffix}")
    data = path.read_bytes()
    rng = random.Random(1)
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(40):
        damaged = bytearray(data)
        if i % 2:
            pos = rng.randrange(min(len(damaged), 4096))  # headers, zip records, pickle opcodes
            damaged[pos] ^= 1 + rng.randrange(255)
        else:
            pos = rng.randrange(len(damaged))
            del damaged[pos : pos + rng.randint(1, 64)]
        corrupt = tmp_path / f"corrupt{suffix}"
        corrupt.write_bytes(bytes(damaged))
        try:
            load_checkpoint(corrupt)
            outcomes["loaded"] += 1
        except BadInputError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0


def test_cuda_device_without_cuda_is_a_usage_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    path = save_checkpoint(make_vqgan(), tmp_path / "vq.pt")
    with pytest.raises(UsageError, match="no CUDA GPU"):
        load_checkpoint(path, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_load_onto_cuda(tmp_path: Path, suffix: str) -> None:
    model = make_vqgan(seed=9)
    path = save_checkpoint(model, tmp_path / f"vq{suffix}", codebook_usage={"quantize": torch.ones(16)})
    ckpt = load_checkpoint(path, device="cuda")
    assert all(t.is_cuda for t in ckpt.state_dict.values())
    assert ckpt.codebook_usage["quantize"].is_cuda
    loaded = load_model(path, device="cuda")
    x = image(4)
    torch.testing.assert_close(vqgan_output(loaded, x.cuda()).cpu(), vqgan_output(model, x), atol=1e-4, rtol=1e-4)


def test_fit_check_stays_cheap() -> None:
    """The shape check builds the model on the meta device without pulling in torch._dynamo (seconds)."""
    import subprocess

    code = (
        "import sys, torch\n"
        "from quantart_cli.core.io.checkpoints import check_state_dict_fits, build_model\n"
        "from quantart_cli.core.config import StyleTransferConfig, VQGANConfig, AutoencoderConfig\n"
        "tiny = VQGANConfig(autoencoder=AutoencoderConfig(ch=8, ch_mult=(1,), num_res_blocks=1, z_channels=8))\n"
        "cfg = StyleTransferConfig(content=tiny, style=tiny, sga_blocks=1)\n"
        "sd = build_model(cfg).state_dict()\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "check_state_dict_fits(cfg, sd, source='x')\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_model_from_checkpoint_copies_and_load_model_matches(tmp_path: Path) -> None:
    from quantart_cli.core.io.checkpoints import model_from_checkpoint

    model = make_style(seed=10)
    path = save_checkpoint(model, tmp_path / "st.safetensors")
    ckpt = load_checkpoint(path)
    built = model_from_checkpoint(ckpt)
    with torch.no_grad():
        built.model_x2y.blocks[0].res_block.conv1.weight.add_(1.0)
    assert torch.equal(
        ckpt.state_dict["model_x2y.blocks.0.res_block.conv1.weight"],
        model.state_dict()["model_x2y.blocks.0.res_block.conv1.weight"],
    )
    loaded = load_model(path)
    assert not any(p.is_meta for p in loaded.parameters()) and not any(b.is_meta for b in loaded.buffers())
    assert [p.requires_grad for p in loaded.parameters()] == [p.requires_grad for p in model.parameters()]
    x, ref = image(5), image(6)
    assert torch.equal(style_output(loaded, x, ref), style_output(model, x, ref))


def test_original_file_not_fitting_inferred_config(tmp_path: Path) -> None:
    model = make_vqgan(seed=11)
    state = original_layout(model)
    state["decoder.conv_out.weight"] = torch.zeros(3, 5, 3, 3)
    path = tmp_path / "broken.ckpt"
    torch.save({"state_dict": state, "global_step": 1}, path)
    with pytest.raises(
        BadInputError, match=r"does not fit the config inferred from its shapes: decoder\.conv_out\.weight has shape"
    ):
        load_checkpoint(path)
