"""Typed stage settings and their resolution from every source.

Precedence, lowest first: model defaults < preset file < environment (``QUANTART_<OPTION>``, nested with
``__``) < command-line flags and ``--set key=value``. Every level forbids unknown keys and suggests the
closest known one. ``resolve_settings`` also records where each value came from, for ``--print-config``.
"""

from __future__ import annotations

import contextvars
import difflib
import json
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from quantart_cli.core.errors import OPTION_MARK, NotFoundError, UsageError
from quantart_cli.core.io.limits import is_web_address, web_address_sentence

_RESOLVING: contextvars.ContextVar[bool] = contextvars.ContextVar("quantart_resolving", default=False)
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
PRESET_META_TABLE = "preset"

DEVICE_HELP = "Device: auto (CUDA when present), cpu, cuda, cuda:N or mps."


def _check_device(value: str) -> str:
    name = value.strip().lower()
    if name in {"auto", "cpu", "cuda", "mps"}:
        return name
    if name.startswith("cuda:") and name[5:].isdigit():
        return name
    raise ValueError("allowed values are auto, cpu, cuda, cuda:N and mps")


class StageSettings(BaseSettings):
    """Base of every stage's settings: strict keys, ``QUANTART_*`` environment, a device."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED, extra="forbid", validate_default=True
    )

    device: str = Field("auto", description=DEVICE_HELP)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):  # type: ignore[override]
        # resolve_settings() merges the environment itself (to record sources and reject typos), so during
        # resolution only the explicit values count; plain ``Settings()`` in Python still reads QUANTART_*.
        if _RESOLVING.get():
            return (init_settings,)
        return (init_settings, env_settings)

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
        if field is not None and _takes_paths(field.annotation):
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, str) and is_web_address(item):
                    raise ValueError(web_address_sentence(item))
        return value

    @field_validator("device")
    @classmethod
    def _valid_device(cls, value: str) -> str:
        return _check_device(value)


def _takes_paths(annotation: Any) -> bool:
    """Whether a field holds a path or a list of paths."""
    inner, _ = unwrap_optional(annotation)
    if typing.get_origin(inner) in (list, tuple):
        args = typing.get_args(inner)
        inner = args[0] if args else None
    return inner is Path


# --------------------------------------------------------------------------------------------------------------
# Introspection helpers shared with app.py (which turns fields into Typer options).


def field_extra(field: Any) -> dict[str, Any]:
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (annotation, False)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def is_model(annotation: Any) -> bool:
    annotation, _ = unwrap_optional(annotation)
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key a settings model accepts, nested models included."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        if is_model(field.annotation):
            keys.extend(_known_keys(unwrap_optional(field.annotation)[0], dotted + "."))
    return keys


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def option_label(dotted: str, model: type[BaseModel]) -> str:
    """How the user names a setting: ``--alpha`` for a flag, ``--set loss.disc_start`` for a nested one."""
    head = dotted.split(".")[0]
    field = model.model_fields.get(head)
    if "." not in dotted and field is not None:
        if field_extra(field).get("cli_argument"):
            return head.upper()
        if not is_model(field.annotation):
            return field_extra(field).get("cli_flag") or "--" + head.replace("_", "-")
    return f"--set {dotted}"


def spell_options(text: str, models: Sequence[type[BaseModel]]) -> str:
    """A library message as the command line says it: each option the core names by its field (`continuous_ckpt`,
    `device=cpu`, `loss.disc_start=0`) becomes its flag (--continuous-ckpt, --device cpu, --set loss.disc_start=0),
    as spelled by the first of ``models`` that has the field. A name none of them has stays as it is."""

    def spelled(match: re.Match[str]) -> str:
        dotted, value = match.group(1), match.group(2)
        model = next((m for m in models if _field_at(m, dotted) is not None), None)
        if model is None:
            return match.group(0)
        label = option_label(dotted, model)
        if value is None:
            return label
        if label.startswith("--set "):
            return f"{label}={value}"
        inner, _ = unwrap_optional(_field_at(model, dotted).annotation)
        if inner is bool and value.lower() in ("true", "false"):
            return label if value.lower() == "true" else f"--no-{label[2:]}"
        return f"{label} {value}"

    return OPTION_MARK.sub(spelled, text)


# --------------------------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class Source:
    """Where a value came from: ``default``, ``config`` (the user config file), ``preset``, ``env`` or ``cli``,
    with a detail (file, variable)."""

    kind: Literal["default", "config", "preset", "env", "cli"]
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} ({self.detail})" if self.detail else self.kind


def _check_keys(data: Mapping[str, Any], model: type[BaseModel], where: str, prefix: str = "") -> None:
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            known = [prefix + k for k in model.model_fields]
            raise UsageError(f"Unknown setting {prefix + key!r} in {where}.{did_you_mean(prefix + key, known)}")
        if isinstance(value, Mapping) and is_model(field.annotation):
            _check_keys(value, unwrap_optional(field.annotation)[0], where, prefix + key + ".")


def set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    """``target["a"]["b"] = value`` for ``dotted = "a.b"``, making the tables on the way."""
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables -> ``{"a.b": value}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = dict(value) if isinstance(value, Mapping) else value
    return base


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


def _field_at(model: type[BaseModel], dotted: str) -> Any:
    """The FieldInfo a dotted key names (None when it does not name one)."""
    field = None
    for part in dotted.split("."):
        if model is None:
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        inner, _ = unwrap_optional(field.annotation)
        model = inner if is_model(inner) else None
    return field


def _is_text(annotation: Any) -> bool:
    """str / Path fields, optional or in a list: any text is a valid value for them."""
    inner, _ = unwrap_optional(annotation)
    if typing.get_origin(inner) in (list, tuple):
        args = [a for a in typing.get_args(inner) if a is not Ellipsis]
        return len(args) == 1 and _is_text(args[0])
    return inner in (str, Path)


def parse_value(text: str, model: type[BaseModel], dotted: str) -> Any:
    """:func:`parse_scalar`, except that a text field keeps the text: ``--set out=2024`` is the folder "2024",
    not the number (arrays and tables stay what they are, and are refused by the field's type)."""
    value = parse_scalar(text)
    field = _field_at(model, dotted)
    if field is not None and _is_text(field.annotation) and isinstance(value, (bool, int, float)):
        return text.strip()
    return value


def parse_set_items(items: Iterable[str], model: type[BaseModel]) -> dict[str, Any]:
    """``["loss.disc_start=0", "steps=10"]`` -> nested dict, rejecting unknown keys with a hint."""
    known = _known_keys(model)
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects key=value, got {item!r}.")
        if key not in known:
            raise UsageError(f"Unknown setting {key!r} in --set.{did_you_mean(key, known)}")
        set_dotted(result, key, parse_value(raw, model, key))
    return result


def env_values(
    model: type[BaseModel], environ: Mapping[str, str], all_known: Iterable[str] = ()
) -> dict[str, tuple[str, Any]]:
    """Environment values for this model as ``{dotted key: (variable, value)}``.

    ``QUANTART_ALPHA=0.5`` sets ``alpha``; ``QUANTART_LOSS__DISC_START=0`` sets ``loss.disc_start``. A
    ``QUANTART_*`` variable that no stage knows is a typo: refused with the closest known name.
    """
    known = {k.replace(".", ENV_NESTED).upper(): k for k in _known_keys(model)}
    everywhere = set(known) | {k.replace(".", ENV_NESTED).upper() for k in all_known}
    found: dict[str, tuple[str, Any]] = {}
    for var, raw in environ.items():
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX) or upper in GLOBAL_ENV_VARS:
            continue
        name = upper[len(ENV_PREFIX) :]
        if name in known:
            found[known[name]] = (var, parse_value(raw, model, known[name]))
        elif name not in everywhere:
            candidates = [ENV_PREFIX + k for k in everywhere] + sorted(GLOBAL_ENV_VARS)
            raise UsageError(f"Unknown environment variable {var}.{did_you_mean(upper, candidates)}")
    return found


# --------------------------------------------------------------------------------------------------------------
# Presets


def builtin_preset_dir(stage: str) -> Path | None:
    """``presets/<stage>/`` inside the installed ``quantart_presets`` package (works from a wheel too)."""
    from importlib import resources

    try:
        root = resources.files("quantart_presets")
    except ModuleNotFoundError:
        return None
    folder = root / stage
    return Path(str(folder)) if folder.is_dir() else None


def list_presets(stage: str, user_dir: Path | None = None) -> dict[str, Path]:
    """Preset name -> file; user presets (config dir) shadow built-in ones of the same name."""
    found: dict[str, Path] = {}
    for folder in (builtin_preset_dir(stage), user_dir / stage if user_dir else None):
        if folder and folder.is_dir():
            for file in sorted(folder.glob("*.toml")):
                found[file.stem] = file
    return found


def find_preset(stage: str, name: str, user_dir: Path | None = None) -> Path:
    """Resolve ``--preset``: a built-in name, then a user preset, else a path to a TOML file."""
    available = list_presets(stage, user_dir)
    if name in available and os.sep not in name and not name.endswith(".toml"):
        return available[name]
    path = Path(name).expanduser()
    if path.suffix == ".toml" or os.sep in name or "/" in name:
        if path.is_file():
            return path
        raise NotFoundError(f"Preset file {path} does not exist.")
    names = ", ".join(sorted(available)) or "none"
    raise UsageError(f"Unknown preset {name!r} for {stage} (available: {names}).{did_you_mean(name, available)}")


def _read_toml(path: Path, what: str, unreadable: type[Exception]) -> dict[str, Any]:
    """Parse the TOML file ``path`` (described as ``what`` in errors); a file that cannot be read raises
    ``unreadable``, one that is not TOML a :class:`UsageError`."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise unreadable(f"Cannot read {what} {path}: {err}.") from err
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{what[0].upper()}{what[1:]} {path} is not valid TOML: {err}.") from err


def load_preset(path: Path, model: type[BaseModel]) -> tuple[dict[str, Any], str]:
    """Read a preset TOML; returns (settings data, description). Unknown keys are refused."""
    data = _read_toml(path, "preset", NotFoundError)
    meta = data.pop(PRESET_META_TABLE, {})
    if not isinstance(meta, dict) or set(meta) - {"description"}:
        raise UsageError(
            f"Preset {path}: the [{PRESET_META_TABLE}] table may only hold a description "
            "(settings go above it, at the top level or in their own tables)."
        )
    description = str(meta.get("description", ""))
    _check_keys(data, model, f"preset {path}")
    return data, description


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


def load_user_config(path: Path, table: str, model: type[BaseModel]) -> dict[str, Any]:
    """The ``[table]`` of the user config file (empty when the file or table is absent); unknown keys are
    refused, relative paths are taken from the file's folder."""
    if not path.is_file():
        return {}
    data = _read_toml(path, "the user config", UsageError).get(table, {})
    if not isinstance(data, dict):
        raise UsageError(f"{table} in the user config {path} must be a table ([{table}]), not a single value.")
    _check_keys(data, model, f"the [{table}] table of {path}")
    _paths_from(data, model, path.parent)
    return data


# --------------------------------------------------------------------------------------------------------------
# Resolution


@dataclass
class ResolvedSettings:
    settings: StageSettings
    sources: dict[str, Source]
    preset_path: Path | None = None

    def source_of(self, dotted: str) -> Source:
        return self.sources.get(dotted, Source("default"))


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
    merged: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    preset_path = None
    if user_config is not None:
        data = load_user_config(user_config, config_table or stage, model)
        _deep_merge(merged, data)
        sources.update({k: Source("config", str(user_config)) for k in flatten(data)})
    if preset:
        preset_path = find_preset(stage, preset, user_preset_dir)
        data, _ = load_preset(preset_path, model)
        _deep_merge(merged, data)
        sources.update({k: Source("preset", str(preset_path)) for k in flatten(data)})
    for dotted, (var, value) in env_values(model, os.environ if environ is None else environ, all_known_keys).items():
        set_dotted(merged, dotted, value)
        sources[dotted] = Source("env", var)
    cli: dict[str, Any] = {}
    for name, value in (flags or {}).items():
        if value is not None:
            cli[name] = value
    _deep_merge(cli, parse_set_items(set_items, model))
    _deep_merge(merged, cli)
    sources.update({k: Source("cli") for k in flatten(cli)})
    _check_numbers(merged, model, model, sources)
    token = _RESOLVING.set(True)
    try:
        settings = model.model_validate(merged)
    except ValidationError as err:
        raise UsageError(format_validation_error(err, model, sources)) from err
    finally:
        _RESOLVING.reset(token)
    return ResolvedSettings(settings=settings, sources=sources, preset_path=preset_path)


def known_keys(model: type[BaseModel]) -> list[str]:
    return _known_keys(model)


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
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))
