"""What the shell reads off a settings model's fields: dotted keys, how the command line spells each option,
and the same spelling put into the library's messages.

A stage declares one pydantic model; :mod:`.app` makes its flags from these helpers, :mod:`.settings` and
:mod:`.presets` check keys with them, and :func:`spell_options` turns the options a library message names by
field (`continuous_ckpt`) into the flags that set them.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from quantart_cli.core.errors import OPTION_MARK, UsageError


def field_extra(field: Any) -> dict[str, Any]:
    """The CLI details ``cli_option`` / ``cli_argument`` put on a field."""
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


def known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key a settings model accepts, nested models included."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        if is_model(field.annotation):
            keys.extend(known_keys(unwrap_optional(field.annotation)[0], dotted + "."))
    return keys


def field_at(model: type[BaseModel], dotted: str) -> Any:
    """The FieldInfo a dotted key names (None when it does not name one)."""
    field = None
    node: type[BaseModel] | None = model
    for part in dotted.split("."):
        if node is None:
            return None
        field = node.model_fields.get(part)
        if field is None:
            return None
        inner, _ = unwrap_optional(field.annotation)
        node = inner if is_model(inner) else None
    return field


def is_text(annotation: Any) -> bool:
    """str / Path fields, optional or in a list: any text is a valid value for them."""
    inner, _ = unwrap_optional(annotation)
    if typing.get_origin(inner) in (list, tuple):
        args = [a for a in typing.get_args(inner) if a is not Ellipsis]
        return len(args) == 1 and is_text(args[0])
    return inner in (str, Path)


def takes_paths(annotation: Any) -> bool:
    """Whether a field holds a path or a list of paths."""
    inner, _ = unwrap_optional(annotation)
    if typing.get_origin(inner) in (list, tuple):
        args = typing.get_args(inner)
        inner = unwrap_optional(args[0])[0] if args else None
    return inner is Path


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_keys(data: Mapping[str, Any], model: type[BaseModel], where: str, prefix: str = "") -> None:
    """Refuse a key ``model`` does not have (nested tables too), with the closest known one."""
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            known = [prefix + k for k in model.model_fields]
            raise UsageError(f"Unknown setting {prefix + key!r} in {where}.{did_you_mean(prefix + key, known)}")
        if isinstance(value, Mapping) and is_model(field.annotation):
            check_keys(value, unwrap_optional(field.annotation)[0], where, prefix + key + ".")


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


def option_label(dotted: str, model: type[BaseModel]) -> str:
    """How the user names a setting: ``--alpha`` for a flag, ``--set loss.disc_start`` for a nested one."""
    head = dotted.split(".")[0]
    field = model.model_fields.get(head)
    if "." not in dotted and field is not None:
        if field_extra(field).get("cli_argument"):
            return head.upper()
        if not is_model(field.annotation):
            return flag_of(head, field)
    return f"--set {dotted}"


def flag_of(name: str, field: Any) -> str:
    """The command-line flag of a settings field: its ``cli_flag``, else ``--`` and the name with dashes."""
    return field_extra(field).get("cli_flag") or "--" + name.replace("_", "-")


def spell_options(text: str, models: Sequence[type[BaseModel]]) -> str:
    """A library message as the command line says it: each option the core names by its field (`continuous_ckpt`,
    `device=cpu`, `loss.disc_start=0`) becomes its flag (--continuous-ckpt, --device cpu, --set loss.disc_start=0),
    as spelled by the first of ``models`` that has the field. A name none of them has stays as it is."""

    def spelled(match: re.Match[str]) -> str:
        dotted, value = match.group(1), match.group(2)
        model = next((m for m in models if field_at(m, dotted) is not None), None)
        if model is None:
            return match.group(0)
        label = option_label(dotted, model)
        if value is None:
            return label
        if label.startswith("--set "):
            return f"{label}={value}"
        inner, _ = unwrap_optional(field_at(model, dotted).annotation)
        if inner is bool and value.lower() in ("true", "false"):
            return label if value.lower() == "true" else f"--no-{label[2:]}"
        return f"{label} {value}"

    return OPTION_MARK.sub(spelled, text)
