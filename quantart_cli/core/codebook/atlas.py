"""Pictures of a codebook, drawn with PIL only: the code atlas and the usage rank plot.

Atlas: every code ``k`` is decoded from a ``latent_side x latent_side`` latent filled with code ``k``
(default 2x2, so a 32x32 patch for a factor-16 model): a uniform latent shows the texture and colour the
decoder associates with the code, with no neighbouring code leaking in. Patches are laid out row-major in
the order given (most used first), each in a cell with a 1-pixel frame: dark grey for used codes, red for
codes that were never used. The grid has ``ceil(sqrt(n))`` columns.

Rank plot: the codes' token counts sorted in decreasing order against their rank (linear x, log-10 y).
Dead codes (count 0) cannot sit on a log axis; the legend gives their number instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

FRAME = 1  # pixels of frame around each atlas tile
BACKGROUND = (40, 40, 40)
UNUSED_FRAME = (230, 30, 30)
SERIES_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))


@dataclass(frozen=True)
class AtlasLayout:
    """Grid geometry: ``columns x rows`` cells of ``cell = tile + 2 * FRAME`` pixels."""

    tiles: int
    tile: int
    columns: int
    rows: int

    @property
    def cell(self) -> int:
        return self.tile + 2 * FRAME

    @property
    def width(self) -> int:
        return self.columns * self.cell

    @property
    def height(self) -> int:
        return self.rows * self.cell

    def origin(self, position: int) -> tuple[int, int]:
        """Top-left pixel of the cell at ``position`` (row-major)."""
        row, column = divmod(position, self.columns)
        return column * self.cell, row * self.cell


def atlas_layout(tiles: int, tile: int) -> AtlasLayout:
    """A near-square grid for ``tiles`` patches of ``tile x tile`` pixels."""
    if tiles < 1 or tile < 1:
        raise ValueError(f"an atlas needs at least one tile of at least 1 pixel, got {tiles} tiles of {tile}")
    columns = math.ceil(math.sqrt(tiles))
    return AtlasLayout(tiles, tile, columns, math.ceil(tiles / columns))


def render_atlas(
    decode_indices: Callable[[Tensor], Tensor],
    order: Tensor | Sequence[int],
    *,
    unused: Tensor | None = None,
    latent_side: int = 2,
    factor: int = 16,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[Image.Image, AtlasLayout]:
    """Decode the codes in ``order`` (each as a uniform ``latent_side``-square latent) into one grid image.

    ``decode_indices`` maps int64 indices (B, s, s) to images (B, 3, s*factor, s*factor) in [-1, 1];
    ``unused`` (bool, indexed by code) marks codes framed in red; ``on_batch(k)`` reports k codes done.
    """
    codes = torch.as_tensor(order, dtype=torch.long).reshape(-1).cpu()
    layout = atlas_layout(codes.numel(), latent_side * factor)
    canvas = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    unused_cpu = None if unused is None else unused.detach().to("cpu", torch.bool)
    for start in range(0, codes.numel(), batch_size):
        chunk = codes[start : start + batch_size]
        latent = chunk.to(device)[:, None, None].expand(-1, latent_side, latent_side).contiguous()
        with torch.inference_mode():
            images = decode_indices(latent)
        expected = (chunk.numel(), 3, layout.tile, layout.tile)
        if tuple(images.shape) != expected:
            raise ValueError(f"the decoder returned shape {tuple(images.shape)}, expected {expected}")
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        for offset, (code, patch) in enumerate(zip(chunk.tolist(), pixels.numpy(), strict=True)):
            x, y = layout.origin(start + offset)
            if unused_cpu is not None and bool(unused_cpu[code]):
                draw.rectangle((x, y, x + layout.cell - 1, y + layout.cell - 1), outline=UNUSED_FRAME, width=FRAME)
            canvas.paste(Image.fromarray(patch, mode="RGB"), (x + FRAME, y + FRAME))
        if on_batch is not None:
            on_batch(chunk.numel())
    return canvas, layout


# --- rank plot -----------------------------------------------------------------------------------------------


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _count_label(value: float) -> str:
    if value >= 1e6:
        exponent = round(math.log10(value))
        return f"1e{exponent}"
    if value >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def _nice_step(span: float, target_ticks: int = 6) -> float:
    raw = span / max(1, target_ticks)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for multiple in (1, 2, 5, 10):
        if multiple * magnitude >= raw:
            return multiple * magnitude
    return 10 * magnitude


def render_rank_plot(
    series: Sequence[tuple[str, Tensor]],
    *,
    width: int = 900,
    height: int = 540,
    title: str = "Codebook usage by rank",
) -> Image.Image:
    """Rank plot of one or more usage histograms: counts sorted decreasingly, log-10 y axis."""
    if not series:
        raise ValueError("a rank plot needs at least one usage histogram")
    if width < 300 or height < 200:
        raise ValueError(f"a rank plot needs at least 300x200 pixels, got {width}x{height}")
    sorted_counts = [(label, torch.sort(c.detach().to("cpu", torch.float64).reshape(-1), descending=True).values)
                     for label, c in series]
    max_rank = max(c.numel() for _, c in sorted_counts)
    top = max(float(c[0]) for _, c in sorted_counts)
    decades = max(1, math.ceil(math.log10(top))) if top >= 1 else 1
    if top >= 1 and 10**decades < top:
        decades += 1

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(15), _font(12)
    left, right, top_margin, bottom = 78, 24, 44, 62
    x0, y0, x1, y1 = left, top_margin, width - right, height - bottom  # plot area

    def x_of(rank: float) -> float:
        return x0 + (rank - 1) / max(1, max_rank - 1) * (x1 - x0)

    def y_of(count: float) -> float:
        return y1 - math.log10(count) / decades * (y1 - y0)

    draw.text(((x0 + x1) / 2, 14), title, fill="black", font=font, anchor="mt")
    # y axis: a labelled gridline per decade, unlabelled ticks at 2..9 x 10^k.
    for k in range(decades + 1):
        y = y_of(10**k)
        draw.line((x0, y, x1, y), fill=(225, 225, 225))
        draw.line((x0 - 6, y, x0, y), fill="black")
        draw.text((x0 - 9, y), _count_label(10**k), fill="black", font=small, anchor="rm")
        if k < decades:
            for m in range(2, 10):
                ym = y_of(m * 10**k)
                draw.line((x0 - 3, ym, x0, ym), fill="black")
                if decades <= 2 and m in (2, 5):  # few decades: label 2 and 5 too so the scale reads easily
                    draw.line((x0, ym, x1, ym), fill=(242, 242, 242))
                    draw.text((x0 - 9, ym), _count_label(m * 10**k), fill=(90, 90, 90), font=small, anchor="rm")
    # x axis: ranks at a 1-2-5 step.
    step = max(1.0, _nice_step(max_rank - 1))  # ranks are whole numbers
    rank = 1.0
    while rank <= max_rank + 1e-9:
        x = x_of(rank)
        draw.line((x, y1, x, y1 + 6), fill="black")
        draw.text((x, y1 + 9), f"{int(rank)}", fill="black", font=small, anchor="mt")
        rank = step if rank == 1 and step > 1 else rank + step
    draw.rectangle((x0, y0, x1, y1), outline="black")
    draw.text(((x0 + x1) / 2, height - 8), "rank (codes sorted by usage)", fill="black", font=font, anchor="md")
    label_image = Image.new("RGB", (y1 - y0, 22), "white")
    ImageDraw.Draw(label_image).text(((y1 - y0) / 2, 11), "tokens per code (log scale)", fill="black",
                                     font=font, anchor="mm")
    image.paste(label_image.rotate(90, expand=True), (4, y0))

    legends = []
    for number, (label, counts) in enumerate(sorted_counts):
        colour = SERIES_COLOURS[number % len(SERIES_COLOURS)]
        used = counts[counts > 0]
        if used.numel():
            points = [(x_of(r + 1), y_of(float(v))) for r, v in enumerate(used.tolist())]
            if len(points) == 1:
                draw.ellipse((points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2), fill=colour)
            else:
                draw.line(points, fill=colour, width=2)
        dead = counts.numel() - used.numel()
        legends.append((colour, f"{label}: {used.numel()} used, {dead} dead (count 0, not drawn)"))
    text_width = max(draw.textlength(text, font=small) for _, text in legends)
    legend_x = max(x0 + 36, x1 - 10 - text_width)
    for number, (colour, text) in enumerate(legends):
        legend_y = y0 + 8 + 18 * number
        draw.line((legend_x - 30, legend_y + 7, legend_x - 6, legend_y + 7), fill=colour, width=3)
        draw.text((legend_x, legend_y), text, fill="black", font=small)
    return image
