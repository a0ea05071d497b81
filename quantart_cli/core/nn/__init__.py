"""Kernels shared by the QuantArt models (original taming / QuantArt parameter names)."""

from quantart_cli.core.nn.attention import AttentionContext, AttnBlock, attend, set_query_chunk_size
from quantart_cli.core.nn.autoencoder import Decoder, Encoder
from quantart_cli.core.nn.blocks import Downsample, ResnetBlock, Upsample, normalize, swish
from quantart_cli.core.nn.sga import PreparedReference, SGABlock, StyleGuidedAttention
from quantart_cli.core.nn.vq import QuantizerInfo, VectorQuantizer, code_usage, nearest_code_indices

__all__ = [
    "AttentionContext",
    "AttnBlock",
    "Decoder",
    "Downsample",
    "Encoder",
    "PreparedReference",
    "QuantizerInfo",
    "ResnetBlock",
    "SGABlock",
    "StyleGuidedAttention",
    "Upsample",
    "VectorQuantizer",
    "attend",
    "code_usage",
    "nearest_code_indices",
    "normalize",
    "set_query_chunk_size",
    "swish",
]
