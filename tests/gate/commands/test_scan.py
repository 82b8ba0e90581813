from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from audit.findings import read_findings
from gate.cli import cli
from tests.audit.fakes import FAKES

PLANTED = ["aws_id", "aws_secret", "github", "slack", "stripe", "google", "hf", "jwt", "pem",
           "password", "url_password", "email", "ipv4", "npm", "sendgrid"]  # fmt: skip


def _corpus(root: Path) -> Path:
    files = {
        "app/config.py": (
            'AWS_ACCESS_KEY_ID = "{aws_id}"\nAWS_SECRET_ACCESS_KEY = "{aws_secret}"\n'
            'GITHUB = "{github}"\nJWT = "{jwt}"\n# author: {email}\n'
            'KEY = """{pem}"""\n'
        ),
        "web/app.js": 'const g = "{google}";\nconst sg = "{sendgrid}";\n',
        "ops/.env": "SLACK_TOKEN={slack}\nDB_PASSWORD={password}\nNPM_TOKEN={npm}\n",
        "ops/values.yaml": (
            "stripe: {stripe}\nhf: {hf}\ndsn: postgres://app:{url_password}@db.corp.io/app\n"
            "server: {ipv4}\n"
        ),
    }
    for path, template in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(template.format(**FAKES))
    return root


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_scan_writes_findings_and_a_summary(tmp_path: Path) -> None:
    data = _corpus(tmp_path / "data")
    out = tmp_path / "findings.jsonl"
    result = _run("scan", str(data), "--out", str(out), "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    findings = read_findings(out)
    texts = {p.relative_to(data).as_posix(): p.read_text() for p in data.rglob("*") if p.is_file()}
    assert len(findings) == len(PLANTED)
    assert all(f.matches(texts[f.sample_id]) for f in findings)
    assert "Secrets found" in result.stderr
    assert "AWS Access Key" in result.stderr
    assert "4 samples" in result.stderr


def test_no_planted_secret_appears_in_any_output(tmp_path: Path) -> None:
    """Not in the findings file, stdout, stderr, or the -vv debug log."""
    data = _corpus(tmp_path / "data")
    out = tmp_path / "findings.jsonl"
    result = _run("-vv", "scan", str(data), "--out", str(out), "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert "AKIA…(20)" in result.stderr  # the -vv log of each finding ran
    written = out.read_bytes()
    for key in PLANTED:
        for piece in _pieces(FAKES[key]):
            assert piece.encode() not in written, f"{key} leaked into the findings file"
            assert piece not in result.stdout, f"{key} leaked to stdout"
            assert piece not in result.stderr, f"{key} leaked to stderr"


def _pieces(value: str) -> list[str]:
    """The value and, for a private key, each line of its body."""
    lines = [line for line in value.splitlines() if "-----" not in line]
    return [value, *lines]


def test_baseline_subtracts_accepted_findings(tmp_path: Path) -> None:
    data = _corpus(tmp_path / "data")
    first = tmp_path / "first.jsonl"
    assert _run("scan", str(data), "--out", str(first), "--jobs", "1").exit_code == 0
    (data / "new.py").write_text('token = "{github_pat}"\n'.format(**FAKES))
    second = tmp_path / "second.jsonl"
    result = _run("scan", str(data), "--out", str(second), "--baseline", str(first))
    assert result.exit_code == 0, result.output
    assert [f.sample_id for f in read_findings(second)] == ["new.py"]
    assert f"Accepted by the baseline: {len(PLANTED)}" in result.stderr


def test_a_detect_secrets_baseline_is_subtracted(tmp_path: Path) -> None:
    """A `.secrets.baseline` written by the real detect-secrets CLI: the findings whose
    value's SHA-1 and type it lists are accepted, the others are written."""
    data = _corpus(tmp_path / "data")
    made = subprocess.run(
        [sys.executable, "-m", "detect_secrets", "scan", "--all-files"],
        cwd=data, capture_output=True, text=True, check=True,
    )  # fmt: skip
    baseline = tmp_path / ".secrets.baseline"
    baseline.write_text(made.stdout)
    listed = {
        (e["hashed_secret"], e["type"])
        for entries in json.loads(made.stdout)["results"].values()
        for e in entries
    }
    everything, rest = tmp_path / "all.jsonl", tmp_path / "rest.jsonl"
    assert _run("scan", str(data), "--out", str(everything), "--jobs", "1").exit_code == 0
    result = _run("scan", str(data), "--out", str(rest), "--jobs", "1", "--baseline", str(baseline))
    assert result.exit_code == 0, result.output
    accepted = [f for f in read_findings(everything) if (f.secret_sha1, f.secret_type) in listed]
    # detect-secrets hashes only part of some secrets (a GitHub token's prefix, a JWT
    # without its signature): those entries cannot vouch for the whole value and stay
    assert {"AWS Access Key", "Slack Token", "Basic Auth Credentials"} <= {
        f.secret_type for f in accepted
    }
    kept = read_findings(rest)
    assert len(kept) == len(PLANTED) - len(accepted)
    assert not {(f.secret_sha1, f.secret_type) for f in kept} & listed
    assert f"Accepted by the baseline: {len(accepted)}" in result.stderr


def test_old_detector_names_still_select(tmp_path: Path) -> None:
    data = _corpus(tmp_path / "data")
    out = tmp_path / "f.jsonl"
    old_names = ["--detector", "SlackDetector", "--detector", "KeywordAssignmentDetector"]
    result = _run("-v", "scan", str(data), "--out", str(out), "--jobs", "1", *old_names)
    assert result.exit_code == 0, result.output
    assert {f.secret_type for f in read_findings(out)} == {"Secret Keyword", "Slack Token"}
    assert "SlackDetector is now SlackTokenDetector" in result.stderr


def test_excludes_and_detector_selection(tmp_path: Path) -> None:
    data = _corpus(tmp_path / "data")
    out = tmp_path / "f.jsonl"
    result = _run("scan", str(data), "--out", str(out), "--exclude", "ops/*",
                  "--detector", "GitHubTokenDetector", "--detector", "EmailDetector")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(f.secret_type for f in read_findings(out)) == ["Email Address", "GitHub Token"]
    assert "excluded 2" in result.stderr


def test_list_detectors() -> None:
    result = _run("scan", "x", "--list-detectors")
    assert result.exit_code == 0
    assert "HuggingFaceTokenDetector\tHugging Face Token" in result.stdout
    assert "KeywordDetector\tSecret Keyword" in result.stdout


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("missing", [], "missing: no such file or folder"),
        ("bad.jsonl", [], "bad.jsonl:2: not a JSON object"),
        ("nofield.jsonl", [], "nofield.jsonl:1: text field 'content' is missing"),
        ("data.parquet", [], "no column 'content'"),
        ("bad.jsonl", ["--detector", "NoSuchDetector"], "unknown detector NoSuchDetector"),
    ],
)
def test_bad_input_is_a_one_line_error(
    tmp_path: Path, name: str, args: list[str], message: str
) -> None:
    _jsonl(tmp_path / "bad.jsonl", [json.dumps({"content": "x"}), "{not json"])
    _jsonl(tmp_path / "nofield.jsonl", [json.dumps({"text": "x"})])
    pq.write_table(pa.Table.from_pylist([{"text": "x"}]), tmp_path / "data.parquet")
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n")
    result = _run("scan", str(tmp_path / name), "--out", str(out), *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.startswith("Error: ")
    assert result.stderr.count("\n") == 1
    assert out.read_text() == "previous\n"  # an interrupted scan leaves the old file


def test_bad_records_skipped_and_counted(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "bad.jsonl", [json.dumps({"content": "x"}), "{not json"])
    result = _run("scan", str(path), "--out", str(tmp_path / "o.jsonl"), "--on-bad-record", "skip")
    assert result.exit_code == 0, result.output
    assert "Skipped: bad JSON line 1" in result.stderr


def test_unreadable_files_in_a_folder_are_skipped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _corpus(tmp_path / "data")
    locked = data / "web" / "app.js"
    real = os.open

    def open_file(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied")
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_file)
    result = _run("scan", str(data), "--out", str(tmp_path / "o.jsonl"), "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert "unreadable 1" in result.stderr


def test_scan_does_not_import_torch(tmp_path: Path) -> None:
    data = _corpus(tmp_path / "data")
    code = (
        "import sys\nfrom gate.cli import main\n"
        f"sys.argv = ['codeeraser', '-q', 'scan', {str(data)!r}, '--out', "
        f"{str(tmp_path / 'o.jsonl')!r}, '--jobs', '1']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert exit.code in (0, None)\n"
        "assert 'torch' not in sys.modules, 'scan imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_interrupt_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gate.commands.scan

    def interrupted(*args: object, **kwargs: object) -> Iterator[object]:
        yield from ()  # a generator, like the real one, that is interrupted when iterated
        raise KeyboardInterrupt

    monkeypatch.setattr(gate.commands.scan, "scan_corpus", interrupted)
    out = tmp_path / "o.jsonl"
    result = _run("scan", str(_corpus(tmp_path / "data")), "--out", str(out))
    assert result.exit_code == 3
    assert "scan interrupted" in result.stderr
    assert not out.exists()


def test_list_detectors_needs_no_data() -> None:
    result = _run("scan", "--list-detectors")
    assert result.exit_code == 0
    assert "GrafanaCloudTokenDetector\tGrafana Token" in result.stdout
    missing = _run("scan")
    assert missing.exit_code == 2
    assert "missing argument DATA" in missing.output
