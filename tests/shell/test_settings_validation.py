"""Every invalid value of every option of every stage is refused with a message naming the option (and a web
address given for a path is refused as one).

The invalid values are derived from each field's type and constraints, for every stage that
``discover_stages`` finds (built-in and plugin stages, nested settings included), so a new option is
covered the day it is added; a field type this test cannot derive invalid values for fails the test
until it is handled here (or listed in NOTHING_INVALID with the reason).
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types as at
import pytest
from cli_support import run_cli

from quantart_cli.core.data.sources import collect_images
from quantart_cli.core.errors import UsageError
from quantart_cli.samples import CONTENT_DIR, PAINTINGS_DIR
from quantart_cli.shell.fields import is_model, option_label, unwrap_optional
from quantart_cli.shell.plugins import discover_stages
from quantart_cli.shell.settings import resolve_settings

STAGES = {name: loaded.stage for name, loaded in discover_stages().stages.items()}

#: Fields with a validator beyond their type: a value only that validator refuses.
VALIDATED = {"device": ["tpu", "cuda:x", "gpu"]}

#: Fields for which no value is invalid, with the reason (none today: even free text refuses a table).
NOTHING_INVALID: dict[str, str] = {}

_TABLE = "{ a = 1 }"  # a TOML inline table: wrong for every scalar and list field


def _fields(model: type, prefix: str = "") -> typing.Iterator[tuple[str, Any]]:
    for name, field in model.model_fields.items():
        inner, _ = unwrap_optional(field.annotation)
        if is_model(inner):
            yield from _fields(inner, f"{prefix}{name}.")
        else:
            yield prefix + name, field


def _constraint(field: Any, kind: type) -> Any:
    return next((m for m in field.metadata if isinstance(m, kind)), None)


def _number_text(value: float, integer: bool) -> str:
    return str(int(value)) if integer else repr(float(value))


def invalid_values(dotted: str, field: Any) -> list[str]:
    """``--set`` texts that must be refused for this field (empty: the type is not handled yet)."""
    name = dotted.rsplit(".", 1)[-1]
    inner, _ = unwrap_optional(field.annotation)
    origin = typing.get_origin(inner)
    values: list[str] = []
    if name in VALIDATED and "." not in dotted:
        values += VALIDATED[name]
    if inner is bool:
        values += ["maybe", "2", _TABLE]
    elif inner in (int, float):
        integer = inner is int
        values += ["abc", "true", _TABLE, "inf"]
        if integer:
            values.append("1.5")
        ge, gt = _constraint(field, at.Ge), _constraint(field, at.Gt)
        le, lt = _constraint(field, at.Le), _constraint(field, at.Lt)
        step = 1 if integer else 0.5
        if ge is not None:
            values.append(_number_text(ge.ge - step, integer))
        if gt is not None:
            values.append(_number_text(gt.gt, integer))
        if le is not None:
            values.append(_number_text(le.le + step, integer))
        if lt is not None:
            values.append(_number_text(lt.lt, integer))
        multiple = _constraint(field, at.MultipleOf)
        if multiple is not None:
            low = ge.ge if ge is not None else (gt.gt + 1 if gt is not None else 0)
            candidate = next(v for v in range(int(low) + 1, int(low) + 2 * multiple.multiple_of)
                             if v % multiple.multiple_of)
            values.append(str(candidate))
    elif origin is Literal:
        values += ["not-a-choice", "3", _TABLE]
    elif inner in (str, Path):
        values += [_TABLE, "[1, 2]"]
    elif origin in (list, tuple):
        item = [a for a in typing.get_args(inner) if a is not Ellipsis][0]
        values.append(_TABLE)
        if item in (int, float):
            values += ['["abc"]', "[true]", "[inf]"]
        elif item in (str, Path):
            values.append(f"[{_TABLE}]")
        min_len = _constraint(field, at.MinLen)
        if min_len is not None and min_len.min_length > 0:
            values.append("[]")
    return values


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for stage_name, stage in sorted(STAGES.items()):
        for dotted, _field in _fields(stage.settings):
            cases.append((stage_name, dotted, "" if f"{stage_name}:{dotted}" in NOTHING_INVALID else "check"))
    return cases


CASES = _cases()


def test_every_stage_and_field_is_discovered() -> None:
    assert {"train-vq", "train-sga", "encode", "stylize", "inspect-codebook", "convert"} <= set(STAGES)
    assert len(CASES) > 100
    assert ("train-vq", "model.autoencoder.ch_mult", "check") in CASES  # nested settings are reached


@pytest.mark.parametrize(("stage_name", "dotted", "mode"), CASES, ids=[f"{s}:{d}" for s, d, _ in CASES])
def test_every_invalid_value_is_refused_naming_the_option(stage_name: str, dotted: str, mode: str) -> None:
    if not mode:
        pytest.skip(f"no invalid value exists: {NOTHING_INVALID[f'{stage_name}:{dotted}']}")
    model = STAGES[stage_name].settings
    field = dict(_fields(model))[dotted]
    values = invalid_values(dotted, field)
    assert values, f"{stage_name} {dotted}: type {field.annotation} has no derived invalid values; handle it here"
    label = option_label(dotted, model)
    accepted = []
    for text in values:
        try:
            resolve_settings(model, stage=stage_name, set_items=[f"{dotted}={text}"], environ={})
        except UsageError as err:
            message = str(err)
            assert label in message, f"--set {dotted}={text}: {message!r} does not name {label}"
            assert "\n" not in message
        else:
            accepted.append(text)
    assert not accepted, f"{stage_name}: --set {dotted} accepted invalid value(s) {accepted}"


def test_environment_values_are_checked_the_same_way() -> None:
    model = STAGES["train-vq"].settings
    with pytest.raises(UsageError, match=r"--steps \(from env \(QUANTART_STEPS\)\)"):
        resolve_settings(model, stage="train-vq", environ={"QUANTART_STEPS": "0"})
    with pytest.raises(UsageError, match="--set loss.disc_start"):
        resolve_settings(model, stage="train-vq", environ={"QUANTART_LOSS__DISC_START": "-1"})


def test_text_options_take_any_text_through_set_and_env() -> None:
    """``--set out=2024`` is a folder named 2024, not the number 2024 (which a path field would refuse)."""
    model = STAGES["train-vq"].settings
    resolved = resolve_settings(model, stage="train-vq", set_items=["out=2024", "data=1999"], environ={})
    assert resolved.settings.out == Path("2024") and resolved.settings.data == [Path("1999")]
    resolved = resolve_settings(model, stage="train-vq", environ={"QUANTART_OUT": "7"})
    assert resolved.settings.out == Path("7")


#: A sample of top-level options given as flags through the real CLI: (stage, argv, option named).
FLAG_SAMPLES = [
    ("train-vq", ["--steps", "0"], "--steps"),
    ("train-vq", ["--steps", "ten"], "--steps"),
    ("train-vq", ["--size", "40"], "--size"),
    ("train-vq", ["--precision", "fp8"], "--precision"),
    ("train-vq", ["--lr", "-1"], "--lr"),
    ("train-vq", ["--lr", "inf"], "--lr"),
    ("train-vq", ["--grad-clip", "nan"], "--grad-clip"),
    ("train-sga", ["--sga-blocks", "0"], "--sga-blocks"),
    ("encode", ["--batch-size", "0"], "--batch-size"),
    ("inspect-codebook", ["--atlas-latent", "17"], "--atlas-latent"),
    ("stylize", ["--alpha", "1.5"], "--alpha"),
    ("stylize", ["--tile", "100"], "--tile"),
    ("stylize", ["--format", "gif"], "--format"),
    ("stylize", ["--style-weights", "0.5,inf"], "--style-weights"),
    ("train-vq", ["--device", "tpu"], "--device"),
]


@pytest.mark.parametrize(("stage_name", "argv", "option"), FLAG_SAMPLES, ids=[" ".join(a) for _, a, _ in FLAG_SAMPLES])
def test_invalid_flags_through_the_cli(capsys, stage_name: str, argv: list[str], option: str) -> None:
    result = run_cli(capsys, stage_name, *argv)
    assert result.code == 2, result.err
    assert option in result.err, result.err
    assert "Traceback" not in result.err


STYLE = PAINTINGS_DIR / "munch_the_scream.jpg"
FAST = ["--size", "32", "--device", "cpu"]


# ------------------------------------------------------------------------------------------- web addresses


URL = "https://example.com/photos/cat.jpg"


def test_a_web_address_is_refused_as_one_not_as_a_missing_path(capsys, tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="https://example.com/photos/cat.jpg is a web address"):
        collect_images([URL])
    as_content = run_cli(capsys, "stylize", URL, "--style", str(STYLE), "-o", str(tmp_path / "out"), *FAST)
    as_style = run_cli(capsys, "stylize", str(CONTENT_DIR / "lhq_1.jpg"), "--style", URL, "-o", str(tmp_path), *FAST)
    as_checkpoint = run_cli(capsys, "encode", str(CONTENT_DIR / "lhq_1.jpg"), "--ckpt", "http://example.com/vq.pt")
    config = tmp_path / "config"
    config.mkdir()
    (config / "config.toml").write_text('[stylize]\nckpt = "s3://bucket/model.pt"\n')
    monkeypatch.setenv("QUANTART_CONFIG_DIR", str(config))
    in_config = run_cli(capsys, "stylize", str(CONTENT_DIR / "lhq_1.jpg"), "--style", str(STYLE), *FAST)
    for result, named in ((as_content, URL), (as_style, URL), (as_checkpoint, "http://example.com/vq.pt"),
                          (in_config, "s3://bucket/model.pt")):
        assert result.code == 2, result.err
        assert named in result.err and "web address" in result.err and "download" in result.err
        assert result.err.count("\n") == 1
