"""bench/generate_check.py: Hugging Face `generate` agrees with the tool's greedy
extraction on every finding of the tiny demo model, and a verdict flipped in the
measurements file is caught."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from gate.cli import cli
from tests.bench import load_script

if TYPE_CHECKING:
    from gate.demo.build import DemoBuild


def _script() -> ModuleType:
    return load_script("generate_check")


@pytest.fixture(scope="module")
def measured(tiny_demo: DemoBuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generate_check") / "m.jsonl"
    result = CliRunner().invoke(
        cli,
        [
            "measure", "--model", str(tiny_demo.model_dir), "--data", str(tiny_demo.corpus_dir),
            "--findings", str(tiny_demo.planted), "--out", str(out), "--samples", "0",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def _check(tiny_demo: DemoBuild, measurements: Path, out: Path) -> tuple[int, dict[str, Any]]:
    code = _script().main(
        [
            "--model", str(tiny_demo.model_dir), "--data", str(tiny_demo.corpus_dir),
            "--findings", str(tiny_demo.planted), "--measurements", str(measurements),
            "--out", str(out),
        ]
    )  # fmt: skip
    return code, json.loads(out.read_text())


def test_generate_agrees_with_the_tool_on_every_finding(
    tiny_demo: DemoBuild, measured: Path, tmp_path: Path
) -> None:
    code, result = _check(tiny_demo, measured, tmp_path / "check.json")
    assert code == 0
    assert result["agree"] is True
    rows = measured.read_text().splitlines()
    assert result["findings"] == len(rows) > 0
    assert result["extracted_by_generate"] == result["extracted_by_tool"] > 0


def test_a_flipped_verdict_is_a_disagreement(
    tiny_demo: DemoBuild, measured: Path, tmp_path: Path
) -> None:
    rows = [json.loads(line) for line in measured.read_text().splitlines()]
    flipped = next(r for r in rows if r["extracted_greedy"])
    flipped["extracted_greedy"] = False
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, result = _check(tiny_demo, edited, tmp_path / "check.json")
    assert code == 1
    assert result["generate_only"] == [flipped["finding_id"]]
    assert result["tool_only"] == []
