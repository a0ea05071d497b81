"""Declaring options once: pydantic fields that carry their command-line spelling as metadata.

A stage's settings and the core's option models (:class:`~quantart_cli.core.transfer.options.StylizeOptions`,
:class:`~quantart_cli.core.train.options.LoopOptions`) are plain pydantic models built from these fields. The
shell turns them into Typer options (``--help``, flags), environment variables and preset keys; the core
validates the same fields when called from Python. Nothing here imports torch or the shell.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["OptionGroup", "cli_argument", "cli_option"]

_Group = TypeVar("_Group", bound="OptionGroup")


class OptionGroup(BaseModel):
    """A group of options the core reads, which a stage's settings inherit field for field."""

    # Validators are built on the first validation, not at import: the CLI's --help reads the fields only.
    model_config = ConfigDict(extra="forbid", defer_build=True)

    @classmethod
    def pick(cls: type[_Group], source: BaseModel) -> _Group:
        """This group's fields taken from ``source`` (settings that inherit them, or another group)."""
        return cls(**{name: getattr(source, name) for name in cls.model_fields})


def cli_argument(description: str, **kwargs: Any) -> Any:
    """A field taken as the command's positional argument(s) instead of an ``--option``."""
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    extra["cli_argument"] = True
    return Field(description=description, json_schema_extra=extra, **kwargs)


def cli_option(
    default: Any = None,
    description: str = "",
    *,
    short: str | None = None,
    flag: str | None = None,
    aliases: tuple[str, ...] = (),
    hidden: bool = False,
    comma_list: bool = False,
    follows: str | None = None,
    **kwargs: Any,
) -> Any:
    """A field with CLI extras.

    ``short``: a short flag (``-o``); ``flag``: the long flag when it differs from the field name (``--json``
    for ``json_output``); ``aliases``: more long flags; ``hidden``: kept out of ``--help`` (still settable with
    ``--set``); ``comma_list``: a list option given as ``0.7,0.3`` rather than by repeating the flag;
    ``follows``: a list option whose every use on the command line belongs to the use of the list option of that
    name just before it (``--style a.jpg --mask m.png --style b.jpg``): the shell lines the values up with that
    option's, an empty string for each use without one.
    """
    extra: dict[str, Any] = dict(kwargs.pop("json_schema_extra", None) or {})
    for key, value in (
        ("cli_short", short),
        ("cli_flag", flag),
        ("cli_aliases", list(aliases)),
        ("cli_hidden", hidden),
        ("cli_comma_list", comma_list),
        ("cli_follows", follows),
    ):
        if value:
            extra[key] = value
    return Field(default, description=description, json_schema_extra=extra or None, **kwargs)
