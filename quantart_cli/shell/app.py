"""The Typer root: global flags, stage discovery, one subcommand per stage, error rendering.

Each stage's options are generated from its settings model, so a stage (built-in or third-party) never
writes CLI code. This module must stay importable without torch: ``quantart --help`` answers at once.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import logging
import os
import sys
import typing
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from typer.core import TyperCommand

from quantart_cli import __version__
from quantart_cli.core.errors import QuantartError, SaidElsewhere
from quantart_cli.shell.console import Console
from quantart_cli.shell.fields import field_extra, flag_of, is_model, known_keys, spell_options, unwrap_optional
from quantart_cli.shell.plugins import Discovery, LoadedStage, RunContext, Stage, discover_stages
from quantart_cli.shell.presets import list_presets, load_preset
from quantart_cli.shell.settings import DEVICE_HELP, render_config, resolve_settings

EXIT_INTERRUPTED = 130


@dataclass
class AppState:
    device: str | None = None
    quiet: bool = False
    debug: bool = False
    console: Console | None = None
    #: Settings models whose fields name the options in library messages: the running stage's first.
    models: list[type] = dataclass_field(default_factory=list)

    def reset(self) -> None:
        self.device, self.quiet, self.debug, self.console, self.models = None, False, False, None, []

    def get_console(self) -> Console:
        if self.console is None:
            self.console = Console(quiet=self.quiet, debug=self.debug, spell=self.spell)
        return self.console

    def spell(self, text: str) -> str:
        return spell_options(text, self.models)


_STATE = AppState()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


# ---------------------------------------------------------------------------------------------------------------
# Settings field -> Typer parameter


def _typer_type(annotation: Any) -> tuple[Any, dict[str, Any], bool]:
    """(python type for Typer, extra Option kwargs, is_list) for a settings field annotation."""
    inner, _ = unwrap_optional(annotation)
    origin = typing.get_origin(inner)
    if origin is Literal:
        # Typer shows and checks Enum choices in every version; the value is unwrapped again before validation.
        choices = [str(v) for v in typing.get_args(inner)]
        return enum.Enum("Choice", {c: c for c in choices}, type=str), {}, False
    if origin in (list, tuple, set, frozenset):
        args = [a for a in typing.get_args(inner) if a is not Ellipsis]
        item = args[0] if args else str
        item_type, extra, _ = _typer_type(item)
        return item_type, extra, True
    if inner is Path:
        # Typer would make a Path of the text, which turns a web address's "//" into "/" before the settings could
        # refuse it by name; the settings make the Path.
        return str, {"metavar": "<path>"}, False
    if inner in (bool, int, float, str):
        return inner, {}, False
    return str, {}, False


def _default_text(field: FieldInfo) -> str | bool:
    default = field.default
    if default is PydanticUndefined or default is None:
        return False
    if isinstance(default, (list, tuple)):
        return ",".join(str(v) for v in default) if default else False
    return str(default)


def _field_parameter(name: str, field: FieldInfo) -> inspect.Parameter | None:
    if is_model(field.annotation):
        return None  # nested tables are set with --set key.sub=value or a preset
    extra = field_extra(field)
    py_type, kwargs, is_list = _typer_type(field.annotation)
    comma_list = is_list and extra.get("cli_comma_list", False)
    help_text = field.description or ""
    if extra.get("cli_argument"):
        annotation = list[py_type] | None if is_list else py_type | None  # type: ignore[valid-type]
        kwargs.pop("metavar", None)  # an argument is shown by its name
        info = typer.Argument(None, help=help_text, show_default=False, **kwargs)
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)
    flag = flag_of(name, field)
    # A switch that is off by default needs no --no- form; one that is on by default does.
    negatable = py_type is bool and field.default is True
    decls = [f"{flag}/--no-{flag[2:]}" if negatable else flag, *extra.get("cli_aliases", [])]
    if extra.get("cli_short"):
        decls.append(extra["cli_short"])
    if comma_list:
        py_type, kwargs = str, {}
        help_text += " Comma-separated."
    annotation = (list[py_type] if is_list and not comma_list else py_type) | None  # type: ignore[valid-type]
    show_default = _default_text(field) if not (py_type is bool and field.default is False) else False
    info = typer.Option(
        None, *decls, help=help_text, show_default=show_default, hidden=extra.get("cli_hidden", False), **kwargs
    )
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


def _command_class(model: type[BaseModel]) -> type[TyperCommand]:
    """The click command class of a stage: Typer's own, or one that lines up options declared with ``follows``
    (``cli_option(follows="style")``) with the option each use of them follows on the command line. Click keeps the
    values of each repeated option in order but not how two options interleave, so the command parses the line a
    second time for the order in which the options came."""
    pairs = {name: extra["cli_follows"] for name, field in model.model_fields.items()
             if (extra := field_extra(field)).get("cli_follows")}
    if not pairs:
        return TyperCommand
    flags = {name: flag_of(name, field) for name, field in model.model_fields.items()}

    class PairingCommand(TyperCommand):
        def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
            if ctx.resilient_parsing:  # shell completion: values are not used
                return super().parse_args(ctx, args)
            order = self.make_parser(ctx).parse_args(args=list(args))[2]
            rest = super().parse_args(ctx, args)
            for follower, leader in pairs.items():
                values = list(ctx.params.get(follower) or ())
                if values:
                    ctx.params[follower] = _line_up(order, values, follower, leader, flags, ctx)
            return rest

    return PairingCommand


def _line_up(order: list[Any], values: list[Any], follower: str, leader: str, flags: dict[str, str],
             ctx: Any) -> list[Any]:
    """``values`` of ``follower`` (in the order given), one per use of ``leader`` (an empty string for a use that
    no ``follower`` follows), from the parser's ``order`` of the options' uses."""
    slots: list[Any] = []
    given = iter(values)
    for param in order:
        if param.name == leader:
            slots.append(None)
        elif param.name == follower:
            if not slots:
                raise _USAGE_ERROR(f"{flags[follower]} belongs to the {flags[leader]} before it, and none comes "
                                   f"before the first {flags[follower]}", ctx=ctx)
            if slots[-1] is not None:
                raise _USAGE_ERROR(f"two {flags[follower]} follow one {flags[leader]}; give at most one after each "
                                   f"{flags[leader]}", ctx=ctx)
            slots[-1] = next(given)
    return ["" if slot is None else slot for slot in slots]


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _run_guarded(work: typing.Callable[[], int]) -> int:
    """Run a command body; library errors become one sentence and a stable exit code."""
    console = _STATE.get_console()
    try:
        with _library_logs_spelled(_STATE.spell):
            return work()
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        console.error("Interrupted.")
        return EXIT_INTERRUPTED
    except SaidElsewhere as err:  # another process of the torchrun job says what went wrong
        return err.exit_code
    except QuantartError as err:
        if _STATE.debug:
            console.print_exception()
        console.error(str(err), err.hint)
        return err.exit_code
    except OSError as err:  # disk full, unwritable folder, a file in the way: a fact about the system, not a bug
        if _STATE.debug:
            console.print_exception()
        console.error(_os_error_sentence(err))
        return 1
    except Exception as err:  # the last line of defence: one sentence, the traceback behind --debug
        if _STATE.debug:
            console.print_exception()
            console.error(f"unexpected {type(err).__name__}: {err}")
        else:
            console.error(f"unexpected {type(err).__name__}: {err}", "run again with --debug to see the traceback.")
        return 1


@contextlib.contextmanager
def _library_logs_spelled(spell: typing.Callable[[str], str]) -> typing.Iterator[None]:
    """The core logs a skipped file with its error's sentence, which names options by field; on the command line
    those records name flags, as every other message does."""
    previous = logging.getLogRecordFactory()

    def spelled_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.name.startswith("quantart_cli"):
            with contextlib.suppress(Exception):  # a malformed record is logging's to report, when it is handled
                record.msg, record.args = spell(record.getMessage()), None
        return record

    logging.setLogRecordFactory(spelled_record)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


def _os_error_sentence(err: OSError) -> str:
    reason = err.strerror or str(err) or type(err).__name__
    if err.filename is None:
        return f"A file operation failed: {reason}."
    names = str(err.filename) + (f" -> {err.filename2}" if err.filename2 is not None else "")
    return f"Could not read or write {names} ({reason})."


_COMMON = {
    "preset": (str | None, typer.Option(None, "--preset", "-p", help="Preset name or path to a TOML file.")),
    "set_items": (
        list[str] | None,
        typer.Option(None, "--set", help="Set any setting, nested ones too: --set loss.disc_start=0 (repeatable)."),
    ),
    "print_config": (
        bool,
        typer.Option(False, "--print-config", help="Print the resolved settings and where each value came from."),
    ),
}


def _make_command(loaded: LoadedStage, all_known: list[str]) -> typer.models.CommandFunctionType:
    stage = loaded.stage
    model = stage.settings
    params: list[inspect.Parameter] = []
    for name, field in model.model_fields.items():
        param = _field_parameter(name, field)
        if param is not None:
            params.append(param)
    for name, (annotation, info) in _COMMON.items():
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation))
    field_names = set(model.model_fields)

    def command(**kwargs: Any) -> None:
        _STATE.models = [model, *(m for m in _STATE.models if m is not model)]
        code = _run_guarded(lambda: _invoke(kwargs))
        if code:
            raise typer.Exit(code)

    def _invoke(kwargs: dict[str, Any]) -> int:
        from quantart_cli.shell.paths import get_paths  # platformdirs: not on the --help path

        console = _STATE.get_console()
        flags = {k: _plain(v) for k, v in kwargs.items() if k in field_names and v not in (None, [], ())}
        if "device" not in flags and _STATE.device is not None:
            flags["device"] = _STATE.device
        paths = get_paths()
        resolved = resolve_settings(
            model,
            stage=stage.name,
            preset=kwargs.get("preset"),
            flags=flags,
            set_items=kwargs.get("set_items") or (),
            user_preset_dir=paths.user_presets_dir,
            all_known_keys=all_known,
            user_config=paths.user_config_file,
            config_table=stage.name,
        )
        if kwargs.get("print_config"):
            console.result(render_config(resolved))
            return 0
        context = RunContext(console=console, paths=paths, resolved=resolved, stage_name=stage.name)
        return stage.run(resolved.settings, context) or 0

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = stage.name.replace("-", "_")
    command.__doc__ = stage.help + ("\n\n" + stage.description if stage.description else "")
    return command


# ---------------------------------------------------------------------------------------------------------------
# The application


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"quantart {__version__}\n")
        raise typer.Exit(0)


def _root_callback(
    device: str | None = typer.Option(None, "--device", help=DEVICE_HELP, envvar=None),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only results on stdout; no progress or notes."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    """quantart: high-fidelity style transfer in a quantized latent space (QuantArt, CVPR 2023)."""
    _STATE.device = device
    _STATE.quiet = quiet or _env_flag("QUANTART_QUIET")
    _STATE.debug = debug or _env_flag("QUANTART_DEBUG")
    _STATE.console = None


def build_app(discovery: Discovery | None = None, extra_stages: list[Stage] | None = None) -> typer.Typer:
    """The Typer app with one command per discovered stage (plus ``stages`` and ``paths``)."""
    if discovery is None:
        discovery = discover_stages(extra=extra_stages) if not _env_flag("QUANTART_NO_PLUGINS") else Discovery()
    app = typer.Typer(
        name="quantart",
        help=_root_callback.__doc__,
        no_args_is_help=True,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        pretty_exceptions_enable=False,
    )
    # A root callback keeps this a command group even when only one stage is installed.
    app.callback()(_root_callback)
    _STATE.models = [loaded.stage.settings for loaded in discovery.stages.values()]
    all_known = [key for loaded in discovery.stages.values() for key in known_keys(loaded.stage.settings)]

    for loaded in discovery.stages.values():
        app.command(
            loaded.stage.name,
            help=loaded.stage.help,
            short_help=loaded.stage.help,
            epilog=loaded.stage.description or None,
            cls=_command_class(loaded.stage.settings),
        )(_make_command(loaded, all_known))

    @app.command("stages")
    def stages_command() -> None:
        """List the installed stages and the distribution that provides each."""
        console = _STATE.get_console()
        rows = [(name, ld.stage.help, ld.distribution) for name, ld in sorted(discovery.stages.items())]
        rows += [(b.entry_point, f"failed to load: {b.error}", b.distribution) for b in discovery.broken]
        console.result_table(None, ["stage", "help", "provided by"], rows)

    @app.command("presets")
    def presets_command(stage: str | None = typer.Argument(None, help="Only this stage's presets.")) -> None:
        """List the presets of every stage (built-in and user ones) with their descriptions."""
        from quantart_cli.shell.paths import get_paths

        console = _STATE.get_console()
        user_dir = get_paths().user_presets_dir
        names = sorted(discovery.stages)
        if stage is not None and stage not in names:
            raise typer.BadParameter(f"no stage named {stage!r} (stages: {', '.join(names)})")
        rows = []
        for name in names if stage is None else [stage]:
            settings = discovery.stages[name].stage.settings
            for preset, path in list_presets(name, user_dir).items():
                _, description = _run_or_exit(lambda p=path, s=settings: load_preset(p, s))
                origin = "user" if path.is_relative_to(user_dir) else "built-in"
                rows.append((name, preset, origin, description))
        console.result_table(None, ["stage", "preset", "source", "description"], rows)

    @app.command("paths")
    def paths_command() -> None:
        """Print where quantart keeps user presets, config, cache and runs, the built-in model and the samples."""
        from quantart_cli.core.weights import BUILTIN_MODEL
        from quantart_cli.samples import SAMPLES_DIR
        from quantart_cli.shell.paths import get_paths

        console = _STATE.get_console()
        shown = {**get_paths().as_dict(), "builtin-model": BUILTIN_MODEL, "samples": SAMPLES_DIR}
        for name, path in shown.items():
            console.result(f"{name}\t{path}")

    app.info.context_settings = {"help_option_names": ["-h", "--help"]}
    app._quantart_discovery = discovery  # type: ignore[attr-defined]
    return app


def _run_or_exit(work: typing.Callable[[], Any]) -> Any:
    result: list[Any] = []
    code = _run_guarded(lambda: result.append(work()) or 0)
    if code:
        raise typer.Exit(code)
    return result[0]


def _warn_broken(discovery: Discovery, console: Console) -> None:
    for broken in discovery.broken:
        console.warn(
            f"plugin {broken.entry_point!r} from {broken.distribution} failed to load ({broken.error}); "
            "its command is unavailable."
        )


#: Global switches (no value) accepted anywhere on the line: ``quantart train-vq ... --quiet`` works as
#: ``quantart --quiet train-vq ...``. (``--device`` is also every stage's own option, so it works after the
#: subcommand already.)
GLOBAL_SWITCHES = frozenset({"--quiet", "-q", "--debug"})


def hoist_global_switches(argv: list[str]) -> list[str]:
    """Move global switches typed after the subcommand in front of it (up to a ``--`` separator)."""
    front, rest, seen_command = [], [], False
    for index, token in enumerate(argv):
        if token == "--":
            rest.extend(argv[index:])
            break
        if seen_command and token in GLOBAL_SWITCHES:
            front.append(token)
            continue
        if not token.startswith("-"):
            seen_command = True
        rest.append(token)
    return front + rest


def main(argv: list[str] | None = None, *, extra_stages: list[Stage] | None = None) -> int:
    """Console-script entry point; with ``argv`` given (tests, embedding) it returns the exit code instead."""
    _STATE.reset()
    discovery = discover_stages(extra=extra_stages) if not _env_flag("QUANTART_NO_PLUGINS") else Discovery()
    if discovery.broken:
        _warn_broken(discovery, Console(quiet=False))
    app = build_app(discovery)
    args = hoist_global_switches(list(sys.argv[1:] if argv is None else argv))
    try:
        # Not standalone: click's own errors come back here to be printed as every other mistake is.
        returned = app(args=args, prog_name="quantart", standalone_mode=False)
    except _PARSER_ERROR as err:
        if type(err).__name__ == "NoArgsIsHelpError":
            code = 2  # `quantart` alone: the help was printed already
        else:
            Console().error(parser_error_sentence(err, args, app))
            code = err.exit_code
    except typer.Abort:
        Console().error("Aborted.")
        code = 1
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    else:
        code = returned if isinstance(returned, int) and not isinstance(returned, bool) else 0
    if argv is None:
        sys.exit(code)
    return code


#: The base class of the parser's errors (click's ClickException: Typer's own copy of click since 0.20, click itself
#: before), found from the one Typer exports.
_PARSER_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
#: The parser's usage mistake (click's UsageError), found the same way.
_USAGE_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def parser_error_sentence(err: Exception, args: list[str], app: typer.Typer) -> str:
    """A mistake the command-line parser found (an unknown flag or command, a value that is not a number or not
    one of the choices, a flag without its value) as one line, pointing at the help of the command it was in."""
    message = " ".join(err.format_message().split())  # type: ignore[attr-defined]
    message = message.replace("Value error, ", "").rstrip(".")
    context = getattr(err, "ctx", None)
    if context is not None:
        where = context.command_path
    else:  # a flag without its value: click does not say in which command it was
        commands = {info.name for info in app.registered_commands}
        where = " ".join(["quantart", *[token for token in args if token in commands][:1]])
    hint = _repeat_flag_hint(message, args, context)
    return f"{message}{hint}; see {where} --help."


def _repeat_flag_hint(message: str, args: list[str], context) -> str:
    """For extra arguments right after a flag that takes many values one at a time (``--content a.jpg b.jpg``):
    how to give several."""
    if context is None or not message.startswith("Got unexpected extra argument"):
        return ""
    extra = message.rsplit("(", 1)[-1].rstrip(")").split()
    if not extra or extra[0] not in args:
        return ""
    before = args[: args.index(extra[0])]
    flag = next((token for token in reversed(before) if token.startswith("-")), None)
    repeated = {name for param in context.command.params if getattr(param, "multiple", False)
                for name in getattr(param, "opts", [])}
    if flag not in repeated:
        return ""
    return f" ({flag} takes one value each time: repeat it, {flag} A {flag} B)"
