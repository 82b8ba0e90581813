from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from gate.cli import cli
from gate.record import write_record
from tests.gate import fakes


def saved_record(tmp_path: Path) -> Path:
    path = tmp_path / "run" / "record.json"
    write_record(fakes.build_record(fakes.LEAKY, fakes.PARTLY), path)
    return path


def test_report_rerenders_every_format(tmp_path: Path) -> None:
    record = saved_record(tmp_path)
    result = CliRunner().invoke(cli, ["report", str(record), "--out", str(tmp_path / "new")])
    assert result.exit_code == 0, result.output
    written = sorted(Path(line).name for line in result.stdout.split())
    assert written == ["record.json", "report.html", "results.sarif", "summary.md"]
    assert "FAILED" in (tmp_path / "new" / "report.html").read_text(encoding="utf-8")
    again = json.loads((tmp_path / "new" / "record.json").read_text(encoding="utf-8"))
    assert again == json.loads(record.read_text(encoding="utf-8"))


def test_report_defaults_to_the_record_folder_and_honours_format(tmp_path: Path) -> None:
    record = saved_record(tmp_path)
    result = CliRunner().invoke(cli, ["-q", "report", str(record), "--format", "sarif, md"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in record.parent.iterdir()) == [
        "record.json",
        "results.sarif",
        "summary.md",
    ]


def test_report_bad_input_exits_2(tmp_path: Path) -> None:
    record = saved_record(tmp_path)
    runner = CliRunner()
    cases = [
        (["report", str(tmp_path / "missing.json")], "no such file"),
        (["report", str(record), "--format", "pdf"], "unknown report format 'pdf'"),
        (["report", str(record), "--format", ","], "--format"),
    ]
    (tmp_path / "notes.json").write_text('{"a": 1}', encoding="utf-8")
    cases.append((["report", str(tmp_path / "notes.json")], "not a gate record"))
    for args, fragment in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("Error: ")
        assert fragment in result.output
        assert "Traceback" not in result.output
