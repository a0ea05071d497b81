"""``quantart serve``: the settings, the messages, the job (the same PNG as ``quantart stylize``), and the page
itself driven in a real headless Chromium (the slow tier; skipped with a reason where no browser is installed);
a port in use, and bf16 on a CPU without it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cli_support import run_cli
from PIL import Image
from quantart_stages import serve
from quantart_stages.stylize import StylizeSettings
from repo_root import REPO

from quantart_cli.core import precision
from quantart_cli.core.errors import BadInputError, UsageError
from quantart_cli.core.io.digest import file_sha256
from quantart_cli.core.io.images import read_image_note
from quantart_cli.core.transfer.options import StylizeOptions
from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR
from quantart_cli.shell.console import Console
from quantart_cli.shell.paths import get_paths
from quantart_cli.shell.plugins import RunContext
from quantart_cli.shell.settings import resolve_settings

PHOTO = CONTENT_DIR / "lhq_1.jpg"
PAINTING = PAINTINGS_DIR / "hokusai_great_wave.jpg"


# ------------------------------------------------------------------------------------------ settings, messages


def test_settings_default_to_loopback_and_to_stylize_values():
    settings = serve.ServeSettings()
    assert (settings.host, settings.port) == ("127.0.0.1", 7860)
    assert settings.max_pixels == serve.SERVE_MAX_PIXELS and settings.max_upload_mb == 20.0
    # the stylization knobs are StylizeOptions' own fields, with stylize's defaults and help
    assert StylizeOptions.pick(settings) == StylizeOptions()
    for name in ("ckpt", "continuous_ckpt"):
        assert serve.ServeSettings.model_fields[name].description == StylizeSettings.model_fields[name].description


def test_settings_come_from_flags_and_environment(capsys, monkeypatch):
    monkeypatch.setenv("QUANTART_PORT", "8123")
    result = run_cli(capsys, "serve", "--max-upload-mb", "5", "--alpha", "0.6", "--size", "512", "--print-config")
    assert result.code == 0, result.err
    for line in ("port = 8123", "max_upload_mb = 5.0", "alpha = 0.6", "size = 512"):
        assert line in result.out
    bad = run_cli(capsys, "serve", "--port", "70000")
    assert bad.code == 2 and "--port" in bad.err and "Traceback" not in bad.err


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "localhost", "::1", "[::1]"])
def test_loopback_hosts_need_no_warning(host):
    assert serve.is_loopback(host) and serve.host_warning(host) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "studio.example.org"])
def test_other_hosts_are_warned_about(host):
    warning = serve.host_warning(host)
    assert warning is not None and f"--host {host}" in warning
    assert "anyone on that network can use it" in warning and "--host 127.0.0.1" in warning


def test_page_url():
    assert serve.page_url("127.0.0.1", 7860) == "http://127.0.0.1:7860/"
    assert serve.page_url("0.0.0.0", 80) == "http://127.0.0.1:80/"
    assert serve.page_url("::1", 7860) == "http://[::1]:7860/"


def test_blend_weights_box():
    assert serve.parse_weights("") is None and serve.parse_weights("  ") is None
    assert serve.parse_weights("0.7, 0.3") == [0.7, 0.3] and serve.parse_weights("1;2") == [1.0, 2.0]
    for text in ("0.7, x", "nan, 1"):
        with pytest.raises(UsageError, match="Blend weights"):
            serve.parse_weights(text)


def test_without_the_ui_extra_serve_says_how_to_install_it(capsys, monkeypatch):
    for name in [*serve.GRADIO_ENVIRONMENT, "GRADIO_TEMP_DIR"]:
        monkeypatch.delenv(name, raising=False)  # restored after the test, whatever run() sets
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ImportError
    monkeypatch.delitem(sys.modules, "quantart_stages.serve_page", raising=False)
    result = run_cli(capsys, "serve")
    assert result.code == 2
    assert 'pip install "quantart[ui]"' in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_help_imports_neither_gradio_nor_torch():
    code = ("import sys\nfrom quantart_cli.shell.app import main\nassert main(['serve', '--help']) == 0\n"
            "print('LOADED', ' '.join(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    loaded = set(out.stdout.split("LOADED", 1)[1].split())
    assert "--max-upload-mb" in out.stdout and "--host" in out.stdout
    assert "gradio" not in loaded and "torch" not in loaded and "quantart_stages.serve" in loaded


# ------------------------------------------------------------------------------- the job (no browser needed)


def _context(**flags) -> tuple[serve.ServeSettings, RunContext]:
    resolved = resolve_settings(serve.ServeSettings, stage="serve", flags={"device": "cpu", **flags}, environ={})
    ctx = RunContext(console=Console(quiet=True), paths=get_paths(), resolved=resolved, stage_name="serve")
    return resolved.settings, ctx


@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> serve.Studio:
    settings, ctx = _context(max_pixels=300_000)
    return serve.Studio(settings, ctx, tmp_path_factory.mktemp("jobs"))


def _uploaded(path: Path, folder: Path) -> Path:
    """A file where the web server keeps uploads: a folder of its own, the name it was uploaded under."""
    target = folder / "0123abcd" / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, target)
    return target


def test_a_job_writes_what_stylize_writes(studio, tmp_path, capsys):
    photo, painting = _uploaded(PHOTO, tmp_path), _uploaded(PAINTING, tmp_path)
    steps = []
    job = studio.stylize(photo, [painting], studio.options(alpha=0.7, size=128, preserve_color=True),
                         progress=lambda fraction, text: steps.append(fraction))
    assert job.output.name == "lhq_1_stylized.png" and steps[-1] == 1.0 and steps == sorted(steps)
    result = run_cli(capsys, "stylize", str(PHOTO), "--style", str(PAINTING), "--alpha", "0.7", "--size", "128",
                     "--preserve-color", "--out", str(tmp_path / "cli"), "--device", "cpu")
    assert result.code == 0, result.err
    expected = (tmp_path / "cli" / "lhq_1_stylized.png").read_bytes()
    assert job.output.read_bytes() == expected  # same pixels and the same recipe inside


def test_page_options_are_checked_in_one_sentence(studio):
    assert studio.options().alpha == 1.0 and studio.options(size=0).size is None
    assert studio.options(weights="0.7,0.3").style_weights == [0.7, 0.3]
    with pytest.raises(UsageError, match=r"^Size: input should be greater than or equal to 16; got 8\.$"):
        studio.options(size=8)
    with pytest.raises(UsageError, match="Pick a photo"):
        studio.stylize(None, [PAINTING], studio.options())
    with pytest.raises(UsageError, match="at least one painting"):
        studio.stylize(PHOTO, [], studio.options())
    with pytest.raises(UsageError, match=r"^Blend weights has 2 values for 1 style images; give one weight per"):
        studio.stylize(PHOTO, [PAINTING], studio.options(weights="1,2"))


def test_bad_uploads_are_named_as_uploaded(studio, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    upload = _uploaded(text, tmp_path / "uploads")
    with pytest.raises(BadInputError) as err:
        studio.stylize(upload, [PAINTING], studio.options())
    assert str(err.value) == "File notes.jpg is not an image in a format this tool can read."
    big = tmp_path / "wide.png"
    Image.new("RGB", (700, 500)).save(big)  # 350,000 pixels, above this studio's 300,000
    with pytest.raises(BadInputError, match=r"^Image wide.png is 700x500 .* above the limit"):
        studio.preview(_uploaded(big, tmp_path / "uploads"))
    with pytest.raises(BadInputError, match=r"^Image wide.png is 700x500"):
        studio.stylize(PHOTO, [_uploaded(big, tmp_path / "uploads")], studio.options())
    assert studio.preview(PHOTO).size == (256, 256)  # and the next job goes on as usual


def test_settings_no_job_could_run_with_are_refused_at_start(tmp_path):
    settings, ctx = _context(precision="fp16")  # fp16 needs CUDA; this runs on the CPU
    with pytest.raises(UsageError, match="`precision=fp16` needs a CUDA GPU"):
        serve.Studio(settings, ctx, tmp_path)
    settings, ctx = _context(visual_fidelity=0.5)
    with pytest.raises(UsageError, match="`visual_fidelity=0.5` needs `continuous_ckpt`"):
        serve.Studio(settings, ctx, tmp_path)


def _left_mask(path: Path) -> Path:
    left = np.zeros((64, 64), dtype=np.uint8)
    left[:, :32] = 255
    Image.fromarray(left).save(path)
    return path


def test_a_job_with_masks_writes_what_stylize_writes(studio, tmp_path, capsys):
    """A mask per painting (regions): the same PNG and recipe as `stylize --style P1 --mask M1 --style P2`."""
    other = PAINTINGS_DIR / "sisley_snow_road.jpg"
    mask = _uploaded(_left_mask(tmp_path / "left.png"), tmp_path / "uploads")
    job = studio.stylize(_uploaded(PHOTO, tmp_path), [_uploaded(PAINTING, tmp_path), _uploaded(other, tmp_path)],
                         studio.options(size=64), masks=[mask, None, None, None])
    result = run_cli(capsys, "stylize", str(PHOTO), "--style", str(PAINTING), "--mask", str(tmp_path / "left.png"),
                     "--style", str(other), "--size", "64", "--out", str(tmp_path / "cli"), "--device", "cpu")
    assert result.code == 0, result.err
    assert job.output.read_bytes() == (tmp_path / "cli" / "lhq_1_stylized.png").read_bytes()
    with pytest.raises(UsageError, match=r"^Mask 2 has no painting 2; add that painting or remove the mask\.$"):
        studio.stylize(PHOTO, [PAINTING], studio.options(), masks=[None, mask])
    with pytest.raises(UsageError, match=r"^Every style image has a mask, so Blend weights has nothing"):
        studio.stylize(PHOTO, [PAINTING], studio.options(weights="1,2"), masks=[mask])
    (tmp_path / "notes.png").write_text("not an image")
    text = _uploaded(tmp_path / "notes.png", tmp_path / "uploads")
    with pytest.raises(BadInputError, match=r"^File notes.png is not an image"):
        studio.stylize(PHOTO, [PAINTING], studio.options(), masks=[text])


def test_the_page_has_a_mask_upload_per_painting(studio, tmp_path, monkeypatch):
    """The page's stylize button hands the mask uploads to the job in painting order (no browser needed)."""
    pytest.importorskip("gradio", reason='the page needs the ui extra: pip install -e ".[ui]"')
    for name in [*serve.GRADIO_ENVIRONMENT, "GRADIO_TEMP_DIR"]:
        monkeypatch.setenv(name, os.environ.get(name, ""))  # restored after the test
    page_module = serve.page_module(tmp_path / "uploads")
    page = page_module.build_page(studio, studio.settings)
    (handler,) = [fn for fn in page.fns.values() if fn.api_name == "stylize"]
    slots = [component.elem_id for component in handler.inputs][-page_module.MASK_SLOTS:]
    assert slots == [f"mask-{i}" for i in range(1, page_module.MASK_SLOTS + 1)]
    mask = _left_mask(tmp_path / "left.png")
    output, _, details = handler.fn(str(PHOTO), [str(PAINTING)], 1.0, 64, False, "", str(mask), None, None, None)
    recipe = json.loads(read_image_note(Path(output)))
    assert recipe["masks"] == [file_sha256(mask)] and details.startswith("64 x 64 px")


def test_closing_waits_for_the_running_job_then_refuses_more(tmp_path):
    settings, ctx = _context()
    studio = serve.Studio(settings, ctx, tmp_path / "jobs")
    done: list[serve.Job] = []
    worker = threading.Thread(target=lambda: done.append(studio.stylize(PHOTO, [PAINTING], studio.options())))
    worker.start()
    while not studio.busy and worker.is_alive():
        time.sleep(0.001)
    studio.close()  # what Ctrl-C does: torch is never left running while the process exits
    assert list((tmp_path / "jobs").rglob("lhq_1_stylized.png")) and not studio.busy  # written before close()
    worker.join()
    assert done and done[0].output.is_file()
    with pytest.raises(UsageError, match="The server is stopping"):
        studio.stylize(PHOTO, [PAINTING], studio.options())


# ------------------------------------------------------------------------------------- the page in a browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str | None:
    for candidate in (os.environ.get("SERVE_TEST_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _needs_browser() -> str:
    """The Chromium to drive, or a skip with the reason."""
    pytest.importorskip("playwright", reason="the browser test drives Chromium with playwright (the dev extra)")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium to drive (apt-get install chromium, or set SERVE_TEST_CHROMIUM to one)")
    return chromium


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    tmpdir: Path
    stderr: list[str]


def _restore_sigint() -> None:
    # A shell that starts the tests in the background leaves SIGINT ignored; Ctrl-C must reach the server.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("gradio", reason='the page needs the ui extra: pip install -e ".[ui]"')
    root = tmp_path_factory.mktemp("serve")
    tmpdir = root / "tmp"
    tmpdir.mkdir()
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmpdir)}
    process = subprocess.Popen(
        [sys.executable, "-m", "quantart_cli", "serve", "--device", "cpu", "--port", str(port)],  # default limits
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_restore_sigint)
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True).start()
    lines: list[str] = []  # the page's address is the one result line
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline().strip()), daemon=True)
    reader.start()
    reader.join(timeout=180)
    url = lines[0] if lines else ""
    assert url == f"http://127.0.0.1:{port}/", "".join(stderr)
    yield Server(url, process, tmpdir, stderr)
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=_needs_browser(), headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        yield context
        context.close()


def _open(browser, server):
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(server.url)
    page.wait_for_selector("#stylize-button", timeout=60_000)
    return page, requests


def _messages(page) -> str:
    """The page's toasts (errors and warnings) once one shows, closed afterwards."""
    page.wait_for_selector(".toast-body", timeout=20_000)
    page.wait_for_timeout(300)
    text = " | ".join(page.locator(".toast-body").all_inner_texts())
    for close in page.locator(".toast-close").all():
        close.click()
    page.wait_for_timeout(300)
    return text


def _png_header(width: int, height: int) -> bytes:
    """A PNG file that declares this size and holds no pixels: what a decompression bomb looks like up front."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _answers(server) -> bool:
    with urllib.request.urlopen(server.url, timeout=10) as response:
        return response.status == 200


@pytest.mark.slow
def test_the_page_loads_nothing_from_outside(server):
    with urllib.request.urlopen(server.url, timeout=10) as response:
        html = response.read().decode("utf-8")
    fetched = re.findall(r"<(?:script|img|link|iframe)\b[^>]*?\b(?:src|href)=[\"']([^\"']+)", html)
    fetched += re.findall(r"url\(\s*[\"']?([^\"')]+)", html) + re.findall(r"@import\s+[\"']([^\"']+)", html)
    outside = [url for url in fetched if re.match(r"(https?:)?//", url) and not url.startswith(server.url)]
    assert fetched and not outside
    assert "fonts.googleapis" not in html and "fonts.gstatic" not in html


@pytest.mark.slow
def test_bad_uploads_get_a_message_and_the_server_goes_on(server, browser, tmp_path):
    page, _ = _open(browser, server)
    notes = tmp_path / "notes.txt"
    notes.write_text("a shopping list, not a photo\n")
    page.locator("#photo input[type=file]").set_input_files(str(notes))
    assert "Invalid file type: notes.txt" in _messages(page)  # the browser refuses it before uploading

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(os.urandom(4000))
    page.locator("#photo input[type=file]").set_input_files(str(broken))
    assert "File broken.jpg is not an image in a format this tool can read." in _messages(page)
    page.locator("#paintings input[type=file]").set_input_files(str(PAINTING))
    page.locator("#stylize-button").click()
    assert "broken.jpg is not an image" in _messages(page)  # the job refuses it in the same words

    page.reload()
    page.wait_for_selector("#stylize-button")
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(os.urandom(21 * 1024 * 1024))  # above the default --max-upload-mb 20
    page.locator("#photo input[type=file]").set_input_files(str(huge))
    assert "exceed the maximum allowed size of 20.0 Mb" in _messages(page)

    vast = tmp_path / "vast.png"
    vast.write_bytes(_png_header(10_000, 8_000))  # 80 megapixels declared, above the default 50
    page.locator("#photo input[type=file]").set_input_files(str(vast))
    assert "Image vast.png is 10000x8000 (80.0 megapixels), above the limit of 50.0 megapixels" in _messages(page)

    assert _answers(server) and server.process.poll() is None
    page.get_by_text("a photo after Monet").click()  # and a job still runs: one click on an example
    page.wait_for_selector("#result img", timeout=120_000)
    page.close()


@pytest.mark.slow
def test_the_page_stylizes_like_the_command_line(server, browser, tmp_path, capsys):
    page, requests = _open(browser, server)
    page.locator("#photo input[type=file]").set_input_files(str(PHOTO))
    page.locator("#paintings input[type=file]").set_input_files(str(PAINTING))
    page.locator("#paintings img").first.wait_for()
    page.locator("#alpha input[type=number]").fill("0.8")
    page.locator("#alpha input[type=number]").press("Enter")
    page.locator("#stylize-button").click()
    page.wait_for_selector("#result img", timeout=120_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
    if os.environ.get("SERVE_SCREENSHOT"):  # refresh the docs' picture: docs/images/serve.png
        shutil.copy(tmp_path / "serve.png", os.environ["SERVE_SCREENSHOT"])
    with page.expect_download() as download:
        page.locator("#download").click()
    assert download.value.suggested_filename == "lhq_1_stylized.png"
    download.value.save_as(tmp_path / "page.png")
    page.close()

    result = run_cli(capsys, "stylize", str(PHOTO), "--style", str(PAINTING), "--alpha", "0.8",
                     "--out", str(tmp_path / "cli"), "--device", "cpu")
    assert result.code == 0, result.err
    with Image.open(tmp_path / "page.png") as ours, Image.open(tmp_path / "cli" / "lhq_1_stylized.png") as cli:
        assert ours.size == cli.size == (256, 256)
        assert np.array_equal(np.asarray(ours), np.asarray(cli))  # exact: same engine, one CPU thread each
        assert ours.text == cli.text  # the same recipe (model, painting, photo, alpha 0.8) inside
    outside = [url for url in requests if not url.startswith((server.url, "data:", "blob:"))]
    assert requests and not outside


@pytest.mark.slow
def test_ctrl_c_stops_the_server_cleanly(server):
    """Last in this file: it stops the module's server."""
    assert _answers(server)
    server.process.send_signal(signal.SIGINT)
    code = server.process.wait(timeout=30)
    time.sleep(0.2)
    err = "".join(server.stderr)
    assert code == 130 and "stopping the server" in err and "Traceback" not in err, err
    assert server.process.stdout.read() == ""  # stdout held the address alone
    assert not list(server.tmpdir.glob("quantart-serve-*"))  # uploads and results removed
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=5)


# --- precision ------------------------------------------------------------------------------------------------------


def test_bf16_without_native_bf16_runs_fp32_in_serve(monkeypatch, tmp_path):
    from quantart_stages import serve

    from quantart_cli.shell.console import Console
    from quantart_cli.shell.paths import get_paths
    from quantart_cli.shell.plugins import RunContext
    from quantart_cli.shell.settings import resolve_settings

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    resolved = resolve_settings(serve.ServeSettings, stage="serve", flags={"device": "cpu", "precision": "bf16"},
                                environ={})
    notes: list[str] = []
    console = Console(quiet=True)
    monkeypatch.setattr(console, "info", notes.append)
    ctx = RunContext(console=console, paths=get_paths(), resolved=resolved, stage_name="serve")
    studio = serve.Studio(resolved.settings, ctx, tmp_path)
    assert studio.options(alpha=0.5).precision == "fp32"
    assert len(notes) == 1 and "fp32" in notes[0]


# --- a port in use, checked before the model loads ------------------------------------------------------------------


@pytest.fixture
def busy_port():
    """A port another program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_serve_on_a_busy_port_says_so_in_its_own_words(capsys, busy_port):
    """Issue 25: Gradio's advice about GRADIO_SERVER_PORT was repeated; the port is checked before the model loads."""
    pytest.importorskip("gradio", reason='quantart serve needs the ui extra: pip install -e ".[ui]"')
    result = run_cli(capsys, "serve", "--port", str(busy_port), "--device", "cpu")
    assert result.code == 2
    assert result.err.count("\n") == 1 and result.err.startswith("error: ")
    assert f"127.0.0.1:{busy_port}" in result.err and "in use" in result.err and "--port" in result.err
    assert "GRADIO" not in result.err and "launch()" not in result.err and "model" not in result.err


def test_what_keeps_serve_from_listening_is_named(busy_port):
    from quantart_stages.serve import listen_problem

    assert "in use" in listen_problem("127.0.0.1", busy_port)
    assert "not an address of this computer" in listen_problem("192.0.2.1", busy_port)  # TEST-NET-1
    assert "not a known host name" in listen_problem("no-such-host.invalid", busy_port)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert listen_problem("127.0.0.1", port) is None
