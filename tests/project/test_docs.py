"""Every command shown in README.md and docs/ runs, in order, on tiny settings, so the docs cannot rot.

The commands run in one sandbox folder in the order the docs give them (README first, then docs/ by name), so
a command may use what an earlier one wrote (``runs/vq-ffhq/last.pt``). Inputs the docs take for granted
(datasets, photos, release checkpoints) are made here, small. QUANTART_* variables shrink every preset to a
tiny model and a couple of steps; each command's flags are used exactly as written. ``torchrun`` runs with
2 CPU processes. Commands that cannot run on a CI machine are listed in SKIPPED with the reason.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_support import run_cli
from doc_commands import REPO, all_commands
from PIL import Image
from tiny_models import tiny_st_config, tiny_vq_config
from video_files import moving_frames, write_clip

from quantart_cli.core.io.checkpoints import save_checkpoint
from quantart_cli.core.models import VQGAN, StyleTransfer
from quantart_cli.samples import CONTENT_DIR, STYLE_DIR

pytestmark = pytest.mark.slow

TINY = tiny_vq_config(ch=32, ch_mult=(1, 2, 2), z_channels=32, n_embed=64)
#: Shrinks every preset: the environment sits above presets and below the flags the docs write.
TINY_ENV = {
    "QUANTART_STEPS": "2", "QUANTART_SIZE": "32", "QUANTART_BATCH_SIZE": "2", "QUANTART_WORKERS": "0",
    "QUANTART_SAVE_EVERY": "2", "QUANTART_SAMPLE_EVERY": "0", "QUANTART_LOG_EVERY": "1",
    "QUANTART_LOSS__PERCEPTUAL_WEIGHT": "0", "QUANTART_LOSS__DISC_NDF": "8",
    "QUANTART_MODEL__AUTOENCODER__CH": "32", "QUANTART_MODEL__AUTOENCODER__CH_MULT": "[1, 2, 2]",
    "QUANTART_MODEL__AUTOENCODER__NUM_RES_BLOCKS": "1", "QUANTART_MODEL__AUTOENCODER__ATTN_RESOLUTIONS": "[]",
    "QUANTART_MODEL__AUTOENCODER__RESOLUTION": "32", "QUANTART_MODEL__AUTOENCODER__Z_CHANNELS": "32",
    "QUANTART_MODEL__QUANTIZER__N_EMBED": "64", "QUANTART_MODEL__QUANTIZER__EMBED_DIM": "32",
    "QUANTART_SGA_BLOCKS": "1", "QUANTART_VQ_STEPS": "2", "QUANTART_SGA_STEPS": "2", "QUANTART_DEVICE": "cpu",
    "QUANTART_NETWORKS": "off",  # evaluate: no weight downloads in tests
}
SKIPPED = {
    "--nnodes 2": "needs two machines",
    "--configs f16": "a multi-minute benchmark of the full model; run by hand",
    "benchmarks/bench_models.py": "a multi-minute benchmark of the full f16 model; run by hand",
    "benchmarks/bench_stylize.py": "a multi-minute benchmark up to 4096 px; run by hand",
    "benchmarks/bench_video.py": "minutes of the built-in model on 512 px clips; tiny run in "
                                 "tests/project/test_benchmarks.py",
    "benchmarks/profile_stylize.py": "a profile of the full f16 model; run by hand",
    "benchmarks/bench_speed.py": "a multi-minute race of the full f16 model against the original; tiny run in "
                                 "tests/project/test_benchmarks.py",
    "benchmarks/profile_train_sga.py": "a profile of full f16 training steps; tiny run in "
                                       "tests/project/test_benchmarks.py",
    "benchmarks/bench_train_order.py": "minutes of builtin-paint training steps in both orders; tiny run in "
                                       "tests/project/test_benchmarks.py",
    "benchmarks/compare_peers.py": "stylizes held-out photos (local files) with three methods and scores them for "
                                   "minutes; tiny run in tests/project/test_benchmarks.py",
    "benchmarks/gpu_check": "the GPU check needs a CUDA GPU (or, --fetch-wheels, the network); its CPU smoke run is in "
                            "tests/project/test_benchmarks.py",
    "pytest": "the test suite itself (this is what CI runs)",
    "ruff": "CI's lint step (ruff's own rules, not a quantart command)",
    "lint-imports": "CI's layering check; tests/project/test_import_rules.py runs it",
    "pip install": "the environment these tests already run in",
    "-m venv": "the environment these tests already run in",
    "quantart serve": "a web server that runs until Ctrl-C; tests/stages/test_serve.py drives it in a browser",
    "scripts/install_chromium.sh": "installs Chromium for tests/stages/test_serve.py (apt-get, as root); CI runs it",
}
IMAGE_DIRS = [
    "photos", "paintings", "datasets/painter-by-numbers/train", "datasets/lhq_1024_jpg",
    "datasets/ffhq/images1024x1024", "datasets/metfaces/images", "datasets/coco/train2017",
    "home/datasets/wikiart", "home/wikiart/train", "home/lhq",
]


def _images(folder: Path, source: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for image in sorted(source.glob("*.jpg")):
        shutil.copy(image, folder / image.name)


def _original(model: torch.nn.Module, path: Path, *, pickled_extras: bool) -> None:
    """A file shaped like the original release: a Lightning dict around the state dict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict = {"state_dict": model.state_dict(), "global_step": 7, "epoch": 1}
    if pickled_extras:
        payload["hyper_parameters"] = Path("configs/original.yaml")  # a non-tensor object: needs a full unpickle
    torch.save(payload, path)


def _make_sandbox(root: Path) -> Path:
    work = root / "work"
    for name in IMAGE_DIRS:
        _images(work / name, STYLE_DIR if "art" in name or "paint" in name or "metfaces" in name else CONTENT_DIR)
    for folder in ("home/wikiart", "datasets/painter-by-numbers"):
        with open(work / folder / "train_info.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "genre"])
            writer.writerows([[p.name, "landscape"] for p in sorted(STYLE_DIR.glob("*.jpg"))])
    _images(root / "shared" / "samples" / "content", CONTENT_DIR)
    _images(root / "shared" / "samples" / "style", STYLE_DIR)
    shutil.copy(CONTENT_DIR / "lhq_1.jpg", work / "photo.jpg")
    shutil.copy(STYLE_DIR / "wikiart_1.jpg", work / "monet.jpg")
    shutil.copy(STYLE_DIR / "wikiart_2.jpg", work / "vangogh.jpg")
    shutil.copy(STYLE_DIR / "wikiart_2.jpg", work / "painting.jpg")
    write_clip(work / "clip.mp4", moving_frames(3, 48, 32), audio=True)  # docs/video.md
    sky = Image.new("L", (64, 64), 0)
    sky.paste(255, (0, 0, 64, 24))
    sky.save(work / "sky.png")  # a mask (docs/stylize.md, Regions): white where the sky is
    torch.manual_seed(0)
    vq = VQGAN(TINY)
    for name in ("imagenet_vq.pt", "photo_vq.pt", "art_vq.pt", "vq.pt", "runs/vq/last.pt"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(vq, work / name)
    style_transfer = StyleTransfer(tiny_st_config(TINY))
    save_checkpoint(style_transfer, work / "stage2.safetensors")
    continuous = StyleTransfer(tiny_st_config(TINY, continuous=True))
    _original(vq, work / "vqgan_imagenet_f16_16384.ckpt", pickled_extras=False)
    _original(vq, work / "vqgan_wikiart_f16_1024.ckpt", pickled_extras=True)
    _original(style_transfer, work / "landscape2art/checkpoints/last.ckpt", pickled_extras=True)
    _original(continuous, work / "landscape2art_continuous/checkpoints/last.ckpt", pickled_extras=True)
    return work


def _plugin_stages() -> list:
    """The complete third-party stage shown in docs/plugins.md, executed from the doc itself."""
    text = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {"__name__": "hello_plugin_from_docs"}
    exec(compile(code, "docs/plugins.md", "exec"), namespace)
    return [namespace["stage"]]


def _run_segment(tokens: list[str], work: Path, capsys, monkeypatch, extra_stages) -> tuple[int, str]:
    env: dict[str, str] = {}
    while tokens and "=" in tokens[0] and tokens[0].split("=")[0].isupper():
        key, value = tokens.pop(0).split("=", 1)
        env[key] = value
    redirect = None
    if ">" in tokens:
        at = tokens.index(">")
        redirect, tokens = work / tokens[at + 1], tokens[:at]
    tokens = [t.replace("~/", str(work / "home") + "/") for t in tokens]
    program = tokens[0]
    if program.endswith("quantart"):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        result = run_cli(capsys, *tokens[1:], extra_stages=extra_stages)
        if redirect is not None:
            redirect.write_text(result.out)
        for key in env:
            monkeypatch.delenv(key)
        return result.code, result.err
    full_env = {**os.environ, **env}
    if program == "torchrun":
        at = tokens.index("--nproc_per_node")
        tokens[at + 1] = "2"  # CPU processes on gloo
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", *tokens[1:]]
    elif program == "python":
        argv = [sys.executable, *[str(REPO / t) if t.startswith(("benchmarks/", "docs/")) else t for t in tokens[1:]]]
    else:
        raise AssertionError(f"the docs test does not know how to run {program!r}; teach it or list it in SKIPPED")
    done = subprocess.run(argv, cwd=work, env=full_env, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stderr[-3000:]


def test_every_documented_command_runs(tmp_path, capsys, monkeypatch):
    work = _make_sandbox(tmp_path)
    monkeypatch.chdir(work)
    for key, value in TINY_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    extra_stages = _plugin_stages()
    ran, skipped = [], []
    for command in all_commands():
        for segment in command.segments():
            text = " ".join(segment)
            reason = next((why for marker, why in SKIPPED.items() if marker in text), None)
            if reason:
                skipped.append((command.source, text, reason))
                continue
            code, err = _run_segment(list(segment), work, capsys, monkeypatch, extra_stages)
            assert code == 0, f"{command.source}: `{text}` exited {code}:\n{err}"
            ran.append(command.source)
    print(f"ran {len(ran)} documented commands; skipped {len(skipped)}:")
    for source, text, reason in skipped:
        print(f"  {source}: {text}  ({reason})")
    assert len(ran) >= 20
    # a few outputs the docs promise
    assert (work / "book.json").read_text().lstrip().startswith("{")
    assert (work / "landscape2art.pt").is_file() and (work / "wikiart_vq.safetensors").is_file()
    assert (work / "quantart-demo" / "contact_sheet.png").is_file()
    assert (work / "fidelity.png").is_file()


def test_doc_commands_are_found():
    sources = {c.source.split(":")[0] for c in all_commands()}
    for name in ("README.md", "docs/quickstart.md", "docs/training.md", "docs/stylize.md",
                 "docs/original-checkpoints.md", "docs/inspect-codebook.md", "docs/plugins.md"):
        assert name in sources, f"{name} shows no runnable command"
