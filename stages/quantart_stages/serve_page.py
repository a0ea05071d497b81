"""The page ``quantart serve`` shows, built with Gradio (the optional ``[ui]`` extra; imported only by ``serve``).

Everything the page does goes through :class:`~quantart_stages.serve.Studio` (handed in by ``serve``, which this
module does not import); this module only lays out the controls, turns errors into one-sentence messages on the
page, and runs the server: loopback unless told otherwise, no share tunnel, no analytics, no fonts or scripts
from elsewhere, one job at a time with a queue.
"""

from __future__ import annotations

import contextlib
import io
import signal
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import gradio as gr

from quantart_cli.plugin import QuantartError, RunContext
from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR, SAMPLES_DIR


class Studio(Protocol):
    """What the page uses of ``serve``'s Studio, which ``serve`` hands in (declared here, so the page imports
    nothing from the module that imports it)."""

    session: Any
    console: Any

    @property
    def busy(self) -> bool: ...

    def options(self, alpha: float | None = None, size: int | float | None = None,
                preserve_color: bool | None = None, weights: Any = None) -> Any: ...

    def stylize(self, photo: Any, paintings: Any, options: Any, progress: Any = None, masks: Any = ()) -> Any: ...

    def preview(self, path: Any, longest: int = 768) -> Any: ...

    def close(self) -> None: ...


class ServeSettings(Protocol):
    """The settings of ``quantart serve`` the page reads."""

    ckpt: Path | None
    host: str
    port: int
    max_upload_mb: float
    max_pixels: int

#: Jobs waiting behind the running one; more are turned away with a message until the queue drains.
QUEUE_SIZE = 16
#: Mask uploads on the page, one per painting in order (paintings after these have no mask).
MASK_SLOTS = 4

#: Fonts the browser already has: a Google font would be fetched from outside at every visit.
SYSTEM_FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"]
#: Every job that runs the model shares this queue slot: one at a time, whichever button started it.
MODEL_QUEUE = "model"
#: The examples under the page: (label, sample photo, sample paintings, blend weights).
EXAMPLES = [
    ("a photo after Hokusai", "lhq_1", ["hokusai_great_wave"], None),
    ("a photo after Monet", "lhq_2", ["monet_water_lilies_1919"], None),
    ("after Van Gogh and Sisley, 0.7 / 0.3", "lhq_1", ["vangogh_starry_night_rhone", "sisley_snow_road"], "0.7,0.3"),
]
#: Sample thumbnails shrink with the column (Gradio's gallery keeps them at least 100 px wide, which cuts one off).
CSS = """
#samples-paintings .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }
#stylize-button { font-size: 1.1em; }
"""


def hands_over_the_file(image: gr.Image) -> gr.Image:
    """Make ``image`` pass its upload on untouched: Gradio's own preprocessing would open it with PIL before the
    server's limits apply (and re-encode it in some modes), and a non-image would fail there in Gradio's words
    instead of quantart's one sentence. (A subclass would do, but Gradio writes a ``.pyi`` file beside any module
    that defines one.)"""
    image.preprocess = lambda payload: None if payload is None else payload.path  # type: ignore[method-assign]
    return image


def _paths(gallery: Any) -> list[str]:
    """A gallery's value (``(path, caption)`` pairs, or bare paths) as file paths."""
    return [item[0] if isinstance(item, (list, tuple)) else item for item in gallery or []]


def build_page(studio: Studio, settings: ServeSettings) -> gr.Blocks:
    photos = [str(p) for p in sorted(CONTENT_DIR.glob("*.jpg"))]
    paintings = [str(p) for p in sorted(PAINTINGS_DIR.glob("*.jpg"))]
    defaults = studio.session.options

    def stylize(photo, chosen, alpha, size, preserve_color, weights, *masks, progress=gr.Progress()):
        try:
            options = studio.options(alpha, size, preserve_color, weights)
            job = studio.stylize(photo, _paths(chosen), options,
                                 progress=lambda fraction, text: progress(fraction, desc=text), masks=masks)
        except QuantartError as err:
            studio.console.warn(f"page: {err}")
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:  # the CLI's last line of defence, on the page: one sentence, and serve on
            studio.console.warn(f"page: unexpected {type(err).__name__}: {err}")
            raise gr.Error(f"Unexpected {type(err).__name__}: {err}.", print_exception=False) from None
        record = job.record
        details = (f"{record['width']} x {record['height']} px in {record['seconds']['total']:.1f} s, "
                   f"alpha {options.alpha:g}{', colours kept' if options.preserve_color else ''}. "
                   f"The download is the full-resolution PNG, as `quantart stylize` writes it.")
        return str(job.output), gr.DownloadButton(value=str(job.output), interactive=True), details

    def check_upload(path):
        """Read an upload as a job will: a bad one is answered at once (and the job would refuse it too)."""
        if path:
            try:
                studio.preview(path)
            except QuantartError as err:
                gr.Warning(studio.console.spell(str(err)))
        return None

    def check_paintings(chosen):
        for path in _paths(chosen):
            check_upload(path)

    def add_painting(chosen, evt: gr.SelectData):
        return [*_paths(chosen), paintings[evt.index]]

    def pick_photo(evt: gr.SelectData):
        return photos[evt.index]

    with gr.Blocks(title="quantart: stylize a photo", analytics_enabled=False, delete_cache=(3600, 3600)) as page:
        model = "the built-in model" if settings.ckpt is None else f"the model {Path(settings.ckpt).name}"
        gr.Markdown(
            "# quantart: stylize a photo after paintings\n"
            "Pick a photo and one or more paintings, then press **Stylize**. Everything runs on the computer "
            f"that serves this page, with {model}; nothing is sent anywhere else."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=260):
                photo = hands_over_the_file(gr.Image(label="1. Photo (upload, drop or paste one)", type="filepath",
                                                     sources=["upload", "clipboard"], elem_id="photo", height=300))
                sample_photos = gr.Gallery(photos, label="or click a sample photo", columns=2, height=190,
                                           object_fit="cover", allow_preview=False, elem_id="samples-photos",
                                           interactive=False)
            with gr.Column(scale=1, min_width=260):
                chosen = gr.Gallery(label="2. Paintings (upload one or more)", type="filepath", interactive=True,
                                    columns=3, height=300, elem_id="paintings", file_types=None)
                sample_paintings = gr.Gallery(paintings, label="or click sample paintings to add them", columns=4,
                                              height=190, object_fit="cover", allow_preview=False,
                                              elem_id="samples-paintings", interactive=False)
            with gr.Column(scale=1, min_width=260):
                result = gr.Image(label="Result", type="filepath", format="png", interactive=False,
                                  elem_id="result", height=300)
                download = gr.DownloadButton("Download the full-resolution PNG", value=None, interactive=False,
                                             elem_id="download")
                details = gr.Markdown(elem_id="details")
        with gr.Row(equal_height=True):
            alpha = gr.Slider(0.0, 1.0, value=defaults.alpha, step=0.05, label="Style strength (alpha)",
                              info="0 keeps the photo, 1 is the full style", elem_id="alpha")
            size = gr.Number(value=defaults.size or 0, precision=0, minimum=0, label="Size (longer side, px)",
                             info="0 keeps the photo's own size", elem_id="size")
            preserve_color = gr.Checkbox(value=defaults.preserve_color, label="Keep the photo's colours",
                                         info="transfer light and texture only", elem_id="preserve-color")
            weights = gr.Textbox(value=",".join(f"{w:g}" for w in defaults.style_weights or []),
                                 label="Blend weights", placeholder="equal; or e.g. 0.7, 0.3",
                                 info="one per painting, for several paintings", elem_id="weights")
            button = gr.Button("Stylize", variant="primary", elem_id="stylize-button", scale=0, min_width=160)
        with gr.Accordion("Regions (optional): a mask per painting", open=False, elem_id="regions"):
            gr.Markdown(
                "A painting with a mask takes the white of its mask fully, the black not at all and grey partly; "
                "paintings without a mask fill what the masks leave (or, if every painting has one, the photo "
                "shows there). A mask is stretched to the photo's size."
            )
            with gr.Row():
                mask_slots = [
                    hands_over_the_file(gr.Image(label=f"Mask of painting {i + 1}", type="filepath",
                                                 sources=["upload", "clipboard"], elem_id=f"mask-{i + 1}",
                                                 height=160))
                    for i in range(MASK_SLOTS)
                ]
        inputs = [photo, chosen, alpha, size, preserve_color, weights, *mask_slots]
        outputs = [result, download, details]
        sample = {Path(p).stem: p for p in photos + paintings}
        examples = gr.Examples(
            [[sample[photo_name], [sample[name] for name in names], None, None, None, blend, *[None] * MASK_SLOTS]
             for _, photo_name, names, blend in EXAMPLES],
            inputs=inputs, label="Try an example (one click fills the page and stylizes it)",
            example_labels=[label for label, *_ in EXAMPLES],
        )
        job = {"fn": stylize, "inputs": inputs, "outputs": outputs, "concurrency_id": MODEL_QUEUE,
               "concurrency_limit": 1, "show_progress": "full"}
        button.click(api_name="stylize", **job)
        load_event = getattr(examples, "load_input_event", None)
        if load_event is not None:  # examples fill the inputs, then run the very same job
            load_event.then(api_visibility="private", **job)
        checks = {"concurrency_id": "checks", "concurrency_limit": 2, "show_progress": "hidden",
                  "api_visibility": "private"}
        photo.upload(check_upload, photo, None, **checks)
        for slot in mask_slots:
            slot.upload(check_upload, slot, None, **checks)
        chosen.upload(check_paintings, chosen, None, **checks)
        sample_photos.select(pick_photo, None, photo, **checks)
        sample_paintings.select(add_painting, chosen, chosen, **checks)
        gr.Markdown(
            f"Limits: files up to {settings.max_upload_mb:g} MB and {settings.max_pixels / 1e6:g} megapixels; one "
            f"image is stylized at a time and the others wait in a queue (at most {QUEUE_SIZE}). Large photos take "
            "a while on a CPU: set a size to try things out quickly. Samples: public-domain paintings and the "
            "photos that ship with quantart.",
            elem_id="limits",
        )
    return page


def theme() -> gr.themes.Base:
    return gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)


def launch(studio: Studio, settings: ServeSettings, workdir: Path) -> gr.Blocks:
    """Build the page and start its web server in the background; an address it cannot listen on raises
    OSError."""
    page = build_page(studio, settings)
    page.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    page.launch(
        server_name=settings.host, server_port=settings.port, share=False, prevent_thread_lock=True,
        quiet=True, show_error=True, max_file_size=int(settings.max_upload_mb * 1024 * 1024),
        allowed_paths=[str(SAMPLES_DIR), str(workdir)], theme=theme(), css=CSS, footer_links=["settings"],
        ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False, inbrowser=False,
    )
    return page


def serve_until_stopped(page: gr.Blocks, studio: Studio, ctx: RunContext, workdir: Path) -> None:
    """Serve until Ctrl-C (or SIGTERM), then stop cleanly: the running job finishes, no new one starts."""
    try:
        with _sigterm_as_interrupt():
            while True:
                time.sleep(0.2)
    except KeyboardInterrupt:
        waiting = "; waiting for the running job to finish (Ctrl-C again stops at once)" if studio.busy else ""
        ctx.console.info(f"stopping the server{waiting}")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # Gradio prints "Closing server"; stdout is for results
                page.close()
            studio.close()
        except KeyboardInterrupt:
            _stop_at_once(ctx, workdir)
        raise


def _stop_at_once(ctx: RunContext, workdir: Path) -> None:
    """A second Ctrl-C while a job runs: leave without waiting for torch (a normal exit would abort in it)."""
    import os
    import shutil
    import sys

    ctx.console.error("Interrupted.")
    shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


class _sigterm_as_interrupt:  # noqa: N801 (a context manager, named as used)
    """SIGTERM (a service manager's stop) ends the server like Ctrl-C."""

    def __enter__(self) -> None:
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
