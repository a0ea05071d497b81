"""Everything a stage (a ``quantart`` subcommand, built in or third-party) is written against, in one import::

    from quantart_cli.plugin import Stage, StageSettings, cli_option, UsageError

These names are the plugin interface docs/plugins.md documents; stages import them from here, not from the
modules that define them, so those modules can move without breaking a plugin. Nothing here imports torch: a
stage module that imports only this at its top keeps ``quantart --help`` fast.
"""

from __future__ import annotations

from quantart_cli.core.errors import BadInputError, NotFoundError, QuantartError, UsageError, WriteError
from quantart_cli.core.options import OptionGroup, cli_argument, cli_option
from quantart_cli.shell.plugins import RunContext, Stage
from quantart_cli.shell.settings import StageSettings

__all__ = [
    "BadInputError",
    "NotFoundError",
    "OptionGroup",
    "QuantartError",
    "RunContext",
    "Stage",
    "StageSettings",
    "UsageError",
    "WriteError",
    "cli_argument",
    "cli_option",
]
