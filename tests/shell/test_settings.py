"""Settings resolution: every source, its precedence, typo hints, and --print-config provenance."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import run_cli
from pydantic import BaseModel, ConfigDict, Field

from quantart_cli.core.errors import NotFoundError, UsageError
from quantart_cli.shell.settings import StageSettings, parse_scalar, render_config, resolve_settings


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depth: int = 2
    name: str = "x"


class Probe(StageSettings):
    steps: int = Field(10, ge=1)
    rate: float = 0.5
    tags: list[str] = []
    inner: Inner = Inner()


def _resolve(tmp_path: Path, preset_text: str | None = None, **kwargs):
    preset = None
    if preset_text is not None:
        preset = tmp_path / "probe.toml"
        preset.write_text(preset_text)
        preset = str(preset)
    return resolve_settings(Probe, stage="probe", preset=preset, **kwargs)


def test_a_settings_model_reads_nothing_by_itself(monkeypatch):
    """Issue 27: one settings system. resolve_settings reads the environment (recording where each value came
    from); the model itself holds what it is given, in Python as anywhere."""
    monkeypatch.setenv("QUANTART_STEPS", "33")
    assert Probe().steps == 10 and Probe(steps=4).steps == 4
    assert resolve_settings(Probe, stage="probe").settings.steps == 33


def test_defaults(tmp_path):
    resolved = _resolve(tmp_path, environ={})
    assert resolved.settings.steps == 10
    assert str(resolved.source_of("steps")) == "default"


class WithPaths(Probe):
    model: Path | None = None
    more: list[Path] = []


def test_user_config_sits_between_defaults_and_presets(tmp_path):
    config = tmp_path / "cfg" / "config.toml"
    config.parent.mkdir()
    config.write_text('[probe]\nsteps = 3\nrate = 0.25\n[probe.inner]\ndepth = 7\n[other]\nsteps = "ignored"\n')
    resolved = _resolve(tmp_path, "rate = 0.75\n", environ={}, user_config=config)
    assert (resolved.settings.steps, resolved.settings.rate, resolved.settings.inner.depth) == (3, 0.75, 7)
    assert str(resolved.source_of("steps")) == f"config ({config})"
    assert resolved.source_of("rate").kind == "preset"
    env = _resolve(tmp_path, environ={"QUANTART_STEPS": "4"}, user_config=config)
    assert env.settings.steps == 4
    absent = _resolve(tmp_path, environ={}, user_config=tmp_path / "none.toml")
    assert absent.settings.steps == 10


def test_user_config_paths_are_taken_from_its_folder(tmp_path):
    config = tmp_path / "cfg" / "config.toml"
    config.parent.mkdir()
    config.write_text(f'[probe]\nmodel = "models/a.pt"\nmore = ["b.pt", "{tmp_path.as_posix()}/c.pt"]\n')
    resolved = resolve_settings(WithPaths, stage="probe", environ={}, user_config=config)
    assert resolved.settings.model == config.parent / "models" / "a.pt"
    assert resolved.settings.more == [config.parent / "b.pt", tmp_path / "c.pt"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[probe]\nstepz = 3\n", "Did you mean 'steps'"),
        ("probe = 3\n", "must be a table"),
        ("[probe\n", "not valid TOML"),
    ],
)
def test_bad_user_config_is_one_sentence(tmp_path, text, needle):
    config = tmp_path / "config.toml"
    config.write_text(text)
    with pytest.raises(UsageError, match=needle):
        _resolve(tmp_path, environ={}, user_config=config)


def test_preset_beats_default(tmp_path):
    resolved = _resolve(tmp_path, "steps = 20\n[inner]\ndepth = 5\n", environ={})
    assert resolved.settings.steps == 20 and resolved.settings.inner.depth == 5
    assert resolved.source_of("inner.depth").kind == "preset"


def test_env_beats_preset(tmp_path):
    env = {"QUANTART_STEPS": "30", "QUANTART_INNER__DEPTH": "7", "QUANTART_TAGS": "a,b"}
    resolved = _resolve(tmp_path, "steps = 20\n", environ=env)
    assert resolved.settings.steps == 30 and resolved.settings.inner.depth == 7
    assert resolved.settings.tags == ["a", "b"]
    assert resolved.source_of("steps").detail == "QUANTART_STEPS"


def test_flags_and_set_beat_env(tmp_path):
    resolved = _resolve(
        tmp_path,
        "steps = 20\n",
        environ={"QUANTART_STEPS": "30", "QUANTART_INNER__DEPTH": "7"},
        flags={"steps": 40},
        set_items=["inner.depth=9", "inner.name=hello world"],
    )
    assert resolved.settings.steps == 40
    assert resolved.settings.inner.depth == 9 and resolved.settings.inner.name == "hello world"
    assert resolved.source_of("inner.depth").kind == "cli"


def test_unset_flags_do_not_override(tmp_path):
    resolved = _resolve(tmp_path, "steps = 20\n", environ={}, flags={"steps": None})
    assert resolved.settings.steps == 20


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"set_items": ["stpes=3"]}, "Did you mean 'steps'"),
        ({"set_items": ["inner.dpth=3"]}, "Did you mean 'inner.depth'"),
        ({"set_items": ["steps"]}, "key=value"),
        ({"environ": {"QUANTART_STEPZ": "3"}}, "Did you mean 'QUANTART_STEPS'"),
        ({"flags": {"steps": 0}}, "--steps"),
        ({"set_items": ["inner.depth=deep"]}, "--set inner.depth"),
    ],
)
def test_mistakes_are_usage_errors_with_hints(tmp_path, kwargs, needle):
    kwargs.setdefault("environ", {})
    with pytest.raises(UsageError) as info:
        _resolve(tmp_path, **kwargs)
    assert needle in str(info.value)


def test_env_error_names_its_variable(tmp_path):
    with pytest.raises(UsageError) as info:
        _resolve(tmp_path, environ={"QUANTART_STEPS": "zero"})
    assert "QUANTART_STEPS" in str(info.value)


def test_variable_known_to_another_stage_is_ignored(tmp_path):
    resolved = _resolve(tmp_path, environ={"QUANTART_ALPHA": "0.3"}, all_known_keys=["alpha"])
    assert resolved.settings.steps == 10


def test_preset_with_unknown_key_is_refused(tmp_path):
    with pytest.raises(UsageError) as info:
        _resolve(tmp_path, "stepz = 3\n", environ={})
    assert "Did you mean 'steps'" in str(info.value) and "probe.toml" in str(info.value)


def test_preset_meta_table_only_holds_a_description(tmp_path):
    resolved = _resolve(tmp_path, 'steps = 3\n[preset]\ndescription = "d"\n', environ={})
    assert resolved.settings.steps == 3
    with pytest.raises(UsageError):
        _resolve(tmp_path, '[preset]\ndescription = "d"\nsteps = 3\n', environ={})


def test_bad_toml_and_missing_preset(tmp_path):
    with pytest.raises(UsageError):
        _resolve(tmp_path, "steps = = 3\n", environ={})
    with pytest.raises(NotFoundError):
        resolve_settings(Probe, stage="probe", preset=str(tmp_path / "nope.toml"), environ={})
    with pytest.raises(UsageError) as info:
        resolve_settings(Probe, stage="train-vq", preset="wikiartt", environ={})
    assert "Did you mean 'wikiart'" in str(info.value)


def test_user_preset_shadows_builtin(tmp_path):
    user_dir = tmp_path / "presets"
    (user_dir / "probe").mkdir(parents=True)
    (user_dir / "probe" / "mine.toml").write_text("steps = 77\n")
    resolved = resolve_settings(Probe, stage="probe", preset="mine", environ={}, user_preset_dir=user_dir)
    assert resolved.settings.steps == 77


def test_render_config_is_a_valid_preset(tmp_path):
    resolved = _resolve(tmp_path, "steps = 20\n", environ={"QUANTART_RATE": "0.25"}, set_items=["inner.depth=4"])
    text = render_config(resolved)
    assert "steps = 20  # preset" in text and "rate = 0.25  # env (QUANTART_RATE)" in text
    assert "depth = 4  # cli" in text
    again = _resolve(tmp_path, text, environ={})
    assert again.settings == resolved.settings


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("0.5", 0.5),
        ("true", True),
        ("[1, 2]", [1, 2]),
        ("hello", "hello"),
        ('"quoted"', "quoted"),
        ("a,b", "a,b"),
    ],
)
def test_parse_scalar(text, value):
    assert parse_scalar(text) == value


def test_print_config_through_the_cli(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("QUANTART_STEPS", "33")
    result = run_cli(
        capsys, "train-vq", "--preset", "wikiart", "--batch-size", "2", "--set", "loss.disc_start=5", "--print-config"
    )
    assert result.code == 0
    lines = result.out.splitlines()
    assert "steps = 33  # env (QUANTART_STEPS)" in lines
    assert "batch_size = 2  # cli" in lines
    assert "disc_start = 5  # cli" in lines
    assert any(line.startswith("disc_weight = 0.8  # preset") for line in lines)
    assert 'device = "auto"  # default' in lines


def test_unknown_env_var_through_the_cli(capsys, monkeypatch):
    monkeypatch.setenv("QUANTART_ALPAH", "0.5")
    result = run_cli(capsys, "stylize", "--print-config")
    assert result.code == 2
    assert "QUANTART_ALPHA" in result.err


def test_env_var_of_another_stage_is_fine(capsys, monkeypatch):
    monkeypatch.setenv("QUANTART_ALPHA", "0.5")
    assert run_cli(capsys, "train-vq", "--print-config").code == 0


def test_comma_list_flag(capsys):
    result = run_cli(
        capsys, "stylize", "--style", "a.jpg", "--style", "b.jpg", "--style-weights", "0.7,0.3", "--print-config"
    )
    assert result.code == 0
    assert "style_weights = [0.7, 0.3]  # cli" in result.out
    result = run_cli(capsys, "stylize", "--style", "a.jpg", "--style-weights", "0.7,0.3", "--print-config")
    assert result.code == 2 and "--style-weights" in result.err
