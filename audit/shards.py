"""Findings written in shards by parallel scan tasks, and merged back into one file.

A scan task (`audit.datatrove_step.ScanSecrets`, one per datatrove rank) writes two files
into a shard folder (local, or any fsspec URL):

    00003.jsonl   its findings, one per line: {"key": ..., "finding": {...}}, sorted by key
    00003.json    its summary: counts, the findings' number and SHA-256 of 00003.jsonl,
                  the number of tasks and a digest of the scan's settings

The summary is written last, so a task killed while writing leaves no summary (or one
whose hash does not match) and the merge refuses the folder rather than use half a
shard. A finding's key is where `codeeraser scan` meets it: the sample's place in the
corpus's reading order (`audit.corpus`: file path components, then line or row), then
the finding's place within the sample. Merging the shards by key therefore gives the
findings in the CLI's order, whatever the number of tasks or the files each one read.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

from audit.corpus import ReadStats, nothing_read
from audit.errors import InputError
from audit.findings import Finding
from audit.scan import ScanSummary

SHARD_VERSION = 1
# A finding's key: (the sample's file path components, its line or row, the finding's
# index within the sample). JSON turns the tuple into a list; lists compare the same.
Key = list[Any]


class Folder(Protocol):
    """Where shards live: a datatrove DataFolder, or anything with the same two calls."""

    def open(self, path: str, mode: str = "rb") -> IO[Any]: ...

    def isfile(self, path: str) -> bool: ...


def sample_key(path: str, index: int) -> list[Any]:
    """The place of a sample in the reading order: its file's path components (a folder
    corpus's files sort by them, as `pathlib` does), then its line or row in the file."""
    return [path.split("/"), index]


@dataclass(frozen=True)
class TaskSummary:
    """What one task scanned and wrote; `findings` and `sha256` describe its shard file."""

    rank: int
    world_size: int
    settings: str  # digest of the scan's settings: every task of one scan has the same
    findings: int
    sha256: str
    counts: dict[str, Any]  # a ScanSummary (see `summary_to_dict`)
    version: int = SHARD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rank": self.rank,
            "world_size": self.world_size,
            "settings": self.settings,
            "findings": self.findings,
            "sha256": self.sha256,
            "counts": self.counts,
        }


def shard_name(rank: int) -> str:
    return f"{rank:05d}.jsonl"


def summary_name(rank: int) -> str:
    return f"{rank:05d}.json"


def write_shard(
    folder: Folder,
    *,
    rank: int,
    world_size: int,
    settings: str,
    keyed: Iterable[tuple[Key, Finding]],
    summary: ScanSummary,
) -> TaskSummary:
    """Write one task's findings (sorted by key) and then its summary."""
    lines = [
        json.dumps({"key": key, "finding": f.to_dict()}, sort_keys=True, ensure_ascii=False)
        for key, f in sorted(keyed, key=lambda kf: kf[0])
    ]
    data = "".join(line + "\n" for line in lines).encode("utf-8", errors="surrogatepass")
    with folder.open(shard_name(rank), "wb") as handle:
        handle.write(data)
    task = TaskSummary(
        rank=rank,
        world_size=world_size,
        settings=settings,
        findings=len(lines),
        sha256=hashlib.sha256(data).hexdigest(),
        counts=summary_to_dict(summary),
    )
    with folder.open(summary_name(rank), "wb") as handle:
        handle.write(json.dumps(task.to_dict(), sort_keys=True).encode("utf-8"))
    return task


def summary_to_dict(summary: ScanSummary) -> dict[str, Any]:
    return {
        "samples": summary.samples,
        "chars": summary.chars,
        "samples_with_findings": summary.samples_with_findings,
        "by_type": dict(summary.by_type),
        "skipped": dict(summary.skipped),
        "filtered": dict(summary.filtered),
        "allowlisted": dict(summary.allowlisted),
    }


def add_counts(total: ScanSummary, counts: dict[str, Any]) -> None:
    """Add one task's counts to a corpus-wide summary."""
    total.samples += int(counts["samples"])
    total.chars += int(counts["chars"])
    total.samples_with_findings += int(counts["samples_with_findings"])
    for name in ("by_type", "skipped", "filtered", "allowlisted"):
        part: Counter[str] = getattr(total, name)
        part.update({str(k): int(v) for k, v in counts[name].items()})


def read_summaries(folder: Folder, where: str) -> list[TaskSummary]:
    """Every task's summary, checked to form one finished scan; `where` names the folder
    in errors. A missing task, a task of another scan or a stray shard is an InputError."""
    first = _read_summary(folder, 0, where)
    tasks = [first] + [_read_summary(folder, r, where) for r in range(1, first.world_size)]
    for task in tasks:
        if (task.world_size, task.settings) != (first.world_size, first.settings):
            raise InputError(
                f"{where}: shard {task.rank:05d} belongs to another scan (other settings or "
                "number of tasks); use an empty folder for each scan"
            )
    if folder.isfile(summary_name(first.world_size)):
        raise InputError(
            f"{where}: holds shards of a scan with more than {first.world_size} tasks; "
            "use an empty folder for each scan"
        )
    return tasks


def _read_summary(folder: Folder, rank: int, where: str) -> TaskSummary:
    name = summary_name(rank)
    if not folder.isfile(name):
        raise InputError(
            f"{where}: task {rank} has not finished (no {name}); run the scan again to "
            "finish it (finished tasks are not scanned again)"
        )
    try:
        with folder.open(name, "rb") as handle:
            obj = json.loads(handle.read().decode("utf-8"))
        task = TaskSummary(**obj)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise InputError(f"{where}/{name}: not a shard summary (corrupt or foreign)") from None
    if task.version != SHARD_VERSION or task.rank != rank:
        raise InputError(f"{where}/{name}: shard format {task.version} or rank is not ours")
    return task


def iter_shard(folder: Folder, task: TaskSummary, where: str) -> Iterator[tuple[Key, Finding]]:
    """One shard's (key, finding) pairs in key order; once read to the end, a shard whose
    size, hash or order differs from what its summary says is an InputError."""
    name = shard_name(task.rank)
    digest = hashlib.sha256()
    count = 0
    previous: Key | None = None
    with folder.open(name, "rb") as handle:
        for raw in handle:
            digest.update(raw)
            count += 1
            key, finding = _parse_line(raw, f"{where}/{name}:{count}")
            if previous is not None and not previous < key:
                raise InputError(f"{where}/{name}:{count}: shard out of order (corrupt)")
            previous = key
            yield key, finding
    if count != task.findings or digest.hexdigest() != task.sha256:
        raise InputError(
            f"{where}/{name}: does not match its summary (a task was killed while writing?); "
            f"delete {summary_name(task.rank)} and run the scan again"
        )


def _parse_line(raw: bytes, where: str) -> tuple[Key, Finding]:
    try:
        obj = json.loads(raw.decode("utf-8", errors="surrogatepass"))
        return obj["key"], Finding.from_dict(obj["finding"])
    except (ValueError, TypeError, KeyError):
        raise InputError(f"{where}: not a shard line (corrupt)") from None


def merged_findings(folder: Folder, tasks: Sequence[TaskSummary], where: str) -> Iterator[Finding]:
    """The findings of every shard, in the order `codeeraser scan` writes them."""
    streams = [iter_shard(folder, task, where) for task in tasks]
    for _, finding in heapq.merge(*streams, key=lambda kf: kf[0]):
        yield finding


def merge_summary(tasks: Sequence[TaskSummary], summary: ScanSummary, data: str) -> None:
    """Fill `summary` with the counts of every task; no sample in all is an InputError
    (as `codeeraser scan` says it, naming `data`)."""
    for task in tasks:
        add_counts(summary, task.counts)
    if summary.samples == 0:
        raise InputError(f"{data}: {nothing_read(ReadStats(skipped=summary.skipped))}")
