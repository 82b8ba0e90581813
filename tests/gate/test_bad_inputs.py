"""Bad data, policies, models and outputs through the real CLI (the first 32 cases of
the suite; the classes added for issue 11 are in test_bad_inputs_*.py): each one exits
2 with one line ``Error: ...`` that names the file, field or line and says what to do;
never a traceback; no input changes (see `tests.gate.bad_input`).

Every case is built in its own folder from the tiny demo (model, corpus, findings)
and fails before any model weights are loaded, so the table stays cheap.
"""

from __future__ import annotations

import errno
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
from tests.gate.bad_input import Build, Case, Env, run_case, unwritable_folder


def _jsonl(*rows: str) -> str:
    return "".join(row + "\n" for row in rows)


def _no_text_files(env: Env) -> list[str]:
    folder = env.tmp / "blobs"
    env.file("blobs/logo.png", b"\x89PNG\r\n\x1a\n\0\0\0")
    env.file("blobs/latin1.py", b"name = 'caf\xe9'\n")
    return env.scan(folder)


def _empty_folder(env: Env) -> list[str]:
    (env.tmp / "empty").mkdir()
    return env.scan(env.tmp / "empty")


def _huge_line(env: Env) -> list[str]:
    with (env.tmp / "huge.jsonl").open("w") as handle:
        handle.write(_jsonl('{"content": "x = 1"}'))
        handle.write('{"content": "' + "a" * (50 * 1024 * 1024) + '"}\n')
    return env.scan(env.tmp / "huge.jsonl")


def _truncated_gz(env: Env) -> list[str]:
    rows = "".join(json.dumps({"content": f"x = {i}\n" * 20}) + "\n" for i in range(500))
    data = gzip.compress(rows.encode())
    return env.scan(env.file("data.jsonl.gz", data[: len(data) // 2]))


def _corrupt_gz(env: Env) -> list[str]:
    rows = "".join(json.dumps({"content": f"x = {i}\n" * 20}) + "\n" for i in range(500))
    data = gzip.compress(rows.encode(), mtime=0)
    cut = len(data) // 5  # garbled there, the deflate stream is invalid (zlib.error)
    garbled = data[:cut] + bytes(b ^ 0x55 for b in data[cut : cut + 16]) + data[cut + 16 :]
    return env.scan(env.file("c.jsonl.gz", garbled))


def _parquet_without_text(env: Env) -> list[str]:
    pq.write_table(pa.table({"code": ["x = 1"], "id": ["a"]}), env.tmp / "data.parquet")
    return env.scan(env.tmp / "data.parquet")


def _foreign_tokenizer(env: Env) -> list[str]:
    from transformers import AutoTokenizer

    model = env.model_copy()
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(600)])  # the model has 512 rows
    tokenizer.save_pretrained(model)
    return env.measure(model)


def _findings_of_another_corpus(env: Env) -> list[str]:
    return env.measure(env.demo.model_dir, data=env.demo.heldout_dir)


def _edited_corpus(env: Env) -> list[str]:
    """The same file names, but the secrets were changed since the scan."""
    corpus = env.tmp / "corpus"
    shutil.copytree(env.demo.corpus_dir, corpus)
    for path in corpus.rglob("*"):
        if path.is_file():
            path.write_text("# rewritten\n" + path.read_text())
    return env.measure(env.demo.model_dir, data=corpus)


def _foreign_out_dir(env: Env) -> list[str]:
    env.file("thesis/chapter1.tex", "mine")
    return env.gate(out=env.tmp / "thesis")


def _erase_out_exists(env: Env) -> list[str]:
    env.file("taken/keep.txt", "mine")
    measurements = env.file("m.jsonl", "")
    return [
        "erase", "--model", str(env.demo.model_dir), "--data", str(env.demo.corpus_dir),
        "--findings", str(env.demo.planted), "--measurements", str(measurements),
        "--out", str(env.tmp / "taken"),
    ]  # fmt: skip


def _unwritable_out(env: Env) -> list[str]:
    return env.gate(out=unwritable_folder(env.tmp) / "run")


def _disk_full(env: Env) -> list[str]:
    previous = env.file("findings.jsonl", "previous findings\n")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    env.monkeypatch.setattr(os, "fsync", full)
    return [*env.scan(env.demo.corpus_dir), "--out", str(previous)]


def _scan_args(name: str, data: str | bytes, *extra: str) -> Build:
    return lambda env: env.scan(env.file(name, data), *extra)


def _policy_args(text: str) -> Build:
    return lambda env: env.gate(policy=text)


def _model_args(drop: str | None) -> Build:
    def build(env: Env) -> list[str]:
        return env.measure(env.model_copy(drop) if drop else env.tmp / "no-model")

    return build


POLICY = "rules:\n  - metric: extracted_greedy\n    limit: {limit}\n"

CASES = [
    Case("data path missing", lambda env: env.scan(env.tmp / "nope"), ("nope: no such file",)),
    Case("data file empty", _scan_args("empty.jsonl", ""), ("empty.jsonl: no samples",)),
    Case("empty folder", _empty_folder, ("empty: no samples",)),
    Case("folder with no text file", _no_text_files, ("blobs: no text samples", "binary 1")),
    Case(
        "JSONL line not JSON",
        _scan_args("d.jsonl", _jsonl('{"content": "x"}', "{oops")),
        ("d.jsonl:2: not a JSON object", "--on-bad-record skip"),
    ),
    Case(
        "JSONL text field missing",
        _scan_args("d.jsonl", _jsonl('{"code": "x"}')),
        ("d.jsonl:1: text field 'content' is missing", "--text-field"),
    ),
    Case(
        "JSONL text not a string",
        _scan_args("d.jsonl", _jsonl('{"content": ["x"]}')),
        ("d.jsonl:1: text field 'content' is not a string",),
    ),
    Case(
        "JSONL invalid UTF-8",
        _scan_args("d.jsonl", b'{"content": "x"}\n{"content": "caf\xe9"}\n'),
        ("d.jsonl:2: not valid UTF-8", "--on-bad-record skip"),
    ),
    Case("JSONL 50 MB line", _huge_line, ("huge.jsonl:2: line longer than 16 MB",)),
    Case("truncated .gz", _truncated_gz, ("data.jsonl.gz: unreadable after line", "truncated")),
    Case(
        "corrupt .gz stream",
        _corrupt_gz,
        ("c.jsonl.gz: unreadable after line", "zlib.error", "corrupt"),
    ),
    Case(
        "Parquet without the text column",
        _parquet_without_text,
        ("data.parquet: no column 'content'", "columns: code, id", "--text-field"),
    ),
    Case("unknown data format", _scan_args("d.csv", "a,b\n"), ("d.csv: unknown data format",)),
    Case("policy not YAML", _policy_args("rules: [\n"), ("policy.yaml:2: not valid YAML",)),
    Case(
        "policy unknown key",
        _policy_args("extraction:\n  prefx: 3\n"),
        ("policy.yaml:2: extraction.prefx: unknown key", "prefix_tokens"),
    ),
    Case(
        "policy wrong type",
        _policy_args("extraction:\n  prefix_tokens: many\n"),
        ("policy.yaml:2: extraction.prefix_tokens", "a whole number"),
    ),
    Case(
        "policy negative limit",
        _policy_args(POLICY.format(limit=-1)),
        ("policy.yaml:3: rules[0].limit: must be ≥ 0",),
    ),
    Case(
        "policy unknown method",
        _policy_args("remediation:\n  method: sgd\n"),
        ("policy.yaml:2: remediation.method: unknown method 'sgd'", "codeeraser"),
    ),
    Case(
        "policy unknown metric",
        _policy_args("rules:\n- metric: leaks\n  limit: 0\n"),
        ("policy.yaml:2: rules[0].metric: unknown metric 'leaks'", "extracted_greedy"),
    ),
    Case(
        "policy auto thresholds without unseen data",
        _policy_args("thresholds:\n  ma: auto\n"),
        ("policy.yaml:2: thresholds.ma", "needs thresholds.unseen"),
    ),
    Case("model folder missing", _model_args(None), ("no-model: no such model folder",)),
    Case("model without config", _model_args("config.json"), ("model: no config.json",)),
    Case("model without weights", _model_args("*.safetensors"), ("model: no *.safetensors",)),
    Case(
        "model without tokenizer",
        _model_args("tokenizer*"),
        ("model: no tokenizer files", "save_pretrained"),
    ),
    Case(
        "tokenizer of another model",
        _foreign_tokenizer,
        ("model: the tokenizer has 1112 tokens but the model's embedding has 512 rows",),
    ),
    Case(
        "findings from another corpus",
        _findings_of_another_corpus,
        ("is not in", "from another corpus"),
    ),
    Case(
        "corpus changed since the scan",
        _edited_corpus,
        ("does not match", "scan this data again"),
    ),
    Case(
        "findings file not findings",
        lambda env: env.measure(env.demo.model_dir, findings=env.file("f.jsonl", '{"a": 1}\n')),
        ("f.jsonl:1", "not a finding"),
    ),
    Case("gate out folder not ours", _foreign_out_dir, ("thesis: exists and is not a gate run",)),
    Case("erase out folder exists", _erase_out_exists, ("taken: already exists", "--force")),
    Case("output folder not writable", _unwritable_out, ("run: cannot write the run folder",)),
    Case("disk full while saving", _disk_full, ("findings.jsonl: disk full", "free some space")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_and_exit_2(
    case: Case, tiny_demo: DemoBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_case(case, Env(tmp_path, tiny_demo, monkeypatch))


def _classes() -> dict[str, list[Case]]:
    """The suite's cases by class, as docs/reliability.md's table lists them."""
    from tests.gate import (
        test_bad_inputs_data,
        test_bad_inputs_hub,
        test_bad_inputs_model,
        test_bad_inputs_paths,
        test_bad_inputs_policy,
    )

    return {
        "data, policies, model folders, findings and outputs": CASES,
        "a model that is not what it claims (exit 3)": test_bad_inputs_model.CASES,
        "a policy or option that cannot work, or would exhaust the machine": (
            test_bad_inputs_policy.CASES
        ),
        "paths: missing, of the wrong kind, colliding, in use, secrets and escapes in them": (
            test_bad_inputs_paths.CASES
        ),
        "data, findings and measurements that are subtly wrong": test_bad_inputs_data.CASES,
        "Hub ids and GGUF files": test_bad_inputs_hub.CASES,
    }


def test_the_suite_holds_at_least_100_cases_and_the_docs_count_them() -> None:
    classes = _classes()
    total = sum(len(cases) for cases in classes.values())
    assert total >= 100
    names = [c.name for cases in classes.values() for c in cases]
    assert len(set(names)) == len(names)
    page = (Path(__file__).parents[2] / "docs" / "reliability.md").read_text(encoding="utf-8")
    for name, cases in classes.items():
        assert f"| {name} | {len(cases)} |" in page, name
    assert f"| **total** | **{total}** |" in page


def test_disk_full_keeps_the_previous_file(
    tiny_demo: DemoBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _disk_full(Env(tmp_path, tiny_demo, monkeypatch))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert (tmp_path / "findings.jsonl").read_text() == "previous findings\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["findings.jsonl"]  # no temp file
