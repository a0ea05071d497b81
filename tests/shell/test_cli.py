"""The CLI shell: help (rendered each time, nothing written), global flags (also after the subcommand), error
rendering and exit codes, the paths command."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cli_support import run_cli
from pydantic import BaseModel, Field

from quantart_cli import __version__
from quantart_cli.core.errors import BadInputError, NotFoundError, QuantartError, SaidElsewhere, UsageError
from quantart_cli.core.options import cli_argument, cli_option
from quantart_cli.samples import PAINTINGS_DIR
from quantart_cli.shell.plugins import Stage
from quantart_cli.shell.settings import StageSettings

STAGES = ["train-vq", "train-sga", "encode", "stylize", "inspect-codebook"]


def test_root_help_lists_every_stage(capsys):
    result = run_cli(capsys, "--help")
    assert result.code == 0
    for name in [*STAGES, "stages", "paths", "presets"]:
        assert name in result.out


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_help_with_its_options(capsys, stage):
    result = run_cli(capsys, stage, "--help")
    assert result.code == 0
    for option in ("--device", "--preset", "--set", "--print-config"):
        assert option in result.out


def test_stage_help_shows_real_options(capsys):
    out = run_cli(capsys, "stylize", "--help").out
    for option in ("--style", "--alpha", "--visual-fidelity", "--ckpt", "--tile", "--overlap", "--json"):
        assert option in out
    out = run_cli(capsys, "train-vq", "--help").out
    for option in ("--data", "--steps", "--batch-size", "--precision", "--resume", "--init-from"):
        assert option in out


def test_version(capsys):
    result = run_cli(capsys, "--version")
    assert result.code == 0
    assert result.out.strip() == f"quantart {__version__}"


def test_bad_choice_names_option_and_allowed_values(capsys):
    result = run_cli(capsys, "stylize", "--format", "gif")
    assert result.code == 2
    assert "--format" in result.err and "png" in result.err and "webp" in result.err
    assert result.out == ""


def test_out_of_range_value_is_one_sentence(capsys):
    result = run_cli(capsys, "stylize", "--alpha", "1.5")
    assert result.code == 2
    assert "--alpha" in result.err and "1.5" in result.err
    assert "Traceback" not in result.err


def test_bad_device_is_rejected(capsys):
    result = run_cli(capsys, "--device", "gpu", "stylize", "x.jpg")
    assert result.code == 2
    assert "--device" in result.err and "cuda:N" in result.err


def test_typo_in_flag_suggests_the_right_one(capsys):
    result = run_cli(capsys, "stylize", "--alpah", "0.5")
    assert result.code == 2
    assert "--alpha" in result.err


def test_unknown_command_exits_2(capsys):
    assert run_cli(capsys, "stylise").code == 2


PARSER_MISTAKES = [
    (["stylize", "photo.jpg", "--sytle", "a.png"], "--sytle"),
    (["stylize", "photo.jpg", "--alpha", "abc"], "--alpha"),
    (["stylize", "photo.jpg", "--format", "gif"], "--format"),
    (["stylize", "photo.jpg", "--style"], "--style"),
    (["stylise", "photo.jpg"], "stylise"),
    (["--device"], "--device"),
    (["presets", "no-such-stage"], "no-such-stage"),
    (["evaluate", "--content", "a.jpg", "b.jpg", "--style", "c.jpg"], "--content A --content B"),
]


@pytest.mark.parametrize(("args", "named"), PARSER_MISTAKES, ids=[" ".join(a) for a, _ in PARSER_MISTAKES])
def test_parser_mistakes_are_one_error_line_like_every_other_mistake(capsys, args, named):
    """Issue 25: an unknown flag, a bad number or a bad choice was a 5-line boxed panel."""
    result = run_cli(capsys, *args)
    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    assert named in result.err and "--help" in result.err
    assert not any(mark in result.err for mark in ("╭", "│", "Usage:", "Try '"))


def test_extra_values_after_a_repeatable_flag_say_to_repeat_it_and_others_do_not(capsys):
    result = run_cli(capsys, "evaluate", "--content", "a.jpg", "b.jpg", "--style", "c.jpg")
    assert "(b.jpg) (--content takes one value each time: repeat it, --content A --content B)" in result.err
    other = run_cli(capsys, "evaluate", "extra", "--content", "a.jpg")
    assert other.code == 2 and "(extra);" in other.err and "repeat" not in other.err


def test_a_rule_between_two_options_names_them_not_settings(capsys):
    result = run_cli(capsys, "stylize", "photo.jpg", "--style", "a.png", "--style-weights", "0.5,0.2,0.3")
    assert result.code == 2
    assert result.err == "error: --style-weights has 3 values for 1 style images; give one weight per style image.\n"


def test_no_arguments_still_shows_the_help(capsys):
    result = run_cli(capsys)
    assert result.code == 2
    assert "stylize" in result.out and "error" not in result.err


def _stage(run, settings=StageSettings, name="probe"):
    return Stage(name=name, help="A probe stage for tests.", settings=settings, run=run)


def test_library_error_is_one_sentence_with_its_exit_code(capsys):
    def run(settings, ctx):
        raise BadInputError("photo.jpg is not an image.")

    result = run_cli(capsys, "probe", extra_stages=[_stage(run)])
    assert result.code == 1
    assert "photo.jpg is not an image." in result.err
    assert "Traceback" not in result.err


def test_missing_thing_exits_3(capsys):
    def run(settings, ctx):
        raise NotFoundError("probe.pt does not exist.")

    result = run_cli(capsys, "probe", extra_stages=[_stage(run)])
    assert result.code == 3
    assert result.err.count("\n") <= 2


def test_a_process_stopped_by_another_says_nothing_more_and_exits_0(capsys):
    """Under torchrun, rank 0 says the notes and the error that every process found; the others print only their
    own outputs' lines, and exit 0 so that torchrun names the process that failed as the job's cause."""

    def run(settings, ctx):
        muted = ctx.console.muted()
        muted.info("a note rank 0 says")
        muted.warn("a warning rank 0 says")
        muted.table("a summary", ["", "value"], [("written", "3")])
        with muted.progress("stylizing", 3) as bar:
            bar.advance()
        muted.result("out/mine.png")
        raise SaidElsewhere()

    result = run_cli(capsys, "probe", extra_stages=[_stage(run)])
    assert (result.code, result.out, result.err) == (0, "out/mine.png\n", "")


class _Table(BaseModel):
    depth: int = 2


class _Named(StageSettings):
    continuous_ckpt: Path | None = None
    json_output: bool = cli_option(False, "JSON lines.", flag="--json")
    checked: bool = True
    inputs: list[str] | None = cli_argument("Inputs.", default=None)
    table: _Table = _Table()


def test_library_messages_name_flags_on_the_command_line(capsys, caplog):
    """Issue 27: the core names options as a Python caller sets them (`continuous_ckpt`); the command line shows
    the flag that sets each, in errors, hints, notes and the core's log records alike."""
    message = ("`continuous_ckpt` needs `json_output=true`, `checked=false`, `inputs`, `table.depth=3`, "
               "`device=cpu`, `steps` and `unknown`.")

    def run(settings, ctx):
        ctx.console.info("note: continue with `resume=runs/a`.")
        logging.getLogger("quantart_cli.core.probe").warning("skipping x.png: raise `max_pixels` if trusted.")
        raise UsageError(message, hint="try `json_output`.")

    with caplog.at_level(logging.WARNING):
        result = run_cli(capsys, "probe", extra_stages=[_stage(run, _Named)])
    assert result.code == 2
    assert ("--continuous-ckpt needs --json, --no-checked, INPUTS, --set table.depth=3, --device cpu, --steps and "
            "`unknown`.") in result.err  # steps, resume, max_pixels: other stages' fields; unknown: no field
    assert "hint: try --json." in result.err and "continue with --resume runs/a." in result.err
    assert "raise --max-pixels if trusted." in caplog.text and "`max_pixels`" not in caplog.text
    assert "`" not in result.err.replace("`unknown`", "")


def test_library_errors_name_fields_and_bad_values_are_value_errors():
    err = UsageError("`visual_fidelity=0.5` needs `continuous_ckpt`.", hint="see `visual_fidelity`")
    assert err.fields == ("visual_fidelity", "continuous_ckpt")
    assert isinstance(err, ValueError) and isinstance(BadInputError("x"), ValueError)
    assert not isinstance(NotFoundError("x"), ValueError) and isinstance(NotFoundError("x"), QuantartError)


def test_unexpected_error_hides_traceback_unless_debug(capsys):
    def run(settings, ctx):
        raise ZeroDivisionError("boom")

    result = run_cli(capsys, "probe", extra_stages=[_stage(run)])
    assert result.code == 1
    assert "boom" in result.err and "--debug" in result.err and "Traceback" not in result.err
    result = run_cli(capsys, "--debug", "probe", extra_stages=[_stage(run)])
    assert result.code == 1
    assert "Traceback" in result.err


def test_interrupt_exits_130(capsys):
    def run(settings, ctx):
        raise KeyboardInterrupt

    result = run_cli(capsys, "probe", extra_stages=[_stage(run)])
    assert result.code == 130
    assert "Interrupted" in result.err


def test_quiet_silences_notes_but_not_results(capsys):
    def run(settings, ctx):
        ctx.console.info("a note")
        ctx.console.result("the result")

    result = run_cli(capsys, "--quiet", "probe", extra_stages=[_stage(run)])
    assert result.out == "the result\n"
    assert "a note" not in result.err
    result = run_cli(capsys, "probe", extra_stages=[_stage(run)])
    assert "a note" in result.err


def test_root_device_reaches_stage_settings(capsys):
    seen = {}

    def run(settings, ctx):
        seen["device"] = settings.device

    run_cli(capsys, "--device", "cuda:1", "probe", extra_stages=[_stage(run)])
    assert seen["device"] == "cuda:1"


def test_stage_return_code_is_the_exit_code(capsys):
    class S(StageSettings):
        code: int = Field(0)

    result = run_cli(capsys, "probe", "--code", "4", extra_stages=[_stage(lambda s, c: s.code, S)])
    assert result.code == 4


def test_paths_prints_every_folder(capsys, isolated_quantart_env):
    result = run_cli(capsys, "paths")
    assert result.code == 0
    names = [line.split("\t")[0] for line in result.out.splitlines()]
    assert names == ["config", "presets", "user-config", "cache", "runs", "builtin-model", "samples"]
    assert str(isolated_quantart_env / "cache") in result.out


def test_stages_lists_distribution(capsys):
    result = run_cli(capsys, "stages")
    assert result.code == 0
    for name in STAGES:
        assert name in result.out
    assert "quantart 0.1.0" in result.out


def test_presets_command_lists_builtin_presets(capsys):
    result = run_cli(capsys, "presets", "train-vq")
    assert result.code == 0
    for name in ("wikiart", "coco", "landscape", "ffhq", "metfaces", "tiny"):
        assert name in result.out


STYLE = PAINTINGS_DIR / "munch_the_scream.jpg"
FAST = ["--size", "32", "--device", "cpu"]


def _stylize(capsys, *args: str):
    return run_cli(capsys, "stylize", *args)


def test_global_switches_work_after_the_subcommand(capsys, photos, tmp_path):
    quiet = _stylize(capsys, str(photos / "lhq_1.jpg"), "--style", str(STYLE), "-o", str(tmp_path / "a"), *FAST,
                     "--quiet")
    assert quiet.code == 0 and quiet.err == ""
    debug = run_cli(capsys, "stages", "--debug")
    assert debug.code == 0 and "stylize" in debug.out


def test_help_is_rendered_each_time_and_writes_nothing(capsys, isolated_quantart_env):
    """Issue 27: no --help cache; the help is rendered from the stages' settings and nothing lands on disk."""
    from quantart_cli.shell import entry

    before = sorted(isolated_quantart_env.rglob("*"))
    assert entry.main(["stylize", "--help"]) == 0
    assert "--alpha" in capsys.readouterr().out
    assert sorted(isolated_quantart_env.rglob("*")) == before


# --------------------------------------------------------------------------------- the built-in weights


def test_paths_shows_the_built_in_model_and_the_samples(capsys):
    from quantart_cli.core.weights import BUILTIN_MODEL
    from quantart_cli.samples import SAMPLES_DIR

    result = run_cli(capsys, "paths")
    assert result.code == 0
    shown = dict(line.split("\t") for line in result.out.splitlines())
    assert Path(shown["builtin-model"]) == BUILTIN_MODEL and BUILTIN_MODEL.is_file()
    assert Path(shown["samples"]) == SAMPLES_DIR and (SAMPLES_DIR / "content").is_dir()


class _Paired(StageSettings):
    style: list[str] = cli_option([], "Styles.", short="-s")
    mask: list[str] = cli_option([], "The mask of the style before it.", follows="style")
    note: str = cli_option("", "Any text.")


@pytest.mark.parametrize(("args", "expected"), [
    (["--style", "a", "--mask", "m", "--style", "b"], (["a", "b"], ["m", ""])),
    (["-s", "a", "-s", "b", "--mask=n"], (["a", "b"], ["", "n"])),
    (["--style=a", "--note", "--mask", "--mask", "m", "-s", "b", "--mask", "n"], (["a", "b"], ["m", "n"])),
    (["-s", "a", "-s", "b"], (["a", "b"], [])),
])
def test_an_option_that_follows_another_is_lined_up_with_it(capsys, args, expected):
    """`follows`: each --mask belongs to the --style just before it, however the flags are spelled (a value that
    looks like a flag, here --note's, is a value); the lists line up, an empty string for a style without one."""
    seen = {}

    def run(settings, ctx):
        seen["pairs"] = (settings.style, settings.mask)

    result = run_cli(capsys, "probe", *args, extra_stages=[_stage(run, _Paired)])
    assert result.code == 0, result.err
    assert seen["pairs"] == expected


@pytest.mark.parametrize(("args", "message"), [
    (["--mask", "m", "--style", "a"], "--mask belongs to the --style before it, and none comes before the first "
                                      "--mask"),
    (["--style", "a", "--mask", "m", "--mask", "n"], "two --mask follow one --style; give at most one after each "
                                                     "--style"),
])
def test_an_option_that_follows_nothing_is_one_sentence(capsys, args, message):
    result = run_cli(capsys, "probe", *args, extra_stages=[_stage(lambda s, c: 0, _Paired)])
    assert result.code == 2
    assert result.err.strip() == f"error: {message}; see quantart probe --help."
