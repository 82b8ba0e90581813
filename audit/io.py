"""Small file helpers: atomic writes and line-numbered JSONL reading.

Outputs are written to a temporary sibling and renamed into place, so a reader never
sees a half-written file and an interrupted run leaves the previous file intact.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import math
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import is_dataclass
from pathlib import Path
from types import UnionType
from typing import IO, Any, Literal, Union, get_args, get_origin, get_type_hints

from audit.errors import InputError

MAX_LINE_BYTES = 16 * 1024 * 1024  # a JSONL line longer than this is not a code record
_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def digest(obj: Any) -> str:
    """SHA-256 of a JSON-able object (keys sorted): a fingerprint of settings or data."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def output_error(path: Path, exc: OSError) -> InputError:
    """An InputError (exit 2) for an output that cannot be written, naming the path and
    what to do. Disk full and permission problems are the user's to fix."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InputError(
            f"{path}: disk full while writing (free some space, or write elsewhere); "
            "files already there were left as they were"
        )
    if exc.errno in _UNWRITABLE:
        return InputError(f"{path}: not writable ({exc.strerror}); choose a writable location")
    return InputError(f"{path}: cannot be written ({exc.strerror or type(exc).__name__})")


@contextmanager
def atomic_file(path: Path, mode: Literal["wb", "w"] = "wb") -> Iterator[IO[Any]]:
    """A handle on a temporary file next to `path` that becomes `path` (synced, by a
    rename) when the block ends; if the block raises, `path` is left as it was."""
    path = Path(path)
    fd, tmp = _temporary_sibling(path)
    try:
        encoding, newline = ("utf-8", "\n") if mode == "w" else (None, None)
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise output_error(path, exc) from None
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and a rename."""
    with atomic_file(path) as handle:
        handle.write(data)


def _temporary_sibling(path: Path) -> tuple[int, str]:
    """A new temporary file next to `path` (its folder created if needed)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise output_error(path, exc) from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line as `rows` arrive; return the number of rows.

    Rows are streamed to the temporary file, so memory does not grow with their number;
    if the iteration raises, the previous file at `path` is left as it was.
    """
    count = 0
    with atomic_file(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
            count += 1
    return count


def _open_binary(path: Path) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def iter_lines(
    path: Path, what: str = "record", max_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, bytes | None]]:
    """Yield (line number, raw line) for each non-blank line of a file, .gz included.

    A line longer than `max_bytes` is never held in memory: it is read past in chunks
    and yielded as None (which `parse_jsonl_line` reports), so a caller may skip it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected a JSONL file of {what}s)")
    try:
        handle = _open_binary(path)
    except OSError as exc:
        raise _unreadable(str(path), 0, exc) from None
    with handle:
        yield from stream_lines(handle, str(path), max_bytes)


def stream_lines(
    handle: IO[bytes], name: str, max_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, bytes | None]]:
    """`iter_lines` over an open (already decompressed) binary stream; `name` is the file
    an error names."""
    lineno = 0
    try:
        for lineno, line in _bounded_lines(handle, max_bytes):
            if line is None or line.strip():
                yield lineno, line
    except (OSError, EOFError, zlib.error) as exc:
        raise _unreadable(name, lineno, exc) from None


def _unreadable(name: str, lineno: int, exc: BaseException) -> InputError:
    where = f" after line {lineno}" if lineno else ""
    kind = "zlib.error" if isinstance(exc, zlib.error) else type(exc).__name__
    return InputError(
        f"{name}: unreadable{where} ({kind}): the file is truncated or corrupt; copy it again"
    )


def _bounded_lines(handle: IO[bytes], max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    lineno = 0
    while line := handle.readline(max_bytes + 1):
        lineno += 1
        if len(line) <= max_bytes:
            yield lineno, line
            continue
        while line and not line.endswith(b"\n"):  # read past the rest of the long line
            line = handle.readline(1 << 20)
        yield lineno, None


def parse_jsonl_line(
    path: Path | str, lineno: int, raw: bytes | None, what: str = "record"
) -> dict[str, Any]:
    """One JSON object from one line (None: a line over MAX_LINE_BYTES); errors name the
    file and line."""
    if raw is None:
        raise InputError(
            f"{path}:{lineno}: line longer than {MAX_LINE_BYTES >> 20} MB (not one {what})"
        )
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


def type_problem(cls: type, obj: dict[str, Any]) -> str | None:
    """What is wrong with the first field of `obj` whose value does not fit dataclass
    `cls`'s annotation (bools are not numbers, numbers are finite, text is valid
    Unicode), e.g. "start: a str where int belongs"; None when every field fits."""
    for name, hint in get_type_hints(cls).items():
        if name in obj and not _fits(obj[name], hint):
            value = obj[name]
            if isinstance(value, str) and not _valid_unicode(value):
                return f"{name}: not valid Unicode (a lone surrogate)"
            if isinstance(value, float) and not math.isfinite(value):
                return f"{name}: {value} is not a finite number"
            return f"{name}: a {type(value).__name__} where {_type_name(hint)} belongs"
    return None


def _type_name(hint: Any) -> str:
    if get_origin(hint) in (Union, UnionType):
        return " or ".join(_type_name(arg) for arg in get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _fits(value: Any, hint: Any) -> bool:
    if get_origin(hint) in (Union, UnionType):
        return any(_fits(value, arg) for arg in get_args(hint))
    if is_dataclass(hint):
        return isinstance(value, dict) and type_problem(hint, value) is None  # type: ignore[arg-type]
    check = _CHECKS.get(hint)
    return check is None or check(value)


def _finite_number(value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value)


_CHECKS: dict[Any, Callable[[Any], bool]] = {
    type(None): lambda v: v is None,
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: _finite_number,
    str: lambda v: isinstance(v, str) and _valid_unicode(v),
}


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_jsonl(path: Path, what: str = "record") -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; errors name file and line."""
    for lineno, raw in iter_lines(path, what):
        yield lineno, parse_jsonl_line(path, lineno, raw, what)
