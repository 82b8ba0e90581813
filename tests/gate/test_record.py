from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from audit.errors import InputError
from audit.measurements import Thresholds
from gate.policy import Policy
from gate.record import (
    SCHEMA_VERSION,
    CorpusInfo,
    MeasurementSet,
    RecordBuilder,
    RunRecord,
    fingerprint_path,
    read_record,
    record_schema,
    write_record,
)
from gate.unlearn.remediation import Remediation
from tests.gate import fakes

GOLDEN = Path(__file__).parent / "golden" / "record_structure.json"

# Mappings keyed by data (secret types, files, stage names, packages), not by schema.
DATA_KEYED = {
    "tool.packages",
    "findings_summary.by_type",
    "corpus.allowlisted",
    "findings_summary.by_file",
    "findings[].measurements",
    "timings",
    "remediation.history[].loss",
    "corpus.skipped",
    "sanity",
}
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "record.schema.json"
OPAQUE = {"policy.resolved"}  # the policy's own schema is tested in test_policy.py


def shape(value: Any, path: str = "") -> Any:
    """Keys and JSON types of a document, with lists reduced to their first item."""
    if path in OPAQUE:
        return "object"
    if isinstance(value, dict):
        if path in DATA_KEYED:
            first = next(iter(value.values()), None)
            return {"<key>": shape(first, path + ".*")} if value else {}
        return {k: shape(v, f"{path}.{k}" if path else k) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0], path + "[]")] if value else []
    return scalar_type(value)


def scalar_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


def test_golden_structure_of_record_json(tmp_path: Path) -> None:
    record = fakes.build_record()
    record.corpus.fingerprint = "f" * 64
    record.corpus.bytes = 1000
    path = tmp_path / "record.json"
    write_record(record, path)
    actual = shape(json.loads(path.read_text(encoding="utf-8")))
    if os.environ.get("CODEERASER_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert actual == expected, "record.json changed shape: bump SCHEMA_VERSION if readers break"


def test_round_trip(tmp_path: Path) -> None:
    record = fakes.build_record(xss=True)
    path = tmp_path / "out" / "record.json"
    write_record(record, path)
    assert read_record(path) == record
    assert sorted(p.name for p in path.parent.iterdir()) == ["record.json"]  # no temp file left


def test_record_of_each_outcome() -> None:
    passed = fakes.build_record(fakes.CLEAN)
    assert (passed.outcome, passed.exit_code, passed.released_model) == (
        "passed",
        0,
        "/models/tiny",
    )
    assert passed.verdict_after is None
    assert passed.remediation is None
    remediated = fakes.build_record()
    assert remediated.outcome == "remediated"
    assert remediated.released_model == "/out/remediated-model"
    assert remediated.remediated_model is not None
    assert remediated.remediated_model.sha256 == "b" * 64
    failed = fakes.build_record(fakes.LEAKY, fakes.PARTLY)
    assert (failed.outcome, failed.exit_code, failed.released_model) == ("failed", 1, None)


def test_summary_counts_before_and_after() -> None:
    record = fakes.build_record(fakes.LEAKY, fakes.PARTLY, xss=True)
    total = record.findings_summary.total
    assert (total.findings, total.measured) == (5, 5)
    assert (total.extracted_before, total.memorized_before) == (5, 5)
    assert (total.extracted_after, total.memorized_after) == (0, 5)
    aws = record.findings_summary.by_type["AWS Access Key"]
    assert aws.findings == 2
    assert set(record.findings_summary.by_file) == {f.origin for f in fakes.corpus(xss=True)}
    never = fakes.build_record(fakes.CLEAN)
    assert never.findings_summary.total.extracted_after is None


def test_record_keeps_no_secret_hash_or_offsets() -> None:
    row = fakes.build_record().findings[0].model_dump()
    assert "secret_sha256" not in row
    assert "start" not in row
    assert row["preview"].endswith(")")


def test_builder_times_stages_and_rejects_unknown_findings() -> None:
    builder = RecordBuilder(
        model_path=Path("m"), corpus=CorpusInfo(path="c"), policy=Policy(), invocation=["x"]
    )
    with builder.stage("scan"):
        pass
    with builder.stage("scan"):
        pass
    assert list(builder.record.timings) == ["scan"]
    builder.set_thresholds(Thresholds(ma=0.4, el_10=0.05, source="calibrated:/unseen"))
    assert builder.record.thresholds is not None
    assert builder.record.thresholds.source == "calibrated:/unseen"
    items = fakes.findings(fakes.corpus())
    builder.set_findings(items[:1])
    with pytest.raises(InputError, match=f"unknown finding {items[1].id}"):
        builder.add_measurements(
            MeasurementSet(name="before", model="original", prefix_tokens=128),
            fakes.measure(fakes.CLEAN, items[:2]),
        )


def test_the_remediation_stays_typed_through_the_file(tmp_path: Path) -> None:
    record = fakes.build_record(utility=fakes.utility_figures(perplexity=(10.0, 10.5)))
    write_record(record, tmp_path / "record.json")
    again = read_record(tmp_path / "record.json")
    assert isinstance(again.remediation, Remediation)
    assert again.remediation == record.remediation
    assert again.utility is not None
    assert again.utility.perplexity_increase == pytest.approx(0.05)
    data = json.loads((tmp_path / "record.json").read_text(encoding="utf-8"))
    assert data["remediation"]["config"]["lambda"] == 0.1  # settings under their policy keys
    assert data["remediation"]["utility"]["perplexity_increase"] == pytest.approx(0.05)


def test_the_schema_file_is_the_models() -> None:
    expected = json.dumps(record_schema(), indent=2, sort_keys=True) + "\n"
    if os.environ.get("CODEERASER_UPDATE_GOLDEN") == "1":
        SCHEMA_FILE.write_text(expected, encoding="utf-8")
    assert SCHEMA_FILE.read_text(encoding="utf-8") == expected, (
        "record.json's schema changed: rerun with CODEERASER_UPDATE_GOLDEN=1, and bump "
        "SCHEMA_VERSION if readers break"
    )


@pytest.mark.parametrize("after", [fakes.CLEAN, None])
def test_record_json_validates_against_the_schema_file(tmp_path: Path, after: Any) -> None:
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    write_record(fakes.build_record(fakes.LEAKY, after, xss=True), tmp_path / "record.json")
    data = json.loads((tmp_path / "record.json").read_text(encoding="utf-8"))
    jsonschema.validate(data, schema)
    data["remediation" if after else "verdict_before"]["stray"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


@pytest.mark.parametrize(
    ("version", "fragment"),
    [(None, "no schema_version"), (1, r"older than this tool's \(2\); rerun"), ("2", "no schema")],
)
def test_records_of_other_versions_are_refused(
    tmp_path: Path, version: object, fragment: str
) -> None:
    data = json.loads(fakes.build_record().model_dump_json())
    if version is None:
        del data["schema_version"]
    else:
        data["schema_version"] = version
    path = tmp_path / "record.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InputError, match=fragment):
        read_record(path)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        ('{"schema_version": 2}', "not a gate record"),
        ("[]", "not a gate record"),
    ],
)
def test_read_record_errors(tmp_path: Path, content: str | None, fragment: str) -> None:
    path = tmp_path / "record.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=fragment):
        read_record(path)


def test_newer_schema_version_says_upgrade(tmp_path: Path) -> None:
    data = json.loads(fakes.build_record().model_dump_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    data["new_field"] = 1
    path = tmp_path / "record.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InputError, match="newer than this tool's"):
        read_record(path)
    assert RunRecord.model_validate(json.loads(fakes.build_record().model_dump_json()))


def test_fingerprint_path(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, order in ((a, ("x", "y")), (b, ("y", "x"))):
        (folder / "sub").mkdir(parents=True)
        for name in order:
            (folder / "sub" / f"{name}.bin").write_bytes(name.encode() * 100)
    assert fingerprint_path(a) == fingerprint_path(b)
    (b / "sub" / "x.bin").write_bytes(b"changed")
    assert fingerprint_path(a) != fingerprint_path(b)
    single = a / "sub" / "x.bin"
    assert fingerprint_path(single) == fingerprint_path(single)
    with pytest.raises(InputError, match="no such file"):
        fingerprint_path(tmp_path / "missing")
