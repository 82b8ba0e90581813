"""Read training data as a stream of Samples, whatever it is stored as.

Formats: a folder (recursive), JSONL or JSONL.GZ with a text field (the codeparrot
layout: ``{"id", "path", "content"}``), Parquet (a file, or with an explicit format a
folder of such files: the shards of a large dataset), a dataset saved with
``datasets.save_to_disk``, or a Hugging Face Hub dataset at a commit (`audit.hub`,
streamed). Reading streams: memory does not grow with corpus size.

Sample ids are what findings refer to, so they must be the same on every read:
- folder: the file's path relative to the folder, with ``/`` separators;
- JSONL / Parquet / HF: the ``id_field`` value when the record has one, else
  ``<file>:<line or row>``, where ``<file>`` is the file's name, or its path relative
  to the folder for a folder of JSONL or Parquet files;
- a Hub dataset: the ``id_field`` value, else ``ORG/NAME[/CONFIG]/SPLIT:<row>``.
``origin`` is where a reviewer finds the sample: the relative path for a folder, the
record's ``path`` field when it has one, else ``<file>:<line or row>``; for a Hub
dataset always ``ORG/NAME[/CONFIG]/SPLIT:<row>`` (the dataset, split and row).

Reading order, which is the order of the findings: a folder's files sorted by their
path components (as `pathlib` sorts paths), then each file's lines or rows in order.
The datatrove engine (`audit.datatrove_step`) reads through the public functions below
and reproduces this order when it merges its shards.
"""

from __future__ import annotations

import errno
import fnmatch
import gzip
import lzma
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

from audit.errors import InputError
from audit.findings import Finding, checked_text
from audit.hub import HubRevision, stream_dataset
from audit.io import iter_lines, parse_jsonl_line, stream_lines
from audit.placeholders import is_redacted, matches_redacted, raw_length

Format = Literal["auto", "dir", "jsonl", "parquet", "hf"]
OnBad = Literal["skip", "fail"]
FORMATS: tuple[str, ...] = ("auto", "dir", "jsonl", "parquet", "hf")

MAX_FILE_BYTES = 2_000_000  # folder files larger than this are skipped (minified, data)
MAX_LISTED = 200  # skipped files listed by name in a summary (every one is counted)
SKIP_HINT = "skip bad records (--on-bad-record skip; in a policy, scan.on_bad_record: skip)"

_LANGUAGES = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".tsx": "tsx",
    ".java": "java",
    ".go": "go",
    ".rb": "ruby",
    ".php": "php",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".sh": "bash",
    ".bash": "bash",
    ".zsh": "bash",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".json": "json",
    ".toml": "toml",
    ".ini": "ini",
    ".cfg": "ini",
    ".conf": "ini",
    ".env": "dotenv",
    ".properties": "ini",
    ".txt": "text",
    ".log": "log",
    ".md": "markdown",
    ".rst": "text",
    ".tf": "terraform",
    ".tfvars": "terraform",
    ".hcl": "terraform",
    ".mk": "makefile",
    ".xml": "xml",
    ".config": "xml",
    ".csproj": "xml",
    ".props": "xml",
    ".nuspec": "xml",
}
_MAKEFILES = frozenset({"makefile", "gnumakefile", "makefile.am", "makefile.in"})
# Compressed files in a folder are read through their decompressor, up to MAX_FILE_BYTES
# of text; the sample keeps the file's own path, its language is the inner name's.
COMPRESSED = (".gz", ".xz", ".zst")
# The files a folder of records is read from, by format.
RECORD_SUFFIXES: dict[str, tuple[str, ...]] = {
    "jsonl": (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson"),
    "parquet": (".parquet",),
}


def language_for(path: str) -> str | None:
    """The language of a file from its name (``.env`` files included), or None."""
    name = path.rsplit("/", 1)[-1].lower()
    for suffix in COMPRESSED:
        name = name.removesuffix(suffix)
    if name in _MAKEFILES:
        return "makefile"
    if name == ".env" or name.startswith(".env.") or name.endswith(".env"):
        return "dotenv"
    dot = name.rfind(".")
    return _LANGUAGES.get(name[dot:]) if dot >= 0 else None


@dataclass(frozen=True)
class Sample:
    """One training sample: a file, or one record of a dataset."""

    id: str
    origin: str
    text: str = field(repr=False)  # holds the secrets: never in a repr, log or traceback
    language: str | None


@dataclass
class ReadStats:
    """What a read skipped, by reason, and the first files skipped (the scan redacts
    their names before they are shown)."""

    samples: int = 0
    bytes: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (origin, reason)

    def skip(self, reason: str, origin: str | None = None) -> None:
        """Count one skipped sample; list it by its origin (up to MAX_LISTED)."""
        self.skipped[reason] += 1
        if origin is not None and len(self.skipped_files) < MAX_LISTED:
            self.skipped_files.append((origin, reason))


@dataclass(frozen=True)
class CorpusSpec:
    """Where the data is and how to read it."""

    path: Path
    fmt: Format = "auto"
    text_field: str = "content"
    id_field: str = "id"
    excludes: tuple[str, ...] = ()  # glob patterns matched against the origin
    on_bad_record: OnBad = "fail"
    hub: HubRevision | None = None  # a Hub dataset (then `path` is only its name, ORG/NAME/SPLIT)


def is_record_file(name: str, fmt: str) -> bool:
    """A file a folder of `fmt` ("jsonl" or "parquet") records is read from."""
    return name.lower().endswith(RECORD_SUFFIXES[fmt])


def in_hidden_folder(rel: str) -> bool:
    """A file under a hidden folder (`.git/`, `.venv/`): not read, counted as skipped."""
    return any(part.startswith(".") and part != ".env" for part in rel.split("/")[:-1])


def detect_format(path: Path) -> Format:
    """Pick the reader from what `path` is; raise InputError naming what to fix."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder (give the training data to scan)")
    if path.is_dir():
        return "hf" if is_saved_dataset(path) else "dir"
    name = path.name.lower()
    for fmt in ("jsonl", "parquet"):
        if is_record_file(name, fmt):
            return fmt
    raise InputError(
        f"{path}: unknown data format (use a folder, .jsonl, .jsonl.gz, .parquet, "
        "a saved HF dataset, or --format)"
    )


def is_saved_dataset(path: Path) -> bool:
    """A folder written by `datasets.save_to_disk`: its state and info files and Arrow
    data (one split), or a dataset_dict.json. A code folder that merely holds a file
    named state.json is not one."""
    if (path / "dataset_dict.json").is_file():
        return True
    saved = all((path / name).is_file() for name in ("state.json", "dataset_info.json"))
    return saved and any(path.glob("*.arrow"))


def iter_samples(spec: CorpusSpec, stats: ReadStats | None = None) -> Iterator[Sample]:
    """Stream the samples of a corpus in a fixed order."""
    stats = stats if stats is not None else ReadStats()
    for sample in _reader(spec)(spec, stats):
        if spec.excludes and _excluded(sample.origin, spec.excludes):
            stats.skip("excluded")
            continue
        stats.samples += 1
        stats.bytes += len(sample.text)
        yield sample
    if stats.samples == 0:
        raise InputError(f"{spec.path}: {nothing_read(stats)}")


def _reader(spec: CorpusSpec) -> Callable[[CorpusSpec, ReadStats], Iterator[Sample]]:
    if spec.hub is not None:
        return _iter_hub
    fmt = detect_format(spec.path) if spec.fmt == "auto" else spec.fmt
    if not spec.path.exists():
        raise InputError(f"{spec.path}: no such file or folder")
    readers = {"dir": _iter_dir, "jsonl": _iter_jsonl, "parquet": _iter_parquet, "hf": _iter_hf}
    return readers[fmt]


def nothing_read(stats: ReadStats) -> str:
    """Why a corpus gave no sample, and what to do."""
    if not stats.skipped:
        return "no samples in it (give the folder or file that holds the training code)"
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(stats.skipped.items()))
    return (
        f"no text samples to read (skipped: {skipped}); give UTF-8 source files or records, "
        "or change the excludes"
    )


def load_texts(spec: CorpusSpec, sample_ids: Iterable[str]) -> dict[str, str]:
    """The texts of the given samples (one pass over the corpus); missing ids are absent.

    Ids are as findings hold them: an id with a secret in it is redacted
    (`audit.placeholders`), and matches the sample whose own id it was made from.
    """
    return dict(iter_texts(spec, sample_ids))


def iter_texts(spec: CorpusSpec, sample_ids: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(id, text) for each of the given samples found, as `load_texts` finds them, one
    at a time: a folder's files read by id, then one pass over the corpus that stops
    once every id was found."""
    wanted = set(sample_ids)
    found: set[str] = set()
    local = spec.hub is None and spec.fmt in ("auto", "dir") and spec.path.is_dir()
    if local and detect_format(spec.path) == "dir":
        for sample_id, text in _read_by_id(spec.path, [i for i in wanted if not is_redacted(i)]):
            found.add(sample_id)
            yield sample_id, text
        if len(found) == len(wanted):
            return
    by_length: dict[int, list[str]] = {}  # redacted ids, by the length of their sample's id
    for redacted in (i for i in wanted if is_redacted(i)):
        by_length.setdefault(raw_length(redacted), []).append(redacted)
    for sample in iter_samples(spec):
        key = _wanted_key(sample.id, wanted, by_length)
        if key is not None and key not in found:
            found.add(key)
            yield key, sample.text
            if len(found) == len(wanted):
                return


def _wanted_key(sample_id: str, wanted: set[str], by_length: dict[int, list[str]]) -> str | None:
    """The wanted id that names this sample: its own id, or a redaction of it."""
    if sample_id in wanted:
        return sample_id
    candidates = by_length.get(len(sample_id), ())
    return next((r for r in candidates if matches_redacted(sample_id, r)), None)


def _read_by_id(folder: Path, sample_ids: Iterable[str]) -> Iterator[tuple[str, str]]:
    """A folder's files read by id (its relative path) directly, without a walk."""
    root = folder.resolve()
    for sample_id in sample_ids:
        try:
            path = (root / sample_id).resolve()
            if not path.is_relative_to(root) or not path.is_file():
                continue  # an id from another corpus, never a file outside the folder
        except (OSError, ValueError):  # a NUL, a lone surrogate, a name too long: no file
            continue
        text = _read_file(path, ReadStats())
        if text is not None:
            yield sample_id, text


def texts_for_findings(spec: CorpusSpec, findings: Sequence[Finding]) -> dict[str, str]:
    """The texts of the samples the findings are in; a missing sample is an InputError."""
    texts = load_texts(spec, {f.sample_id for f in findings})
    missing = next((f for f in findings if f.sample_id not in texts), None)
    if missing is not None:
        raise InputError(
            f"finding {missing.id}: sample {missing.sample_id!r} is not in {spec.path} "
            "(is the findings file from another corpus?)"
        )
    return texts


def verify_findings(spec: CorpusSpec, findings: Sequence[Finding]) -> None:
    """Check that the findings belong to this data: every finding's sample is in it and
    the text at its span has its hash (`checked_text`); else an InputError naming the
    first that does not. One pass (a folder: its files read by id); no text is kept."""
    by_sample: dict[str, list[Finding]] = {}
    for finding in findings:
        by_sample.setdefault(finding.sample_id, []).append(finding)
    for sample_id, text in iter_texts(spec, by_sample):
        checked_text(by_sample.pop(sample_id), {sample_id: text})
    for missing in by_sample.values():
        checked_text(missing, {})


def excluded(origin: str, patterns: tuple[str, ...]) -> bool:
    """`origin` matches one of the --exclude glob patterns."""
    return _excluded(origin, patterns)


def _excluded(origin: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(origin, pattern) for pattern in patterns)


def _iter_dir(spec: CorpusSpec, stats: ReadStats) -> Iterator[Sample]:
    for rel in folder_files(spec.path, stats):
        sample = folder_sample(spec.path, rel, stats)
        if sample is not None:
            yield sample


def folder_files(root: Path, stats: ReadStats) -> list[str]:
    """The files under `root` in reading order, as `/`-separated relative paths (what
    the walk leaves out is counted in `stats`)."""
    return [path.relative_to(root).as_posix() for path in sorted(_walk(root, stats))]


def folder_sample(root: Path, rel: str, stats: ReadStats) -> Sample | None:
    """The file `rel` of a folder corpus as a sample; None when it is skipped (counted)."""
    if in_hidden_folder(rel):
        stats.skip("hidden folder")
        return None
    text = _read_file(root / rel, stats, rel)
    return None if text is None else Sample(rel, rel, text, language_for(rel))


def stream_sample(
    rel: str, size: int, open_binary: Callable[[], IO[bytes]], stats: ReadStats
) -> Sample | None:
    """`folder_sample` for a file of a remote folder (fsspec): its `size` in bytes, and
    a function that opens it for reading. The same checks, in the same order."""
    if in_hidden_folder(rel):
        stats.skip("hidden folder")
        return None
    if size > MAX_FILE_BYTES:
        stats.skip("too large", rel)
        return None
    suffix = PurePosixPath(rel).suffix.lower()
    try:
        with open_binary() as handle:
            compressed = suffix in COMPRESSED
            data = _decompressed(handle, suffix) if compressed else handle.read(MAX_FILE_BYTES + 1)
    except OSError:
        stats.skip("unreadable", rel)
        return None
    if data is None:
        stats.skip("compressed: corrupt or over the size limit", rel)
        return None
    text = _decoded(data, stats, rel)
    return None if text is None else Sample(rel, rel, text, language_for(rel))


def _walk(root: Path, stats: ReadStats) -> Iterator[Path]:
    """Every entry under `root` that may be a file to read. Links (followed, they could
    leave the folder), FIFOs, sockets and devices (reading a FIFO blocks) and folders
    that cannot be listed are skipped and counted."""
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                listed = list(entries)
        except OSError as exc:
            stats.skip(_os_reason(exc, "unreadable folder"), _rel(folder, root))
            continue
        for entry in listed:
            path = Path(entry.path)
            kind = _entry_kind(entry)
            if kind == "folder":
                folders.append(path)
            elif kind == "file":
                yield path
            else:
                stats.skip(kind, _rel(path, root))


def _entry_kind(entry: os.DirEntry[str]) -> str:
    """ "file", "folder", or why the entry is not read."""
    try:
        if entry.is_symlink():
            return "symbolic link" if os.path.exists(entry.path) else "broken link"
        mode = entry.stat(follow_symlinks=False).st_mode
    except OSError as exc:
        return _os_reason(exc, "unreadable")
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISREG(mode):
        return "file"
    return "FIFO" if stat.S_ISFIFO(mode) else "not a regular file"


def _os_reason(exc: OSError, default: str) -> str:
    return "path too long" if exc.errno == errno.ENAMETOOLONG else default


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else "."


def file_sample(path: Path, stats: ReadStats) -> Sample | None:
    """One file as one sample, read as a folder corpus reads it (id and origin: `path`
    as given, with `/` separators); None when it is skipped (binary, too large, not UTF-8).
    """
    name = path.as_posix()
    text = _read_file(path, stats, name)
    if text is None:
        return None
    return Sample(id=name, origin=name, text=text, language=language_for(name))


def _read_file(path: Path, stats: ReadStats, origin: str | None = None) -> str | None:
    """A file's text, or None (counted in `stats`) when it is not a readable text file.

    Opened without following a link and without blocking, and checked to be a regular
    file once open: a file swapped for a FIFO after the walk does not hang the read.
    Compressed files are read through their decompressor."""
    origin = origin or path.name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        stats.skip(_os_reason(exc, "unreadable"), origin)
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                stats.skip("not a regular file", origin)
                return None
            if info.st_size > MAX_FILE_BYTES:
                stats.skip("too large", origin)
                return None
            if path.suffix.lower() in COMPRESSED:
                data = _decompressed(handle, path.suffix)
            else:
                data = handle.read(MAX_FILE_BYTES + 1)
    except OSError:
        stats.skip("unreadable", origin)
        return None
    if data is None:
        stats.skip("compressed: corrupt or over the size limit", origin)
        return None
    return _decoded(data, stats, origin)


def _decoded(data: bytes, stats: ReadStats, origin: str) -> str | None:
    if len(data) > MAX_FILE_BYTES:
        stats.skip("too large", origin)
        return None
    if b"\0" in data[:8192]:
        stats.skip("binary", origin)
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        stats.skip("not UTF-8", origin)
        return None


def _decompressed(raw: IO[bytes], suffix: str) -> bytes | None:
    """The content of an open .gz/.xz/.zst file, or None if it is corrupt or decompresses
    to more than MAX_FILE_BYTES (read in bounded steps: a zip bomb never fills memory)."""

    import zstandard

    suffix = suffix.lower()
    try:
        if suffix == ".zst":
            with zstandard.ZstdDecompressor().stream_reader(raw) as f:
                data = _read_upto(f, MAX_FILE_BYTES + 1)
        elif suffix == ".gz":
            with gzip.GzipFile(fileobj=raw) as f:
                data = _read_upto(f, MAX_FILE_BYTES + 1)
        else:
            with lzma.LZMAFile(raw) as f:
                data = _read_upto(f, MAX_FILE_BYTES + 1)
    except (OSError, EOFError, lzma.LZMAError, ValueError, zstandard.ZstdError):
        return None
    return data if len(data) <= MAX_FILE_BYTES else None


def _read_upto(stream: Any, limit: int) -> bytes:
    """At most `limit` bytes of a stream whose reads may return less than asked."""
    parts: list[bytes] = []
    size = 0
    while size < limit and (chunk := stream.read(min(1 << 20, limit - size))):
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def record_sample(
    spec: CorpusSpec, record: dict[str, Any], where: str, stats: ReadStats
) -> Sample | None:
    """One record as a sample (`where` is `<file>:<line or row>`); None when it is a bad
    record that `spec.on_bad_record` skips (counted). Ids are not checked for repeats
    here (`_samples_of` does that for a whole corpus)."""
    return _record_sample(spec, record, where, stats)


def _record_sample(
    spec: CorpusSpec, record: dict[str, Any], where: str, stats: ReadStats
) -> Sample | None:
    problem = _record_problem(spec, record)
    if problem is not None:
        field_name, what = problem
        if spec.on_bad_record == "fail":
            raise InputError(f"{where}: {_field(field_name, spec)} is {what}{_fix(what)}")
        stats.skip(f"{_field(field_name, spec).split(' ', 1)[0]} field {what}", where)
        return None
    text = record[spec.text_field]
    raw_id = record.get(spec.id_field)
    sample_id = str(raw_id) if raw_id is not None and raw_id != "" else where
    path = record.get("path")
    named = path if isinstance(path, str) and path else where
    origin = where if spec.hub is not None else named  # a Hub dataset: its split and row
    return Sample(id=sample_id, origin=origin, text=text, language=language_for(named))


def _fix(what: str) -> str:
    if what == _NOT_UNICODE:
        return f" (a lone surrogate such as \\ud800); fix the record, or {SKIP_HINT}"
    return f"; set --text-field, or {SKIP_HINT}"


_NOT_UNICODE = "not valid Unicode"


def _field(name: str, spec: CorpusSpec) -> str:
    kind = "text" if name == spec.text_field else "id" if name == spec.id_field else "path"
    return f"{kind} field {name!r}"


def _record_problem(spec: CorpusSpec, record: dict[str, Any]) -> tuple[str, str] | None:
    """(field, what is wrong with it) for a record that cannot be a sample, else None."""
    text = record.get(spec.text_field)
    if not isinstance(text, str):
        return spec.text_field, "missing" if text is None else "not a string"
    for name in (spec.text_field, spec.id_field, "path"):
        value = record.get(name)
        if isinstance(value, str) and not _valid_unicode(value):
            return name, _NOT_UNICODE
    return None


def _valid_unicode(text: str) -> bool:
    """False for a string with a lone surrogate (JSON can escape one; UTF-8 cannot hold it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


Record = tuple[dict[str, Any], str]  # a record and where it is (<file name>:<line or row>)


def _samples_of(spec: CorpusSpec, records: Iterable[Record], stats: ReadStats) -> Iterator[Sample]:
    """Records as samples; a sample id given twice by the id field is an InputError.

    The check keeps one hash per record (about 60 bytes each)."""
    seen: set[int] = set()
    for record, where in records:
        sample = _record_sample(spec, record, where, stats)
        if sample is None:
            continue
        if sample.id != where:
            key = hash(sample.id)
            if key in seen:
                raise InputError(
                    f"{where}: sample id {sample.id!r} (field "
                    f"{spec.id_field!r}) was already used by an earlier record; ids must be "
                    "unique (set --id-field to a unique field, or remove the duplicate)"
                )
            seen.add(key)
        yield sample


def _iter_jsonl(spec: CorpusSpec, stats: ReadStats) -> Iterator[Sample]:
    return _samples_of(spec, _jsonl_records(spec, stats), stats)


def record_files(spec: CorpusSpec, fmt: str, stats: ReadStats) -> list[tuple[Path, str]]:
    """The files a JSONL or Parquet corpus is read from, with the names its sample ids
    use: the file and its name, or a folder's files of that format and their relative
    paths, in a folder corpus's order (those in hidden folders counted as skipped)."""
    if not spec.path.is_dir():
        return [(spec.path, spec.path.name)]
    files: list[tuple[Path, str]] = []
    for rel in folder_files(spec.path, stats):
        if not is_record_file(rel, fmt):
            continue
        if in_hidden_folder(rel):
            stats.skip("hidden folder")
        else:
            files.append((spec.path / rel, rel))
    return files


def _jsonl_records(spec: CorpusSpec, stats: ReadStats) -> Iterator[Record]:
    for path, name in record_files(spec, "jsonl", stats):
        lines = iter_lines(path, what="record")
        for _, record, where in jsonl_file_records(spec, lines, name, path, stats):
            yield record, where


IndexedRecord = tuple[int, dict[str, Any], str]  # line or row, record, <file>:<line or row>


def jsonl_file_records(
    spec: CorpusSpec,
    lines: Iterable[tuple[int, bytes | None]],
    name: str,
    label: Path | str,
    stats: ReadStats,
) -> Iterator[IndexedRecord]:
    """The records of one JSONL file's lines (from `iter_lines` or `stream_lines`);
    `name` goes into ids, `label` into error messages."""
    for lineno, raw in lines:
        where = f"{name}:{lineno}"
        try:
            record = parse_jsonl_line(label, lineno, raw, what="record")
        except InputError as exc:
            if spec.on_bad_record == "fail":
                raise InputError(f"{exc.message}; fix it, or {SKIP_HINT}") from None
            stats.skip("bad JSON line" if raw is not None else "line too long", where)
            continue
        yield lineno, record, where


def jsonl_stream_records(
    spec: CorpusSpec, handle: IO[bytes], name: str, label: str, stats: ReadStats
) -> Iterator[IndexedRecord]:
    """`jsonl_file_records` of an open, decompressed binary stream (a remote file)."""
    return jsonl_file_records(spec, stream_lines(handle, label), name, label, stats)


def _iter_parquet(spec: CorpusSpec, stats: ReadStats) -> Iterator[Sample]:
    return _samples_of(spec, _parquet_records(spec, stats), stats)


def _parquet_records(spec: CorpusSpec, stats: ReadStats) -> Iterator[Record]:
    for path, name in record_files(spec, "parquet", stats):
        for _, record, where in parquet_file_records(spec, path, name, path):
            yield record, where


def parquet_file_records(
    spec: CorpusSpec, source: Path | IO[bytes], name: str, label: Path | str
) -> Iterator[IndexedRecord]:
    """The records of one Parquet file (a path or an open binary stream) with their row
    numbers; `name` goes into ids, `label` into error messages."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"{label}: not a readable Parquet file ({type(exc).__name__})") from None
    schema = parquet.schema_arrow
    kind = lambda: str(schema.field(spec.text_field).type)  # noqa: E731
    _check_text_column(spec, schema.names, kind, label)
    columns = [c for c in (spec.text_field, spec.id_field, "path") if c in schema.names]
    row = 0
    for batch in parquet.iter_batches(batch_size=1024, columns=columns):
        for record in batch.to_pylist():
            yield row, record, f"{name}:{row}"
            row += 1


_TEXT_TYPES = ("string", "large_string", "string_view")


def _check_text_column(
    spec: CorpusSpec, names: Sequence[str], kind: Callable[[], str], label: Path | str = ""
) -> None:
    """The text column exists and holds text (Arrow/HF type names); `label` names the
    file in errors (default: the corpus)."""
    where = label or spec.path
    if spec.text_field not in names:
        raise InputError(
            f"{where}: no column {spec.text_field!r} (columns: {', '.join(names)}; "
            "set --text-field)"
        )
    found = kind()
    text = found in _TEXT_TYPES or found.startswith(
        tuple(f"dictionary<values={t}," for t in _TEXT_TYPES)
    )
    if not text:
        raise InputError(
            f"{where}: column {spec.text_field!r} holds {found}, not text "
            "(set --text-field to the column that holds the code)"
        )


def _iter_hf(spec: CorpusSpec, stats: ReadStats) -> Iterator[Sample]:
    return _samples_of(spec, _hf_records(spec), stats)


def _hf_records(spec: CorpusSpec) -> Iterator[Record]:
    dataset = saved_dataset(str(spec.path), spec)
    for row, record in enumerate(dataset):
        yield dict(record), f"{spec.path.name}:{row}"


def saved_dataset(path: str, spec: CorpusSpec) -> Any:
    """The dataset saved with `save_to_disk` at `path` (a folder or an fsspec URL),
    checked to be one split whose text column holds text."""
    try:
        import datasets
    except ImportError:
        raise InputError(
            f"{spec.path}: reading a saved HF dataset needs the `datasets` package "
            "(pip install 'codeeraser[hf]')"
        ) from None
    try:
        dataset = datasets.load_from_disk(path)
    except Exception as exc:  # datasets raises several types for a bad folder
        raise InputError(f"{path}: not a saved HF dataset ({type(exc).__name__})") from None
    if isinstance(dataset, datasets.DatasetDict):
        raise InputError(f"{path}: a DatasetDict; give one split's folder instead")
    kind = lambda: _hf_type(dataset, spec.text_field)  # noqa: E731
    _check_text_column(spec, dataset.column_names, kind, path)
    return dataset


def _hf_type(dataset: Any, column: str) -> str:
    feature = dataset.features[column]
    return str(getattr(feature, "dtype", type(feature).__name__))


def _iter_hub(spec: CorpusSpec, stats: ReadStats) -> Iterator[Sample]:
    return _samples_of(spec, _hub_records(spec), stats)


def _hub_records(spec: CorpusSpec) -> Iterator[Record]:
    """A Hub dataset's split, streamed: one record in memory at a time."""
    hub = spec.hub
    assert hub is not None
    dataset = stream_dataset(hub)
    features = getattr(dataset, "features", None)
    if features is not None:  # known up front for Parquet; JSON files say it per record
        names = list(features)
        _check_text_column(spec, names, lambda: _hf_type(dataset, spec.text_field))
    records, row = iter(dataset), 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except Exception as exc:  # a file that cannot be fetched or parsed; its message may
            name = type(exc).__name__  # quote the data, so only the type is shown
            raise InputError(f"{hub.part}:{row}: cannot be read ({name})") from None
        yield dict(record), f"{hub.part}:{row}"
        row += 1
