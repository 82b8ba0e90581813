from __future__ import annotations

import gzip
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.corpus import (
    CorpusSpec,
    ReadStats,
    Sample,
    detect_format,
    iter_samples,
    language_for,
    load_texts,
)
from audit.errors import InputError

RECORDS = [
    {"id": "a", "path": "repo/app.py", "content": "x = 1\n"},
    {"id": "b", "path": "repo/conf.yaml", "content": "key: value\n"},
]


def _jsonl(path: Path, rows: Sequence[Mapping[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_folder_ids_are_relative_paths_and_binaries_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("print(1)\n")
    (tmp_path / ".env").write_text("TOKEN=abc\n")
    (tmp_path / "blob.bin").write_bytes(b"\0\1\2")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    stats = ReadStats()
    samples = list(iter_samples(CorpusSpec(tmp_path), stats))
    assert [(s.id, s.language) for s in samples] == [(".env", "dotenv"), ("pkg/mod.py", "python")]
    assert stats.skipped == {"binary": 1, "not UTF-8": 1}
    assert stats.samples == 2


def test_jsonl_and_gz_use_id_and_path_fields(tmp_path: Path) -> None:
    plain = _jsonl(tmp_path / "d.jsonl", RECORDS)
    packed = tmp_path / "d.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed):
        samples = list(iter_samples(CorpusSpec(path)))
        assert [(s.id, s.origin, s.language) for s in samples] == [
            ("a", "repo/app.py", "python"),
            ("b", "repo/conf.yaml", "yaml"),
        ]


def test_jsonl_without_id_uses_file_and_line(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"content": "one"}, {"content": "two"}])
    assert [s.id for s in iter_samples(CorpusSpec(path))] == ["d.jsonl:1", "d.jsonl:2"]


def test_bad_records_fail_or_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "content": "ok"}\nnot json\n{"id": "c", "content": 3}\n')
    with pytest.raises(InputError, match=r"d.jsonl:2: not a JSON object"):
        list(iter_samples(CorpusSpec(path)))
    stats = ReadStats()
    spec = CorpusSpec(path, on_bad_record="skip")
    assert [s.id for s in iter_samples(spec, stats)] == ["a"]
    assert stats.skipped == {"bad JSON line": 1, "text field not a string": 1}


def test_missing_text_field_names_the_field(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "x"}])
    with pytest.raises(InputError, match=r"d.jsonl:1: text field 'content' is missing"):
        list(iter_samples(CorpusSpec(path)))
    assert [s.text for s in iter_samples(CorpusSpec(path, text_field="text"))] == ["x"]


def test_parquet_streams_and_checks_the_column(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), path)
    assert [s.id for s in iter_samples(CorpusSpec(path))] == ["a", "b"]
    with pytest.raises(InputError, match="no column 'text'"):
        list(iter_samples(CorpusSpec(path, text_field="text")))


def test_saved_hf_dataset(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(RECORDS).save_to_disk(str(tmp_path / "ds"))
    spec = CorpusSpec(tmp_path / "ds")
    assert detect_format(spec.path) == "hf"
    assert [s.origin for s in iter_samples(spec)] == ["repo/app.py", "repo/conf.yaml"]


def test_excludes_match_origin(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", RECORDS)
    stats = ReadStats()
    samples = list(iter_samples(CorpusSpec(path, excludes=("*.yaml",)), stats))
    assert [s.id for s in samples] == ["a"]
    assert stats.skipped["excluded"] == 1


def test_load_texts_by_id(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", RECORDS)
    assert load_texts(CorpusSpec(path), ["b", "zz"]) == {"b": "key: value\n"}
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "x.py").write_text("x\n")
    assert load_texts(CorpusSpec(tmp_path / "f"), ["x.py", "../d.jsonl"]) == {"x.py": "x\n"}


@pytest.mark.parametrize(
    ("name", "message"),
    [("missing", "no such file or folder"), ("data.csv", "unknown data format")],
)
def test_unusable_paths(tmp_path: Path, name: str, message: str) -> None:
    if name.endswith(".csv"):
        (tmp_path / name).write_text("a,b\n")
    with pytest.raises(InputError, match=message):
        list(iter_samples(CorpusSpec(tmp_path / name)))


@pytest.mark.parametrize(
    ("path", "language"),
    [("a/b.py", "python"), (".env.production", "dotenv"), ("x.tsx", "tsx"), ("README", None)],
)
def test_language_for(path: str, language: str | None) -> None:
    assert language_for(path) == language


def test_sample_repr_hides_the_text() -> None:
    sample = Sample(id="a.py", origin="a.py", text="password = 'hunter2hunter2'", language="python")
    assert "hunter2" not in repr(sample)
    assert "a.py" in repr(sample)


# ---------------------------------------------------------------- fuzzing

_FUZZ = settings(max_examples=120, deadline=None, database=None)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_RECORD = st.dictionaries(
    st.sampled_from(["content", "id", "path", "text", "x"]), _JSON, max_size=4
)
_LINE = (
    _RECORD.map(lambda r: json.dumps(r).encode())
    | st.binary(max_size=30)
    | st.sampled_from([b"", b"  ", b"{", b"[]", b'{"content": "\xff"}', b"\xef\xbb\xbf{}"])
)


def _read_all(spec: CorpusSpec) -> list[Sample]:
    """Every sample, or a one-line InputError naming the data: never another exception."""
    try:
        samples = list(iter_samples(spec))
    except InputError as exc:
        message = str(exc)
    else:
        assert all(isinstance(s.text, str) and isinstance(s.id, str) for s in samples)
        return samples
    assert "\n" not in message
    assert spec.path.name in message, message
    return []


@_FUZZ
@given(
    lines=st.lists(_LINE, max_size=6),
    packing=st.sampled_from(["plain", "gz", "cut gz", "garbled gz"]),
    on_bad=st.sampled_from(["fail", "skip"]),
)
def test_fuzz_jsonl_gives_samples_or_an_input_error(
    lines: list[bytes], packing: str, on_bad: str
) -> None:
    raw = b"\n".join(lines)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("data.jsonl" if packing == "plain" else "data.jsonl.gz")
        data = raw if packing == "plain" else gzip.compress(raw, mtime=0)
        if packing == "cut gz":
            data = data[: len(data) * 2 // 3]
        elif packing == "garbled gz":  # a few bytes flipped in the deflate stream
            data = data[:12] + bytes(b ^ 0x55 for b in data[12:20]) + data[20:]
        path.write_bytes(data)
        _read_all(CorpusSpec(path, on_bad_record=on_bad))  # type: ignore[arg-type]


@_FUZZ
@given(
    files=st.dictionaries(
        st.lists(st.text("abcXY._-", min_size=1, max_size=6), min_size=1, max_size=3).map("/".join),
        st.binary(max_size=40) | st.text(max_size=40).map(str.encode),
        max_size=5,
    )
)
def test_fuzz_a_folder_gives_samples_or_an_input_error(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "corpus"
        root.mkdir()
        for name, data in files.items():
            path = root / name
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            except OSError:  # a name that is both a file and a folder: not a corpus problem
                continue
        for sample in _read_all(CorpusSpec(root)):
            assert (root / sample.id).is_file()


_ARROW = {
    "string": (pa.string(), st.text(max_size=10)),
    "int": (pa.int64(), st.integers(-(2**40), 2**40)),
    "binary": (pa.binary(), st.binary(max_size=10)),
    "list": (pa.list_(pa.string()), st.lists(st.text(max_size=3), max_size=2)),
}


@_FUZZ
@given(
    columns=st.dictionaries(
        st.sampled_from(["content", "id", "path", "other"]),
        st.sampled_from(sorted(_ARROW)),
        max_size=3,
    ),
    draw=st.data(),
)
def test_fuzz_parquet_gives_samples_or_an_input_error(
    columns: dict[str, str], draw: st.DataObject
) -> None:
    rows = draw.draw(st.integers(0, 4))
    arrays = {}
    for name, kind in columns.items():
        arrow_type, values = _ARROW[kind]
        cells = draw.draw(st.lists(st.none() | values, min_size=rows, max_size=rows))
        arrays[name] = pa.array(cells, type=arrow_type)
    table = pa.table(arrays) if arrays else pa.table({"empty": pa.array([], pa.int64())})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.parquet"
        pq.write_table(table, path)
        _read_all(CorpusSpec(path, on_bad_record=draw.draw(st.sampled_from(["fail", "skip"]))))


def test_compressed_files_in_a_folder_are_read_and_bounded(tmp_path: Path) -> None:
    import gzip
    import lzma

    import zstandard

    from audit.corpus import MAX_FILE_BYTES, CorpusSpec, ReadStats, iter_samples

    text = b"print('hello')\n"
    (tmp_path / "a.py.gz").write_bytes(gzip.compress(text))
    (tmp_path / "b.py.xz").write_bytes(lzma.compress(text))
    (tmp_path / "c.py.zst").write_bytes(zstandard.ZstdCompressor().compress(text))
    (tmp_path / "bomb.txt.gz").write_bytes(gzip.compress(b"a" * (MAX_FILE_BYTES + 1)))
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    stats = ReadStats()
    samples = list(iter_samples(CorpusSpec(tmp_path), stats))
    assert [(s.id, s.language, s.text) for s in samples] == [
        (name, "python", text.decode()) for name in ("a.py.gz", "b.py.xz", "c.py.zst")
    ]
    assert stats.skipped["compressed: corrupt or over the size limit"] == 2
