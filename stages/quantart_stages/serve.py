"""``quantart serve``: a local web page where a photo is stylized after paintings, no terminal needed.

The page (:mod:`quantart_stages.serve_page`, built on Gradio, the optional ``[ui]`` extra) only collects the
inputs and shows the result; every job goes through :class:`Studio`, which holds the model (loaded once at
start) and runs the very functions ``quantart stylize`` runs (:class:`~quantart_cli.core.transfer.engine.Stylizer`
and :func:`~quantart_cli.core.transfer.files.stylize_file`), so a photo and a painting give the same PNG, pixel for
pixel and recipe for recipe, on the page as on the command line. Neither torch nor Gradio is imported until the
server starts: ``quantart serve --help`` stays instant.
"""

from __future__ import annotations

import ipaddress
import math
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantart_cli.core.errors import OPTION_MARK
from quantart_cli.core.transfer.options import StylizeOptions
from quantart_cli.plugin import BadInputError, QuantartError, RunContext, Stage, UsageError, cli_option
from quantart_stages.common import CheckpointReadingSettings, ImageReadingSettings
from quantart_stages.stylize import StylizeSettings, open_session

#: What to run when the ``[ui]`` extra is missing: the one sentence ``quantart serve`` answers with.
INSTALL_HINT = 'quantart serve needs its optional web-page packages: pip install "quantart[ui]"'
#: A page open to the world should not decode 179-megapixel images for anyone: the page's own, lower default.
SERVE_MAX_PIXELS = 50_000_000
#: Finished jobs whose PNG stays downloadable (older job folders are removed as new jobs finish).
KEEP_JOBS = 16
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class ServeSettings(CheckpointReadingSettings, ImageReadingSettings, StylizeOptions):
    """Where the page listens and what it accepts; the stylization knobs are :class:`StylizeOptions`' fields
    (alpha, size, preserve colour and blend weights are the page's starting values, the rest apply to every job)."""

    ckpt: Path | None = StylizeSettings.model_fields["ckpt"]
    continuous_ckpt: Path | None = StylizeSettings.model_fields["continuous_ckpt"]
    host: str = cli_option(
        "127.0.0.1",
        "Address to listen on. The default, loopback, lets only this computer open the page; any other address "
        "(0.0.0.0: every network of this computer) lets anyone who can reach it use the page.",
    )
    port: int = cli_option(7860, "Port to listen on.", ge=1, le=65535)
    max_upload_mb: float = cli_option(20.0, "Largest file the page accepts, in megabytes.", gt=0)
    max_pixels: int = cli_option(
        SERVE_MAX_PIXELS, "Refuse photos and paintings with more pixels than this, before decoding them.", ge=1
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this computer (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_warning(host: str) -> str | None:
    """The warning printed when ``--host`` opens the page beyond this computer (None on loopback)."""
    if is_loopback(host):
        return None
    return (
        f"--host {host} opens the page to other computers: anyone on that network can use it, upload images "
        "and keep this machine busy, without a password; use the default --host 127.0.0.1 to keep it private."
    )


def listen_problem(host: str, port: int) -> str | None:
    """Why the page could not listen on ``host:port``, as the end of a sentence, or None when it can: the port
    in use, an address not of this computer, an unknown host name, a port that needs administrator rights. The
    check binds the address as the web server will (address reuse on, so a port that only just closed is free)."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror:
        return f"{host} is not a known host name of this computer; use --host 127.0.0.1 or one of its addresses"
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                other = port + 1 if port < 65535 else port - 1
                return (f"the port is in use (another program, or another quantart serve, listens there); pick "
                        f"another with --port, e.g. --port {other}")
            if err.errno == errno.EADDRNOTAVAIL:
                return f"{host} is not an address of this computer; use --host 127.0.0.1 or one of its addresses"
            if err.errno == errno.EACCES:
                return "permission denied (ports below 1024 need administrator rights); pick another with --port"
            return f"{err.strerror or err}; pick another --port or --host"
    return None


def page_url(host: str, port: int) -> str:
    """The address to open in a browser (a wildcard address is opened as loopback on this computer)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def parse_weights(text: str | None) -> list[float] | None:
    """The page's blend-weights box (``0.7, 0.3``; empty: equal weights) as numbers."""
    parts = [part.strip() for part in (text or "").replace(";", ",").split(",") if part.strip()]
    if not parts:
        return None
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise UsageError(f"Blend weights are numbers separated by commas, like 0.7, 0.3; got {text!r}.") from None
    if not all(math.isfinite(v) for v in values):
        raise UsageError(f"Blend weights must be finite numbers; got {text!r}.")
    return values


#: How the page names each option in its messages.
PAGE_LABELS = {"alpha": "Style strength (alpha)", "size": "Size", "preserve_color": "Keep the photo's colours",
               "style_weights": "Blend weights"}


def sentence(err: BaseException | str, names: dict[Path, str] | None = None) -> str:
    """An error as the one sentence the page shows: the CLI's words, with the server's temporary upload paths
    replaced by the names the files were uploaded under."""
    text = str(err).strip() or type(err).__name__
    for path, name in sorted((names or {}).items(), key=lambda item: -len(str(item[0]))):
        text = text.replace(str(path), name)
    # an option the core names by its field is named as the page labels its control
    text = OPTION_MARK.sub(lambda match: PAGE_LABELS.get(match.group(1), match.group(1).replace("_", " ")), text)
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


@dataclass(frozen=True)
class Job:
    """A finished stylization: the PNG written (as ``quantart stylize`` writes it) and its record."""

    output: Path
    record: dict[str, Any]


Progress = Callable[[float, str], None]


class Studio:
    """The model, loaded once, and one stylization at a time; what the page's button runs.

    ``options(...)`` turns the page's controls into :class:`StylizeOptions` (the server's settings for the rest),
    ``stylize(...)`` reads the uploads with the server's pixel limit and writes the PNG into a job folder of
    ``workdir``. Bad input raises :class:`QuantartError` with one sentence, as on the command line.
    """

    def __init__(self, settings: ServeSettings, ctx: RunContext, workdir: Path) -> None:
        self.settings = settings
        self.console = ctx.console
        self.workdir = workdir
        self.session = open_session(settings, ctx)  # every check a job could fail on is made here, at start
        self.session.load()
        self._lock = threading.Lock()  # the queue runs one job at a time; this makes it true for any caller
        self._jobs = 0
        self._closed = False

    def options(self, alpha: float | None = None, size: int | float | None = None,
                preserve_color: bool | None = None, weights: str | Sequence[float] | None = None) -> StylizeOptions:
        """The server's options with the page's controls applied; ``size`` 0 or None keeps the photo's size."""
        from pydantic import ValidationError

        values: dict[str, Any] = {}
        if alpha is not None:
            values["alpha"] = float(alpha)
        if size is not None:
            values["size"] = int(size) if size else None
        if preserve_color is not None:
            values["preserve_color"] = bool(preserve_color)
        if weights is not None:
            values["style_weights"] = parse_weights(weights) if isinstance(weights, str) else list(weights)
        try:
            return self.session.with_options(**values)
        except ValidationError as err:
            first = err.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else "options"
            label = PAGE_LABELS.get(field, field)
            message = first["msg"].removeprefix("Value error, ")
            raise UsageError(f"{label}: {message[0].lower() + message[1:]}; got {first.get('input')!r}.") from None

    def preview(self, path: str | Path, longest: int = 768):
        """A photo or painting read as a job would read it (same limit, same orientation), shrunk for display."""
        from quantart_cli.core.io.images import load_image

        path = Path(path)
        try:
            image = load_image(path, max_pixels=self.settings.max_pixels)
        except QuantartError as err:
            raise type(err)(sentence(err, {path: path.name})) from None
        image.thumbnail((longest, longest))
        return image

    def stylize(self, photo: str | Path | None, paintings: Sequence[str | Path], options: StylizeOptions,
                progress: Progress | None = None, masks: Sequence[str | Path | None] = ()) -> Job:
        """Stylize ``photo`` after ``paintings`` exactly as ``quantart stylize PHOTO --style P1 --mask M1 --style P2
        ...`` with these options would: same reading, same engine, same PNG (recipe included). ``masks`` holds the
        mask of each painting in order (None or missing: none)."""
        from quantart_cli.core.io.digest import file_sha256
        from quantart_cli.core.io.images import image_to_tensor, load_image
        from quantart_cli.core.transfer.files import OutputNaming, plan_outputs, stylize_file
        from quantart_cli.core.transfer.masks import load_mask

        if not photo:
            raise UsageError("Pick a photo first: upload one or click a sample photo.")
        if not paintings:
            raise UsageError("Pick at least one painting: upload one or click a sample painting.")
        photo = Path(photo)
        painting_paths = [Path(p) for p in paintings]
        mask_paths = self._masks(masks, len(painting_paths))
        names = {p: p.name for p in (photo, *painting_paths, *(m for m in mask_paths or [] if m is not None))}
        step = progress or (lambda fraction, text: None)
        with self._lock:
            if self._closed:
                raise UsageError("The server is stopping; this job was not run.")
            try:
                step(0.05, f"reading {len(painting_paths)} painting(s)")
                styles = [image_to_tensor(load_image(p, max_pixels=self.settings.max_pixels))
                          for p in painting_paths]
                mask_tensors = None if mask_paths is None else [
                    None if p is None else load_mask(p, max_pixels=self.settings.max_pixels) for p in mask_paths]
                step(0.15, "encoding the painting(s)")
                start = time.perf_counter()
                stylizer = self.session.stylizer(styles, options, masks=mask_tensors)
                self._jobs += 1
                folder = self.workdir / f"job-{self._jobs:05d}"
                ((_, target),) = plan_outputs(OutputNaming(out=folder), [photo])
                recipe = self.session.recipe(painting_paths, options, mask_files=mask_paths)
                step(0.3, "stylizing the photo")
                record = stylize_file(stylizer, photo, target, recipe.note(file_sha256(photo)),
                                      max_pixels=self.settings.max_pixels)
            except QuantartError as err:
                raise type(err)(sentence(err, names)) from None
            if isinstance(record, str):
                raise BadInputError(sentence(record, names))
            seconds = time.perf_counter() - start
            self._prune()
        step(1.0, "done")
        self.console.info(f"stylized {photo.name} after {', '.join(p.name for p in painting_paths)} "
                          f"({record['width']}x{record['height']}, alpha {options.alpha:g}) in {seconds:.1f}s")
        return Job(output=target, record=record)

    @staticmethod
    def _masks(masks: Sequence[str | Path | None], paintings: int) -> list[Path | None] | None:
        """The page's mask uploads lined up with the paintings (None when no painting has a mask)."""
        given = [Path(m) if m else None for m in masks]
        extra = [i for i, m in enumerate(given) if m is not None and i >= paintings]
        if extra:
            raise UsageError(f"Mask {extra[0] + 1} has no painting {extra[0] + 1}; add that painting or remove the "
                             "mask.")
        given = (given + [None] * paintings)[:paintings]
        return given if any(m is not None for m in given) else None

    @property
    def busy(self) -> bool:
        """Whether a job is running now."""
        return self._lock.locked()

    def close(self) -> None:
        """Wait for the running job to finish (torch must not be stopped mid-computation: the process would
        abort), then refuse any further job."""
        with self._lock:
            self._closed = True

    def _prune(self) -> None:
        folders = sorted(self.workdir.glob("job-*"))
        for old in folders[:-KEEP_JOBS]:
            shutil.rmtree(old, ignore_errors=True)



#: Set before Gradio is imported: no analytics or version check, no Hugging Face Hub calls, uploads kept in the
#: server's own temporary folder (removed when it stops).
GRADIO_ENVIRONMENT = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                      "GRADIO_SHARE": "False"}


def page_module(upload_dir: Path):
    """:mod:`quantart_stages.serve_page` (which imports Gradio), or the one sentence saying how to install it."""
    import os

    for name, value in GRADIO_ENVIRONMENT.items():
        os.environ[name] = value
    os.environ["GRADIO_TEMP_DIR"] = str(upload_dir)
    try:
        from quantart_stages import serve_page
    except ImportError as err:
        raise UsageError(f"{INSTALL_HINT} ({err}).") from None
    return serve_page


def run(settings: ServeSettings, ctx: RunContext) -> int:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="quantart-serve-") as workdir:
        serve_page = page_module(Path(workdir) / "uploads")
        problem = listen_problem(settings.host, settings.port)
        if problem is not None:  # before the model loads: the answer comes at once
            raise UsageError(f"Cannot listen on {settings.host}:{settings.port}: {problem}.")
        warning = host_warning(settings.host)
        if warning:
            ctx.console.warn(warning)
        studio = Studio(settings, ctx, Path(workdir) / "jobs")
        session = studio.session
        ctx.console.info(f"model {session.name} on {session.device}, loaded in {session.load_seconds:.1f}s")
        try:
            page = serve_page.launch(studio, settings, Path(workdir))
        except OSError:  # taken in the moment since the check above; Gradio's own advice names its variables
            problem = listen_problem(settings.host, settings.port) or "the web server could not start there"
            raise UsageError(f"Cannot listen on {settings.host}:{settings.port}: {problem}.") from None
        ctx.console.result(page_url(settings.host, settings.port))
        ctx.console.info("open that address in a browser; Ctrl-C stops the server")
        serve_page.serve_until_stopped(page, studio, ctx, Path(workdir))
    return 0


stage = Stage(
    name="serve",
    help="A local web page to stylize photos in a browser, no terminal needed (the optional ui extra).",
    settings=ServeSettings,
    run=run,
    description=(
        "Example: quantart serve   then open http://127.0.0.1:7860/ in a browser; Ctrl-C stops it. "
        'The page needs pip install "quantart\\[ui]" (docs/serve.md: options, limits, --host).'
    ),
)
