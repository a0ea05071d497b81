"""The two QuantArt models: :class:`VQGAN` (stage 1) and :class:`StyleTransfer` (stage 2).

Sub-module names equal the original's, so original state dicts (minus ``loss.*``) load with
``strict=True``; docs/architecture.md ("Names kept from the original") says what each one is. Images are
(B, C, H, W) in [-1, 1] with H and W multiples of the downsampling factor (16 for every QuantArt config); a
style reference may differ in size from the content.

Both are plain modules in PyTorch's usual memory order. How they run is chosen where they run: the stylize
engine and the other inference paths put them in channels-last order
(:func:`~quantart_cli.core.devices.set_memory_format`), training keeps the contiguous order unless
``--channels-last``. Returned tensors are always contiguous.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from quantart_cli.core.config import StyleTransferConfig, VQGANConfig
from quantart_cli.core.errors import BadInputError, UsageError
from quantart_cli.core.nn.autoencoder import Decoder, Encoder
from quantart_cli.core.nn.sga import PreparedReference, StyleGuidedAttention
from quantart_cli.core.nn.vq import QuantizerInfo, VectorQuantizer


def check_images(x: Tensor, channels: int, factor: int, what: str = "image") -> None:
    """Raise :class:`BadInputError` unless ``x`` is (B, channels, H, W) with H, W multiples of ``factor``."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise BadInputError(f"{what} must be a 4-D tensor (B, {channels}, H, W), got {shape}")
    if x.shape[1] != channels:
        raise BadInputError(f"{what} must have {channels} channels, got {x.shape[1]}")
    height, width = x.shape[-2:]
    if height % factor or width % factor or height == 0 or width == 0:
        raise BadInputError(f"{what} sides must be positive multiples of {factor}, got {height}x{width}")


#: ``run_encoder(encoder, x)``: how an encoder is run on an image (plainly, or tiled by the stylize engine).
EncoderRunner = Callable[[Encoder, Tensor], Tensor]


class VQGAN(nn.Module):
    """Stage-1 VQGAN: ``encoder`` -> ``quant_conv`` -> ``quantize`` -> ``post_quant_conv`` -> ``decoder``."""

    def __init__(self, config: VQGANConfig | None = None) -> None:
        super().__init__()
        config = VQGANConfig() if config is None else config
        self.config = config
        autoencoder, quantizer = config.autoencoder, config.quantizer
        encoder_channels = 2 * autoencoder.z_channels if autoencoder.double_z else autoencoder.z_channels
        self.encoder = Encoder(autoencoder)
        self.quant_conv = nn.Conv2d(encoder_channels, quantizer.embed_dim, kernel_size=1)
        self.quantize = VectorQuantizer(quantizer)
        self.post_quant_conv = nn.Conv2d(quantizer.embed_dim, autoencoder.z_channels, kernel_size=1)
        self.decoder = Decoder(autoencoder)

    @property
    def downsample_factor(self) -> int:
        return self.config.autoencoder.downsample_factor

    @property
    def last_layer(self) -> Tensor:
        """Weight the adaptive GAN weight is taken at (``decoder.conv_out.weight``)."""
        return self.decoder.conv_out.weight

    def encode_continuous(self, x: Tensor) -> Tensor:
        """Image -> pre-quantization latent ``quant_conv(encoder(x))`` (B, embed_dim, H/f, W/f)."""
        check_images(x, self.config.autoencoder.in_channels, self.downsample_factor)
        return self.quant_conv(self.encoder(x))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, QuantizerInfo]:
        """Image -> (quantized latent, VQ loss, info with indices (B, h, w) and code usage)."""
        quant, vq_loss, info = self.quantize(self.encode_continuous(x))
        return quant.contiguous(), vq_loss, info

    def decode(self, quant: Tensor) -> Tensor:
        """Latent (B, embed_dim, h, w) -> image (B, out_ch, h*f, w*f)."""
        if self.decoder is None:  # an encoder side only, such as the built-in photo VQGAN
            raise UsageError("This VQGAN has no decoder (only its encoder side was kept), so it cannot decode.")
        return self.decoder(self.post_quant_conv(quant)).contiguous()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, QuantizerInfo]:
        """Image -> (reconstruction, VQ loss, info)."""
        quant, vq_loss, info = self.encode(x)
        return self.decode(quant), vq_loss, info

    def encode_to_indices(self, x: Tensor) -> Tensor:
        """Image -> code indices (B, h, w), int64."""
        return self.encode(x)[2].indices

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Code indices (B, h, w) -> image."""
        return self.decode(self.quantize.lookup(indices))


class TransferResult(NamedTuple):
    """Latents of one style transfer; ``quant_ref`` is a tuple when several references were blended.

    In the continuous variant ``quant_y`` is ``h_x``, the indices are None and ``vq_loss`` is 0.
    """

    quant_x: Tensor
    quant_ref: Tensor | tuple[Tensor, ...] | None
    h_x: Tensor
    quant_y: Tensor
    indices_y: Tensor | None
    vq_loss: Tensor
    indices_x: Tensor | None = None
    indices_ref: Tensor | tuple[Tensor | None, ...] | None = None
    usage_y: Tensor | None = None


_CONTENT_PARTS = ("encoder", "quant_conv", "quantize_enc")
_STYLE_PARTS = ("encoder_real", "quant_conv_real", "quantize_dec", "post_quant_conv", "decoder")


class StyleTransfer(nn.Module):
    """Stage-2 model: frozen content encoder side, frozen style encoder + decoder, trainable ``model_x2y``.

    ``transfer(x, ref)``: quant_x = quantize_enc(quant_conv(encoder(x))),
    quant_ref = quantize_dec(quant_conv_real(encoder_real(ref))), h_x = model_x2y(quant_x, quant_ref),
    quant_y = quantize_dec(h_x); ``decode(quant_y)`` gives the stylized image.
    """

    def __init__(self, config: StyleTransferConfig | None = None) -> None:
        super().__init__()
        config = StyleTransferConfig() if config is None else config
        self.config = config
        content, style = config.content, config.style
        content_ae, style_ae = content.autoencoder, style.autoencoder
        content_channels = 2 * content_ae.z_channels if content_ae.double_z else content_ae.z_channels
        style_channels = 2 * style_ae.z_channels if style_ae.double_z else style_ae.z_channels
        self.encoder = Encoder(content_ae)
        self.quant_conv = nn.Conv2d(content_channels, content.quantizer.embed_dim, kernel_size=1)
        self.encoder_real = Encoder(style_ae)
        self.quant_conv_real = nn.Conv2d(style_channels, style.quantizer.embed_dim, kernel_size=1)
        if not config.continuous:
            self.quantize_enc = VectorQuantizer(content.quantizer)
            self.quantize_dec = VectorQuantizer(style.quantizer)
        self.post_quant_conv = nn.Conv2d(style.quantizer.embed_dim, style_ae.z_channels, kernel_size=1)
        self.decoder = Decoder(style_ae)
        self.model_x2y = StyleGuidedAttention(
            config.embed_dim, num_blocks=config.sga_blocks, residual=config.use_residual,
            padding_mode=config.sga_padding,
        )
        self.freeze_pretrained()

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_vqgans(
        cls,
        content: VQGAN,
        style: VQGAN,
        *,
        sga_blocks: int = 6,
        use_residual: bool = True,
        continuous: bool = False,
        sga_padding: str = "zeros",
    ) -> StyleTransfer:
        """Assemble from a content (photo) VQGAN and a style (art) VQGAN, as the original does.

        content: encoder, quant_conv, quantize -> quantize_enc; style: encoder -> encoder_real,
        quant_conv -> quant_conv_real, quantize -> quantize_dec, post_quant_conv, decoder. The
        copies are frozen; ``model_x2y`` starts from PyTorch's default init.
        """
        config = StyleTransferConfig(
            content=content.config,
            style=style.config,
            sga_blocks=sga_blocks,
            use_residual=use_residual,
            continuous=continuous,
            sga_padding=sga_padding,
        )
        model = cls(config).to(device=content.last_layer.device)
        sources: dict[str, nn.Module] = {
            "encoder": content.encoder,
            "quant_conv": content.quant_conv,
            "encoder_real": style.encoder,
            "quant_conv_real": style.quant_conv,
            "post_quant_conv": style.post_quant_conv,
            "decoder": style.decoder,
        }
        if not continuous:
            sources["quantize_enc"] = content.quantize
            sources["quantize_dec"] = style.quantize
        for name, source in sources.items():
            getattr(model, name).load_state_dict(source.state_dict(), strict=True)
        model.freeze_pretrained()
        return model

    def _pretrained_modules(self) -> Iterator[nn.Module]:
        for name in (*_CONTENT_PARTS, *_STYLE_PARTS):
            module = getattr(self, name, None)
            if module is not None:
                yield module

    def freeze_pretrained(self) -> None:
        """Stop gradients into every part taken from the stage-1 models and keep them in eval mode."""
        for module in self._pretrained_modules():
            module.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True) -> StyleTransfer:
        super().train(mode)
        for module in self._pretrained_modules():
            module.eval()  # frozen parts never switch to training behaviour
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters stage 2 trains: those of ``model_x2y``."""
        return self.model_x2y.parameters()

    @property
    def downsample_factor(self) -> int:
        return self.config.style.autoencoder.downsample_factor

    # -- inference ----------------------------------------------------------------------------

    def encode_content(self, x: Tensor, run_encoder: EncoderRunner | None = None) -> tuple[Tensor, Tensor | None]:
        """Photo -> (quant_x, indices_x) in the content codebook (continuous: (latent, None)).

        ``run_encoder(encoder, x)`` replaces ``encoder(x)`` (the stylize engine passes a tiled runner).
        """
        autoencoder = self.config.content.autoencoder
        check_images(x, autoencoder.in_channels, autoencoder.downsample_factor, "content image")
        quantizer = getattr(self, "quantize_enc", None)
        return self._encode(self.encoder, self.quant_conv, quantizer, x, run_encoder)

    def encode_style(self, ref: Tensor, run_encoder: EncoderRunner | None = None) -> tuple[Tensor, Tensor | None]:
        """Style image -> (quant_ref, indices_ref) in the style codebook (continuous: (latent, None))."""
        autoencoder = self.config.style.autoencoder
        check_images(ref, autoencoder.in_channels, autoencoder.downsample_factor, "style image")
        quantizer = getattr(self, "quantize_dec", None)
        return self._encode(self.encoder_real, self.quant_conv_real, quantizer, ref, run_encoder)

    def _encode(
        self, encoder: Encoder, quant_conv: nn.Module, quantizer: nn.Module | None, x: Tensor,
        run_encoder: EncoderRunner | None,
    ) -> tuple[Tensor, Tensor | None]:
        with torch.no_grad():
            features = encoder(x) if run_encoder is None else run_encoder(encoder, x)
            latent = quant_conv(features)
            if quantizer is None:  # the continuous model has no quantizers
                return latent.contiguous(), None
            quant, _, info = quantizer(latent)
        return quant.contiguous(), info.indices

    def prepare_style(
        self, ref: Tensor | Sequence[Tensor], weights: Sequence[float] | None = None
    ) -> PreparedReference:
        """Encode style image(s) and precompute their attention keys/values for :meth:`stylize_latent`."""
        refs = [ref] if isinstance(ref, Tensor) else list(ref)
        latents = [self.encode_style(r)[0] for r in refs]
        return self.model_x2y.prepare_reference(latents, weights)

    def stylize_latent(
        self,
        quant_x: Tensor,
        reference: Tensor | Sequence[Tensor] | PreparedReference,
        weights: Sequence[float] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, QuantizerInfo | None]:
        """Content latent + style latent(s) -> (h_x, quant_y, vq_loss, info of quantize_dec or None).

        Works from cached latents (stage-2 training) and with a :class:`PreparedReference`.
        """
        h_x = self.model_x2y(quant_x, reference, weights)
        if self.config.continuous:
            return h_x, h_x, h_x.new_zeros(()), None
        quant_y, vq_loss, info = self.quantize_dec(h_x)
        return h_x, quant_y, vq_loss, info

    def transfer(
        self, x: Tensor, ref: Tensor | Sequence[Tensor], weights: Sequence[float] | None = None
    ) -> TransferResult:
        """Content image(s) + style image(s) -> all latents of the transfer (see :class:`TransferResult`).

        Several style images are blended with ``weights`` (normalized to sum 1; equal when None).
        """
        quant_x, indices_x = self.encode_content(x)
        single = isinstance(ref, Tensor)
        encoded = [self.encode_style(r) for r in ([ref] if single else list(ref))]
        quant_refs = [q for q, _ in encoded]
        h_x, quant_y, vq_loss, info = self.stylize_latent(quant_x, quant_refs, weights)
        return TransferResult(
            quant_x=quant_x,
            quant_ref=quant_refs[0] if single else tuple(quant_refs),
            h_x=h_x.contiguous(),
            quant_y=quant_y.contiguous(),
            indices_y=None if info is None else info.indices,
            vq_loss=vq_loss,
            indices_x=indices_x,
            indices_ref=encoded[0][1] if single else tuple(i for _, i in encoded),
            usage_y=None if info is None else info.usage,
        )

    def decode(self, quant: Tensor) -> Tensor:
        """Art-space latent (B, embed_dim, h, w) -> image, with the style VQGAN's decoder."""
        return self.decoder(self.post_quant_conv(quant)).contiguous()

    def forward(self, x: Tensor, ref: Tensor | Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
        """Stylized image: ``decode(transfer(x, ref, weights).quant_y)``."""
        return self.decode(self.transfer(x, ref, weights).quant_y)
