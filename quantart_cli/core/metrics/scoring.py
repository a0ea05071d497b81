"""Scoring a set of stylizations: each (output, photo, painting) triple, then each group (one alpha).

:data:`METRICS` defines every figure ``quantart evaluate`` reports: its direction (lower or higher is better,
or a reference value to read another against), unit, level (one per pair, or one per group) and the network
it needs (:data:`NETWORK_LABELS` names each). :func:`score_triples` computes them; figures whose network could
not be loaded are reported as unavailable with the reason, and the network-free ones are always there. Same
inputs, same numbers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from quantart_cli.core.errors import BadInputError, QuantartError
from quantart_cli.core.metrics import networks as nets
from quantart_cli.core.metrics.style import (
    ColourProfiles,
    color_histogram_distance,
    color_quantiles,
    luminance_ssim,
    mean_abs_diff,
    swd_between,
)
from quantart_cli.core.metrics.texture import TextureProfiles, gradient_energy, texture_profile, texture_swd_between
from quantart_cli.core.metrics.vgg_metrics import BundledVGGMetrics, build_bundled_vgg19

__all__ = [
    "METRICS",
    "NETWORK_LABELS",
    "EvaluationResult",
    "MetricInfo",
    "Networks",
    "Triple",
    "load_networks",
    "score_triples",
]

Direction = Literal["lower", "higher", "reference"]
NetworkMode = Literal["auto", "off", "random"]


@dataclass(frozen=True)
class MetricInfo:
    name: str
    direction: Direction
    unit: str
    level: Literal["pair", "group"]
    needs: tuple[str, ...]
    description: str


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("color_swd", "lower", "RGB [0,1]", "pair", (),
               "sliced Wasserstein distance of the output's colours to the painting's"),
    MetricInfo("photo_swd", "reference", "RGB [0,1]", "pair", (),
               "the same distance from the photo itself: what color_swd starts from"),
    MetricInfo("swd_ratio", "lower", "ratio", "pair", (),
               "color_swd / photo_swd: below 1 the colours moved toward the painting"),
    MetricInfo("color_hist", "lower", "Hellinger [0,1]", "pair", (),
               "distance between the output's and the painting's RGB histograms (8 bins per channel)"),
    MetricInfo("content_ssim", "higher", "SSIM [-1,1]", "pair", (),
               "luminance SSIM of the output to its photo: how much of the photo's structure is kept"),
    MetricInfo("texture_ratio", "lower", "ratio", "pair", (),
               "sliced Wasserstein distance of the output's mean-free 7x7 patches to the painting's (at 256, 128 "
               "and 64 px) / the photo's: below 1 the texture moved toward the painting"),
    MetricInfo("detail", "higher", "ratio", "pair", (),
               "mean Sobel gradient of the output's luminance / the painting's, at 256 px: below 1 softer than "
               "the painting"),
    MetricInfo("photo_detail", "reference", "ratio", "pair", (),
               "the same for the photo itself: the detail the output starts from"),
    MetricInfo("painting_dependence", "higher", "grey levels 0-255", "group", (),
               "mean difference between one photo's outputs for different paintings (0: the painting is ignored)"),
    MetricInfo("vgg_style_loss", "lower", "bundled VGG19 mean/std", "pair", ("vgg19_bundled",),
               "AdaIN's mean/std style loss of the output to the painting over relu1_1..relu4_1, with the bundled "
               "VGG19 weights (offline; the stage-2 training term)"),
    MetricInfo("vgg_content_loss", "lower", "bundled VGG19 MSE", "pair", ("vgg19_bundled",),
               "mean squared difference of the output's and the photo's relu4_1 features, bundled VGG19 weights"),
    MetricInfo("vgg_cfsd", "lower", "bundled VGG19 KL", "pair", ("vgg19_bundled",),
               "content feature structural distance (StyleID's definition) of the output to its photo at relu3_1 "
               "(at most 64x64 positions), bundled VGG19 weights"),
    MetricInfo("lpips", "lower", "LPIPS", "pair", ("lpips",),
               "LPIPS (AlexNet) of the output to its photo: content distance"),
    MetricInfo("style_loss", "lower", "VGG19 mean/std", "pair", ("vgg19",),
               "AdaIN's mean/std style loss of the output to the painting over VGG19 relu1_1..relu5_1"),
    MetricInfo("cfsd", "lower", "KL", "pair", ("vgg19",),
               "content feature structural distance (StyleID) of the output to its photo, VGG19 relu3_1"),
    MetricInfo("fid", "lower", "FID", "group", ("inception",),
               "Fréchet Inception distance of the outputs to the paintings (pytorch-fid; needs many images)"),
    MetricInfo("art_fid", "lower", "ArtFID", "group", ("lpips", "inception"),
               "(1 + mean lpips) x (1 + fid), Wright & Ommer 2022"),
)


@dataclass
class Networks:
    """The pretrained networks available to this evaluation; ``missing`` says why any other is absent."""

    vgg19_bundled: nn.Module | None = None
    lpips: nn.Module | None = None
    vgg19: nets.VGGFeatures | None = None
    inception: nn.Module | None = None
    missing: dict[str, str] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return getattr(self, name) is not None


#: How a table names the weights behind a metric.
NETWORK_LABELS = {
    "vgg19_bundled": "bundled VGG19, offline",
    "lpips": "LPIPS AlexNet",
    "vgg19": "torchvision VGG19",
    "inception": "pytorch-fid Inception",
}

_BUILDERS: dict[str, Callable[[bool], nn.Module]] = {
    "vgg19_bundled": build_bundled_vgg19,
    "lpips": nets.build_lpips_alex,
    "vgg19": nets.build_vgg19,
    "inception": nets.build_fid_inception,
}


def load_networks(mode: NetworkMode = "auto", device: torch.device | str = "cpu") -> Networks:
    """``auto``: the pretrained networks, the bundled VGG19 from the installed files and the others downloaded
    on first use; one that cannot be had is recorded as missing with its one-sentence reason. ``off``: none.
    ``random``: randomly initialised ones (tests of the plumbing; the figures mean nothing)."""
    found = Networks()
    for name, build in _BUILDERS.items():
        if mode == "off":
            found.missing[name] = "pretrained networks are turned off (--networks off)"
            continue
        try:
            setattr(found, name, build(mode != "random").to(device))
        except QuantartError as err:
            found.missing[name] = str(err)
    return found


@dataclass(frozen=True)
class Triple:
    """One stylization to score: its output, photo and painting (1, 3, H, W) in [-1, 1], and labels."""

    group: str
    content: str
    style: str
    stylized: str
    output: Tensor
    photo: Tensor
    painting: Tensor


@dataclass
class EvaluationResult:
    metrics: dict[str, dict[str, Any]]
    groups: dict[str, dict[str, float | None]]
    pairs: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        """Stable keys: ``metrics`` (name -> direction, unit, level, available, reason, description),
        ``groups`` (group -> name -> value; ``null`` when unavailable), ``pairs`` (one row per triple)."""
        return {"metrics": self.metrics, "groups": self.groups, "pairs": self.pairs}


def score_triples(
    stream: Iterable[Triple], networks: Networks, progress: Callable[[], None] | None = None
) -> EvaluationResult:
    """Every metric of :data:`METRICS` for the triples ``stream`` yields (scored as they come, so a generator
    that stylizes them is scored along); ``progress()`` is called once per scored triple."""
    available, reasons = _availability(networks)
    triples: list[Triple] = []
    rows: list[dict[str, Any]] = []
    kept = _Kept(ColourProfiles(), TextureProfiles(),  # the photos' and paintings' profiles, each made once
                 BundledVGGMetrics(networks.vgg19_bundled) if networks.has("vgg19_bundled") else None)
    for triple in stream:
        triples.append(triple)
        rows.append(_score_pair(triple, networks, available, kept))
        if progress is not None:
            progress()
    if not triples:
        raise BadInputError("There is nothing to score: no photo x painting pair and no manifest row.")
    groups: dict[str, dict[str, float | None]] = {}
    for group in dict.fromkeys(t.group for t in triples):
        members = [(t, r) for t, r in zip(triples, rows, strict=True) if t.group == group]
        groups[group] = _score_group(members, networks, available)
    group_needs = {
        "painting_dependence": "needs a photo stylized after at least two paintings in one group",
        "fid": f"needs at least {nets.FID_MIN_IMAGES} outputs and {nets.FID_MIN_IMAGES} paintings in one group "
               "(and hundreds for a meaningful value)",
    }
    group_needs["art_fid"] = group_needs["fid"]
    for name, why in group_needs.items():
        if name in available and all(values.get(name) is None for values in groups.values()):
            available.discard(name)
            reasons[name] = why
    metrics = {
        m.name: {
            "direction": m.direction,
            "unit": m.unit,
            "level": m.level,
            "available": m.name in available,
            "reason": reasons.get(m.name),
            "description": m.description,
        }
        for m in METRICS
    }
    return EvaluationResult(metrics=metrics, groups=groups, pairs=rows)


def _availability(networks: Networks) -> tuple[set[str], dict[str, str]]:
    available: set[str] = set()
    reasons: dict[str, str] = {}
    for metric in METRICS:
        missing = [n for n in metric.needs if not networks.has(n)]
        if missing:
            reasons[metric.name] = networks.missing.get(missing[0], f"the {missing[0]} network is not loaded")
        else:
            available.add(metric.name)
    return available, reasons


@dataclass
class _Kept:
    """What scoring keeps of each photo and painting (by path) while it goes through the triples."""

    colours: ColourProfiles
    textures: TextureProfiles
    bundled_vgg: BundledVGGMetrics | None


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def _score_pair(t: Triple, networks: Networks, available: set[str], kept: _Kept) -> dict[str, Any]:
    profiles, textures = kept.colours, kept.textures
    painting = profiles(("painting", t.style), t.painting)
    swd = swd_between(color_quantiles(t.output), painting)  # each output is compared once: not kept
    base = swd_between(profiles(("photo", t.content), t.photo), painting)
    painting_texture = textures(("painting", t.style), t.painting)
    painting_detail = gradient_energy(t.painting)
    row: dict[str, Any] = {
        "group": t.group, "content": t.content, "style": t.style, "stylized": t.stylized,
        "color_swd": swd,
        "photo_swd": base,
        "swd_ratio": swd / base if base > 0 else math.nan,
        "color_hist": color_histogram_distance(t.output, t.painting),
        "content_ssim": luminance_ssim(t.output, t.photo),
        "texture_ratio": _ratio(texture_swd_between(texture_profile(t.output, what="output"), painting_texture),
                                texture_swd_between(textures(("photo", t.content), t.photo), painting_texture)),
        "detail": _ratio(gradient_energy(t.output), painting_detail),
        "photo_detail": _ratio(gradient_energy(t.photo), painting_detail),
    }
    vgg = {}
    if kept.bundled_vgg is not None and "vgg_style_loss" in available:
        vgg = kept.bundled_vgg.score(t.output, t.photo, t.painting, photo_key=t.content, painting_key=t.style)
    for name in ("style_loss", "content_loss", "cfsd"):
        row[f"vgg_{name}"] = vgg.get(name)
    row["lpips"] = nets.lpips_distance(networks.lpips, t.output, t.photo) if "lpips" in available else None
    row["style_loss"] = nets.vgg_style_loss(networks.vgg19, t.output, t.painting) if "style_loss" in available else None
    row["cfsd"] = nets.cfsd(networks.vgg19, t.output, t.photo) if "cfsd" in available else None
    return row


def _score_group(
    members: Sequence[tuple[Triple, Mapping[str, Any]]], networks: Networks, available: set[str]
) -> dict[str, float | None]:
    values: dict[str, float | None] = {}
    for metric in METRICS:
        if metric.level == "pair":
            scored = [row[metric.name] for _, row in members if row[metric.name] is not None]
            values[metric.name] = _mean(scored) if scored and metric.name in available else None
    values["painting_dependence"] = _painting_dependence([t for t, _ in members])
    values["fid"] = values["art_fid"] = None
    if "fid" in available:
        outputs = [t.output for t, _ in members]
        paintings = list({t.style: t.painting for t, _ in members}.values())
        if min(len(outputs), len(paintings)) >= nets.FID_MIN_IMAGES:
            fid = nets.frechet_distance(nets.inception_features(networks.inception, outputs),
                                        nets.inception_features(networks.inception, paintings))
            values["fid"] = fid
            if values.get("lpips") is not None:
                values["art_fid"] = (1.0 + values["lpips"]) * (1.0 + fid)
    return values


def _painting_dependence(triples: Sequence[Triple]) -> float | None:
    """Mean absolute difference between outputs of the same photo after different paintings (None when no
    photo was stylized after two paintings)."""
    by_photo: dict[str, list[Triple]] = {}
    for t in triples:
        by_photo.setdefault(t.content, []).append(t)
    differences = []
    for same_photo in by_photo.values():
        for first, second in itertools.combinations(same_photo, 2):
            if first.style != second.style:
                other = second.output
                if other.shape != first.output.shape:
                    other = torch.nn.functional.interpolate(other, size=first.output.shape[-2:], mode="bilinear",
                                                            align_corners=False, antialias=True)
                differences.append(mean_abs_diff(first.output, other))
    return _mean(differences) if differences else None


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))

