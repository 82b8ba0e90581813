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
    """Write one JSON object per line; return the number of rows."""
    lines = [json.dumps(row, sort_keys=True, ensure_ascii=False) for row in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def _open_text(path: Path) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def read_jsonl(path: Path, what: str = "record") -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; errors name file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected a JSONL file of {what}s)")
    lineno = 0
    try:
        with _open_text(path) as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                yield lineno, _parse_line(path, lineno, line, what)
    except UnicodeDecodeError:
        raise InputError(f"{path}:{lineno + 1}: not valid UTF-8") from None
    except (OSError, EOFError) as exc:
        raise InputError(
            f"{path}: cannot be read ({type(exc).__name__}); is it truncated?"
        ) from None


def _parse_line(path: Path, lineno: int, line: str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        raise InputError(
            f"{path}:{lineno}: not a JSON object (expected one {what} per line)"
        ) from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}:{lineno}: not a JSON object (expected one {what} per line)")
    return obj
