"""Read training data as a stream of Samples, whatever it is stored as.

Formats: a folder (recursive), JSONL or JSONL.GZ with a text field (the codeparrot
layout: ``{"id", "path", "content"}``), Parquet (a file, or with an explicit format a
folder of such files: the shards of a large dataset), or a dataset saved with
``datasets.save_to_disk``. Reading streams: memory does not grow with corpus size.

Sample ids are what findings refer to, so they must be the same on every read:
- folder: the file's path relative to the folder, with ``/`` separators;
- JSONL / Parquet / HF: the ``id_field`` value when the record has one, else
  ``<file>:<line or row>``, where ``<file>`` is the file's name, or its path relative
  to the folder for a folder of JSONL or Parquet files.
``origin`` is where a reviewer finds the sample: the relative path for a folder, the
record's ``path`` field when it has one, else ``<file>:<line or row>``.

Reading order, which is the order of the findings: a folder's files sorted by their
path components (as `pathlib` sorts paths), then each file's lines or rows in order.
The datatrove engine (`audit.datatrove_step`) reads through the functions below and
reproduces this order when it merges its shards.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

from audit.errors import InputError
from audit.findings import Finding
from audit.io import iter_lines, parse_jsonl_line, stream_lines

Format = Literal["auto", "dir", "jsonl", "parquet", "hf"]
OnBad = Literal["skip", "fail"]
FORMATS: tuple[str, ...] = ("auto", "dir", "jsonl", "parquet", "hf")

MAX_FILE_BYTES = 2_000_000  # folder files larger than this are skipped (minified, data)
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
    """What a read skipped, by reason; shown in the scan summary."""

    samples: int = 0
    bytes: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class CorpusSpec:
    """Where the data is and how to read it."""

    path: Path
    fmt: Format = "auto"
    text_field: str = "content"
    id_field: str = "id"
    excludes: tuple[str, ...] = ()  # glob patterns matched against the origin
    on_bad_record: OnBad = "fail"


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
        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file():
            return "hf"
        return "dir"
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    raise InputError(
        f"{path}: unknown data format (use a folder, .jsonl, .jsonl.gz, .parquet, "
        "a saved HF dataset, or --format)"
    )


def iter_samples(spec: CorpusSpec, stats: ReadStats | None = None) -> Iterator[Sample]:
    """Stream the samples of a corpus in a fixed order."""
    stats = stats if stats is not None else ReadStats()
    fmt = detect_format(spec.path) if spec.fmt == "auto" else spec.fmt
    if not spec.path.exists():
        raise InputError(f"{spec.path}: no such file or folder")
    readers = {"dir": _iter_dir, "jsonl": _iter_jsonl, "parquet": _iter_parquet, "hf": _iter_hf}
    for sample in readers[fmt](spec, stats):
        if spec.excludes and _excluded(sample.origin, spec.excludes):
            stats.skipped["excluded"] += 1
            continue
        stats.samples += 1
        stats.bytes += len(sample.text)
        yield sample
    if stats.samples == 0:
        raise InputError(f"{spec.path}: {nothing_read(stats)}")


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
    """The texts of the given samples (one pass over the corpus); missing ids are absent."""
    wanted = set(sample_ids)
    found: dict[str, str] = {}
    if spec.fmt in ("auto", "dir") and spec.path.is_dir() and detect_format(spec.path) == "dir":
        root = spec.path.resolve()
        for sample_id in wanted:  # a folder can be read by id directly
            path = (root / sample_id).resolve()
            if not path.is_relative_to(root) or not path.is_file():
                continue  # an id from another corpus, never a file outside the folder
            text = _read_file(path, ReadStats())
            if text is not None:
                found[sample_id] = text
        return found
    for sample in iter_samples(spec):
        if sample.id in wanted:
            found[sample.id] = sample.text
            if len(found) == len(wanted):
                break
    return found


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


def verify_findings(spec: CorpusSpec, findings: Sequence[Finding], chunk: int = 10_000) -> None:
    """Check that the findings belong to this data: every finding's sample is in it and
    the text at its span has its hash; else an InputError naming the first that does not.

    A folder is read by id, `chunk` samples at a time; other formats in one pass that
    stops once every sample with a finding was seen. Texts are not kept."""
    by_sample: dict[str, list[Finding]] = {}
    for finding in findings:
        by_sample.setdefault(finding.sample_id, []).append(finding)
    if spec.fmt in ("auto", "dir") and spec.path.is_dir() and detect_format(spec.path) == "dir":
        ids = sorted(by_sample)
        for i in range(0, len(ids), chunk):
            texts = load_texts(spec, ids[i : i + chunk])
            for sample_id in ids[i : i + chunk]:
                _verify(by_sample[sample_id], texts.get(sample_id), spec)
        return
    for sample in iter_samples(spec):
        group = by_sample.pop(sample.id, None)
        if group is not None:
            _verify(group, sample.text, spec)
        if not by_sample:
            return
    _verify(next(iter(by_sample.values())), None, spec)


def _verify(findings: list[Finding], text: str | None, spec: CorpusSpec) -> None:
    first = findings[0]
    if text is None:
        raise InputError(
            f"finding {first.id}: sample {first.sample_id!r} is not in {spec.path} "
            "(is the findings file from another corpus?)"
        )
    for finding in findings:
        if finding.start >= finding.end or not finding.matches(text):
            raise InputError(
                f"finding {finding.id} ({finding.origin}:{finding.line}): the data at its "
                "span does not match its hash (the findings file is from another corpus, or "
                "the data changed since the scan): scan this data again"
            )


def excluded(origin: str, patterns: tuple[str, ...]) -> bool:
    """`origin` matches one of the --exclude glob patterns."""
    return _excluded(origin, patterns)


def _excluded(origin: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(origin, pattern) for pattern in patterns)


def _iter_dir(spec: CorpusSpec, stats: ReadStats) -> Iterator[Sample]:
    for rel in folder_files(spec.path):
        yield from _some(folder_sample(spec.path, rel, stats))


def folder_files(root: Path) -> list[str]:
    """The files under `root` in reading order, as `/`-separated relative paths (links
    are left out: followed, they could leave the folder)."""
    paths = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    return [path.relative_to(root).as_posix() for path in paths]


def folder_sample(root: Path, rel: str, stats: ReadStats) -> Sample | None:
    """The file `rel` of a folder corpus as a sample; None when it is skipped (counted)."""
    if in_hidden_folder(rel):
        stats.skipped["hidden folder"] += 1
        return None
    text = _read_file(root / rel, stats)
    return None if text is None else Sample(rel, rel, text, language_for(rel))


def stream_sample(
    rel: str, size: int, open_binary: Callable[[], IO[bytes]], stats: ReadStats
) -> Sample | None:
    """`folder_sample` for a file of a remote folder (fsspec): `size` in bytes, and a
    function that opens it for reading. The same checks, in the same order."""
    if in_hidden_folder(rel):
        stats.skipped["hidden folder"] += 1
        return None
    if size > MAX_FILE_BYTES:
        stats.skipped["too large"] += 1
        return None
    suffix = PurePosixPath(rel).suffix.lower()
    try:
        with open_binary() as handle:
            data = _decompress(handle, suffix) if suffix in COMPRESSED else handle.read()
    except OSError:
        stats.skipped["unreadable"] += 1
        return None
    text = _decode(data, stats)
    return None if text is None else Sample(rel, rel, text, language_for(rel))


def file_sample(path: Path, stats: ReadStats) -> Sample | None:
    """One file as one sample, read as a folder corpus reads it (id and origin: `path`
    as given, with `/` separators); None when it is skipped (binary, too large, not UTF-8).
    """
    text = _read_file(path, stats)
    if text is None:
        return None
    name = path.as_posix()
    return Sample(id=name, origin=name, text=text, language=language_for(name))


def _read_file(path: Path, stats: ReadStats) -> str | None:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            stats.skipped["too large"] += 1
            return None
        data = _decompressed(path) if path.suffix.lower() in COMPRESSED else path.read_bytes()
    except OSError:
        stats.skipped["unreadable"] += 1
        return None
    return _decode(data, stats)


def _decode(data: bytes | None, stats: ReadStats) -> str | None:
    """A file's bytes as text, or None (counted) for a corrupt archive, binary data or
    bytes that are not UTF-8."""
    if data is None:
        stats.skipped["compressed: corrupt or over the size limit"] += 1
        return None
    if b"\0" in data[:8192]:
        stats.skipped["binary"] += 1
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        stats.skipped["not UTF-8"] += 1
        return None


def _decompressed(path: Path) -> bytes | None:
    """The content of a .gz/.xz/.zst file, or None if it is corrupt or decompresses to
    more than MAX_FILE_BYTES (read in bounded steps: a zip bomb never fills memory)."""
    with path.open("rb") as raw:
        return _decompress(raw, path.suffix.lower())


def _decompress(raw: IO[bytes], suffix: str) -> bytes | None:
    """`_decompressed` for an open compressed stream whose name ends with `suffix`."""
    import gzip
    import lzma

    import zstandard

    try:
        if suffix == ".zst":
            with zstandard.ZstdDecompressor().stream_reader(raw) as f:
                data = _read_upto(f, MAX_FILE_BYTES + 1)
        else:
            opener = gzip.open if suffix == ".gz" else lzma.open
            with opener(raw, "rb") as f:
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


def _record_sample(
    spec: CorpusSpec, record: dict[str, Any], where: str, stats: ReadStats
) -> Sample | None:
    text = record.get(spec.text_field)
    if not isinstance(text, str):
        problem = "missing" if text is None else "not a string"
        if spec.on_bad_record == "fail":
            raise InputError(
                f"{where}: text field {spec.text_field!r} is {problem}; set --text-field, "
                f"or {SKIP_HINT}"
            )
        stats.skipped[f"text field {problem}"] += 1
        return None
    raw_id = record.get(spec.id_field)
    sample_id = str(raw_id) if raw_id is not None and raw_id != "" else where
    path = record.get("path")
    origin = path if isinstance(path, str) and path else where
    return Sample(id=sample_id, origin=origin, text=text, language=language_for(origin))


def record_files(spec: CorpusSpec, fmt: str, stats: ReadStats) -> list[tuple[Path, str]]:
    """The files a JSONL or Parquet corpus is read from, with the names its sample ids
    use: the file and its name, or a folder's files of that format and their relative
    paths, in a folder corpus's order (those in hidden folders counted as skipped)."""
    if not spec.path.is_dir():
        return [(spec.path, spec.path.name)]
    files: list[tuple[Path, str]] = []
    for rel in folder_files(spec.path):
        if not is_record_file(rel, fmt):
            continue
        if in_hidden_folder(rel):
            stats.skipped["hidden folder"] += 1
        else:
            files.append((spec.path / rel, rel))
    return files


def _iter_jsonl(spec: CorpusSpec, stats: ReadStats) -> Iterator[Sample]:
    for path, name in record_files(spec, "jsonl", stats):
        for _, sample in jsonl_samples(spec, iter_lines(path, what="record"), name, path, stats):
            yield sample


def jsonl_samples(
    spec: CorpusSpec,
    lines: Iterable[tuple[int, bytes | None]],
    name: str,
    where: Path | str,
    stats: ReadStats,
) -> Iterator[tuple[int, Sample]]:
    """The samples of one JSONL file's lines (from `iter_lines` or `stream_lines`), with
    their line numbers; `name` goes into ids, `where` into error messages."""
    for lineno, raw in lines:
        try:
            record = parse_jsonl_line(where, lineno, raw, what="record")
        except InputError as exc:
            if spec.on_bad_record == "fail":
                raise InputError(f"{exc.message}; fix it, or {SKIP_HINT}") from None
            stats.skipped["bad JSON line" if raw is not None else "line too long"] += 1
            continue
        sample = _record_sample(spec, record, f"{name}:{lineno}", stats)
        if sample is not None:
            yield lineno, sample


def jsonl_stream_samples(
    spec: CorpusSpec, handle: IO[bytes], name: str, where: str, stats: ReadStats
) -> Iterator[tuple[int, Sample]]:
    """`jsonl_samples` of an open, decompressed binary stream (a remote file)."""
    return jsonl_samples(spec, stream_lines(handle, where), name, where, stats)


def _iter_parquet(spec: CorpusSpec, stats: ReadStats) -> Iterator[Sample]:
    for path, name in record_files(spec, "parquet", stats):
        for _, sample in parquet_samples(spec, path, name, path, stats):
            yield sample


def parquet_samples(
    spec: CorpusSpec, source: Path | IO[bytes], name: str, where: Path | str, stats: ReadStats
) -> Iterator[tuple[int, Sample]]:
    """The samples of one Parquet file (a path or an open binary stream), with their
    row numbers; `name` goes into ids, `where` into error messages."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"{where}: not a readable Parquet file ({type(exc).__name__})") from None
    names = parquet.schema_arrow.names
    if spec.text_field not in names:
        raise InputError(
            f"{where}: no column {spec.text_field!r} (columns: {', '.join(names)}; "
            "set --text-field)"
        )
    columns = [c for c in (spec.text_field, spec.id_field, "path") if c in names]
    row = 0
    for batch in parquet.iter_batches(batch_size=1024, columns=columns):
        for record in batch.to_pylist():
            sample = _record_sample(spec, record, f"{name}:{row}", stats)
            if sample is not None:
                yield row, sample
            row += 1


def record_sample(
    spec: CorpusSpec, record: dict[str, Any], where: str, stats: ReadStats
) -> Sample | None:
    """One record as a sample (`where` is `<file>:<line or row>`); None when it is a bad
    record that `spec.on_bad_record` skips (counted)."""
    return _record_sample(spec, record, where, stats)


def _iter_hf(spec: CorpusSpec, stats: ReadStats) -> Iterator[Sample]:
    dataset = saved_dataset(str(spec.path), spec)
    for row, record in enumerate(dataset):
        yield from _some(_record_sample(spec, dict(record), f"{spec.path.name}:{row}", stats))


def saved_dataset(path: str, spec: CorpusSpec) -> Any:
    """The dataset saved with `save_to_disk` at `path` (a folder or an fsspec URL),
    checked to be one split with the text column."""
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
    if spec.text_field not in dataset.column_names:
        raise InputError(
            f"{path}: no column {spec.text_field!r} "
            f"(columns: {', '.join(dataset.column_names)}; set --text-field)"
        )
    return dataset


def _some(sample: Sample | None) -> Iterator[Sample]:
    if sample is not None:
        yield sample
