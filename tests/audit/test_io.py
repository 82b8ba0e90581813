from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from audit.errors import InputError
from audit.io import atomic_write_bytes, atomic_write_jsonl, read_jsonl


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["out.bin"]


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    atomic_write_jsonl(path, [{"a": 1}])

    def rows() -> list[dict[str, object]]:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_jsonl(path, rows())
    assert path.read_text() == '{"a": 1}\n'
    assert len(list(tmp_path.iterdir())) == 1


def test_read_jsonl_gz_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write('{"a": 1}\n\n{"a": 2}\n')
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (3, {"a": 2})]


def test_truncated_gz_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:-20])
    with pytest.raises(InputError, match="truncated"):
        list(read_jsonl(path))


def test_invalid_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(InputError, match=r"data.jsonl:\d+: not valid UTF-8"):
        list(read_jsonl(path))
