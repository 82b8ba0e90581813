from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from audit.findings import Finding, write_findings
from audit.measurements import read_measurements
from gate.cli import cli
from tests.audit import tiny_lm

AWS = "AKIAQWERTYUIOPASDFGH"
GITHUB = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("measure")
    tiny_lm.save(root / "model")
    (root / "data").mkdir()
    (root / "data" / "a.py").write_text(tiny_lm.CODE)
    (root / "data" / "b.py").write_text(f'TOKEN = "{GITHUB}"\n' + tiny_lm.CODE[:300])
    findings = []
    for sample, value, kind in (
        ("a.py", AWS, "aws_access_key_id"),
        ("a.py", GITHUB, "github_token"),
        ("b.py", GITHUB, "github_token"),
    ):
        text = (root / "data" / sample).read_text()
        start = text.index(value)
        findings.append(
            Finding.create(
                sample_id=sample,
                origin=sample,
                text=text,
                start=start,
                end=start + len(value),
                secret_type=kind,
                detector="test",
            )
        )
    write_findings(root / "findings.jsonl", findings)
    return root


def run(root: Path, *args: str) -> Result:
    base = ["--model", str(root / "model"), "--data", str(root / "data")]
    return CliRunner().invoke(cli, ["measure", *base, *args])


def test_measure_writes_one_row_per_finding_and_never_a_secret(workspace: Path) -> None:
    out = workspace / "m.jsonl"
    result = CliRunner().invoke(
        cli,
        [
            "-vv",
            "measure",
            "--model",
            str(workspace / "model"),
            "--data",
            str(workspace / "data"),
            "--findings",
            str(workspace / "findings.jsonl"),
            "--out",
            str(out),
            "--samples",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    rows = read_measurements(out)
    assert [r.secret_type for r in rows] == ["aws_access_key_id", "github_token", "github_token"]
    assert all(r.samples == 2 and r.extracted_sampled is not None for r in rows)
    assert [r.truncated for r in rows] == [False, True, True]  # the ghp_ token is 40 tokens
    assert "github_token" in result.output
    assert "paper:codeparrot-small" in result.output
    assert "3 findings measured" in result.output
    for secret in (AWS, GITHUB, AWS[4:12], GITHUB[4:14]):
        assert secret not in result.output
        assert secret not in out.read_text()


def test_max_findings_samples_deterministically(workspace: Path) -> None:
    outs = []
    for name in ("s1.jsonl", "s2.jsonl"):
        out = workspace / name
        result = run(
            workspace,
            "--findings",
            str(workspace / "findings.jsonl"),
            "--out",
            str(out),
            "--max-findings",
            "2",
            "--seed",
            "3",
        )
        assert result.exit_code == 0, result.output
        outs.append([r.finding_id for r in read_measurements(out)])
    assert len(outs[0]) == 2
    assert outs[0] == outs[1]
    assert "1 findings not sampled" in result.output


def test_empty_findings_is_nothing_to_measure(workspace: Path) -> None:
    empty = workspace / "empty.jsonl"
    empty.write_text("")
    result = run(workspace, "--findings", str(empty), "--out", str(workspace / "e.jsonl"))
    assert result.exit_code == 0
    assert "Nothing to measure" in result.output
    assert read_measurements(workspace / "e.jsonl") == []


def test_findings_from_another_corpus_name_the_finding(workspace: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.py").write_text(tiny_lm.CODE.replace(AWS, AWS[::-1]))
    (other / "b.py").write_text("x = 1\n")
    first = json.loads((workspace / "findings.jsonl").read_text().splitlines()[0])
    result = CliRunner().invoke(
        cli,
        [
            "measure",
            "--model",
            str(workspace / "model"),
            "--data",
            str(other),
            "--findings",
            str(workspace / "findings.jsonl"),
            "--out",
            str(tmp_path / "m.jsonl"),
        ],
    )
    assert result.exit_code == 2
    assert result.output.startswith("Error: finding ")
    assert first["id"] in result.output
    assert "another corpus" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert AWS[::-1] not in result.output
    assert not (tmp_path / "m.jsonl").exists()


@pytest.mark.parametrize(
    ("model_files", "message"),
    [
        (None, "no such model folder"),
        ({"config.json": json.dumps({"model_type": "t5"})}, "not a causal language model"),
        ({"config.json": json.dumps({"model_type": "gpt2"})}, "no *.safetensors"),
    ],
)
def test_bad_model_folders_are_one_line_errors(
    workspace: Path, tmp_path: Path, model_files: dict[str, str] | None, message: str
) -> None:
    model = tmp_path / "model"
    if model_files is not None:
        model.mkdir()
        for name, text in model_files.items():
            (model / name).write_text(text)
    result = CliRunner().invoke(
        cli,
        [
            "measure",
            "--model",
            str(model),
            "--data",
            str(workspace / "data"),
            "--findings",
            str(workspace / "findings.jsonl"),
            "--out",
            str(tmp_path / "m.jsonl"),
        ],
    )
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_unknown_paper_thresholds(workspace: Path) -> None:
    result = run(
        workspace, "--findings", str(workspace / "findings.jsonl"), "--thresholds", "paper:gpt-9"
    )
    assert result.exit_code == 2
    assert "paper:codegen-350m-mono" in result.output


def test_calibrate_then_measure_with_its_thresholds(workspace: Path) -> None:
    thresholds = workspace / "thresholds.json"
    result = CliRunner().invoke(
        cli,
        [
            "calibrate",
            "--model",
            str(workspace / "model"),
            "--unseen",
            str(workspace / "data"),
            "--out",
            str(thresholds),
            "--sequence-tokens",
            "24",
            "--sequences",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads(thresholds.read_text())
    assert saved["sequence_count"] == 2
    assert saved["source"] == f"calibrated:{workspace / 'data'}"
    assert "Thresholds from 2 unseen sequences of 24 tokens" in result.output
    out = workspace / "mt.jsonl"
    result = run(
        workspace,
        "--findings",
        str(workspace / "findings.jsonl"),
        "--out",
        str(out),
        "--thresholds",
        str(thresholds),
    )
    assert result.exit_code == 0, result.output
    assert f"calibrated:{workspace / 'data'}" in result.output


def test_calibrate_without_long_samples(workspace: Path, tmp_path: Path) -> None:
    (tmp_path / "unseen").mkdir()
    (tmp_path / "unseen" / "x.py").write_text("x = 1\n")
    result = CliRunner().invoke(
        cli,
        [
            "calibrate",
            "--model",
            str(workspace / "model"),
            "--unseen",
            str(tmp_path / "unseen"),
            "--out",
            str(tmp_path / "t.json"),
        ],
    )
    assert result.exit_code == 2
    assert "no sample has 128 tokens" in result.output
