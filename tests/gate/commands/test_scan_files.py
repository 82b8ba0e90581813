from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from audit.findings import read_findings
from gate.cli import cli
from tests.audit.fakes import FAKES

BASELINE = ".codeeraser-baseline.jsonl"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A training-data repository; pre-commit runs hooks at its root with relative names."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.py").write_text(
        f'X = 1\nAWS_ACCESS_KEY_ID = "{FAKES["aws_id"]}"\n', encoding="utf-8"
    )
    (tmp_path / "src" / "clean.py").write_text("def f():\n    return 1\n", encoding="utf-8")
    records = [
        {"id": "r0", "path": "a/app.js", "content": "const a = 1;\n"},
        {"id": "r1", "path": "b/deploy.sh", "content": f"echo hi\nGH={FAKES['github']}\n"},
    ]
    (tmp_path / "train.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8"
    )
    return tmp_path


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["scan-files", *args])


def _no_secret_in(*texts: str) -> None:
    for key in ("aws_id", "github", "stripe"):
        assert all(FAKES[key] not in text for text in texts), f"{key} leaked"


def test_new_findings_are_listed_redacted_and_fail(repo: Path) -> None:
    result = _run("src/config.py", "src/clean.py", "train.jsonl")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "src/config.py:2:22: AWS Access Key AKIA…(20)",
        "train.jsonl: b/deploy.sh at 2:4: GitHub Token ghp_…(40)",
    ]
    assert "2 finding(s) in 2 file(s) not in the baseline (none given)" in result.stderr
    assert "--accept" in result.stderr
    _no_secret_in(result.output)


def test_accepted_findings_pass_wherever_they_move(repo: Path) -> None:
    accepted = _run("--baseline", BASELINE, "--accept", "src/config.py", "train.jsonl")
    assert accepted.exit_code == 0, accepted.output
    assert "2 finding(s) added to .codeeraser-baseline.jsonl (2 in all)" in accepted.stdout
    _no_secret_in((repo / BASELINE).read_text(encoding="utf-8"), accepted.output)
    again = _run("--baseline", BASELINE, "--accept", "src/config.py")
    assert "0 finding(s) added" in again.stdout
    assert len(read_findings(repo / BASELINE)) == 2
    moved = repo / "src" / "moved.py"
    moved.write_text(f'\n\nKEY = "{FAKES["aws_id"]}"\n', encoding="utf-8")
    result = _run("--baseline", BASELINE, "src/config.py", "src/moved.py", "train.jsonl")
    assert result.exit_code == 0, result.output
    assert result.output == ""


def test_only_the_unaccepted_one_fails(repo: Path) -> None:
    assert _run("--baseline", BASELINE, "--accept", "src/config.py").exit_code == 0
    (repo / "src" / "pay.py").write_text(f'STRIPE = "{FAKES["stripe"]}"\n', encoding="utf-8")
    result = _run("--baseline", BASELINE, "src/config.py", "src/pay.py")
    assert result.exit_code == 1
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["src/pay.py"]
    _no_secret_in(result.output)


def test_the_baseline_itself_and_unreadable_files_are_not_scanned(repo: Path) -> None:
    assert _run("--baseline", BASELINE, "--accept", "src/config.py").exit_code == 0
    (repo / "logo.png").write_bytes(b"\x89PNG\0\0" + FAKES["aws_id"].encode())
    (repo / "empty.jsonl").write_text("", encoding="utf-8")
    result = _run("--baseline", BASELINE, BASELINE, "logo.png", "empty.jsonl", "src/config.py")
    assert result.exit_code == 0, result.output


def test_parquet_and_a_folder_are_read_as_scan_reads_them(repo: Path) -> None:
    table = pa.table({"content": ["x = 1\n", f"k = '{FAKES['stripe']}'\n"]})
    pq.write_table(table, repo / "part.parquet")
    result = _run("part.parquet", "src")
    assert result.exit_code == 1
    parquet, folder = result.stdout.splitlines()
    assert parquet.startswith("part.parquet: part.parquet:1 at 1:6: ")  # row 1, line 1
    assert parquet.endswith(" sk_live_…(42)")
    assert folder == "src: config.py at 2:22: AWS Access Key AKIA…(20)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--accept", "src/config.py"], "--accept needs --baseline FILE"),
        (["--baseline", "nope.jsonl", "src/config.py"], "nope.jsonl: no such baseline"),
        (["missing.py"], "missing.py: no such file or folder"),
        (["--detector", "Nope", "src/config.py"], "unknown detector Nope"),
        (["--text-field", "text", "train.jsonl"], "text field 'text' is missing"),
    ],
)
def test_bad_input_is_a_one_line_error(repo: Path, args: list[str], message: str) -> None:
    result = _run(*args)
    assert result.exit_code == 2
    assert result.output.startswith("Error: ")
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
