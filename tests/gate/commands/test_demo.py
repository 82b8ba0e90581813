from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from gate import ui
from gate.cli import cli
from gate.demo import build as demo
from gate.demo.build import DemoBuild
from tests.gate.demo.test_build import secret_values


@pytest.fixture(autouse=True)
def _reset_ui() -> Iterator[None]:
    """The CLI configures quiet mode and logging globally: put them back afterwards."""
    yield
    ui.configure(0, quiet=False)


def test_demo_prints_the_figures_and_the_model_dir(tiny_demo: DemoBuild) -> None:
    cache = tiny_demo.root.parent.parent
    args = ["demo", "--preset", "tiny", "--build-only", "--cache-dir", str(cache)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tiny_demo.model_dir)
    f = tiny_demo.figures
    for expected in (
        f"{f.parameters:,}",
        f"{f.planted_extracted}/{f.planted_secrets}",
        f"{f.controls_extracted}/{f.controls}",
        f"{f.planted_ma:.3f}",
        "cached: reused",
    ):
        assert expected in result.stderr


def test_quiet_prints_only_the_model_dir(tiny_demo: DemoBuild) -> None:
    cache = tiny_demo.root.parent.parent
    args = ["-q", "demo", "--preset", "tiny", "--build-only", "--cache-dir", str(cache)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0
    assert result.stdout.strip() == str(tiny_demo.model_dir)
    assert result.stderr == ""


def test_bad_preset_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["demo", "--preset", "huge"])
    assert result.exit_code == 2
    assert "'huge' is not one of 'tiny', 'demo', 'gpt2-alt', 'llama-49k'" in result.output


def test_preset_names_match_the_library() -> None:
    from gate.commands.demo import PRESET_NAMES

    assert set(PRESET_NAMES) == set(demo.PRESETS)


def test_a_build_prints_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole build through the CLI, with progress bars drawn and debug logging on:
    no planted or control value appears in anything it prints."""
    small = dataclasses.replace(
        demo.PRESETS["tiny"], n_files=5, copies=2, n_heldout_files=1, steps=3, vocab_size=300
    )
    monkeypatch.setitem(demo.PRESETS, "tiny", small)
    screen = io.StringIO()
    monkeypatch.setattr(ui, "console", Console(file=screen, force_terminal=True, width=120))
    args = ["-vv", "demo", "--preset", "tiny", "--build-only", "--cache-dir", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    build = demo.build_demo("tiny", cache_dir=tmp_path)
    assert build.cached
    printed = screen.getvalue() + result.output
    assert "Building the tiny demo into" in printed
    assert "training the tiny model" in printed  # the progress bar was drawn
    values = secret_values(build)
    assert len(values) == small.n_secrets * 2
    assert sum(value in printed for value in values) == 0  # a count: never show a value


def test_demo_runs_the_gate_and_exits_with_its_code(tiny_demo: DemoBuild, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "rules: [{metric: extracted_greedy, limit: 0}]\n"
        "extraction: {prefix_tokens: 96}\n"
        "remediation: {enabled: false}\n"
    )
    cache, out = tiny_demo.root.parent.parent, tmp_path / "run"
    args = ["demo", "--preset", "tiny", "--cache-dir", str(cache)]
    result = CliRunner().invoke(cli, [*args, "--policy", str(policy), "--out", str(out)])
    assert result.exit_code == 1, result.output  # the tiny model leaks; nothing erased
    assert f"{tiny_demo.figures.planted_extracted}/" in result.stderr
    assert "FAILED" in result.stderr
    assert (out / "report.html").is_file()
    assert (out / "record.json").is_file()
