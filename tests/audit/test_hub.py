"""Hub ids (audit/hub.py), resolved offline from a Hub cache written in the test, and Hub
datasets streamed through audit/corpus.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub.utils._paths import filter_repo_objects  # what snapshot_download applies

from audit.corpus import CorpusSpec, iter_samples, load_texts
from audit.errors import InputError
from audit.hub import (
    IGNORED,
    MODEL_FILES,
    HubRevision,
    dataset_source,
    hub_cache,
    is_model_file,
    model_source,
    offline,
    parse_dataset_id,
    parse_id,
    snapshot_repo_folder,
    stream_dataset,
)
from tests.hub_cache import commit_of, offline_cache, populate

V1, V2 = commit_of("v1"), commit_of("v2")
MODEL = {"config.json": b'{"model_type": "gpt2"}', "model.safetensors": b"weights"}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return offline_cache(monkeypatch, tmp_path / "hub")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("acme/coder", ("acme/coder", None)),
        ("acme/coder@v1.2", ("acme/coder", "v1.2")),
        ("Acme-AI/coder_7b.v2@refs/pr/3", ("Acme-AI/coder_7b.v2", "refs/pr/3")),
        (f"acme/coder@{V1}", ("acme/coder", V1)),
        ("coder", None),  # a bare name: a path, never an id
        ("acme/coder/extra", None),
        ("./acme/coder", None),
        ("/abs/path", None),
        ("acme/co..der", None),
        ("acme/co--der", None),
        ("acme/coder@", None),
        ("acme/coder@bad rev", None),
        ("acme/coder@-x", None),
        ("models/coder.gguf", ("models/coder.gguf", None)),  # --model takes it as a path
    ],
)
def test_hub_ids_are_org_slash_name_with_an_optional_revision(
    text: str, parsed: tuple[str, str | None] | None
) -> None:
    assert parse_id(text) == parsed


def test_dataset_ids_may_be_hf_urls() -> None:
    assert parse_dataset_id("hf://datasets/acme/data@v1") == ("acme/data", "v1")
    assert parse_dataset_id("acme/data") == ("acme/data", None)
    assert parse_dataset_id("hf://datasets/acme/data/sub/folder") is None


def test_only_weights_as_safetensors_config_tokenizer_and_card_are_fetched() -> None:
    repo = [
        "config.json", "generation_config.json", "model.safetensors",
        "model-00001-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json",
        "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
        "tokenizer.model", "README.md", "chat_template.jinja",
        "pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "weights.pth",
        "modeling_custom.py", "configuration_custom.py", "tokenization_custom.py",
        "flax_model.msgpack", "tf_model.h5", "model.gguf", "consolidated.safetensors",
        "onnx/model.onnx", "original/consolidated.00.pth", "fp8/model.safetensors",
        "subfolder/config.json", ".gitattributes", "LICENSE",
    ]  # fmt: skip
    fetched = set(
        filter_repo_objects(repo, allow_patterns=list(MODEL_FILES), ignore_patterns=list(IGNORED))
    )
    assert fetched == {name for name in repo if is_model_file(name)}  # as the Hub filters
    assert fetched == {
        "config.json", "generation_config.json", "model.safetensors",
        "model-00001-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json",
        "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
        "tokenizer.model", "README.md", "chat_template.jinja",
    }  # fmt: skip


def test_a_model_id_resolves_offline_to_its_snapshot_and_commit(cache: Path) -> None:
    snapshot = populate(cache, "acme/coder", MODEL, commit=V1, refs=("main", "v1"))
    populate(cache, "acme/coder", MODEL, commit=V2, refs=("v2",))
    for given, revision, commit in [
        ("acme/coder", "main", V1),
        ("acme/coder@v1", "v1", V1),
        ("acme/coder@v2", "v2", V2),
        (f"acme/coder@{V2}", V2, V2),
    ]:
        source = model_source(given)
        assert source.hub == HubRevision(
            repo_id="acme/coder", repo_type="model", revision=revision, commit=commit
        )
        assert source.path == snapshot.parent / commit
    assert snapshot_repo_folder(snapshot) == cache / "models--acme--coder"
    assert source.hub is not None
    assert source.hub.pinned == f"acme/coder@{V2}"
    assert source.hub.url == f"https://huggingface.co/acme/coder/tree/{V2}"


def test_a_revision_not_in_the_cache_is_one_clear_line(cache: Path) -> None:
    populate(cache, "acme/coder", MODEL, commit=V1)
    for given in ("acme/coder@v9", "acme/other", f"acme/coder@{V2}"):
        with pytest.raises(InputError) as caught:
            model_source(given)
        message = caught.value.message
        assert "\n" not in message
        assert message.startswith(f"{given}: this revision of the Hub model is not in the local")
        assert "HF_HUB_OFFLINE is set" in message


def test_a_local_path_wins_over_an_id_of_the_same_spelling(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(cache, "acme/coder", MODEL, commit=V1, refs=("main", "v1"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acme" / "coder").mkdir(parents=True)
    assert model_source("acme/coder").hub is None
    assert model_source("acme/coder").path == Path("acme/coder")
    assert model_source("acme/coder@v1").hub is not None  # no such folder: the Hub's
    assert model_source("nothing/here/at/all").hub is None  # left to the path checks
    assert model_source("models/missing.gguf").hub is None  # a GGUF file name: a path


def test_the_environment_is_read_when_a_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hub_cache() == tmp_path / "c"
    for value, expected in [("1", True), ("true", True), ("0", False), ("", False)]:
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        assert offline() is expected


# ---------------------------------------------------------------- datasets


def _jsonl(rows: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _parquet(rows: list[dict[str, str]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


KEY = "AKIA" + "Q3EGRTZXNB7JW2PM"  # an AWS key id shape (made up)
ROWS = [
    {"id": "a", "path": "src/app.py", "content": "print('hello')\n"},
    {"id": "b", "path": "src/cfg.py", "content": f"AWS_ACCESS_KEY_ID = '{KEY}'\n"},
    {"id": "c", "path": "README.md", "content": "# notes\n"},
]
CARD = b"""---
configs:
- config_name: python
  data_files:
  - split: train
    path: python/train-*.parquet
  - split: test
    path: python/test-*.parquet
- config_name: other
  data_files:
  - split: train
    path: other/*.parquet
---
"""


def test_a_dataset_id_resolves_offline_to_a_commit_and_streams_its_split(cache: Path) -> None:
    files = {"data/train-00000.jsonl": _jsonl(ROWS), "data/test-00000.jsonl": _jsonl(ROWS[:1])}
    populate(cache, "acme/code", files, commit=V1, refs=("main", "v1"), repo_type="dataset")
    source = dataset_source("hf://datasets/acme/code@v1", None, None)
    assert source.hub is not None
    assert (source.hub.commit, source.hub.split, source.hub.revision) == (V1, "train", "v1")
    assert isinstance(stream_dataset(source.hub), datasets.IterableDataset)  # never loaded whole
    spec = CorpusSpec(path=source.path, hub=source.hub)
    samples = list(iter_samples(spec))
    assert [(s.id, s.origin, s.language) for s in samples] == [
        ("a", "acme/code/train:0", "python"),  # the dataset, split and row
        ("b", "acme/code/train:1", "python"),
        ("c", "acme/code/train:2", "markdown"),
    ]
    assert load_texts(spec, {"b"}) == {"b": ROWS[1]["content"]}
    test = dataset_source("acme/code", None, "test")
    assert test.hub is not None
    assert [s.origin for s in iter_samples(CorpusSpec(test.path, hub=test.hub))] == [
        "acme/code/test:0"
    ]
    prepared = list((cache.parent / "datasets-cache").rglob("*.arrow"))
    assert prepared == []  # streamed: no copy of the dataset was prepared on disk


def test_a_dataset_configuration_is_chosen_with_data_config(cache: Path) -> None:
    files = {
        "README.md": CARD,
        "python/train-00000.parquet": _parquet(ROWS[:2]),
        "python/test-00000.parquet": _parquet(ROWS[2:]),
        "other/part-0.parquet": _parquet([{"content": "x = 1\n"}]),
    }
    populate(cache, "acme/multi", files, commit=V1, repo_type="dataset")
    python = dataset_source("acme/multi", "python", None)
    assert python.hub is not None
    assert python.hub.part == "acme/multi/python/train"
    spec = CorpusSpec(path=python.path, hub=python.hub)
    assert [s.origin for s in iter_samples(spec)] == [
        "acme/multi/python/train:0",
        "acme/multi/python/train:1",
    ]
    other = dataset_source("acme/multi", "other", None)
    assert other.hub is not None
    assert [s.id for s in iter_samples(CorpusSpec(other.path, hub=other.hub))] == [
        "acme/multi/other/train:0"  # no id field: the row names the sample
    ]
    no_config = dataset_source("acme/multi", None, None)
    assert no_config.hub is not None
    with pytest.raises(InputError, match=r"^acme/multi/train@[0-9a-f]{12}: cannot be read \("):
        list(iter_samples(CorpusSpec(no_config.path, hub=no_config.hub)))
    missing = dataset_source("acme/multi", "python", "validation")
    assert missing.hub is not None
    with pytest.raises(InputError, match="cannot be read"):
        list(iter_samples(CorpusSpec(missing.path, hub=missing.hub)))


def test_a_dataset_without_the_text_column_is_refused(cache: Path) -> None:
    files = {"data/train.parquet": _parquet([{"text": "x"}])}
    populate(cache, "acme/text", files, commit=V1, repo_type="dataset")
    source = dataset_source("acme/text", None, None)
    with pytest.raises(InputError, match=r"no column 'content' \(columns: text; set --text-field"):
        list(iter_samples(CorpusSpec(source.path, hub=source.hub)))
    spec = CorpusSpec(source.path, text_field="text", hub=source.hub)
    assert [s.text for s in iter_samples(spec)] == ["x"]


def test_dataset_ids_and_paths_are_told_apart(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(cache, "acme/code", {"d.jsonl": _jsonl(ROWS)}, commit=V1, repo_type="dataset")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "code").write_text("{}\n")
    assert dataset_source("acme/code", None, None).hub is None  # the local file wins
    assert dataset_source("hf://datasets/acme/code", None, None).hub is not None  # a URL never
    with pytest.raises(InputError, match="are for a Hub dataset id; this is a local path"):
        dataset_source("acme/code", None, "train")
    with pytest.raises(InputError, match="not a Hub dataset id"):
        dataset_source("hf://datasets/acme", None, None)
    with pytest.raises(InputError, match="not in the local Hub cache"):
        dataset_source("hf://datasets/acme/code@v7", None, None)
