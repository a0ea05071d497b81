"""`quantart inspect-codebook` on tiny checkpoints: the JSON schema, data usage, atlas and plot, both
codebooks of a style-transfer model, tables, original checkpoints, bad inputs, no picture replaced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import run_cli
from golden_files import FORWARD
from image_files import random_pixel_images
from PIL import Image
from tiny_models import tiny_st_config

from quantart_cli.core.codebook.atlas import FRAME, UNUSED_FRAME, atlas_layout
from quantart_cli.core.codebook.stats import (
    usage_order,
    usage_stats,
)
from quantart_cli.core.config import tiny_vqgan_config
from quantart_cli.core.data.transforms import transform_image
from quantart_cli.core.io.checkpoints import load_model, save_checkpoint
from quantart_cli.core.io.images import load_image
from quantart_cli.core.models import VQGAN, StyleTransfer

pytestmark = pytest.mark.usefixtures("one_thread")

N_CODES = 128  # tiny_vqgan_config's book


@pytest.fixture(scope="module")
def vq_model() -> VQGAN:
    torch.manual_seed(0)
    model = VQGAN(tiny_vqgan_config()).eval()
    with torch.no_grad():  # spread the codes so decoded patches differ
        model.quantize.embedding.weight.normal_()
    return model


@pytest.fixture(scope="module")
def stored_usage() -> torch.Tensor:
    usage = torch.zeros(N_CODES, dtype=torch.long)
    usage[:100] = torch.arange(100, 0, -1)
    usage[[7, 99]] = 0  # two more dead codes
    return usage


@pytest.fixture(scope="module")
def vq_ckpt(tmp_path_factory, vq_model, stored_usage) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "vq.pt"
    return save_checkpoint(vq_model, path, step=12, codebook_usage={"quantize": stored_usage})


@pytest.fixture(scope="module")
def st_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(2)
    config = tiny_st_config(tiny_vqgan_config())
    model = StyleTransfer(config)
    with torch.no_grad():
        model.quantize_enc.embedding.weight.normal_()
        model.quantize_dec.embedding.weight.normal_()
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "st.safetensors")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    sizes = [(40, 32), (32, 48), (64, 64), (35, 33), (32, 32)]
    return random_pixel_images(tmp_path_factory.mktemp("images"), {f"img{i}.png": size for i, size in enumerate(sizes)},
                               seed=3)


def _expected_usage(encode, folder: Path, size: int) -> torch.Tensor:
    counts = torch.zeros(N_CODES, dtype=torch.long)
    with torch.inference_mode():
        for path in sorted(folder.iterdir()):
            indices = encode(transform_image(load_image(path), size)[None])
            counts += torch.bincount(indices.reshape(-1), minlength=N_CODES)
    return counts


def _json(capsys, *args: str) -> dict:
    result = run_cli(capsys, "--device", "cpu", "inspect-codebook", *args, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


SUMMARY_KEYS = {"min", "mean", "median", "max", "std"}
USAGE_TYPES = {"total": int, "used": int, "dead": int, "dead_share": float, "entropy_nats": float,
               "entropy_bits": float, "perplexity": float, "perplexity_share": float, "top": list}


def _check_usage_schema(usage: dict) -> None:
    assert set(usage) == set(USAGE_TYPES)
    for key, kind in USAGE_TYPES.items():
        assert isinstance(usage[key], kind), key
    for entry in usage["top"]:
        assert set(entry) == {"code", "count", "share"}
        assert isinstance(entry["code"], int) and isinstance(entry["count"], int)


def test_json_schema_and_stored_usage(capsys, vq_ckpt, stored_usage) -> None:
    doc = _json(capsys, str(vq_ckpt), "--top", "3")
    assert set(doc) == {"schema_version", "checkpoint", "data", "codebooks", "outputs"}
    assert doc["schema_version"] == 1
    assert doc["checkpoint"] == {"path": str(vq_ckpt), "kind": "vqgan", "format": "native", "step": 12}
    assert doc["data"] is None and doc["outputs"] == {"atlas": None, "plot": None}
    (book,) = doc["codebooks"]
    assert set(book) == {"name", "role", "size", "dim", "l2_normalize", "norm", "nearest_neighbour",
                         "near_duplicates", "stored_usage", "data_usage"}
    assert (book["name"], book["role"], book["size"], book["dim"]) == ("quantize", "codebook", 128, 64)
    assert book["l2_normalize"] is False and book["data_usage"] is None
    assert set(book["norm"]) == SUMMARY_KEYS and set(book["nearest_neighbour"]) == SUMMARY_KEYS
    assert all(isinstance(v, float) for v in [*book["norm"].values(), *book["nearest_neighbour"].values()])
    assert set(book["near_duplicates"]) == {"rule", "factor", "threshold", "pairs", "codes", "closest"}
    assert isinstance(book["near_duplicates"]["pairs"], int)
    _check_usage_schema(book["stored_usage"])
    expected = usage_stats(stored_usage, top=3)
    assert book["stored_usage"]["dead"] == 30 and book["stored_usage"]["total"] == int(stored_usage.sum())
    assert book["stored_usage"]["perplexity"] == pytest.approx(expected.perplexity, rel=1e-12)
    assert [t["code"] for t in book["stored_usage"]["top"]] == [0, 1, 2]
    # The figures agree with the library on the checkpoint's own codebook.
    weight = torch.load(vq_ckpt, weights_only=True)["state_dict"]["quantize.embedding.weight"]
    assert book["norm"]["max"] == pytest.approx(float(weight.double().norm(dim=1).max()), rel=1e-6)


def test_vqgan_data_usage_atlas_and_plot(capsys, vq_ckpt, vq_model, images, tmp_path) -> None:
    atlas, plot = tmp_path / "atlas.png", tmp_path / "usage.png"
    doc = _json(capsys, str(vq_ckpt), "--data", str(images), "--size", "32", "--batch-size", "2",
                "--atlas", str(atlas), "--atlas-latent", "1", "--atlas-limit", "30", "--plot", str(plot))
    assert doc["data"] == {"sources": [str(images)], "images": 5, "skipped": 0, "size": 32}
    usage = doc["codebooks"][0]["data_usage"]
    _check_usage_schema(usage)
    expected = _expected_usage(vq_model.encode_to_indices, images, 32)
    assert usage["total"] == 5 * 4  # 32x32 images, factor 16: 2x2 codes each
    figures = usage_stats(expected)
    assert usage["used"] == figures.used and usage["perplexity"] == pytest.approx(figures.perplexity)
    assert [t["code"] for t in usage["top"]] == [t.code for t in figures.top]

    # Atlas of the 30 most used codes: ceil(sqrt(30)) = 6 columns, 5 rows of 1x1-latent patches (16 px)
    # framed by 1 px (decoding is the slow part on a CPU, hence the limit).
    info = doc["outputs"]["atlas"]
    assert info["order_by"] == "data" and info["codes"] == usage_order(expected)[:30].tolist()
    assert (info["columns"], info["rows"], info["tile"], info["latent_side"]) == (6, 5, 16, 1)
    image = np.asarray(Image.open(atlas).convert("RGB"))
    assert image.shape == (5 * 18, 6 * 18, 3) and (info["width"], info["height"]) == (6 * 18, 5 * 18)
    # The first tile is the most used code decoded from a uniform 1x1 latent.
    first = info["codes"][0]
    with torch.inference_mode():
        patch = vq_model.decode_indices(torch.full((1, 1, 1), first, dtype=torch.long))[0]
    patch = ((patch.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.abs(image[FRAME : FRAME + 16, FRAME : FRAME + 16].astype(int) - patch.astype(int)).max() <= 1
    # Used codes come first with a grey frame; the last tile is an unused code framed in red.
    used = int((expected > 0).sum())
    assert 0 < used < 30 and tuple(image[0, 0]) != UNUSED_FRAME
    row, column = divmod(used, 6)
    assert tuple(image[(used - 1) // 6 * 18, (used - 1) % 6 * 18]) != UNUSED_FRAME
    assert tuple(image[row * 18, column * 18]) == UNUSED_FRAME
    assert Image.open(plot).size == (900, 540)


def test_atlas_from_stored_usage_with_latent_and_limit(capsys, vq_ckpt, stored_usage, tmp_path) -> None:
    atlas = tmp_path / "a.png"
    doc = _json(capsys, str(vq_ckpt), "--atlas", str(atlas), "--atlas-limit", "10")  # default 2x2 latent
    info = doc["outputs"]["atlas"]
    assert info["order_by"] == "stored" and info["codes"] == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]  # 7 is dead
    assert info["tile"] == 32 and Image.open(atlas).size == (4 * 34, 3 * 34)  # 10 tiles: 4 x 3 cells of 32+2 px
    assert atlas_layout(10, 32).width == 136


def test_style_transfer_both_codebooks(capsys, st_ckpt, images, tmp_path) -> None:
    atlas = tmp_path / "style_atlas.png"
    result = run_cli(capsys, "--device", "cpu", "inspect-codebook", str(st_ckpt), "--data", str(images),
                     "--size", "32", "--atlas", str(atlas), "--atlas-latent", "1", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["checkpoint"]["kind"] == "style-transfer" and doc["checkpoint"]["format"] == "safetensors"
    content, style = doc["codebooks"]
    assert (content["name"], content["role"]) == ("quantize_enc", "content")
    assert (style["name"], style["role"]) == ("quantize_dec", "style")
    model = load_model(st_ckpt, expected_kind="style-transfer")
    for book, encode in ((content, lambda x: model.encode_content(x)[1]), (style, lambda x: model.encode_style(x)[1])):
        expected = usage_stats(_expected_usage(encode, images, 32))
        assert book["data_usage"]["total"] == 20
        assert [t["code"] for t in book["data_usage"]["top"]] == [t.code for t in expected.top]
        assert book["data_usage"]["perplexity"] == pytest.approx(expected.perplexity)
    assert doc["outputs"]["atlas"]["codebook"] == "style"
    assert "content codebook" in result.err  # says why only the style book is drawn
    assert len(doc["outputs"]["atlas"]["codes"]) == 128  # every code by default
    assert Image.open(atlas).size == (12 * 18, 11 * 18)  # ceil(sqrt(128)) = 12 columns, 11 rows of 16+2 px


def test_table_output_and_original_checkpoint(capsys, vq_model, tmp_path) -> None:
    original = tmp_path / "last.ckpt"
    torch.save({"state_dict": vq_model.state_dict(), "global_step": 5}, original)
    result = run_cli(capsys, "--device", "cpu", "inspect-codebook", str(original))
    assert result.code == 0, result.err
    assert "128 x 64" in result.out and "near-duplicate pairs" in result.out and "NN distance" in result.out
    doc = _json(capsys, str(original), "--duplicate-distance", "1000")
    assert doc["checkpoint"]["format"] == "original" and doc["checkpoint"]["step"] == 5
    dup = doc["codebooks"][0]["near_duplicates"]
    assert dup["rule"] == "absolute" and dup["pairs"] == 128 * 127 // 2 and dup["codes"] == 128


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        ([], 2, "needs a checkpoint"),
        (["{tmp}/missing.pt"], 3, "missing.pt"),
        (["{corrupt}"], 1, "corrupt.pt"),
        (["{ckpt}", "--atlas", "{tmp}/atlas.jpg"], 2, ".png"),
        (["{continuous}"], 1, "no codebook"),
        (["{bare}", "--plot", "{tmp}/p.png"], 2, "--plot needs usage"),
        (["{ckpt}", "--data", "{tmp}/nothing"], 3, "nothing"),
    ],
)
def test_bad_input_is_one_sentence(capsys, vq_ckpt, vq_model, tmp_path, args, code, needle) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04" + b"not a checkpoint" * 20)
    fill = {"tmp": str(tmp_path), "corrupt": str(corrupt), "ckpt": str(vq_ckpt)}
    if "{continuous}" in args:
        config = tiny_st_config(tiny_vqgan_config(), continuous=True)
        fill["continuous"] = str(save_checkpoint(StyleTransfer(config), tmp_path / "cont.pt"))
    if "{bare}" in args:
        fill["bare"] = str(save_checkpoint(vq_model, tmp_path / "bare.pt"))
    result = run_cli(capsys, "--device", "cpu", "inspect-codebook", *[a.format(**fill) for a in args])
    assert result.code == code, result.err
    assert needle in result.err and "Traceback" not in result.err
    assert result.out == ""


def test_unreadable_data_images_are_skipped_and_counted(capsys, vq_ckpt, tmp_path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    result = run_cli(capsys, "--device", "cpu", "inspect-codebook", str(vq_ckpt), "--data", str(folder),
                     "--size", "32", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["data"]["images"] == 1 and doc["data"]["skipped"] == 1 and "broken.png" in result.err
    usage = doc["codebooks"][0]["data_usage"]
    assert usage["total"] == 4 and usage["used"] + usage["dead"] == N_CODES  # one 32x32 image: 2x2 codes
    (folder / "good.png").unlink()
    result = run_cli(capsys, "--device", "cpu", "inspect-codebook", str(vq_ckpt), "--data", str(folder))
    assert result.code == 1 and "None of the 1 --data images" in result.err and "Traceback" not in result.err


def test_original_style_transfer_reference(capsys, tmp_path) -> None:
    """The original model's stage-2 file: both books read, and usage counts equal the original's indices."""
    fixture = FORWARD
    assert fixture.is_file(), f"golden file {fixture} is missing (QUANTART_GOLDEN)"
    reference = torch.load(fixture, weights_only=True)["stage2"]
    original = tmp_path / "stage2.ckpt"
    torch.save({"state_dict": reference["state_dict"], "global_step": 3}, original)
    doc = _json(capsys, str(original))
    assert doc["checkpoint"]["kind"] == "style-transfer" and doc["checkpoint"]["format"] == "original"
    assert [(b["role"], b["size"], b["dim"]) for b in doc["codebooks"]] == [("content", 128, 64), ("style", 128, 64)]
    content_book = reference["state_dict"]["quantize_enc.embedding.weight"].double()
    assert doc["codebooks"][0]["norm"]["mean"] == pytest.approx(float(content_book.norm(dim=1).mean()), rel=1e-6)

    from quantart_cli.core.codebook.stats import count_dataset_usage

    model = load_model(original, expected_kind="style-transfer")
    content = count_dataset_usage(model, [reference["content"]])
    style = count_dataset_usage(model, [reference["style"]])
    assert torch.equal(content["quantize_enc"], torch.bincount(reference["indices_x"].reshape(-1), minlength=128))
    assert torch.equal(style["quantize_dec"], torch.bincount(reference["indices_ref"].reshape(-1), minlength=128))


def test_inspect_codebook_does_not_replace_an_existing_picture(capsys, tmp_path, tiny_vq):
    atlas = tmp_path / "mine.png"
    atlas.write_bytes(b"the user's own picture")
    result = run_cli(capsys, "inspect-codebook", str(tiny_vq), "--atlas", str(atlas), "--device", "cpu")
    assert result.code == 2 and "--overwrite" in result.err
    assert atlas.read_bytes() == b"the user's own picture"
