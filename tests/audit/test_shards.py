"""Shards of parallel scan tasks: merged in reading order; anything doubtful refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datatrove.io import get_datafolder

from audit.errors import InputError
from audit.findings import Finding
from audit.scan import ScanSummary
from audit.shards import (
    TaskOutput,
    check_unique_ids,
    id_digest,
    ids_name,
    merge_summary,
    merged_findings,
    read_summaries,
    sample_key,
    shard_name,
    summary_name,
    write_shard,
)

TEXT = "x = 1\nTOKEN = 'abcdefghijklmnop'\n"


def _finding(sample_id: str, start: int = 11) -> Finding:
    return Finding.create(
        sample_id=sample_id,
        origin=sample_id,
        text=TEXT,
        start=start,
        end=start + 16,
        secret_type="Secret Keyword",
        detector="KeywordDetector",
    )


def _write(folder: Path, layout: dict[int, list[str]], settings: str = "s1") -> None:
    """Shards of len(layout) tasks; task r holds samples layout[r] (paths), one finding each."""
    data = get_datafolder(str(folder))
    for rank, paths in layout.items():
        output = TaskOutput(summary=ScanSummary(samples=len(paths), chars=len(TEXT) * len(paths)))
        output.summary.by_type["Secret Keyword"] = len(paths)
        output.findings = [([*sample_key(p, 0), 0], _finding(p)) for p in paths]
        output.ids = {id_digest(p) for p in paths}
        write_shard(data, rank=rank, world_size=len(layout), settings=settings, output=output)


def _merged(folder: Path) -> list[str]:
    data = get_datafolder(str(folder))
    tasks = read_summaries(data, str(folder))
    check_unique_ids(data, tasks, str(folder))
    summary = ScanSummary()
    merge_summary(tasks, summary, "DATA")
    ids = [f.sample_id for f in merged_findings(data, tasks, str(folder))]
    assert summary.findings == len(ids)
    return ids


def test_shards_merge_in_path_component_order(tmp_path: Path) -> None:
    # striped the way datatrove shares files out, in string order; merged by components
    paths = sorted(["a/b.py", "a-b/c.py", "a.b/d.py", "a/b/e.py", "z.py", "a0.py"])
    _write(tmp_path, {r: paths[r::3] for r in range(3)})
    assert _merged(tmp_path) == sorted(paths, key=lambda p: Path(p).parts)


def test_an_unfinished_task_is_named(tmp_path: Path) -> None:
    _write(tmp_path, {0: ["a.py"], 1: ["b.py"], 2: ["c.py"]})
    (tmp_path / summary_name(1)).unlink()
    with pytest.raises(InputError, match="task 1 has not finished"):
        _merged(tmp_path)


def test_a_shard_changed_after_its_summary_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, {0: ["a.py", "c.py"], 1: ["b.py"]})
    shard = tmp_path / shard_name(0)
    shard.write_bytes(shard.read_bytes().splitlines(keepends=True)[0])  # cut while writing
    with pytest.raises(InputError, match="does not match its summary"):
        _merged(tmp_path)


def test_shards_of_another_scan_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, {0: ["a.py"], 1: ["b.py"]})
    _write(tmp_path / "other", {0: ["c.py"], 1: ["d.py"]}, settings="s2")
    (tmp_path / summary_name(1)).write_bytes((tmp_path / "other" / summary_name(1)).read_bytes())
    with pytest.raises(InputError, match="belongs to another scan"):
        _merged(tmp_path)


def test_a_stray_shard_of_more_tasks_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, {0: ["a.py"], 1: ["b.py"], 2: ["c.py"]})
    (tmp_path / summary_name(0)).write_text(
        json.dumps(dict(json.loads((tmp_path / summary_name(0)).read_text()), world_size=2))
    )
    (tmp_path / summary_name(1)).write_text(
        json.dumps(dict(json.loads((tmp_path / summary_name(1)).read_text()), world_size=2))
    )
    with pytest.raises(InputError, match="more than 2 tasks"):
        _merged(tmp_path)


def test_a_corrupt_summary_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, {0: ["a.py"]})
    (tmp_path / summary_name(0)).write_text("{not json")
    with pytest.raises(InputError, match="not a shard summary"):
        _merged(tmp_path)


def test_an_unordered_shard_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, {0: ["a.py", "b.py"]})
    shard = tmp_path / shard_name(0)
    lines = shard.read_bytes().splitlines(keepends=True)
    shard.write_bytes(b"".join(reversed(lines)))
    with pytest.raises(InputError, match="out of order"):
        _merged(tmp_path)


def test_an_id_in_two_tasks_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, {0: ["a.py", "same"], 1: ["b.py", "same"]})
    with pytest.raises(InputError, match="the same sample id"):
        _merged(tmp_path)


def test_a_changed_id_file_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, {0: ["a.py", "c.py"], 1: ["b.py"]})
    ids = tmp_path / ids_name(0)
    ids.write_bytes(ids.read_bytes()[:8])
    with pytest.raises(InputError, match="does not match its summary"):
        _merged(tmp_path)
