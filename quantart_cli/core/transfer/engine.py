"""Image -> image style transfer at any size: the paper's fidelity knobs, colour preservation, tiling.

The latent that is decoded (the paper's Sec. 3.4, "inference knobs"; docs/stylize.md)::

    z = visual_fidelity * (alpha * zq_y + (1 - alpha) * zq_c)
        + (1 - visual_fidelity) * (alpha * z_y + (1 - alpha) * z_c)

with ``alpha`` the style fidelity (the paper's beta) and ``visual_fidelity`` the paper's alpha. ``zq_c`` is the
discrete model's quantized content latent and ``zq_y = quantize_dec(SGA(zq_c, zq_ref))``; ``z_c`` and ``z_y``
are the same from the continuous model (no quantizers). Each model's share of this computation is a *branch*
(:class:`_Branch`): the discrete one, and the continuous one when ``visual_fidelity < 1``. The decoder
(``post_quant_conv`` and ``decoder``) has its weights interpolated with the same ``visual_fidelity``:
``visual_fidelity * W_discrete + (1 - visual_fidelity) * W_continuous``. With ``visual_fidelity = 1`` only the
discrete branch runs; with ``alpha = 0`` the SGA module is skipped.

Regions (:mod:`quantart_cli.core.transfer.masks`): with a mask per painting, each painting with a mask runs its own
SGA pass and the latent is blended per latent cell, ``b * (sum_g s_g * zq_y_g) + (1 - b * sum_g s_g) * zq_c`` with
the groups' shares ``s_g`` in place of ``b * zq_y + (1 - b) * zq_c`` (and likewise in the continuous branch).
Without masks there is one group of share 1, which is the formula above.

Any size: the content is reflect-padded to a multiple of the downsampling factor (and to at least two latent cells
per side: a 1x1 latent cannot be normalized by one-channel GroupNorm groups) and cropped back.
Large images run the encoder and decoder tiled (:mod:`quantart_cli.core.transfer.tiling`); the SGA module and the
quantizer always see the whole latent, so every part of the photo attends to the same full style
reference, and attention runs with chunked queries so memory stays bounded.

Colour preservation is a luminance-only transfer: the result is converted to YCbCr (ITU-R BT.601,
full range, the JPEG convention), and its Cb and Cr channels are replaced by the content's.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import Tensor, nn

from quantart_cli.core.color_space import rgb_to_ycbcr, ycbcr_to_rgb
from quantart_cli.core.devices import set_memory_format
from quantart_cli.core.errors import BadInputError, UsageError
from quantart_cli.core.io.images import (
    MIN_LATENT_SIDE,
    crop_padding,
    image_to_tensor,
    pad_to_multiple,
    resize_longer_side,
    tensor_to_image,
)
from quantart_cli.core.nn.attention import set_query_chunk_size
from quantart_cli.core.nn.autoencoder import Encoder
from quantart_cli.core.nn.sga import PreparedReference
from quantart_cli.core.precision import autocast_context, check_precision, stylize_precision
from quantart_cli.core.transfer.masks import Share, StyleGroup, group_styles, latent_shares
from quantart_cli.core.transfer.options import StylizeOptions, check_visual_fidelity
from quantart_cli.core.transfer.tiling import decode_tiled, encode_tiled

if TYPE_CHECKING:
    from quantart_cli.core.models import EncoderRunner, StyleTransfer

__all__ = [
    "StylizeOutput",
    "Stylizer",
    "interpolate_decoder",
    "preserve_content_color",
    "stylize_images",
]

logger = logging.getLogger(__name__)


@dataclass
class StylizeOutput:
    """A stylized image (1, 3, H, W) in [-1, 1] on the model's device, with where the time went."""

    image: Tensor
    tiled: bool
    timings: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- pixel helpers

def preserve_content_color(stylized: Tensor, content: Tensor) -> Tensor:
    """Luminance (Y) of ``stylized`` with the chroma (Cb, Cr) of ``content``; both (B, 3, H, W) in [-1, 1]."""
    if stylized.shape != content.shape:
        raise BadInputError(
            f"colour preservation needs equal shapes, got {tuple(stylized.shape)} and {tuple(content.shape)}"
        )
    mixed = torch.cat([rgb_to_ycbcr(stylized)[:, :1], rgb_to_ycbcr(content)[:, 1:]], dim=1)
    return ycbcr_to_rgb(mixed).clamp(-1.0, 1.0)


def _as_batch(x: Tensor, what: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise BadInputError(f"{what} must be a PIL image or a tensor, got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise BadInputError(f"{what} must be a (3, H, W) or (B, 3, H, W) tensor in [-1, 1], got {tuple(x.shape)}")
    return x.float()


# ------------------------------------------------------------------------------------ model pieces


def interpolate_decoder(
    discrete: StyleTransfer, continuous: StyleTransfer, visual_fidelity: float
) -> tuple[nn.Module, nn.Module]:
    """Copies of ``post_quant_conv`` and ``decoder`` with weights
    ``visual_fidelity * discrete + (1 - visual_fidelity) * continuous``."""
    modules = []
    for name in ("post_quant_conv", "decoder"):
        mixed = copy.deepcopy(getattr(discrete, name))
        other = dict(getattr(continuous, name).named_parameters())
        with torch.no_grad():
            for key, param in mixed.named_parameters():
                if key not in other or other[key].shape != param.shape:
                    raise UsageError(
                        "the continuous model's decoder does not match the discrete model's; "
                        "train it with train-sga `continuous=true` from the same VQGANs"
                    )
                param.lerp_(other[key].to(param.device, param.dtype), 1.0 - visual_fidelity)
        modules.append(mixed)
    return modules[0], modules[1]


def _check_continuous(model: StyleTransfer, continuous: StyleTransfer) -> None:
    if not continuous.config.continuous:
        raise UsageError(
            "`continuous_ckpt` must be a continuous model (trained with train-sga `continuous=true`), "
            "but the given checkpoint is a discrete one"
        )
    if model.config.continuous:
        raise UsageError("`ckpt` must be the discrete (quantized) model when `continuous_ckpt` is given")
    if (
        model.config.style.autoencoder != continuous.config.style.autoencoder
        or model.config.embed_dim != continuous.config.embed_dim
    ):
        raise UsageError(
            "the continuous model's decoder has another shape than the discrete model's; "
            "both must come from the same style VQGAN"
        )


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class _Branch:
    """One model's share of the computation (the discrete or the continuous branch): its encoders, quantizers,
    SGA module and prepared style references (one per group of paintings, see :func:`group_styles`)."""

    def __init__(self, model: StyleTransfer, options: StylizeOptions, channels_last: bool) -> None:
        self.model = set_memory_format(model, channels_last)
        self.options = options
        self.channels_last = channels_last
        self.factor = model.config.content.autoencoder.downsample_factor
        self.style_factor = model.config.style.autoencoder.downsample_factor
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.references: list[PreparedReference] = []

    def _run_encoder(self, tiled: bool) -> EncoderRunner | None:
        """Run the encoder tiled (exact, see tiling.py) or, when None, the model's own way."""
        if not tiled:
            return None
        opts = self.options

        def run(encoder: Encoder, x: Tensor) -> Tensor:
            return encode_tiled(
                encoder,
                x,
                tile=opts.tile,
                overlap=opts.overlap,
                norm_stats=opts.tile_norm,
                channels_last=self.channels_last,
                buffer_bytes=opts.buffer_bytes,
            )

        return run

    def encode_content(self, x: Tensor, tiled: bool) -> Tensor:
        quant, _ = self.model.encode_content(x, self._run_encoder(tiled))
        return quant.contiguous(memory_format=self.memory_format)

    def prepare(self, styles: Sequence[Tensor], groups: Sequence[StyleGroup]) -> None:
        latents = []
        for ref in styles:
            padded, _ = pad_to_multiple(ref, self.style_factor, "reflect", min_size=MIN_LATENT_SIDE * self.style_factor)
            quant, _ = self.model.encode_style(padded, self._run_encoder(self.options.tiles(*padded.shape[-2:])))
            latents.append(quant.contiguous(memory_format=self.memory_format))
        self.references = [
            self.model.model_x2y.prepare_reference([latents[i] for i in group.indices], group.weights)
            for group in groups
        ]

    def stylize_latent(self, z_c: Tensor) -> list[Tensor]:
        """The stylized latent of each group of paintings."""
        assert self.references
        return [self.model.stylize_latent(z_c, reference)[1].contiguous(memory_format=self.memory_format)
                for reference in self.references]


# --------------------------------------------------------------------------------------- the engine


class Stylizer:
    """Stylizes content images after fixed style references; the references are encoded once.

    ``model`` is a discrete :class:`StyleTransfer`; ``continuous_model`` (only needed for
    ``visual_fidelity < 1``) the same network trained with ``train-sga --continuous``. Both run channels-last
    (``channels_last=False``: in the contiguous order): their convolution kernels are put in that order in place
    (:func:`~quantart_cli.core.devices.set_memory_format`). ``precision="bf16"`` on a
    CPU without bf16 instructions runs in fp32 with a one-line ``UserWarning`` (``.options`` says so).

    ``masks`` (one per style, None for a painting without one: (H, W), (1, H, W) or (1, 1, H, W) tensors in [0, 1]
    or PIL images) gives paintings their regions (:mod:`quantart_cli.core.transfer.masks`); with masks,
    ``style_weights`` weights only the paintings without a mask.
    """

    def __init__(
        self,
        model: StyleTransfer,
        styles: Tensor | Sequence[Tensor],
        options: StylizeOptions | None = None,
        continuous_model: StyleTransfer | None = None,
        *,
        masks: Sequence[Tensor | Image.Image | None] | None = None,
        channels_last: bool = True,
    ) -> None:
        self.options = options = StylizeOptions() if options is None else options
        self.channels_last = channels_last
        self.model = model
        self.device = _device_of(model)
        check_precision(self.device, options.precision, training=False)
        precision, note = stylize_precision(self.device, options.precision)
        if note is not None:  # bf16 on a CPU that emulates it: fp32 is faster (the CLI says so itself, earlier)
            warnings.warn(note + ".", UserWarning, stacklevel=2)
            self.options = options = options.model_copy(update={"precision": precision})
        style_list = [styles] if isinstance(styles, Tensor) else list(styles)
        if not style_list:
            raise UsageError("stylize needs at least one style image (`style`)")
        self.groups = group_styles(len(style_list), masks, options.style_weights)
        visual_fidelity = options.visual_fidelity
        check_visual_fidelity(visual_fidelity, continuous_model is not None)
        self.continuous_model = continuous_model if visual_fidelity < 1.0 else None
        if self.continuous_model is not None:
            _check_continuous(model, self.continuous_model)
        self.branches = [_Branch(model, options, channels_last)]
        if self.continuous_model is not None:
            self.branches.append(_Branch(self.continuous_model, options, channels_last))
        self.factor = self.branches[0].factor
        if options.query_chunk_size is not None:
            for branch in self.branches:
                set_query_chunk_size(branch.model.model_x2y, options.query_chunk_size)
        start = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            refs = []
            for ref in style_list:
                ref = _as_batch(ref, "style image").to(self.device)
                if options.style_size is not None:
                    ref = resize_longer_side(ref, options.style_size)
                refs.append(ref)
            if options.alpha > 0.0:
                for branch in self.branches:
                    branch.prepare(refs, self.groups)
            if self.continuous_model is not None:
                self.post_quant_conv, self.decoder = interpolate_decoder(model, self.continuous_model, visual_fidelity)
            else:
                self.post_quant_conv, self.decoder = model.post_quant_conv, model.decoder
        self.style_seconds = time.perf_counter() - start

    def _autocast(self) -> Any:
        return autocast_context(self.device, self.options.precision)

    @property
    def masked(self) -> bool:
        """Whether some painting has a mask (a region of its own)."""
        return any(group.mask is not None for group in self.groups)

    def latent(self, x: Tensor, tiled: bool, timings: dict[str, float] | None = None,
               photo: tuple[int, int] | None = None) -> Tensor:
        """The mixed latent ``z`` of a padded content batch (see the module docstring); with masks, ``photo`` is
        the (height, width) of the content before padding (default: ``x``'s own)."""
        with self._autocast():
            parts = self._branch_latents(x, tiled, self.options.alpha > 0.0, timings)
        return self._mix(parts, self.options.alpha, self.shares(photo or tuple(x.shape[-2:])))

    def shares(self, photo: tuple[int, int]) -> list[Share]:
        """Each group's share of the latent of a photo of ``photo`` = (height, width) pixels (before padding)."""
        return latent_shares(self.groups, photo, self.factor, self.device)

    def _branch_latents(
        self, x: Tensor, tiled: bool, stylize: bool, timings: dict[str, float] | None
    ) -> list[tuple[Tensor, list[Tensor] | None]]:
        """Per branch: (content latent ``z_c``, the stylized latent ``z_y`` of each group or None when not
        ``stylize``)."""
        timings = {} if timings is None else timings
        parts = []
        for branch in self.branches:
            start = time.perf_counter()
            z_c = branch.encode_content(x, tiled)
            timings["encode"] = timings.get("encode", 0.0) + _elapsed(start, x)
            start = time.perf_counter()
            z_y = branch.stylize_latent(z_c) if stylize else None
            timings["sga"] = timings.get("sga", 0.0) + _elapsed(start, x)
            parts.append((z_c, z_y))
        return parts

    def _mix(self, parts: list[tuple[Tensor, list[Tensor] | None]], alpha: float, shares: Sequence[Share]) -> Tensor:
        """The module docstring's ``z`` from :meth:`_branch_latents`: each branch's ``alpha`` blend of ``z_y`` and
        ``z_c``, weighted by its share (``visual_fidelity`` for the discrete branch, the rest for the continuous).
        With groups of paintings, ``alpha * z_y`` is ``alpha * sum_g s_g z_y_g`` and ``(1 - alpha)`` is
        ``(1 - alpha * sum_g s_g)``, ``s_g`` being the groups' ``shares`` (numbers, or maps over the latent grid)."""
        visual_fidelity = self.options.visual_fidelity
        mixed: Tensor | None = None
        for (z_c, z_ys), share in zip(parts, (visual_fidelity, 1.0 - visual_fidelity), strict=False):
            z = z_c if alpha == 0.0 else _blend(z_c, z_ys, alpha, shares)
            if share != 1.0:
                z = share * z
            mixed = z if mixed is None else mixed + z
        assert mixed is not None
        return mixed

    def decode(self, z: Tensor, tiled: bool) -> Tensor:
        """Decode a (mixed) latent with the (interpolated) art decoder, tiled or whole (float32 out)."""
        with self._autocast():
            return self._decode(z, tiled).float()

    def _decode(self, z: Tensor, tiled: bool) -> Tensor:
        h = self.post_quant_conv(z)
        opts = self.options
        if tiled:
            return decode_tiled(
                self.decoder,
                h,
                tile=opts.tile,
                overlap=opts.overlap,
                norm_stats=opts.tile_norm,
                channels_last=self.channels_last,
                buffer_bytes=opts.buffer_bytes,
            )
        return self.decoder(h).contiguous()

    def __call__(self, content: Tensor) -> StylizeOutput:
        """Stylize a content batch (B, 3, H, W) in [-1, 1]; the output has the same size (after ``size``)."""
        return self.sweep(content, [self.options.alpha])[0]

    def sweep(self, content: Tensor, alphas: Sequence[float]) -> list[StylizeOutput]:
        """Stylize a content batch at several style fidelities, one output per alpha, in order.

        The content is encoded and run through the SGA module once; only the blend and the decoder run per
        alpha, so K alphas cost one encoding plus K decodings. Each output equals ``Stylizer`` with that
        ``alpha`` (same options otherwise). Alphas above 0 need a Stylizer built with an alpha above 0 (its
        style references are encoded only then).
        """
        values = [float(alpha) for alpha in alphas]
        if not values or any(not 0.0 <= alpha <= 1.0 for alpha in values):
            raise UsageError(f"alphas must be one or more values between 0 and 1, got {values}")
        if any(alpha > 0.0 for alpha in values) and not self.branches[0].references:
            raise UsageError("this Stylizer was built with alpha 0, so its style references were not encoded; "
                             "build it with the largest alpha of the sweep")
        outputs = []
        total = time.perf_counter()
        with torch.inference_mode():
            x = _as_batch(content, "content image").to(self.device)
            if self.options.size is not None:
                x = resize_longer_side(x, self.options.size)
            padded, padding = pad_to_multiple(x, self.factor, "reflect", min_size=MIN_LATENT_SIDE * self.factor)
            tiled = self.options.tiles(*padded.shape[-2:])
            shared: dict[str, float] = {}
            with self._autocast():
                parts = self._branch_latents(padded, tiled, any(alpha > 0.0 for alpha in values), shared)
            shares = self.shares(tuple(x.shape[-2:]))
            for alpha in values:
                timings = dict(shared) if not outputs else {"encode": 0.0, "sga": 0.0}
                start = time.perf_counter()
                image = crop_padding(self.decode(self._mix(parts, alpha, shares), tiled), padding)
                timings["decode"] = _elapsed(start, image)
                if self.options.preserve_color:
                    image = preserve_content_color(image, x)
                image = image.clamp(-1.0, 1.0).contiguous()
                timings["total"] = _elapsed(total, image)
                total = time.perf_counter()
                outputs.append(StylizeOutput(image=image, tiled=tiled, timings=timings))
        return outputs


def _blend(z_c: Tensor, z_ys: list[Tensor] | None, alpha: float, shares: Sequence[Share]) -> Tensor:
    """``alpha * sum_g s_g z_y_g + (1 - alpha * sum_g s_g) z_c``, skipping terms whose weight is the number 0 and
    multiplications by the number 1 (so one group of share 1 is exactly ``alpha z_y + (1 - alpha) z_c``)."""
    assert z_ys is not None and len(z_ys) == len(shares)
    terms: list[Tensor] = []
    covered: Share = 0.0
    for z_y, share in zip(z_ys, shares, strict=True):
        weight = alpha * share
        covered = covered + share
        if isinstance(weight, float) and weight == 0.0:
            continue
        terms.append(z_y if isinstance(weight, float) and weight == 1.0 else weight * z_y)
    rest = 1.0 - alpha * covered
    if not (isinstance(rest, float) and rest == 0.0):
        terms.append(z_c if isinstance(rest, float) and rest == 1.0 else rest * z_c)
    if not terms:
        return torch.zeros_like(z_c)
    mixed = terms[0]
    for term in terms[1:]:
        mixed = mixed + term
    return mixed


def _elapsed(start: float, like: Tensor) -> float:
    if like.device.type == "cuda":
        torch.cuda.synchronize(like.device)
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------- Python API


def _to_tensor(image: Image.Image | Tensor, what: str) -> Tensor:
    if isinstance(image, Image.Image):
        return image_to_tensor(image)
    return _as_batch(image, what)


def stylize_images(
    model: StyleTransfer,
    content_image: Image.Image | Tensor,
    style_image: Image.Image | Tensor | Sequence[Image.Image | Tensor],
    *,
    continuous_model: StyleTransfer | None = None,
    masks: Image.Image | Tensor | None | Sequence[Image.Image | Tensor | None] = None,
    options: StylizeOptions | None = None,
    **knobs: Any,
) -> Image.Image | Tensor:
    """Stylize one content image (PIL, or a (3, H, W) / (B, 3, H, W) tensor in [-1, 1]).

    The knobs are :class:`StylizeOptions` fields (``alpha=0.8, preserve_color=True, tile=256, ...``), given
    one by one or as ``options=``. ``masks``: one per style image (None for one without), a greyscale PIL image
    or a tensor in [0, 1] where white takes that painting fully and black not at all (see :class:`Stylizer`).

    Returns the same kind it was given: a PIL image for a PIL image, else a tensor on the content's
    device with the content's number of dimensions.
    """
    styles = list(style_image) if isinstance(style_image, (list, tuple)) else [style_image]
    if options is not None and knobs:
        raise UsageError("stylize_images takes either options= or separate knobs, not both")
    options = StylizeOptions(**knobs) if options is None else options
    if masks is not None and not isinstance(masks, (list, tuple)):
        masks = [masks]
    stylizer = Stylizer(model, [_to_tensor(s, "style image") for s in styles], options, continuous_model,
                        masks=masks)
    result = stylizer(_to_tensor(content_image, "content image")).image
    if isinstance(content_image, Image.Image):
        return tensor_to_image(result)
    result = result.to(content_image.device)
    return result[0] if content_image.dim() == 3 else result
