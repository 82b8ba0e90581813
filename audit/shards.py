"""Findings written in shards by parallel scan tasks, and merged back into one file.

A scan task (`audit.datatrove_step.ScanSecrets`, one per datatrove rank) writes three
files into a shard folder (local, or any fsspec URL):

    00003.jsonl   its findings, one per line: {"key": ..., "finding": {...}}, sorted by key
    00003.ids     the 64-bit digests of the sample ids its records gave (sorted), so that
                  the merge can refuse an id used twice, as `codeeraser scan` does
    00003.json    its summary: counts, the first skipped files and allowlisted findings
                  (with their keys), the size and SHA-256 of the two files above, the
                  number of tasks and a digest of the scan's settings

The summary is written last, so a task killed while writing leaves no summary (or one
whose hashes do not match) and the merge refuses the folder rather than use half a
shard. A finding's key is where `codeeraser scan` meets it: the sample's place in the
corpus's reading order (`audit.corpus`: file path components, then line or row), then
the finding's place within the sample. Merging the shards by key therefore gives the
findings in the CLI's order, whatever the number of tasks or the files each one read.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from audit.corpus import MAX_LISTED as MAX_SKIPPED_LISTED
from audit.corpus import ReadStats, nothing_read
from audit.errors import InputError
from audit.findings import Finding
from audit.scan import MAX_LISTED as MAX_ALLOWLISTED_LISTED
from audit.scan import ScanSummary

SHARD_VERSION = 1
# A finding's key: (the sample's file path components, its line or row, the finding's
# index within the sample). JSON turns the tuple into a list; lists compare the same.
Key = list[Any]
_BLOCK = 1 << 16  # id digests read at a time


class Folder(Protocol):
    """Where shards live: a datatrove DataFolder, or anything with the same two calls."""

    def open(self, path: str, mode: str = "rb") -> IO[Any]: ...

    def isfile(self, path: str) -> bool: ...


def sample_key(path: str, index: int) -> list[Any]:
    """The place of a sample in the reading order: its file's path components (a folder
    corpus's files sort by them, as `pathlib` does), then its line or row in the file."""
    return [path.split("/"), index]


def id_digest(sample_id: str) -> int:
    """A stable 64-bit digest of a sample id (for the repeated-id check)."""
    data = sample_id.encode("utf-8", errors="surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


@dataclass
class TaskOutput:
    """What one task found: keyed findings, the summary's counts, the first skipped files
    and allowlisted findings (keyed, in reading order), and the digests of its ids."""

    findings: list[tuple[Key, Finding]] = field(default_factory=list)
    summary: ScanSummary = field(default_factory=ScanSummary)
    skipped_files: list[tuple[Key, str, str]] = field(default_factory=list)
    allowlisted: list[tuple[Key, Finding]] = field(default_factory=list)
    ids: set[int] = field(default_factory=set)
    cpu_seconds: float = 0.0  # the task process's CPU time while it ran (for benchmarks)


@dataclass(frozen=True)
class TaskSummary:
    """A finished task's summary file; `findings`/`sha256` and `ids`/`ids_sha256`
    describe its shard and id files."""

    rank: int
    world_size: int
    settings: str  # digest of the scan's settings: every task of one scan has the same
    findings: int
    sha256: str
    ids: int
    ids_sha256: str
    counts: dict[str, Any]  # a ScanSummary's counts (see `_counts`)
    skipped_files: list[Any]  # [key, origin, reason], the first ones in reading order
    allowlisted: list[Any]  # [key, finding], the first ones in reading order
    cpu_seconds: float = 0.0  # CPU time of the task (not merged: it varies run to run)
    version: int = SHARD_VERSION


def shard_name(rank: int) -> str:
    return f"{rank:05d}.jsonl"


def ids_name(rank: int) -> str:
    return f"{rank:05d}.ids"


def summary_name(rank: int) -> str:
    return f"{rank:05d}.json"


def write_shard(
    folder: Folder, *, rank: int, world_size: int, settings: str, output: TaskOutput
) -> TaskSummary:
    """Write one task's findings (sorted by key) and ids, then its summary."""
    lines = [
        json.dumps({"key": key, "finding": f.to_dict()}, sort_keys=True, ensure_ascii=False)
        for key, f in sorted(output.findings, key=lambda kf: kf[0])
    ]
    data = "".join(line + "\n" for line in lines).encode("utf-8", errors="surrogatepass")
    ids = array("Q", sorted(output.ids)).tobytes()
    for name, content in ((shard_name(rank), data), (ids_name(rank), ids)):
        with folder.open(name, "wb") as handle:
            handle.write(content)
    task = TaskSummary(
        rank=rank,
        world_size=world_size,
        settings=settings,
        findings=len(lines),
        sha256=hashlib.sha256(data).hexdigest(),
        ids=len(output.ids),
        ids_sha256=hashlib.sha256(ids).hexdigest(),
        counts=_counts(output.summary),
        skipped_files=[list(entry) for entry in output.skipped_files[:MAX_SKIPPED_LISTED]],
        allowlisted=[[k, f.to_dict()] for k, f in output.allowlisted[:MAX_ALLOWLISTED_LISTED]],
        cpu_seconds=output.cpu_seconds,
    )
    with folder.open(summary_name(rank), "wb") as handle:
        handle.write(json.dumps(task.__dict__, sort_keys=True).encode("utf-8"))
    return task


def _counts(summary: ScanSummary) -> dict[str, Any]:
    return {
        "samples": summary.samples,
        "chars": summary.chars,
        "samples_with_findings": summary.samples_with_findings,
        "by_type": dict(summary.by_type),
        "skipped": dict(summary.skipped),
        "filtered": dict(summary.filtered),
        "allowlisted": dict(summary.allowlisted),
    }


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


def merge_summary(tasks: Sequence[TaskSummary], summary: ScanSummary, data: str) -> None:
    """Fill `summary` with the counts and first listed entries of every task; no sample
    in all is an InputError (as `codeeraser scan` says it, naming `data`)."""
    for task in tasks:
        _add_counts(summary, task.counts)
    skipped = sorted((e for t in tasks for e in t.skipped_files), key=lambda e: e[0])
    summary.skipped_files.extend((origin, reason) for _, origin, reason in skipped)
    del summary.skipped_files[MAX_SKIPPED_LISTED:]
    allowed = sorted((e for t in tasks for e in t.allowlisted), key=lambda e: e[0])
    summary.allowlisted_first.extend(Finding.from_dict(f) for _, f in allowed)
    del summary.allowlisted_first[MAX_ALLOWLISTED_LISTED:]
    if summary.samples == 0:
        raise InputError(f"{data}: {nothing_read(ReadStats(skipped=summary.skipped))}")


def _add_counts(total: ScanSummary, counts: dict[str, Any]) -> None:
    total.samples += int(counts["samples"])
    total.chars += int(counts["chars"])
    total.samples_with_findings += int(counts["samples_with_findings"])
    for name in ("by_type", "skipped", "filtered", "allowlisted"):
        part: Counter[str] = getattr(total, name)
        part.update({str(k): int(v) for k, v in counts[name].items()})


def check_unique_ids(folder: Folder, tasks: Sequence[TaskSummary], where: str) -> None:
    """No sample id given by the records' id field is used twice in the whole corpus
    (each task checked its own; this checks across tasks)."""
    previous = None
    for digest in heapq.merge(*(_iter_ids(folder, task, where) for task in tasks)):
        if digest == previous:
            raise InputError(
                f"{where}: two records in different files have the same sample id; ids must "
                "be unique (set --id-field to a unique field, or remove the duplicate)"
            )
        previous = digest


def _iter_ids(folder: Folder, task: TaskSummary, where: str) -> Iterator[int]:
    name = ids_name(task.rank)
    digest = hashlib.sha256()
    count = 0
    with folder.open(name, "rb") as handle:
        while block := handle.read(8 * _BLOCK):
            digest.update(block)
            values = array("Q")
            values.frombytes(block)
            count += len(values)
            yield from values
    if count != task.ids or digest.hexdigest() != task.ids_sha256:
        raise InputError(f"{where}/{name}: does not match its summary (corrupt)")


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
