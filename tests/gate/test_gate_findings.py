"""`codeeraser gate --findings`: a scan made at scale (the datatrove engine) instead of the
gate's own, checked against the data first; one from other data is refused (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner, Result

from audit.findings import read_findings, write_findings
from gate.cli import cli
from tests.gate.test_pipeline import _gate_args, _policy

if TYPE_CHECKING:
    from gate.demo.build import DemoBuild


def _gate(build: DemoBuild, out: Path, *extra: str) -> Result:
    out.parent.mkdir(parents=True, exist_ok=True)
    policy = _policy(out.parent, remediate=False)
    return CliRunner().invoke(cli, _gate_args(build, policy, out, *extra))


def _decided(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("outcome", "exit_code", "findings", "findings_summary", "verdict_before")
    return {key: record[key] for key in keys}


@pytest.fixture(scope="module")
def scaled(tiny_demo: DemoBuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo corpus's findings from the datatrove engine in three tasks."""
    out = tmp_path_factory.mktemp("scaled") / "findings.jsonl"
    args = ["scan", str(tiny_demo.corpus_dir), "--out", str(out), "--engine", "datatrove"]
    result = CliRunner().invoke(cli, [*args, "--tasks", "3"])
    assert result.exit_code == 0, result.output
    return out


def test_the_gate_on_scaled_findings_decides_as_on_its_own_scan(
    tiny_demo: DemoBuild, scaled: Path, tmp_path: Path
) -> None:
    own = _gate(tiny_demo, tmp_path / "own" / "out")
    given = _gate(tiny_demo, tmp_path / "given" / "out", "--findings", str(scaled))
    assert given.exit_code == own.exit_code == 1, given.output
    records = [
        json.loads((tmp_path / n / "out" / "record.json").read_text()) for n in ("own", "given")
    ]
    assert _decided(records[1]) == _decided(records[0])
    assert records[1]["findings"]  # the demo model leaks: something was measured
    assert "checked against the data" in given.stderr


def test_findings_of_other_data_are_refused(
    tiny_demo: DemoBuild, scaled: Path, tmp_path: Path
) -> None:
    findings = read_findings(scaled)
    moved = tmp_path / "moved.jsonl"  # same samples, spans shifted by one character
    write_findings(moved, [f.__class__(**{**f.__dict__, "start": f.start + 1}) for f in findings])
    result = _gate(tiny_demo, tmp_path / "a" / "out", "--findings", str(moved))
    assert result.exit_code == 2
    assert "does not match its hash" in result.stderr
    other = tmp_path / "other.jsonl"  # findings of the held-out split: not these samples
    held = CliRunner().invoke(cli, ["scan", str(tiny_demo.heldout_dir), "--out", str(other)])
    assert held.exit_code == 0, held.output
    assert read_findings(other)
    result = _gate(tiny_demo, tmp_path / "b" / "out", "--findings", str(other))
    assert result.exit_code == 2
    assert "is not in" in result.stderr


def test_a_findings_file_inside_the_run_folder_is_refused(
    tiny_demo: DemoBuild, scaled: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    inside = out / "mine.jsonl"
    inside.write_bytes(scaled.read_bytes())
    result = _gate(tiny_demo, out, "--findings", str(inside), "--force")
    assert result.exit_code == 2
    assert "contains --findings" in result.stderr
    assert inside.read_bytes() == scaled.read_bytes()
