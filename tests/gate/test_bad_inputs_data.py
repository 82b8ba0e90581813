"""Training data, findings and measurements that are wrong in ways a reader can miss:
each is the right exit code with an accurate one-line message (test_bad_inputs.py has
the first classes). And the files a scan skips: counted by reason and listed, never a
crash or a hang.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from gate.cli import cli
from gate.demo.build import DemoBuild
from tests.gate.bad_input import Build, Case, Env, run_case

GITHUB = "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gH3jK5"


def _jsonl(name: str, *rows: str, extra: tuple[str, ...] = ()) -> Build:
    return lambda env: env.scan(env.file(name, "".join(r + "\n" for r in rows)), *extra)


def _parquet(column: pa.Array) -> Build:
    def build(env: Env) -> list[str]:
        table = pa.table({"content": column, "id": [f"r{i}" for i in range(len(column))]})
        pq.write_table(table, env.tmp / "data.parquet")
        return env.scan(env.tmp / "data.parquet")

    return build


def _broken_hf_dataset(env: Env) -> list[str]:
    folder = env.tmp / "dataset"
    folder.mkdir()
    for name in ("state.json", "dataset_info.json"):
        (folder / name).write_text("{}")
    (folder / "data-00000-of-00001.arrow").write_bytes(b"not arrow")
    return env.scan(folder)


def _findings_with_surrogate(env: Env) -> list[str]:
    row = json.loads(env.demo.planted.read_text().splitlines()[0])
    text = json.dumps(row).replace(json.dumps(row["sample_id"]), '"a\\ud800b.py"')
    return env.measure(env.demo.model_dir, findings=env.file("f.jsonl", text + "\n"))


def _measurements_not_measurements(env: Env) -> list[str]:
    args = env.erase()
    env.file("m.jsonl", '{"finding_id": "x"}\n')
    return args


def _gzip_named_jsonl(env: Env) -> list[str]:
    return env.scan(env.file("d.jsonl", gzip.compress(b'{"content": "x"}\n')))


def _duplicate_paths(env: Env) -> list[str]:
    rows = "".join(json.dumps({"path": "a.py", "content": f"x = {i}\n"}) + "\n" for i in range(2))
    return env.scan(env.file("d.jsonl", rows), "--id-field", "path")


def _finding_field(field: str, value: object) -> Build:
    def build(env: Env) -> list[str]:
        row = json.loads(env.demo.planted.read_text().splitlines()[0])
        row[field] = value
        return env.measure(env.demo.model_dir, findings=env.file("f.jsonl", json.dumps(row) + "\n"))

    return build


def _measurement_field(field: str, value: object) -> Build:
    def build(env: Env) -> list[str]:
        args = env.erase()
        row = json.loads((env.tmp / "m.jsonl").read_text().splitlines()[0])
        row[field] = value
        env.file("m.jsonl", json.dumps(row) + "\n")
        return args

    return build


CASES = [
    Case(
        "lone surrogate in the text",
        _jsonl("d.jsonl", '{"content": "x = 1"}', '{"content": "s = \\"\\ud800\\""}'),
        ("d.jsonl:2: text field 'content' is not valid Unicode", "lone surrogate"),
    ),
    Case(
        "lone surrogate in the id",
        _jsonl("d.jsonl", '{"id": "a\\udfff", "content": "x = 1"}'),
        ("d.jsonl:1: id field 'id' is not valid Unicode",),
    ),
    Case(
        "lone surrogate in the path",
        _jsonl("d.jsonl", '{"path": "\\ud83d.py", "content": "x = 1"}'),
        ("d.jsonl:1: path field 'path' is not valid Unicode",),
    ),
    Case(
        "duplicate record ids",
        _jsonl(
            "d.jsonl",
            '{"id": "a", "content": "x"}',
            '{"id": "b", "content": "y"}',
            '{"id": "a", "content": "z"}',
        ),
        ("d.jsonl:3: sample id 'a'", "already used by an earlier record", "--id-field"),
    ),
    Case(
        "duplicate ids through --id-field",
        _duplicate_paths,
        ("d.jsonl:2: sample id 'a.py' (field 'path')", "unique"),
    ),
    Case(
        "duplicate id that holds a token",
        _jsonl("d.jsonl", *[json.dumps({"id": f"clone-{GITHUB}", "content": "x"})] * 2),
        ("d.jsonl:2: sample id 'clone-«ghp_…(40)#",),
        absent=(GITHUB,),
    ),
    Case(
        "Parquet text column of integers",
        _parquet(pa.array([1, 2], type=pa.int64())),
        ("data.parquet: column 'content' holds int64, not text", "--text-field"),
    ),
    Case(
        "Parquet text column of bytes",
        _parquet(pa.array([b"x", b"y"], type=pa.binary())),
        ("column 'content' holds binary, not text",),
    ),
    Case(
        "Parquet text column of lists",
        _parquet(pa.array([["x"], ["y"]])),
        ("column 'content' holds list<", "not text"),
    ),
    Case(
        "saved dataset folder, unreadable",
        _broken_hf_dataset,
        ("dataset: not a saved HF dataset",),
    ),
    Case(
        "findings with a lone surrogate",
        _findings_with_surrogate,
        ("f.jsonl:1: not a finding (sample_id: not valid Unicode",),
    ),
    Case(
        "measurements file not measurements",
        _measurements_not_measurements,
        ("m.jsonl:1",),
    ),
    Case(
        "finding with a text offset",
        _finding_field("start", "12"),
        ("f.jsonl:1: not a finding (start: a str where int belongs)",),
    ),
    Case(
        "finding with a true offset",
        _finding_field("end", True),
        ("not a finding (end: a bool where int belongs)",),
    ),
    Case(
        "finding whose context is a string",
        _finding_field("context", "string"),
        ("not a finding (context: a str where Context belongs)",),
    ),
    Case(
        "measurement memorized as text",
        _measurement_field("memorized", "no"),
        ("m.jsonl:1: not a measurement record (memorized: a str where bool belongs)",),
    ),
    Case(
        "measurement MA of NaN",
        _measurement_field("ma", float("nan")),
        ("not a measurement record (ma: nan is not a finite number)",),
    ),
    Case("gzip data named .jsonl", _gzip_named_jsonl, ("d.jsonl:1: not valid UTF-8",)),
    Case(
        "JSONL record is a list",
        _jsonl("d.jsonl", '["content", "x"]'),
        ("d.jsonl:1: not a JSON object",),
    ),
    Case(
        "empty .jsonl.gz",
        lambda env: env.scan(env.file("d.jsonl.gz", gzip.compress(b""))),
        ("d.jsonl.gz: no samples",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_data_is_one_accurate_line(
    case: Case, tiny_demo: DemoBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_case(case, Env(tmp_path, tiny_demo, monkeypatch))


def _awkward_folder(root: Path, tiny_demo: DemoBuild) -> Path:
    """The demo corpus plus every kind of entry a scan must step over."""
    data = root / "data"
    shutil.copytree(tiny_demo.corpus_dir, data)
    (data / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    (data / "latin1.py").write_bytes(b"name = 'caf\xe9'\n")
    (data / "big.min.js").write_text("x" * 2_000_001)
    os.mkfifo(data / "pipe.py")
    (data / "gone.py").symlink_to(root / "nowhere.py")
    (data / "elsewhere.py").symlink_to(Path(__file__))
    (data / f"{GITHUB}.bin").write_bytes(b"\0\1\2")
    _deep_tree(data)
    return data


def _deep_tree(data: Path, depth: int = 20) -> None:
    """Nested folders whose full path is longer than PATH_MAX, made one level at a time."""
    fd = os.open(data, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d" * 250, dir_fd=fd)
            child = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("deep.py", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
            f.write("x = 1\n")
    finally:
        os.close(fd)


def test_files_a_scan_cannot_read_are_counted_listed_and_never_stop_it(
    tiny_demo: DemoBuild, tmp_path: Path
) -> None:
    """Binary, not UTF-8, too large, a FIFO (reading it would block), a broken link, a
    link, a path longer than the system allows: the gate scans the rest, and its record
    and report count each reason and list the files, names redacted."""
    data = _awkward_folder(tmp_path, tiny_demo)
    out = tmp_path / "run"
    policy = tmp_path / "p.yaml"
    policy.write_text("thresholds: {ma: 0.6, el_10: 0.3}\nremediation: {enabled: false}\n")
    args = ["gate", "--model", str(tiny_demo.model_dir), "--data", str(data)]
    result = CliRunner().invoke(cli, [*args, "--policy", str(policy), "--out", str(out)])
    assert result.exit_code == 1, result.output  # the demo model leaks; remediation is off
    record = json.loads((out / "record.json").read_text())
    assert record["corpus"]["skipped"] == {
        "FIFO": 1, "binary": 2, "broken link": 1, "not UTF-8": 1, "path too long": 1,
        "symbolic link": 1, "too large": 1,
    }  # fmt: skip
    listed = {f["origin"]: f["reason"] for f in record["corpus"]["skipped_files"]}
    assert listed["pipe.py"] == "FIFO"
    assert listed["gone.py"] == "broken link"
    assert any(o.startswith("«ghp_…(40)#") and o.endswith(".bin") for o in listed)
    report = (out / "report.html").read_text()
    assert "FIFO 1" in report
    assert "pipe.py" in report
    assert "not read" in result.output
    for text in (result.output, report, (out / "record.json").read_text()):
        assert GITHUB not in text


def test_a_code_folder_with_a_state_json_is_scanned_as_a_folder(tmp_path: Path) -> None:
    data = tmp_path / "web"
    data.mkdir()
    (data / "state.json").write_text('{"theme": "dark"}\n')
    (data / "app.py").write_text(f'TOKEN = "{GITHUB}"\n')
    result = CliRunner().invoke(cli, ["scan", str(data), "--out", str(tmp_path / "f.jsonl")])
    assert result.exit_code == 0, result.output
    assert "GitHub Token" in result.output
