"""`quantart encode` end to end on tiny models: encode and decode back, --size, single files, the built-in
models, bad inputs (a folder goes on past an unreadable image)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_support import run_cli
from PIL import Image
from tiny_models import tiny_st_config, tiny_vq_config

from quantart_cli.core.config import tiny_vqgan_config
from quantart_cli.core.io.checkpoints import load_model, save_checkpoint
from quantart_cli.core.io.codes import load_code_file
from quantart_cli.core.io.images import crop_padding, load_image_tensor, pad_to_multiple
from quantart_cli.core.models import VQGAN, StyleTransfer
from quantart_cli.samples import CONTENT_DIR

pytestmark = pytest.mark.usefixtures("one_thread")


def test_encode_then_decode_round_trip(capsys, saved_vq, pictures, tmp_path):
    codes, decoded = tmp_path / "codes", tmp_path / "decoded"
    result = run_cli(capsys, "--device", "cpu", "encode", str(pictures), "--ckpt", str(saved_vq), "--out", str(codes))
    assert result.code == 0, result.err
    written = sorted(Path(line) for line in result.out.split())
    assert [p.name for p in written] == ["a.safetensors", "b.safetensors", "odd.safetensors"]
    code_file = load_code_file(codes / "odd.safetensors")
    (record,) = code_file.records
    assert (record.width, record.height) == (50, 37)
    assert record.indices.shape == (3, 4)  # 64x48 padded, factor 16
    assert code_file.n_embed == 128 and len(code_file.checkpoint_sha256) == 64

    model = load_model(saved_vq, expected_kind="vqgan")
    padded, padding = pad_to_multiple(load_image_tensor(pictures / "odd.jpg"), 16)
    with torch.inference_mode():
        expected_indices = model.encode_to_indices(padded)[0]
        expected_image = crop_padding(model.decode_indices(expected_indices[None]), padding)
    assert torch.equal(record.indices, expected_indices)

    result = run_cli(capsys, "encode", str(codes), "--decode", "--ckpt", str(saved_vq), "--out", str(decoded))
    assert result.code == 0, result.err
    image = Image.open(decoded / "odd.png")
    assert image.size == (50, 37)
    pixels = torch.from_numpy(__import__("numpy").array(image)).permute(2, 0, 1).float() / 127.5 - 1
    assert (pixels - expected_image[0].clamp(-1, 1)).abs().max() <= 1 / 127.5 + 1e-6


def test_a_tiny_image_round_trips_with_a_one_channel_per_group_model(capsys, tmp_path):
    """The lowest level has 32 channels in 32 GroupNorm groups: a 1x1 latent cannot be normalized, so the padding
    reaches two latent cells per side (issue 25)."""
    torch.manual_seed(0)
    config = tiny_vq_config(ch=32, ch_mult=(1, 1, 1, 1), resolution=64, z_channels=32, n_embed=64)
    ckpt = save_checkpoint(VQGAN(config), tmp_path / "vq.pt")
    Image.new("RGB", (7, 5), (30, 120, 200)).save(tmp_path / "tiny.png")
    result = run_cli(capsys, "encode", str(tmp_path / "tiny.png"), "--ckpt", str(ckpt), "--out",
                     str(tmp_path / "codes"), "--device", "cpu")
    assert result.code == 0, result.err
    (record,) = load_code_file(tmp_path / "codes" / "tiny.safetensors").records
    assert record.indices.shape == (2, 2) and (record.width, record.height) == (7, 5)
    result = run_cli(capsys, "encode", str(tmp_path / "codes"), "--decode", "--ckpt", str(ckpt), "--out",
                     str(tmp_path / "back"), "--device", "cpu")
    assert result.code == 0, result.err
    assert Image.open(tmp_path / "back" / "tiny.png").size == (7, 5)


def test_existing_outputs_are_skipped_unless_overwrite(capsys, saved_vq, pictures, tmp_path):
    codes = tmp_path / "codes"
    assert run_cli(capsys, "encode", str(pictures), "--ckpt", str(saved_vq), "--out", str(codes)).code == 0
    result = run_cli(capsys, "encode", str(pictures), "--ckpt", str(saved_vq), "--out", str(codes))
    assert result.code == 0 and result.out == "" and "skipping 3" in result.err
    result = run_cli(capsys, "encode", str(pictures / "a.png"), "--ckpt", str(saved_vq), "--out", str(codes),
                     "--overwrite")
    assert result.out.strip().endswith("a.safetensors")


def test_single_file_for_a_dataset(capsys, saved_vq, pictures, tmp_path):
    target = tmp_path / "all.safetensors"
    result = run_cli(capsys, "encode", str(pictures), "--ckpt", str(saved_vq), "--single-file", "--out", str(target))
    assert result.code == 0, result.err
    code_file = load_code_file(target)
    assert [Path(r.source).name for r in code_file.records] == ["a.png", "b.png", "odd.jpg"]
    out = tmp_path / "back"
    assert run_cli(capsys, "encode", str(target), "--reverse", "--ckpt", str(saved_vq), "--out", str(out)).code == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "odd.png"]


def test_decode_checks_every_code_file_before_it_writes_an_image(capsys, saved_vq, pictures, tmp_path, tiny_vq):
    """A code file of another codebook used to stop the run after the files before it were decoded; now nothing
    is written (every process of a torchrun job plans the whole decode before any writes)."""
    codes, other = tmp_path / "codes", tmp_path / "other"
    assert run_cli(capsys, "encode", str(pictures), "--ckpt", str(saved_vq), "--out", str(codes)).code == 0
    assert run_cli(capsys, "encode", str(pictures / "a.png"), "--ckpt", str(tiny_vq), "--out", str(other)).code == 0
    result = run_cli(capsys, "encode", str(codes), str(other), "--decode", "--ckpt", str(saved_vq), "--out",
                     str(tmp_path / "decoded"))
    assert result.code == 2 and "16-code book" in result.err, result.err
    assert not (tmp_path / "decoded").exists()


def test_decode_writes_each_output_name_once(capsys, saved_vq, pictures, tmp_path):
    codes, target, decoded = tmp_path / "codes", tmp_path / "all.safetensors", tmp_path / "decoded"
    assert run_cli(capsys, "encode", str(pictures), "--ckpt", str(saved_vq), "--out", str(codes)).code == 0
    assert run_cli(capsys, "encode", str(pictures / "odd.jpg"), "--ckpt", str(saved_vq), "--single-file", "--size",
                   "24", "--out", str(target)).code == 0
    result = run_cli(capsys, "encode", str(codes), str(target), "--decode", "--ckpt", str(saved_vq), "--out",
                     str(decoded))
    assert result.code == 0, result.err
    assert sorted(Path(line).name for line in result.out.split()) == ["a.png", "b.png", "odd.png"]
    assert f"skipping {decoded / 'odd.png'}: it exists" in result.err  # the first record of the name was written
    assert Image.open(decoded / "odd.png").size == (50, 37)
    result = run_cli(capsys, "encode", str(codes), str(target), "--decode", "--ckpt", str(saved_vq), "--out",
                     str(decoded), "--overwrite")
    assert sorted(Path(line).name for line in result.out.split()) == ["a.png", "b.png", "odd.png"]
    assert Image.open(decoded / "odd.png").size == (24, 18)  # the last record of the name, as before


def test_encode_needs_a_vqgan_checkpoint(capsys, pictures, tmp_path):
    config = tiny_st_config(tiny_vqgan_config())
    st_path = tmp_path / "st.pt"
    save_checkpoint(StyleTransfer(config), st_path)
    result = run_cli(capsys, "encode", str(pictures), "--ckpt", str(st_path), "--out", str(tmp_path / "c"))
    assert result.code != 0
    assert "style-transfer" in result.err and "Traceback" not in result.err


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["encode", "x.png"], 2, "--ckpt"),
        (["encode", "--ckpt", "vq.pt"], 2, "at least one input"),
        (["encode", "missing.png", "--ckpt", "{ckpt}"], 3, "missing.png"),
        (["encode", "{images}", "--ckpt", "nope.pt"], 3, "nope.pt"),
        (["encode", "{corrupt}", "--ckpt", "{ckpt}"], 1, "corrupt.png"),
        (["encode", "{images}", "--decode", "--ckpt", "{ckpt}", "--out", "{tmp}/d"], 1, "a.png"),
    ],
)
def test_bad_input_is_one_sentence(capsys, saved_vq, pictures, tmp_path, args, code, needle):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    fill = {"ckpt": str(saved_vq), "images": str(pictures / "a.png"), "corrupt": str(corrupt), "tmp": str(tmp_path)}
    result = run_cli(capsys, *[a.format(**fill) for a in args])
    assert result.code == code, result.err
    assert needle in result.err and "Traceback" not in result.err


def test_encode_goes_on_past_an_unreadable_image(capsys, tmp_path, small_images, tiny_vq):
    (small_images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = run_cli(capsys, "encode", str(small_images), "--ckpt", str(tiny_vq), "--out", str(tmp_path / "codes"),
                     "--device", "cpu")
    assert result.code == 1 and "broken.png" in result.err and "1 of 5 images could not be encoded" in result.err
    assert len(list((tmp_path / "codes").glob("*.safetensors"))) == 4


def test_encode_takes_a_size(capsys, tmp_path, saved_vq):
    out = tmp_path / "codes"
    result = run_cli(capsys, "encode", str(CONTENT_DIR / "lhq_1.jpg"), "--ckpt", str(saved_vq), "--out",
                     str(out), "--size", "48", "--device", "cpu")
    assert result.code == 0, result.err
    from quantart_cli.core.io.codes import load_code_file

    record = load_code_file(next(out.glob("*.safetensors"))).records[0]
    assert max(record.width, record.height) == 48


@pytest.fixture(scope="module")
def builtin_indices():
    """What the built-in style-transfer model itself makes of a 64x64 photo: (photo codes, art codes)."""
    import torch

    from quantart_cli.core.io.images import image_to_tensor, load_image, resize_longer_side
    from quantart_cli.core.weights import load_builtin_model

    model = load_builtin_model()
    photo = resize_longer_side(image_to_tensor(load_image(CONTENT_DIR / "lhq_1.jpg")), 64)
    with torch.inference_mode():
        return model.encode_content(photo)[1][0], model.encode_style(photo)[1][0]


def test_encode_and_decode_with_the_built_in_art_vqgan(capsys, tmp_path, builtin_indices):
    from quantart_cli.core.io.codes import load_code_file

    photo = CONTENT_DIR / "lhq_1.jpg"
    result = run_cli(capsys, "encode", str(photo), "--ckpt", "builtin:art", "--size", "64", "--out",
                     str(tmp_path / "codes"), "--device", "cpu")
    assert result.code == 0, result.err
    (record,) = load_code_file(tmp_path / "codes" / "lhq_1.safetensors").records
    assert record.indices.equal(builtin_indices[1])
    result = run_cli(capsys, "encode", str(tmp_path / "codes"), "--decode", "--ckpt", "builtin:art", "--out",
                     str(tmp_path / "back"), "--device", "cpu")
    assert result.code == 0, result.err
    assert Image.open(tmp_path / "back" / "lhq_1.png").size == (64, 64)


def test_the_built_in_photo_vqgan_encodes_but_has_no_decoder(capsys, tmp_path, builtin_indices):
    from quantart_cli.core.io.codes import load_code_file

    result = run_cli(capsys, "encode", str(CONTENT_DIR / "lhq_1.jpg"), "--ckpt", "builtin:photo", "--size", "64",
                     "--out", str(tmp_path / "codes"), "--device", "cpu")
    assert result.code == 0, result.err
    (record,) = load_code_file(tmp_path / "codes" / "lhq_1.safetensors").records
    assert record.indices.equal(builtin_indices[0])
    refused = run_cli(capsys, "encode", str(tmp_path / "codes"), "--decode", "--ckpt", "builtin:photo")
    assert refused.code == 2 and "no decoder" in refused.err and "builtin:art" in refused.err
    # photo codes are not art codes, though both books have 512 entries: decoding them says so
    mixed = run_cli(capsys, "encode", str(tmp_path / "codes"), "--decode", "--ckpt", "builtin:art", "--out",
                    str(tmp_path / "back"), "--device", "cpu")
    assert mixed.code == 0 and "encoded with another checkpoint" in mixed.err


def test_encode_without_a_checkpoint_names_the_built_in_choices(capsys):
    result = run_cli(capsys, "encode", str(CONTENT_DIR / "lhq_1.jpg"))
    assert result.code == 2 and "builtin:art" in result.err and "builtin:photo" in result.err
