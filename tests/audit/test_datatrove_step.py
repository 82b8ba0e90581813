"""The scan as a datatrove step: its merged shards are `codeeraser scan`'s findings file,
byte for byte and in order, for every layout, number of tasks and storage."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import fsspec
import pytest
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader

from audit.corpus import CorpusSpec, verify_findings
from audit.datatrove_step import ReadOptions, ScanSecrets, corpus_reader, merge_shards
from audit.errors import InputError
from audit.findings import read_findings, write_findings
from audit.scan import ScanSummary, scan_corpus
from tests.audit.scale_corpus import (
    records,
    write_folder,
    write_jsonl,
    write_record_corpora,
    write_saved_dataset,
)

if TYPE_CHECKING:
    from gate.demo.build import DemoBuild

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "datatrove" / "scan_pipeline.py"


def cli_scan(
    spec: CorpusSpec, out: Path, detectors: tuple[str, ...] | None = None
) -> tuple[bytes, ScanSummary]:
    """What `codeeraser scan` writes (the same calls as the command) and its summary."""
    from audit.scan import ScanOptions

    summary = ScanSummary()
    write_findings(out, scan_corpus(spec, ScanOptions(detectors), jobs=1, summary=summary))
    return out.read_bytes(), summary


def datatrove_scan(
    data: str,
    work: Path,
    *,
    tasks: int,
    workers: int = 1,
    read: ReadOptions | None = None,
    excludes: tuple[str, ...] = (),
    detectors: tuple[str, ...] | None = None,
) -> tuple[bytes, ScanSummary]:
    """The reader and scan step on datatrove's local executor, then the merge."""
    reader = corpus_reader(data, read)
    step = ScanSecrets(str(work / "shards"), detectors, excludes, reader)
    executor = LocalPipelineExecutor(
        [reader, step], tasks=tasks, workers=workers, logging_dir=str(work / "logs")
    )
    executor.run()
    summary = ScanSummary()
    out = work / "merged.jsonl"
    merge_shards(str(work / "shards"), out, data=data, summary=summary)
    return out.read_bytes(), summary


def same_summary(a: ScanSummary, b: ScanSummary) -> None:
    for name in ("samples", "chars", "samples_with_findings", "by_type", "skipped", "filtered"):
        assert getattr(a, name) == getattr(b, name), name
    assert a.allowlisted == b.allowlisted
    assert a.skipped_files == b.skipped_files  # the first ones listed, in reading order
    assert a.allowlisted_first == b.allowlisted_first


def test_thousands_of_files_in_four_tasks_give_the_cli_file(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data", 3000)
    expected, cli = cli_scan(CorpusSpec(data), tmp_path / "cli.jsonl")
    merged, summary = datatrove_scan(str(data), tmp_path / "work", tasks=4, workers=2)
    assert merged == expected
    same_summary(summary, cli)
    findings = read_findings(tmp_path / "cli.jsonl")
    assert len(findings) > 500
    assert len({f.secret_type for f in findings}) >= 8
    assert cli.skipped["symbolic link"] == 1
    assert cli.skipped["hidden folder"] == 1
    assert cli.skipped["binary"] == 1
    assert cli.allowlisted
    assert cli.filtered
    origins = [f.origin for f in findings]
    assert origins != sorted(origins)  # path-component order differs from string order


LAYOUTS = ["jsonl", "jsonl_gz", "jsonl_folder", "parquet", "parquet_folder"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_record_layout_gives_the_cli_file(tmp_path: Path, layout: str) -> None:
    path = write_record_corpora(tmp_path / "data", 240)[layout]
    fmt = "parquet" if layout.startswith("parquet") else "jsonl"
    spec = CorpusSpec(path, fmt=fmt)  # type: ignore[arg-type]
    expected, cli = cli_scan(spec, tmp_path / "cli.jsonl")
    read = ReadOptions(fmt=fmt)  # type: ignore[arg-type]
    merged, summary = datatrove_scan(str(path), tmp_path / "work", tasks=3, read=read)
    assert merged == expected
    assert expected
    same_summary(summary, cli)
    ids = {f.sample_id for f in read_findings(tmp_path / "cli.jsonl")}
    assert any(i.startswith("doc-") for i in ids)
    assert any(":" in i for i in ids)


def test_a_saved_hf_dataset_is_shared_out_by_row(tmp_path: Path) -> None:
    path = write_saved_dataset(tmp_path / "saved", 200)
    expected, cli = cli_scan(CorpusSpec(path), tmp_path / "cli.jsonl")
    merged, summary = datatrove_scan(str(path), tmp_path / "work", tasks=3)
    assert merged == expected
    assert expected
    same_summary(summary, cli)


def test_the_demo_corpus_gives_the_cli_file(tiny_demo: DemoBuild, tmp_path: Path) -> None:
    for i, data in enumerate((tiny_demo.corpus_dir, tiny_demo.corpus_jsonl)):
        expected, _ = cli_scan(CorpusSpec(data), tmp_path / f"cli{i}.jsonl")
        merged, _ = datatrove_scan(str(data), tmp_path / f"work{i}", tasks=3)
        assert merged == expected
        assert len(read_findings(tmp_path / f"cli{i}.jsonl")) >= len(
            read_findings(tiny_demo.planted)
        )


def test_excludes_and_detectors_as_the_cli(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data", 300)
    detectors = ("AWSKeyDetector", "GitHubTokenDetector", "PrivateKeyDetector")
    spec = CorpusSpec(data, excludes=("a/*", "*.md"))
    expected, cli = cli_scan(spec, tmp_path / "cli.jsonl", detectors)
    merged, summary = datatrove_scan(
        str(data), tmp_path / "work", tasks=2, excludes=spec.excludes, detectors=detectors
    )
    assert merged == expected
    assert expected
    same_summary(summary, cli)
    assert cli.skipped["excluded"] > 0


def test_remote_storage_reads_through_fsspec(tmp_path: Path) -> None:
    """memory:// stands in for s3:// and hf://: the readers' remote paths, same bytes."""
    data = write_folder(tmp_path / "data", 200)
    (data / "links" / "to-config").unlink()  # object stores have no links
    corpora = write_record_corpora(tmp_path / "records", 120)
    memory = fsspec.filesystem("memory")
    memory.put(str(tmp_path) + "/", "/remote/", recursive=True)
    cases = [
        (CorpusSpec(data), "memory://remote/data", ReadOptions()),
        (CorpusSpec(corpora["jsonl_gz"]), "memory://remote/records/train.jsonl.gz", None),
        (
            CorpusSpec(corpora["parquet_folder"], fmt="parquet"),
            "memory://remote/records/parquet-shards",
            ReadOptions(fmt="parquet"),
        ),
    ]
    try:
        for i, (spec, url, read) in enumerate(cases):
            expected, cli = cli_scan(spec, tmp_path / f"cli{i}.jsonl")
            merged, summary = datatrove_scan(url, tmp_path / f"work{i}", tasks=2, read=read)
            assert merged == expected, url
            assert expected
            same_summary(summary, cli)
    finally:
        memory.rm("/remote", recursive=True)


def test_a_bad_record_fails_its_task_as_the_cli_fails(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", records(20))
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(InputError) as cli_error:
        cli_scan(CorpusSpec(path), tmp_path / "cli.jsonl")
    with pytest.raises(InputError) as task_error:
        datatrove_scan(str(path), tmp_path / "work", tasks=2)
    assert task_error.value.message == cli_error.value.message
    skip = ReadOptions(on_bad_record="skip")
    expected, cli = cli_scan(CorpusSpec(path, on_bad_record="skip"), tmp_path / "cli.jsonl")
    merged, summary = datatrove_scan(str(path), tmp_path / "work2", tasks=2, read=skip)
    assert merged == expected
    assert summary.skipped == cli.skipped == {"bad JSON line": 1}


def test_a_users_own_reader_keeps_its_document_ids(tmp_path: Path) -> None:
    """Records with an id and a path: datatrove's JsonlReader gives the CLI's findings."""
    rows = [dict(r, id=f"doc-{i}", path=f"src/f{i}.py") for i, r in enumerate(records(150))]
    path = write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    expected, _ = cli_scan(CorpusSpec(path), tmp_path / "cli.jsonl")
    reader = JsonlReader(str(path.parent), text_key="content")
    step = ScanSecrets(str(tmp_path / "shards"))
    LocalPipelineExecutor([reader, step], tasks=1, logging_dir=str(tmp_path / "logs")).run()
    merge_shards(str(tmp_path / "shards"), tmp_path / "merged.jsonl", data=str(path))
    assert (tmp_path / "merged.jsonl").read_bytes() == expected
    assert expected


def test_no_sample_at_all_is_the_clis_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "bin").mkdir(parents=True)
    (data / "bin" / "x.dat").write_bytes(b"\x00" * 10)
    with pytest.raises(InputError) as cli_error:
        cli_scan(CorpusSpec(data), tmp_path / "cli.jsonl")
    with pytest.raises(InputError) as merge_error:
        datatrove_scan(str(data), tmp_path / "work", tasks=2)
    assert merge_error.value.message == cli_error.value.message


def test_a_missing_path_is_refused_before_any_task(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        corpus_reader(str(tmp_path / "nope"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="unknown data format"):
        corpus_reader(str(tmp_path / "x.csv"))
    shutil.copy(tmp_path / "x.csv", tmp_path / "x.py")
    with pytest.raises(InputError, match="reads a folder"):
        corpus_reader(str(tmp_path / "x.py"), ReadOptions(fmt="dir"))


def test_an_id_repeated_in_another_file_is_refused_as_the_cli_does(tmp_path: Path) -> None:
    rows = [dict(r, id=f"doc-{i}") for i, r in enumerate(records(40))]
    folder = tmp_path / "shards"
    write_jsonl(folder / "a.jsonl", rows[:20])
    write_jsonl(folder / "b.jsonl", [*rows[20:], rows[3]])  # doc-3 again, in another file
    with pytest.raises(InputError, match="already used by an earlier record"):
        cli_scan(CorpusSpec(folder, fmt="jsonl"), tmp_path / "cli.jsonl")
    with pytest.raises(InputError, match="the same sample id"):
        datatrove_scan(str(folder), tmp_path / "work", tasks=2, read=ReadOptions(fmt="jsonl"))
    write_jsonl(folder / "a.jsonl", [*rows[:20], rows[5]])  # within one file: the task says
    with pytest.raises(InputError, match="already used by an earlier record"):
        datatrove_scan(str(folder), tmp_path / "work2", tasks=2, read=ReadOptions(fmt="jsonl"))


def test_the_documented_pipeline_scans_what_it_writes(tmp_path: Path) -> None:
    """examples/datatrove/scan_pipeline.py: a user's reader, filter and PII formatter,
    the writer, then the scan; its findings belong to the written training data."""
    rows = [dict(r, id=f"doc-{i}") for i, r in enumerate(records(120))]
    for row in rows[::5]:
        row["content"] += "\n# maintainer: ops.lead@corp-mail.io\n"
    raw = write_jsonl(tmp_path / "raw" / "part.jsonl", rows)
    _, before = cli_scan(CorpusSpec(raw), tmp_path / "raw.jsonl")
    assert before.by_type["Email Address"] > 0
    spec = importlib.util.spec_from_file_location("scan_pipeline", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    work = tmp_path / "work"
    example.pipeline(str(raw.parent), str(work), tasks=2).run()
    findings = read_findings(work / "findings.jsonl")
    written = CorpusSpec(work / "train", fmt="jsonl", text_field="text")
    verify_findings(written, findings)  # each at its span of the written data
    assert findings
    assert not [f for f in findings if f.secret_type == "Email Address"]  # PII came first
    assert {f.sample_id for f in findings} <= {r["id"] for r in rows}
