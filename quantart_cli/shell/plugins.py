"""The stage protocol and its discovery through the ``quantart.stages`` entry-point group.

A stage is a self-contained subcommand: a name, a one-line help, a settings model and a run function.
Built-in stages are registered through the same entry-point group as third-party ones, so the CLI has no
special case for its own. A plugin that fails to load produces one warning and never breaks the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quantart_cli.shell.console import Console
    from quantart_cli.shell.paths import Paths
    from quantart_cli.shell.settings import ResolvedSettings, StageSettings

ENTRY_POINT_GROUP = "quantart.stages"
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass
class RunContext:
    """What a stage's run function receives besides its settings."""

    console: Console
    paths: Paths
    resolved: ResolvedSettings
    stage_name: str

    @property
    def quiet(self) -> bool:
        return self.console.quiet


RunFunction = Callable[["StageSettings", RunContext], "int | None"]


@dataclass(frozen=True)
class Stage:
    """A subcommand. ``settings`` fields become its options; fields made with ``cli_argument`` are positional."""

    name: str
    help: str
    settings: type[StageSettings]
    run: RunFunction
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"stage name {self.name!r} must be lowercase letters, digits and dashes")
        if not self.help or "\n" in self.help.strip():
            raise ValueError(f"stage {self.name!r} needs a one-line help")


@dataclass
class LoadedStage:
    stage: Stage
    entry_point: str
    distribution: str


@dataclass
class BrokenPlugin:
    entry_point: str
    value: str
    distribution: str
    error: str


@dataclass
class Discovery:
    stages: dict[str, LoadedStage] = field(default_factory=dict)
    broken: list[BrokenPlugin] = field(default_factory=list)


def _distribution_name(entry_point: metadata.EntryPoint, named: dict[int, str]) -> str:
    """``quantart 0.1.0``; ``named`` keeps each distribution's name, read once (its metadata file is parsed)."""
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "unknown"
    if id(dist) not in named:
        named[id(dist)] = f"{dist.metadata['Name']} {dist.version}"
    return named[id(dist)]


def _coerce_stage(obj: Any) -> Stage:
    """An entry point may name a Stage or a zero-argument factory returning one."""
    if isinstance(obj, Stage):
        return obj
    if callable(obj):
        made = obj()
        if isinstance(made, Stage):
            return made
    raise TypeError(f"expected a quantart_cli.plugin.Stage, got {type(obj).__name__}")


def discover_stages(extra: list[Stage] | None = None, group: str = ENTRY_POINT_GROUP) -> Discovery:
    """Load every stage of the entry-point group. Failures are collected, never raised."""
    found = Discovery()
    seen_values: set[tuple[str, str]] = set()
    named: dict[int, str] = {}
    for ep in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
        # The same distribution can be visible twice (e.g. an editable install plus a checkout on sys.path).
        if (ep.name, ep.value) in seen_values:
            continue
        seen_values.add((ep.name, ep.value))
        dist = _distribution_name(ep, named)
        try:
            stage = _coerce_stage(ep.load())
        except Exception as err:  # a broken plugin must not break the CLI
            found.broken.append(BrokenPlugin(ep.name, ep.value, dist, f"{type(err).__name__}: {err}"))
            continue
        if stage.name in found.stages:
            other = found.stages[stage.name]
            clash = f"stage name {stage.name!r} already provided by {other.distribution}"
            found.broken.append(BrokenPlugin(ep.name, ep.value, dist, clash))
            continue
        found.stages[stage.name] = LoadedStage(stage, ep.value, dist)
    for stage in extra or []:
        origin = f"{stage.run.__module__}:{stage.run.__name__}"
        found.stages[stage.name] = LoadedStage(stage, origin, "registered in code")
    return found
