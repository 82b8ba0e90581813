from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import scan as scan_module
from audit.corpus import CorpusSpec, Sample
from audit.errors import InputError
from audit.findings import Finding, sha256_hex
from audit.scan import ScanOptions, ScanSummary, scan_corpus, scan_samples
from tests.audit.fakes import FAKES

# A small corpus in six languages/formats; each file plants fakes at known places.
FILES: dict[str, str] = {
    "app/settings.py": (
        '"""Settings."""\nimport os\n\n'
        'AWS_ACCESS_KEY_ID = "{aws_id}"\n'
        'AWS_SECRET_ACCESS_KEY = "{aws_secret}"\n'
        'DEBUG_TOKEN = os.environ["DEBUG_TOKEN"]\n'
        "# maintainer: {email}\n"
    ),
    "app/client.js": 'const gh = "{github}";\nconst example = "AKIAIOSFODNN7EXAMPLE";\n',
    "deploy/.env": "DB_PASSWORD={password}\nSLACK_TOKEN={slack}\nHOST=10.0.0.7\n",
    "deploy/values.yaml": "stripe:\n  key: {stripe}\n  api_key: your-api-key-here\n",
    "src/Main.java": 'class Main {{ String hf = "{hf}"; }}\n',
    "keys/id_rsa.txt": "{pem}\n",
    "README.md": "Nothing secret here, just text.\n",
}
PLANTED = {  # file -> fake keys that must be found, in order
    "app/settings.py": ["aws_id", "aws_secret", "email"],
    "app/client.js": ["github"],
    "deploy/.env": ["password", "slack"],
    "deploy/values.yaml": ["stripe"],
    "src/Main.java": ["hf"],
    "keys/id_rsa.txt": ["pem"],
    "README.md": [],
}


def _texts() -> dict[str, str]:
    return {path: template.format(**FAKES) for path, template in FILES.items()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus") / "data"
    for path, text in _texts().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def _records() -> list[dict[str, Any]]:
    return [{"id": p, "path": p, "content": t} for p, t in sorted(_texts().items())]


def _scan(spec: CorpusSpec, **kw: Any) -> list[Finding]:
    return list(scan_corpus(spec, **kw))


def test_planted_fakes_are_found_at_their_spans(corpus: Path) -> None:
    findings = _scan(CorpusSpec(corpus), jobs=1)
    texts = _texts()
    for path, keys in PLANTED.items():
        found = [(f.start, f.end) for f in findings if f.sample_id == path]
        expected = [(texts[path].index(FAKES[k]), texts[path].index(FAKES[k]) + len(FAKES[k]))
                    for k in keys]  # fmt: skip
        assert found == expected, path


def test_every_finding_hashes_to_its_span(corpus: Path) -> None:
    texts = _texts()
    findings = _scan(CorpusSpec(corpus), jobs=1)
    assert findings
    for f in findings:
        assert sha256_hex(texts[f.sample_id][f.start : f.end]) == f.secret_sha256
        assert f.matches(texts[f.sample_id])


def test_findings_do_not_depend_on_the_format(corpus: Path, tmp_path: Path) -> None:
    expected = _scan(CorpusSpec(corpus), jobs=1)
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    packed = tmp_path / "data.jsonl.gz"
    packed.write_bytes(gzip.compress(jsonl.read_bytes()))
    parquet = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(_records()), parquet)
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(_records()).save_to_disk(str(tmp_path / "hf"))
    for path in (jsonl, packed, parquet, tmp_path / "hf"):
        assert _scan(CorpusSpec(path), jobs=1) == expected, path.name


def test_results_do_not_depend_on_jobs(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = scan_module._scan_in_pool

    def spy(*args: Any) -> Iterator[Any]:
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(scan_module, "_scan_in_pool", spy)
    small = ScanOptions(chunk_samples=2, parallel_min_chars=0)
    one = _scan(CorpusSpec(corpus), options=small, jobs=1)
    two = _scan(CorpusSpec(corpus), options=small, jobs=2)
    assert calls == [2]  # the second scan really ran in worker processes
    assert one == two
    assert one == _scan(CorpusSpec(corpus), jobs=1)  # chunking does not matter either
    assert _scan(CorpusSpec(corpus), jobs=2) == one  # small: scanned in this process
    assert calls == [2]


def test_summary_counts(corpus: Path) -> None:
    summary = ScanSummary()
    findings = _scan(CorpusSpec(corpus), jobs=1, summary=summary)
    assert summary.samples == len(FILES)
    assert summary.findings == len(findings)
    assert summary.by_type["AWS Access Key"] == 2
    assert summary.samples_with_findings == 6
    assert summary.filtered["documented example"] == 1
    assert summary.filtered["placeholder"] == 1
    assert summary.filtered["non-public IP"] == 1


def test_scan_streams_and_stops_at_the_bad_line(tmp_path: Path) -> None:
    """The first findings arrive before the reader reaches a bad line 300 records later."""
    path = tmp_path / "big.jsonl"
    good = json.dumps({"content": "# by {email}\n".format(**FAKES)})
    path.write_text((good + "\n") * 300 + "not json\n")
    spec = CorpusSpec(path)
    options = ScanOptions(chunk_samples=10, parallel_min_chars=0)
    first = list(islice(scan_corpus(spec, options, jobs=2), 3))
    assert [f.sample_id for f in first] == ["big.jsonl:1", "big.jsonl:2", "big.jsonl:3"]
    with pytest.raises(InputError, match=r"big.jsonl:301: not a JSON object"):
        _scan(spec, options=options, jobs=2)


def test_bad_records_can_be_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"content": "x"}\n[1, 2]\n{"text": "no content"}\n')
    summary = ScanSummary()
    _scan(CorpusSpec(path, on_bad_record="skip"), jobs=1, summary=summary)
    assert summary.samples == 1
    assert summary.skipped == {"bad JSON line": 1, "text field missing": 1}


def _one(text: str, language: str | None = "python") -> list[Finding]:
    sample = Sample(id="s", origin="s", text=text, language=language)
    return list(scan_samples([sample])[0].findings)


def test_long_lines_are_scanned_in_windows() -> None:
    """A secret in the middle and at the end of a 60,000-character line is found exactly."""
    filler = "var a=1;" * 3750
    text = f'{filler}var t="{FAKES["github"]}";{filler}var k="{FAKES["google"]}";'
    spans = [(f.start, f.end) for f in _one(text, "javascript")]
    for key in ("github", "google"):
        start = text.index(FAKES[key])
        assert (start, start + len(FAKES[key])) in spans


def test_characters_whose_lower_case_is_longer() -> None:
    """'İ'.lower() has two characters; offsets must not shift after it."""
    text = f'İİİ = 1\ntoken = "{FAKES["github"]}"\n'
    (finding,) = _one(text)
    assert text[finding.start : finding.end] == FAKES["github"]


def test_a_name_that_is_itself_a_secret_is_dropped() -> None:
    text = f'mapping = {{"{FAKES["github"]}": "{FAKES["stripe"]}"}}\n'
    findings = _one(text)
    assert [f.secret_type for f in findings] == ["GitHub Token", "Stripe Access Key"]
    assert findings[1].context.name is None  # its key would have been the GitHub token
    assert findings[1].context.kind == "string"


def test_keyword_values_in_code_must_be_string_literals() -> None:
    assert _one('password = "s3cr3t-Value9"\n')
    assert not _one("# the password = x\nif password == other_password: pass\n")


def test_empty_and_whitespace_samples() -> None:
    assert _one("") == []
    assert _one("\n\n   \r\n") == []


PIECES = [
    "ghp_", "xoxb-1-", "AKIA", "password=", "password: ", 'token = "', "-----BEGIN RSA PRIVATE "
    "KEY-----", "-----END RSA PRIVATE KEY-----", "@", "a@b.co", "::", "1.2.3.4", "8.8.8.8",
    '"', "'", "`", "\\n", "\n", "\r\n", "İ", "\ud800", "日本", "eyJ", "sk_live_", "://u:p@h",
    "#", "{", "}", "=", "AIza", "hf_", "x" * 40, "AbC0" * 12,
]  # fmt: skip
LANGUAGES = [None, "python", "javascript", "typescript", "tsx", "java", "go", "ruby", "php", "c",
             "cpp", "bash", "yaml", "json", "toml", "ini", "dotenv"]  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(st.sampled_from(PIECES) | st.text(max_size=12), max_size=30),
    raw=st.binary(max_size=200),
    language=st.sampled_from(LANGUAGES),
)
def test_scanning_arbitrary_text_never_raises(parts: list[str], raw: bytes, language: str) -> None:
    text = "".join(parts) + raw.decode("utf-8", errors="replace")
    for f in _one(text, language):
        assert 0 <= f.start < f.end <= len(text)
        assert f.matches(text)


def test_a_dead_worker_is_a_one_line_internal_error() -> None:
    from collections import deque
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from audit.errors import CodeEraserError, ExitCode

    future: Future[list[scan_module.SampleResult]] = Future()
    future.set_exception(BrokenProcessPool("worker killed"))
    with pytest.raises(CodeEraserError, match="worker process died") as caught:
        scan_module._next_result(deque([([], future)]))
    assert caught.value.exit_code == ExitCode.INTERNAL


def test_a_span_reported_by_one_detector_is_not_counted_as_dropped_by_another() -> None:
    """`aws_access_key_id` is a benign name to the keyword detector; the AWS detector
    reports the key, so the summary must not also count it as a dropped false positive."""
    text = f'aws_access_key_id = "{FAKES["aws_id"]}"\nsecret_id = "q8Zt2mWv9kP"\n'
    (result,) = scan_samples([Sample(id="s", origin="s.py", text=text, language="python")])
    assert [f.secret_type for f in result.findings] == ["AWS Access Key"]
    assert dict(result.filtered) == {"benign name": 1}  # only the second line
