"""Small file helpers: atomic writes and line-numbered JSONL reading.

Outputs are written to a temporary sibling and renamed into place, so a reader never
sees a half-written file and an interrupted run leaves the previous file intact.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from gate.errors import InputError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line as `rows` arrive; return the number of rows.

    Rows are streamed to the temporary file, so memory does not grow with their number;
    if the iteration raises, the previous file at `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            for row in rows:
                handle.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _open_binary(path: Path) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def iter_lines(path: Path, what: str = "record") -> Iterator[tuple[int, bytes]]:
    """Yield (line number, raw line) for each non-blank line of a file, .gz included."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected a JSONL file of {what}s)")
    try:
        with _open_binary(path) as handle:
            for lineno, line in enumerate(handle, start=1):
                if line.strip():
                    yield lineno, line
    except (OSError, EOFError) as exc:
        reason = type(exc).__name__
        raise InputError(f"{path}: cannot be read ({reason}); is it truncated?") from None


def parse_jsonl_line(path: Path, lineno: int, raw: bytes, what: str = "record") -> dict[str, Any]:
    """One JSON object from one line; errors name the file and line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}:{lineno}: not valid UTF-8") from None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        raise InputError(f"{path}:{lineno}: not a JSON object (expected one {what} per line)")
    return obj


def read_jsonl(path: Path, what: str = "record") -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; errors name file and line."""
    for lineno, raw in iter_lines(path, what):
        yield lineno, parse_jsonl_line(path, lineno, raw, what)
