from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.errors import ExitCode, InputError
from audit.findings import (
    Baseline,
    Context,
    Finding,
    baseline_key,
    make_preview,
    read_baseline,
    read_findings,
    sha256_hex,
    subtract_baseline,
    write_findings,
)

TEXT = 'import os\nAWS_KEY = "AKIAZ7QW3ERT5YUI8OPA"\n'


def _finding(text: str = TEXT) -> Finding:
    start = text.index("AKIA")
    return Finding.create(
        sample_id="s1",
        origin="src/app.py",
        text=text,
        start=start,
        end=start + 20,
        secret_type="AWS Access Key",
        detector="AWSKeyDetector",
        context=Context(kind="string", name="AWS_KEY", node="assignment"),
    )


def test_create_computes_position_hash_and_redacted_preview() -> None:
    f = _finding()
    assert (f.line, f.column) == (2, 12)
    assert f.secret_sha256 == sha256_hex("AKIAZ7QW3ERT5YUI8OPA")
    assert f.preview == "AKIA…(20)"
    assert f.matches(TEXT)
    assert not f.matches(TEXT.replace("Z7QW", "Z7QX"))


@pytest.mark.parametrize(
    ("value", "preview"),
    [
        ("ghp_" + "a" * 36, "ghp_…(40)"),
        ("hunter2hunter2", "…(14)"),
        ("alice@corp.io", "…(13)"),
        ("AKIA", "…(4)"),  # a prefix that is the whole value is not shown
    ],
)
def test_preview_shows_only_public_prefix_and_length(value: str, preview: str) -> None:
    assert make_preview(value) == preview


def test_jsonl_round_trip_keeps_no_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "findings.jsonl"
    assert write_findings(path, [_finding()]) == 1
    assert "Z7QW3ERT5YUI8OPA" not in path.read_text()
    assert read_findings(path) == [_finding()]


def test_id_is_stable_and_position_specific() -> None:
    f = _finding()
    g = _finding("# moved\n" + TEXT)
    assert f.id == _finding().id
    assert f.id != g.id
    assert f.secret_sha256 == g.secret_sha256


def test_baseline_subtracts_by_hash_and_type_not_position() -> None:
    moved = _finding("# moved\n" + TEXT)
    baseline = Baseline(sha256=frozenset({baseline_key(_finding())}))
    assert list(subtract_baseline([moved], baseline)) == []
    other_type = Finding.from_dict({**moved.to_dict(), "secret_type": "Secret Keyword"})
    assert list(subtract_baseline([other_type], baseline)) == [other_type]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json\n", "findings.jsonl:1: not a JSON object"),
        ("[1, 2]\n", "findings.jsonl:1: not a JSON object"),
        ('\n{"id": "x"}\n', "findings.jsonl:2: not a finding (missing"),
    ],
)
def test_bad_findings_file_names_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "findings.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=message.replace("(", r"\(")) as info:
        read_findings(path)
    assert info.value.exit_code == ExitCode.USAGE


def test_missing_findings_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_findings(tmp_path / "nope.jsonl")


def test_a_detect_secrets_baseline_is_read(tmp_path: Path) -> None:
    path = tmp_path / ".secrets.baseline"
    entry = {"type": "Public IP (ipv4)", "hashed_secret": "ab" * 20, "line_number": 3}
    path.write_text(json.dumps({"version": "1.5.0", "results": {"a.py": [entry]}}))
    baseline = read_baseline(path)
    assert baseline.sha1 == {("ab" * 20, "IP Address")}


def test_a_broken_detect_secrets_baseline_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / ".secrets.baseline"
    path.write_text(json.dumps({"results": {"a.py": [{"type": "Secret Keyword"}]}}))
    with pytest.raises(InputError, match="lacks hashed_secret"):
        read_baseline(path)


def test_to_dict_is_dataclasses_asdict() -> None:
    """The hand-made to_dict (merging shards spent most of its time in asdict) gives what
    asdict gives, so findings files keep their bytes."""
    from dataclasses import asdict

    from audit.findings import Context

    text = 'url = "https://user:hunter2hunter2@db.example.org"'
    for context in (Context(), Context("string", "url", "string"), Context("comment", None, None)):
        found = Finding.create(
            sample_id="a/b.py", origin="a/b.py", text=text, start=20, end=34,
            secret_type="Basic Auth Credentials", detector="ConnectionStringDetector",
            context=context,
        )  # fmt: skip
        assert found.to_dict() == asdict(found)
        assert list(found.to_dict()) == list(asdict(found))
