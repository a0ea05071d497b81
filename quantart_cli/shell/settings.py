"""Stage settings: the base every stage's settings inherit, and where their values come from.

Values come in layers, lowest first: model defaults < the user config file < a preset < environment
(``QUANTART_<OPTION>``, nested with ``__``) < command-line flags and ``--set key=value``. Each layer is a table of
values with the source of each; :func:`resolve_settings` merges them, validates once, and keeps every value's
source for ``--print-config``. Every layer forbids unknown keys and suggests the closest known one. A settings
model reads nothing by itself: ``Settings(...)`` in Python holds exactly what it is given.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from quantart_cli.core.errors import UsageError
from quantart_cli.core.io.limits import is_web_address, web_address_sentence
from quantart_cli.shell.fields import (
    check_keys,
    did_you_mean,
    field_at,
    flatten,
    is_model,
    is_text,
    known_keys,
    option_label,
    set_dotted,
    takes_paths,
    unwrap_optional,
)
from quantart_cli.shell.presets import find_preset, load_preset, read_toml

ENV_PREFIX = "QUANTART_"
ENV_NESTED = "__"
#: Variables read by the CLI shell itself rather than by a stage's settings.
GLOBAL_ENV_VARS = frozenset(
    {
        "QUANTART_DEBUG",
        "QUANTART_QUIET",
        "QUANTART_CONFIG_DIR",
        "QUANTART_CACHE_DIR",
        "QUANTART_RUNS_DIR",
        "QUANTART_NO_PLUGINS",
    }
)

DEVICE_HELP = "Device: auto (CUDA when present), cpu, cuda, cuda:N or mps."


def _check_device(value: str) -> str:
    name = value.strip().lower()
    if name in {"auto", "cpu", "cuda", "mps"}:
        return name
    if name.startswith("cuda:") and name[5:].isdigit():
        return name
    raise ValueError("allowed values are auto, cpu, cuda, cuda:N and mps")


class StageSettings(BaseModel):
    """Base of every stage's settings: strict keys, a device, comma lists, no web address for a path."""

    model_config = ConfigDict(
        extra="forbid",
        validate_default=True,
        arbitrary_types_allowed=True,
        protected_namespaces=("model_validate", "model_dump"),
        # Validators are built on the first validation, not at import: --help reads the fields only.
        defer_build=True,
    )

    device: str = Field("auto", description=DEVICE_HELP)

    @model_validator(mode="before")
    @classmethod
    def _split_comma_lists(cls, data: Any) -> Any:
        """``"0.7,0.3"`` from a flag or an environment variable fills a list field."""
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            value = data.get(name)
            inner, _ = unwrap_optional(field.annotation)
            if isinstance(value, str) and typing.get_origin(inner) in (list, tuple):
                data[name] = [part.strip() for part in value.split(",") if part.strip()]
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _no_web_addresses(cls, value: Any, info: ValidationInfo) -> Any:
        """A URL given for a path (``--style https://...``) is refused as one: as a path it would lose a slash
        and be reported missing."""
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and takes_paths(field.annotation):
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, str) and is_web_address(item):
                    raise ValueError(web_address_sentence(item))
        return value

    @field_validator("device")
    @classmethod
    def _valid_device(cls, value: str) -> str:
        return _check_device(value)


# --------------------------------------------------------------------------------------------------------------
# The layers


@dataclass(frozen=True)
class Source:
    """Where a value came from: ``default``, ``config`` (the user config file), ``preset``, ``env`` or ``cli``,
    with a detail (file, variable)."""

    kind: Literal["default", "config", "preset", "env", "cli"]
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} ({self.detail})" if self.detail else self.kind


@dataclass
class Layer:
    """One place settings come from: its values as nested tables, and the source of each dotted key."""

    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    sources: dict[str, Source] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, values: dict[str, Any], source: Source) -> Layer:
        """Every value from the one ``source`` (a file)."""
        return cls(values, {key: source for key in flatten(values)})

    def set(self, dotted: str, value: Any, source: Source) -> None:
        set_dotted(self.values, dotted, value)
        self.sources[dotted] = source


def config_layer(path: Path, table: str, model: type[BaseModel]) -> Layer:
    """The ``[table]`` of the user config file (empty when the file or table is absent); unknown keys are
    refused, relative paths are taken from the file's folder."""
    if not path.is_file():
        return Layer()
    data = read_toml(path, "the user config", UsageError).get(table, {})
    if not isinstance(data, dict):
        raise UsageError(f"{table} in the user config {path} must be a table ([{table}]), not a single value.")
    check_keys(data, model, f"the [{table}] table of {path}")
    _paths_from(data, model, path.parent)
    return Layer.of(data, Source("config", str(path)))


def preset_layer(path: Path, model: type[BaseModel]) -> Layer:
    data, _ = load_preset(path, model)
    return Layer.of(data, Source("preset", str(path)))


def environment_layer(model: type[BaseModel], environ: Mapping[str, str], all_known: Iterable[str] = ()) -> Layer:
    """``QUANTART_ALPHA=0.5`` sets ``alpha``; ``QUANTART_LOSS__DISC_START=0`` sets ``loss.disc_start``. A
    ``QUANTART_*`` variable that no stage knows is a typo: refused with the closest known name."""
    known = {k.replace(".", ENV_NESTED).upper(): k for k in known_keys(model)}
    everywhere = set(known) | {k.replace(".", ENV_NESTED).upper() for k in all_known}
    layer = Layer()
    for var, raw in environ.items():
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX) or upper in GLOBAL_ENV_VARS:
            continue
        name = upper[len(ENV_PREFIX) :]
        if name in known:
            layer.set(known[name], parse_value(raw, model, known[name]), Source("env", var))
        elif name not in everywhere:
            candidates = [ENV_PREFIX + k for k in everywhere] + sorted(GLOBAL_ENV_VARS)
            raise UsageError(f"Unknown environment variable {var}.{did_you_mean(upper, candidates)}")
    return layer


def command_line_layer(model: type[BaseModel], flags: Mapping[str, Any], set_items: Iterable[str] = ()) -> Layer:
    """The flags given (None: not given) and ``--set key=value`` items, which may name nested keys."""
    layer = Layer()
    for name, value in flags.items():
        if value is not None:
            layer.set(name, value, Source("cli"))
    known = known_keys(model)
    for item in set_items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects key=value, got {item!r}.")
        if key not in known:
            raise UsageError(f"Unknown setting {key!r} in --set.{did_you_mean(key, known)}")
        layer.set(key, parse_value(raw, model, key), Source("cli"))
    return layer


def parse_scalar(text: str) -> Any:
    """Parse a ``--set`` or environment value: TOML/JSON literals when they parse, else the raw string."""
    stripped = text.strip()
    try:
        return tomllib.loads(f"v = {stripped}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return json.loads(stripped)
    except ValueError:
        return text


def parse_value(text: str, model: type[BaseModel], dotted: str) -> Any:
    """:func:`parse_scalar`, except that a text field keeps the text: ``--set out=2024`` is the folder "2024",
    not the number (arrays and tables stay what they are, and are refused by the field's type)."""
    value = parse_scalar(text)
    found = field_at(model, dotted)
    if found is not None and is_text(found.annotation) and isinstance(value, (bool, int, float)):
        return text.strip()
    return value


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def _paths_from(data: dict[str, Any], model: type[BaseModel], base: Path) -> None:
    """Make relative path values in ``data`` relative to ``base`` (in place), following nested tables."""
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        inner, _ = unwrap_optional(field.annotation)
        if is_model(inner) and isinstance(value, dict):
            _paths_from(value, inner, base)
            continue
        is_list = typing.get_origin(inner) is list
        element = typing.get_args(inner)[0] if is_list and typing.get_args(inner) else inner
        if element is not Path:
            continue

        def anchored(item: Any) -> Any:
            if not isinstance(item, str) or not item or _SCHEME.match(item):
                return item  # a name with a scheme (a web address, builtin:art) is not a relative path
            path = Path(item).expanduser()
            return str(path if path.is_absolute() else base / path)

        data[key] = [anchored(v) for v in value] if is_list and isinstance(value, list) else anchored(value)


# --------------------------------------------------------------------------------------------------------------
# Resolution


@dataclass
class ResolvedSettings:
    settings: StageSettings
    sources: dict[str, Source]
    preset_path: Path | None = None

    def source_of(self, dotted: str) -> Source:
        return self.sources.get(dotted, Source("default"))


def resolve_settings(
    model: type[StageSettings],
    *,
    stage: str,
    preset: str | None = None,
    flags: Mapping[str, Any] | None = None,
    set_items: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    user_preset_dir: Path | None = None,
    all_known_keys: Iterable[str] = (),
    user_config: Path | None = None,
    config_table: str | None = None,
) -> ResolvedSettings:
    """Merge defaults < user config < preset < environment < flags/--set, validate, and remember each
    value's source. The user config's table is ``config_table`` (the command's name; default ``stage``)."""
    layers: list[Layer] = []
    if user_config is not None:
        layers.append(config_layer(user_config, config_table or stage, model))
    preset_path = None
    if preset:
        preset_path = find_preset(stage, preset, user_preset_dir)
        layers.append(preset_layer(preset_path, model))
    layers.append(environment_layer(model, os.environ if environ is None else environ, all_known_keys))
    layers.append(command_line_layer(model, flags or {}, set_items))
    merged: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for layer in layers:
        _deep_merge(merged, layer.values)
        sources.update(layer.sources)
    _check_numbers(merged, model, model, sources)
    try:
        settings = model.model_validate(merged)
    except ValidationError as err:
        raise UsageError(format_validation_error(err, model, sources)) from err
    return ResolvedSettings(settings=settings, sources=sources, preset_path=preset_path)


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = dict(value) if isinstance(value, Mapping) else value
    return base


def format_validation_error(err: ValidationError, model: type[BaseModel], sources: Mapping[str, Source]) -> str:
    """One sentence: the option, what is allowed, the offending value and where it came from."""
    first = err.errors()[0]
    dotted = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))
    label = option_label(dotted, model) if dotted else "settings"
    message = first["msg"]
    if first["type"] == "missing":
        return f"Missing required value for {label}."
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if not dotted:  # a rule between options (its sentence names them)
        return message[:1].upper() + message[1:].rstrip(".") + "."
    source = sources.get(dotted)
    origin = f" (from {source})" if source and source.kind != "cli" else ""
    value = first.get("input")
    shown = f"; got {value!r}" if value is not None and not isinstance(value, dict) else ""
    items = value if isinstance(value, list) else [value]
    if any(isinstance(item, str) and item and item in message for item in items):
        shown = ""  # the sentence quotes the value already
    return f"Invalid value for {label}{origin}: {message}{shown}."


def _check_numbers(
    data: Mapping[str, Any],
    model: type[BaseModel],
    root: type[BaseModel],
    sources: Mapping[str, Source],
    prefix: str = "",
) -> None:
    """Refuse what pydantic's lax mode lets through for numbers: ``true`` as 1, and inf / nan."""
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        dotted = prefix + key
        inner, _ = unwrap_optional(field.annotation)
        if is_model(inner):
            if isinstance(value, Mapping):
                _check_numbers(value, inner, root, sources, dotted + ".")
            continue
        kinds = [inner]
        if typing.get_origin(inner) in (list, tuple):
            kinds = [a for a in typing.get_args(inner) if a is not Ellipsis]
            values = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else []
        else:
            values = [value]
        numeric = [k for k in kinds if k in (int, float)]
        if not numeric:
            continue
        for item in values:
            problem = None
            if isinstance(item, str):  # a comma list or a flag's text: pydantic would read "inf" as a float
                try:
                    item = float(item)
                except ValueError:
                    continue  # not a number at all: pydantic's own message names it
            if isinstance(item, bool):
                problem = "expected a number, not true/false"
            elif isinstance(item, float) and not math.isfinite(item):
                problem = "expected a finite number"
            if problem:
                source = sources.get(dotted)
                origin = f" (from {source})" if source and source.kind != "cli" else ""
                raise UsageError(f"Invalid value for {option_label(dotted, root)}{origin}: {problem}; got {item!r}.")


def render_config(resolved: ResolvedSettings) -> str:
    """The resolved settings as TOML with each value's source as a trailing comment (a valid preset)."""
    data = resolved.settings.model_dump(mode="json")
    lines: list[str] = []

    def emit(table: Mapping[str, Any], prefix: str) -> None:
        nested = []
        for key, value in table.items():
            dotted = prefix + key
            if isinstance(value, Mapping):
                nested.append((dotted, value))
                continue
            if value is None:
                lines.append(f"# {key} = (unset)  # {resolved.source_of(dotted)}")
                continue
            lines.append(f"{key} = {_toml_value(value)}  # {resolved.source_of(dotted)}")
        for dotted, value in nested:
            lines.append("")
            lines.append(f"[{dotted}]")
            emit(value, dotted + ".")

    emit(data, "")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if value is None:  # an empty entry of a list lined up with another (TOML has no null)
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))
