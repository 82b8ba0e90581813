"""The scan as steps of a datatrove pipeline: read the corpus, scan it in tasks, merge.

datatrove (https://github.com/huggingface/datatrove) runs a pipeline of steps as
`tasks` independent tasks (ranks) on a local, Slurm or Ray executor, over data on any
fsspec storage (a local folder, ``s3://``, ``hf://datasets/...``), and marks each
finished task under its logging folder so that a rerun skips it. Three pieces:

- `corpus_reader(data, ...)`: a reader that reads DATA as `codeeraser scan` does (same
  formats, skips, sample ids and origins; `audit.corpus` does the reading) and shares
  its files out between tasks. Each document carries its place in the reading order.
- `ScanSecrets(shards, ...)`: scans each document with the CLI's scanner (same
  detectors, filters, tree-sitter context and redaction) and writes its task's
  findings as one shard (`audit.shards`). Documents pass through unchanged, so steps
  can come before it (deduplication, filters) and after it (writers).
- `MergeFindings(shards, out)`: once every task has finished, merges the shards into
  one findings file, identical byte for byte to what `codeeraser scan` writes for the
  same data.

A document that did not come from `corpus_reader` (a user's own reader) is scanned too:
its sample id is the document's id, its origin the record's ``path`` metadata (else
the id), and its findings are ordered by task, then by the order the task saw them.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder, DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers.base import BaseDiskReader, BaseReader

from audit.corpus import (
    CorpusSpec,
    Format,
    IndexedRecord,
    OnBad,
    ReadStats,
    Sample,
    detect_format,
    excluded,
    folder_files,
    folder_sample,
    in_hidden_folder,
    is_record_file,
    jsonl_file_records,
    jsonl_stream_records,
    language_for,
    parquet_file_records,
    record_sample,
    saved_dataset,
    stream_sample,
)
from audit.detectors import build_detectors
from audit.errors import CodeEraserError, InputError
from audit.findings import (
    Baseline,
    Finding,
    read_baseline,
    subtract_baseline,
    write_findings,
)
from audit.io import iter_lines
from audit.scan import MAX_LISTED as MAX_ALLOWLISTED
from audit.scan import ScanSummary, redact_identifier, scan_samples
from audit.shards import (
    Key,
    TaskOutput,
    check_unique_ids,
    id_digest,
    merge_summary,
    merged_findings,
    read_summaries,
    sample_key,
    write_shard,
)

META = "codeeraser"  # document metadata written by corpus_reader: origin, language, key
BATCH_SAMPLES = 64  # samples scanned together (as `codeeraser scan` chunks them)
BATCH_CHARS = 1 << 20


@dataclass(frozen=True)
class ReadOptions:
    """How records are read (as `codeeraser scan`'s --format, --text-field, --id-field
    and --on-bad-record say)."""

    fmt: Format = "auto"
    text_field: str = "content"
    id_field: str = "id"
    on_bad_record: OnBad = "fail"

    def spec(self, where: str) -> CorpusSpec:
        """A CorpusSpec for the record readers of `audit.corpus` (its path only names)."""
        return CorpusSpec(
            path=Path(where),
            fmt=self.fmt,
            text_field=self.text_field,
            id_field=self.id_field,
            on_bad_record=self.on_bad_record,
        )


# ---------------------------------------------------------------- reading


def corpus_reader(
    data: str, options: ReadOptions | None = None, storage_options: dict[str, Any] | None = None
) -> BaseReader:
    """A datatrove reader for DATA (a path or fsspec URL) that reads it as `codeeraser
    scan` does: a folder of files, a JSONL or Parquet file, a folder of JSONL or
    Parquet files (with `fmt` given), or a saved HF dataset."""
    options = options or ReadOptions()
    folder = get_datafolder((data, storage_options or {}))
    is_dir = folder.fs.isdir(folder.path)
    if not is_dir and not folder.fs.isfile(folder.path):
        raise InputError(f"{data}: no such file or folder (give the training data to scan)")
    fmt = options.fmt if options.fmt != "auto" else _detect(data, folder, is_dir)
    chosen = ReadOptions(fmt, options.text_field, options.id_field, options.on_bad_record)
    if fmt == "hf":
        return SavedDatasetReader(data, chosen, storage_options)
    if fmt == "dir" and not is_dir:
        raise InputError(f"{data}: a file; --format dir reads a folder")
    if is_dir:
        return CorpusReader(folder, chosen, label=data)
    parent = DataFolder(folder.fs._parent(folder.path), fs=folder.fs)
    return CorpusReader(parent, chosen, label=data, single=PurePosixPath(folder.path).name)


def _detect(data: str, folder: DataFolder, is_dir: bool) -> Format:
    """`detect_format` for a local path; for a remote one, the same rules by name."""
    if folder.is_local():
        return detect_format(Path(folder.path))
    if is_dir:
        saved = all(folder.isfile(n) for n in ("state.json", "dataset_info.json"))
        return "hf" if saved else "dir"
    name = PurePosixPath(folder.path).name.lower()
    for fmt in ("jsonl", "parquet"):
        if is_record_file(name, fmt):
            return fmt
    raise InputError(f"{data}: unknown data format (use --format jsonl or parquet)")


def document(sample: Sample, key: Key, positional: bool) -> Document:
    """A datatrove document for a sample, with its origin, language, reading-order key,
    and whether its id is its place (`<file>:<line>`) rather than a record's id field."""
    meta = {"origin": sample.origin, "language": sample.language, "key": key}
    return Document(text=sample.text, id=sample.id, metadata={META: meta | {"pos": positional}})


class CorpusReader(BaseDiskReader):  # type: ignore[misc]  # datatrove has no type hints
    """Reads a folder of files, or JSONL or Parquet files, as `codeeraser scan` does.

    The files (the whole folder's, in the CLI's order) are shared out between tasks:
    task r reads files r, r + N, r + 2N, ... of N tasks. A single file is read by
    task 0. What the read skipped is in `read_stats`, each listed skip's key in
    `skip_keys` (for `ScanSecrets`' summary); the walk's own skips count in task 0.
    """

    name = "📂 codeeraser corpus"

    def __init__(
        self, folder: DataFolder, options: ReadOptions, label: str, single: str | None = None
    ) -> None:
        super().__init__(folder, text_key=options.text_field, id_key=options.id_field)
        self.options = options
        self.label = label  # the path or URL as the user gave it (for messages)
        self.single = single  # the file to read, when DATA is one file
        self.read_stats = ReadStats()
        self.skip_keys: list[Key] = []

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> Any:
        if data:
            yield from data
        self.read_stats, self.skip_keys = ReadStats(), []
        files = self.files(self.read_stats if rank == 0 else ReadStats())
        self._key_skips([])
        for rel in files[rank::world_size]:
            self.stat_update("input_files")
            for doc in self.read_file(rel):
                self.update_doc_stats(doc)
                yield doc
            self._key_skips(rel.split("/"))

    def _key_skips(self, parts: list[str]) -> None:
        """Key the skips listed since the last call: by file, then in reading order."""
        new = len(self.read_stats.skipped_files) - len(self.skip_keys)
        self.skip_keys += [[parts, i] for i in range(new)]

    def files(self, stats: ReadStats) -> list[str]:
        """Every file to read, in the CLI's order (what the walk skips goes to `stats`).
        Files in hidden folders of a folder of records are left out (and counted)."""
        if self.single is not None:
            return [self.single]
        if self.data_folder.is_local():
            listed = folder_files(Path(self.data_folder.path), stats)
        else:
            listed = sorted(self.data_folder.list_files(recursive=True), key=_parts)
        if self.options.fmt == "dir":
            return listed  # hidden folders are counted per file, as the CLI does
        chosen = [rel for rel in listed if is_record_file(rel, self.options.fmt)]
        for _ in filter(in_hidden_folder, chosen):
            stats.skip("hidden folder")
        return [rel for rel in chosen if not in_hidden_folder(rel)]

    def read_file(self, filepath: str) -> Iterator[Document]:
        """The documents of one file (path relative to the data folder)."""
        if self.options.fmt == "dir":
            sample = self._folder_sample(filepath)
            if sample is not None:
                yield document(sample, sample_key(filepath, 0), positional=False)
            return
        for index, record, where in self._records(filepath):
            found = record_sample(self.options.spec(where), record, where, self.read_stats)
            if found is not None:
                yield document(found, sample_key(filepath, index), positional=found.id == where)

    def _folder_sample(self, rel: str) -> Sample | None:
        if self.data_folder.is_local():
            return folder_sample(Path(self.data_folder.path), rel, self.read_stats)
        size = int(self.data_folder.size(rel))
        return stream_sample(rel, size, lambda: self.data_folder.open(rel, "rb"), self.read_stats)

    def _records(self, rel: str) -> Iterator[IndexedRecord]:
        """The records of one JSONL or Parquet file, read as the CLI reads them."""
        spec, stats = self.options.spec(rel), self.read_stats
        if self.data_folder.is_local():
            local = Path(self.data_folder.path) / rel
            if self.options.fmt == "jsonl":
                lines = iter_lines(local, what="record")
                yield from jsonl_file_records(spec, lines, rel, local, stats)
            else:
                yield from parquet_file_records(spec, local, rel, local)
            return
        where = self.data_folder.resolve_paths(rel)
        if self.options.fmt == "jsonl":
            with self.data_folder.open(rel, "rb", compression="infer") as handle:
                yield from jsonl_stream_records(spec, handle, rel, where, stats)
        else:
            with self.data_folder.open(rel, "rb") as handle:
                yield from parquet_file_records(spec, handle, rel, where)


def _parts(rel: str) -> list[str]:
    return rel.split("/")


class SavedDatasetReader(BaseReader):  # type: ignore[misc]
    """Reads a dataset saved with `datasets.save_to_disk` as `codeeraser scan` does; task
    r of N reads rows r, r + N, r + 2N, ..."""

    name = "📂 codeeraser saved dataset"

    def __init__(
        self, data: str, options: ReadOptions, storage_options: dict[str, Any] | None = None
    ) -> None:
        super().__init__(text_key=options.text_field, id_key=options.id_field)
        self.data = data
        self.options = options
        self.storage_options = storage_options
        self.read_stats = ReadStats()
        self.skip_keys: list[Key] = []

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> Any:
        if data:
            yield from data
        self.read_stats, self.skip_keys = ReadStats(), []
        spec = self.options.spec(self.data)
        dataset = saved_dataset(self.data, spec)
        name = PurePosixPath(self.data.rstrip("/")).name
        for i, record in enumerate(dataset.shard(world_size, rank, contiguous=False)):
            row, where = rank + i * world_size, f"{name}:{rank + i * world_size}"
            sample = record_sample(spec, dict(record), where, self.read_stats)
            if len(self.read_stats.skipped_files) > len(self.skip_keys):
                self.skip_keys.append(sample_key(name, row))
            if sample is not None:
                doc = document(sample, sample_key(name, row), positional=sample.id == where)
                self.update_doc_stats(doc)
                yield doc


# ---------------------------------------------------------------- scanning


class ScanSecrets(PipelineStep):  # type: ignore[misc]
    """Scans every document for secrets and writes the task's findings as one shard.

    Args:
        shards: the folder (path or fsspec URL) the shards go to; give every scan its own.
        detectors: run only these detectors (None: all, as `codeeraser scan`).
        excludes: skip documents whose origin matches one of these glob patterns.
        reader: the `corpus_reader` of this pipeline, if any: what it skipped goes into
            the summary, as `codeeraser scan` counts it.
        settings: a digest of the scan's settings (default: made from the arguments);
            the merge refuses shards of different settings.
    """

    name = "🔑 codeeraser secret scan"
    type = "🔎 - SCAN"

    def __init__(
        self,
        shards: DataFolderLike,
        detectors: tuple[str, ...] | None = None,
        excludes: tuple[str, ...] = (),
        reader: BaseReader | None = None,
        settings: str | None = None,
    ) -> None:
        super().__init__()
        self.shards = get_datafolder(shards)
        self.detectors = tuple(sorted(detectors)) if detectors else None
        build_detectors(self.detectors)  # an unknown name fails before any task starts
        self.excludes = tuple(excludes)
        self.reader = reader
        self.settings = settings or settings_digest(
            {"detectors": self.detectors, "excludes": self.excludes, "reader": _describe(reader)}
        )

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> Any:
        try:
            yield from self._scan(data, rank, world_size)
        except CodeEraserError:
            raise
        except OSError as exc:
            raise InputError(
                f"scan task {rank}: cannot read the data ({_os_reason(exc)})"
            ) from None
        except Exception as exc:
            raise CodeEraserError(f"scan task {rank}: {_bug(exc)}") from None

    def _scan(self, data: DocumentsPipeline, rank: int, world_size: int) -> Iterator[Document]:
        output = TaskOutput()
        started = time.process_time()
        batch: list[tuple[Key, Sample]] = []
        for seq, doc in enumerate(data or ()):
            key, sample, positional = document_sample(doc, rank, seq)
            if not positional:
                _check_unique(sample, output.ids)
            if self.excludes and excluded(sample.origin, self.excludes):
                output.summary.skipped["excluded"] += 1
            else:
                batch.append((key, sample))
                if len(batch) >= BATCH_SAMPLES or _chars(batch) >= BATCH_CHARS:
                    self._scan_batch(batch, output)
                    batch = []
            yield doc
        self._scan_batch(batch, output)
        self._add_reader_skips(output)
        output.cpu_seconds = time.process_time() - started
        write_shard(
            self.shards, rank=rank, world_size=world_size, settings=self.settings, output=output
        )

    def _scan_batch(self, batch: list[tuple[Key, Sample]], output: TaskOutput) -> None:
        results = scan_samples([sample for _, sample in batch], self.detectors)
        for (key, sample), result in zip(batch, results, strict=True):
            output.summary.add(result)
            output.summary.samples += 1
            output.summary.chars += len(sample.text)
            output.findings.extend(([*key, i], f) for i, f in enumerate(result.findings))
            output.allowlisted.extend(([*key, i], f) for i, f in enumerate(result.allowlisted))
            self.stat_update("findings", value=len(result.findings))
        del output.allowlisted[MAX_ALLOWLISTED:]

    def _add_reader_skips(self, output: TaskOutput) -> None:
        """What this pipeline's `corpus_reader` skipped in this task, as the CLI counts it
        (skipped files' names redacted, as `scan_corpus` redacts them)."""
        stats = getattr(self.reader, "read_stats", None)
        keys = getattr(self.reader, "skip_keys", None)
        if not isinstance(stats, ReadStats) or not isinstance(keys, list):
            return
        output.summary.skipped.update(stats.skipped)
        for key, (origin, reason) in zip(keys, stats.skipped_files, strict=True):
            output.skipped_files.append((key, redact_identifier(origin), reason))


def document_sample(doc: Document, rank: int, seq: int) -> tuple[Key, Sample, bool]:
    """The sample a document is, its reading-order key (see the module docstring), and
    whether its id is its place in the corpus (not a record's id, so never repeated)."""
    meta = doc.metadata.get(META)
    if isinstance(meta, dict) and "key" in meta:
        sample = Sample(doc.id, meta["origin"], doc.text, meta["language"])
        return list(meta["key"]), sample, bool(meta.get("pos"))
    path = doc.metadata.get("path")
    origin = path if isinstance(path, str) and path else str(doc.id)
    sample = Sample(str(doc.id), origin, doc.text, language_for(origin))
    return sample_key(f"{rank:05d}", seq), sample, False


def _check_unique(sample: Sample, seen: set[int]) -> None:
    """A record's id is not one an earlier record of this task had (the merge checks
    across tasks), as `codeeraser scan` refuses a repeated id."""
    digest = id_digest(sample.id)
    if digest in seen:
        raise InputError(
            f"{sample.origin}: sample id {redact_identifier(sample.id)!r} was already used "
            "by an earlier record; ids must be unique (set --id-field to a unique field, "
            "or remove the duplicate)"
        )
    seen.add(digest)


def _chars(batch: list[tuple[Key, Sample]]) -> int:
    return sum(len(sample.text) for _, sample in batch)


def settings_digest(settings: dict[str, Any]) -> str:
    """A short digest of a scan's settings (JSON with sorted keys)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _describe(reader: BaseReader | None) -> Any:
    if isinstance(reader, CorpusReader):
        return {"data": reader.label, "single": reader.single, **asdict(reader.options)}
    if isinstance(reader, SavedDatasetReader):
        return {"data": reader.data, **asdict(reader.options)}
    return None if reader is None else type(reader).__name__


def _os_reason(exc: OSError) -> str:
    """An OSError's type and reason, without its file name (a name may hold a secret)."""
    return f"{type(exc).__name__}: {exc.strerror}" if exc.strerror else type(exc).__name__


def _bug(exc: Exception) -> str:
    """A bug's type and where it was raised; never its message (it may quote the data)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"internal error ({type(exc).__name__}{where}); report it"


# ---------------------------------------------------------------- merging


def merge_shards(
    shards: DataFolderLike,
    out: Path,
    *,
    data: str,
    summary: ScanSummary | None = None,
    baseline: Path | None = None,
    settings: str | None = None,
) -> int:
    """Merge a finished scan's shards into `out` (written atomically) in the order of
    `codeeraser scan`, less the findings `baseline` accepts; fill `summary`; return the
    number written. `settings`, when given, must be the digest every shard was made with."""
    folder = get_datafolder(shards)
    findings = open_merge(folder, data, summary or ScanSummary(), settings)
    accepted = read_baseline(baseline) if baseline else Baseline()
    return write_findings(out, subtract_baseline(findings, accepted))


def open_merge(
    folder: DataFolder, data: str, summary: ScanSummary, settings: str | None = None
) -> Iterator[Finding]:
    """Check that every task finished, fill `summary`, and stream the merged findings."""
    where = folder.resolve_paths("") if not folder.is_local() else folder.path
    tasks = read_summaries(folder, where)
    if settings is not None and tasks[0].settings != settings:
        raise InputError(
            f"{where}: the shards there were made with other settings; use an empty folder"
        )
    check_unique_ids(folder, tasks, where)
    merge_summary(tasks, summary, data)
    return merged_findings(folder, tasks, where)


class MergeFindings(PipelineStep):  # type: ignore[misc]
    """Merges the shards of a finished scan into one findings file (in task 0; run it as
    a one-task executor that depends on the scan's executor)."""

    name = "🧩 codeeraser merge findings"
    type = "🔎 - SCAN"

    def __init__(
        self,
        shards: DataFolderLike,
        out: str,
        data: str = "DATA",
        baseline: str | None = None,
        settings: str | None = None,
    ) -> None:
        super().__init__()
        self.shards = shards
        self.out = out  # a local path (on Slurm: on the shared filesystem)
        self.data = data  # names the data in messages
        self.baseline = baseline
        self.settings = settings  # when given, every shard must have been made with it

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> Any:
        if data:
            yield from data
        if rank == 0:
            baseline = Path(self.baseline) if self.baseline else None
            written = merge_shards(
                self.shards,
                Path(self.out),
                data=self.data,
                baseline=baseline,
                settings=self.settings,
            )
            self.stat_update("findings", value=written)
