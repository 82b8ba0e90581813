"""Options made from the schemas, and the options several commands share."""

from __future__ import annotations

from typing import Any

import click
import pytest

from gate.cli import cli
from gate.commands.options import as_arguments, values_of
from gate.policy import ExtractionOptions
from gate.unlearn.settings import UnlearnArgs, UnlearnConfig


def _command(name: str) -> click.Command:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    return command


def _options(name: str) -> dict[str, click.Option]:
    return {p.name: p for p in _command(name).params if isinstance(p, click.Option) and p.name}


def test_erase_has_one_option_per_setting_with_its_default_and_bound() -> None:
    options = _options("erase")
    for name, info in UnlearnConfig.model_fields.items():
        option = options[name]
        assert option.help == info.description
        if not (option.is_flag or option.multiple):  # a flag is off, a list empty by default
            assert option.default == info.default, name
        ge = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
        gt = next((m.gt for m in info.metadata if hasattr(m, "gt")), None)
        if isinstance(option.type, click.IntRange):  # closed: > n is >= n + 1
            assert option.type.min == (ge if gt is None else gt + 1), name
        elif isinstance(option.type, click.FloatRange):
            assert (option.type.min, option.type.min_open) == (
                (ge, False) if gt is None else (gt, True)
            ), name
        else:
            assert (ge, gt) == (None, None), name


def _parsed(arguments: list[str]) -> dict[str, Any]:
    required = ["--model", "m", "--data", "d", "--findings", "f", "--measurements", "x"]
    ctx = _command("erase").make_context("erase", [*required, "--out", "o", *arguments])
    return ctx.params


def test_settings_written_as_options_parse_back_to_the_same_config() -> None:
    config = UnlearnConfig(
        method="cu", lr=1e-3, lam=0.3, epochs=9, reference="base", lora=True,
        lora_targets=("c_attn", "c_fc"), gradient_checkpointing="on", checkpoint_every=0,
    )  # fmt: skip
    parsed = _parsed([*as_arguments(config)])
    assert UnlearnConfig.model_validate(values_of(UnlearnConfig, parsed)) == config
    defaults = _parsed([])
    assert UnlearnConfig.model_validate(values_of(UnlearnConfig, defaults)) == UnlearnConfig()


def test_a_value_out_of_the_schema_range_is_a_usage_error() -> None:
    for option, value in (("--patience", "-1"), ("--lr", "0"), ("--window-tokens", "1")):
        with pytest.raises(click.BadParameter) as caught:
            _parsed([option, value])
        assert caught.value.param is not None
        assert caught.value.param.opts == [option]


@pytest.mark.parametrize("option", ["fmt", "text_field", "id_field"])
def test_data_format_options_are_the_same_in_every_command(option: str) -> None:
    seen = {name: _options(name)[option] for name in ("scan", "measure", "calibrate", "erase")}
    first = seen["scan"]
    for option_of_command in seen.values():
        assert option_of_command.opts == first.opts
        assert (option_of_command.help, option_of_command.default) == (first.help, first.default)


def test_shared_options_are_defined_once() -> None:
    pairs = [("thresholds_spec", ("measure", "erase")), ("prefix_tokens", ("measure", "erase")),
             ("heldout", ("erase", "gate")), ("jobs", ("scan", "gate")),
             ("batch_tokens", ("measure", "calibrate", "erase", "gate"))]  # fmt: skip
    for name, commands in pairs:
        helps = {_options(command)[name].help for command in commands}
        assert len(helps) == 1, name
    prefix = _options("measure")["prefix_tokens"]
    assert prefix.default == ExtractionOptions().prefix_tokens
    assert getattr(prefix.type, "min", None) == 1  # as in a policy


def test_the_args_model_is_the_policy_section() -> None:
    from gate.policy import RemediationOptions

    assert RemediationOptions.model_fields["args"].annotation is UnlearnArgs


@pytest.mark.parametrize(
    ("given", "expected"), [("auto", "auto"), ("1e-4", 1e-4), ("fast", None), ("0", None)]
)
def test_lr_is_a_positive_number_or_auto(given: str, expected: object) -> None:
    option = _options("erase")["lr"]
    if expected is None:
        with pytest.raises(click.BadParameter):
            option.type.convert(given, option, None)
    else:
        assert option.type.convert(given, option, None) == expected
    assert UnlearnConfig(lr="auto").lr == "auto"
