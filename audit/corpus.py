"""Read training data as a stream of Samples, whatever it is stored as.

Formats: a folder (recursive), JSONL or JSONL.GZ with a text field (the codeparrot
layout: ``{"id", "path", "content"}``), Parquet, or a dataset saved with
``datasets.save_to_disk``. Reading streams: memory does not grow with corpus size.

Sample ids are what findings refer to, so they must be the same on every read:
- folder: the file's path relative to the folder, with ``/`` separators;
- JSONL / Parquet / HF: the ``id_field`` value when the record has one, else
  ``<file name>:<line or row>``.
``origin`` is where a reviewer finds the sample: the relative path for a folder, the
record's ``path`` field when it has one, else ``<file name>:<line or row>``.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from audit.errors import InputError
from audit.findings import Finding
from audit.io import iter_lines, parse_jsonl_line

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
        raise InputError(f"{spec.path}: {_nothing_read(stats)}")


def _nothing_read(stats: ReadStats) -> str:
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


def _excluded(origin: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(origin, pattern) for pattern in patterns)


def _iter_dir(spec: CorpusSpec, stats: ReadStats) -> Iterator[Sample]:
    root = spec.path
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") and part not in (".env",) for part in rel.split("/")[:-1]):
            stats.skipped["hidden folder"] += 1
            continue
        text = _read_file(path, stats)
        if text is not None:
            yield Sample(id=rel, origin=rel, text=text, language=language_for(rel))


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
    import gzip
    import lzma

    import zstandard

    suffix = path.suffix.lower()
    try:
        if suffix == ".zst":
            with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as f:
                data = _read_upto(f, MAX_FILE_BYTES + 1)
        else:
            opener = gzip.open if suffix == ".gz" else lzma.open
            with opener(path, "rb") as f:
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


def _iter_jsonl(spec: CorpusSpec, stats: ReadStats) -> Iterator[Sample]:
    for lineno, raw in iter_lines(spec.path, what="record"):
        try:
            record = parse_jsonl_line(spec.path, lineno, raw, what="record")
        except InputError as exc:
            if spec.on_bad_record == "fail":
                raise InputError(f"{exc.message}; fix it, or {SKIP_HINT}") from None
            stats.skipped["bad JSON line" if raw is not None else "line too long"] += 1
            continue
        yield from _some(_record_sample(spec, record, f"{spec.path.name}:{lineno}", stats))


def _iter_parquet(spec: CorpusSpec, stats: ReadStats) -> Iterator[Sample]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(spec.path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(
            f"{spec.path}: not a readable Parquet file ({type(exc).__name__})"
        ) from None
    names = parquet.schema_arrow.names
    if spec.text_field not in names:
        raise InputError(
            f"{spec.path}: no column {spec.text_field!r} (columns: {', '.join(names)}; "
            "set --text-field)"
        )
    columns = [c for c in (spec.text_field, spec.id_field, "path") if c in names]
    row = 0
    for batch in parquet.iter_batches(batch_size=1024, columns=columns):
        for record in batch.to_pylist():
            yield from _some(_record_sample(spec, record, f"{spec.path.name}:{row}", stats))
            row += 1


def _iter_hf(spec: CorpusSpec, stats: ReadStats) -> Iterator[Sample]:
    try:
        import datasets
    except ImportError:
        raise InputError(
            f"{spec.path}: reading a saved HF dataset needs the `datasets` package "
            "(pip install 'codeeraser[hf]')"
        ) from None
    try:
        dataset = datasets.load_from_disk(str(spec.path))
    except Exception as exc:  # datasets raises several types for a bad folder
        raise InputError(f"{spec.path}: not a saved HF dataset ({type(exc).__name__})") from None
    if isinstance(dataset, datasets.DatasetDict):
        raise InputError(f"{spec.path}: a DatasetDict; give one split's folder instead")
    if spec.text_field not in dataset.column_names:
        raise InputError(
            f"{spec.path}: no column {spec.text_field!r} "
            f"(columns: {', '.join(dataset.column_names)}; set --text-field)"
        )
    for row, record in enumerate(dataset):
        yield from _some(_record_sample(spec, dict(record), f"{spec.path.name}:{row}", stats))


def _some(sample: Sample | None) -> Iterator[Sample]:
    if sample is not None:
        yield sample
