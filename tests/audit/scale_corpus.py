"""Generated corpora for the datatrove engine's tests: many small files in every layout.

Files in a dozen languages and formats, most clean, some with one to three fresh fake
secrets (new values from a seeded RNG, never real), some with decoys the filters drop
(placeholders, documented examples) or a `pragma: allowlist secret`. Folders whose
names sort differently as strings and as path components (``a/``, ``a-b/``, ``a.b/``),
a hidden folder, and files the reader skips (binary, not UTF-8, a broken archive) or
decompresses (``.gz``). The same documents also as records: JSONL, a folder of JSONL
shards, Parquet, a folder of Parquet shards, and a saved HF dataset.
"""

from __future__ import annotations

import gzip
import json
import random
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

ALNUM = string.ascii_letters + string.digits
UPPER = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
FOLDERS = ("a", "a-b", "a.b", "a/b", "a_b", "src/app", "src/app-x", "lib", "ops", "docs")


def _secrets(rng: random.Random) -> list[Callable[[], str]]:
    def r(alphabet: str, n: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    return [
        lambda: "AKIA" + r(UPPER, 16),
        lambda: "ghp_" + r(ALNUM, 36),
        lambda: "glpat-" + r(ALNUM, 20),
        lambda: "sk_live_" + r(ALNUM, 34),
        lambda: "hf_" + r(string.ascii_letters, 34),
        lambda: "npm_" + r(ALNUM, 36),
        lambda: "AIza" + r(ALNUM + "_-", 35),
        lambda: f"xoxb-{r(string.digits, 12)}-{r(string.digits, 13)}-{r(ALNUM, 24)}",
        lambda: "shpat_" + r(HEX, 32),
    ]


TEMPLATES: dict[str, str] = {
    ".py": 'import os\n\n{pad}\nAPI_TOKEN = "{secret}"\n\ndef run():\n    return os.getpid()\n',
    ".js": 'const client = require("x");\n// {pad}\nconst token = "{secret}";\n',
    ".go": 'package main\n\n// {pad}\nconst apiKey = "{secret}"\n',
    ".yaml": "service:\n  name: {pad}\n  token: {secret}\n",
    ".json": '{{"name": "{pad}", "api_key": "{secret}"}}\n',
    ".env": "# {pad}\nSERVICE_TOKEN={secret}\n",
    ".md": "# Notes\n\n{pad}\n\nThe deploy key is `{secret}`.\n",
    ".txt": "{pad}\ntoken={secret}\n",
    ".sh": '#!/bin/sh\n# {pad}\nexport GH_TOKEN="{secret}"\n',
}
DECOYS = ("your-api-key-here", "AKIAIOSFODNN7EXAMPLE", "${API_TOKEN}", "changeme")
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "kappa", "mu")


def documents(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """`n` (relative path, text) pairs; about a third hold secrets."""
    rng = random.Random(seed)
    makers = _secrets(rng)
    docs: list[tuple[str, str]] = []
    for i in range(n):
        suffix = rng.choice(list(TEMPLATES))
        name = ".env" if suffix == ".env" else f"m{i:05d}{suffix}"
        path = f"{FOLDERS[i % len(FOLDERS)]}/{i % 7}/{name}"
        docs.append((path, _text(rng, makers, TEMPLATES[suffix])))
    return docs


def _text(rng: random.Random, makers: list[Callable[[], str]], template: str) -> str:
    pad = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))
    roll = rng.random()
    if roll < 0.55:
        return template.format(pad=pad, secret=f"{rng.choice(WORDS)}_{rng.randint(0, 99)}")
    if roll < 0.65:
        return template.format(pad=pad, secret=rng.choice(DECOYS))
    text = template.format(pad=pad, secret=rng.choice(makers)())
    for _ in range(rng.randint(0, 2)):
        text += f"\n# backup: {rng.choice(makers)()}\n"
    if roll > 0.97:
        text += f"OTHER = '{rng.choice(makers)()}'  # pragma: allowlist secret\n"
    return text


def write_folder(root: Path, n: int, seed: int = 0) -> Path:
    """A folder corpus of `n` files plus the ones a reader skips or decompresses."""
    for rel, text in documents(n, seed):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    extra: dict[str, str | bytes] = {
        ".git/config": "[remote]\ntoken = ghp_" + "x1Y2" * 9 + "\n",
        "bin/blob.dat": b"\x00\x01\x02" * 100,
        "bin/latin1.txt": "caf\xe9 token".encode("latin-1"),
        "z/broken.py.gz": b"\x1f\x8b\x08 not gzip",
        "z/empty.py": b"",
    }
    for rel, content in extra.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        data = content if isinstance(content, bytes) else content.encode()
        (root / rel).write_bytes(data)
    (root / "links").mkdir()
    (root / "links" / "to-config").symlink_to(root / ".git" / "config")  # skipped by the walk
    with gzip.open(root / "z/packed.py.gz", "wt", encoding="utf-8") as handle:
        handle.write(documents(1, seed + 1)[0][1] + '\nKEY = "AKIA' + "Q7" * 8 + '"\n')
    return root


def records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """The documents as records: some with an id and a path, some without either."""
    rows: list[dict[str, Any]] = []
    for i, (path, text) in enumerate(documents(n, seed)):
        row: dict[str, Any] = {"content": text}
        if i % 3:
            row["id"] = f"doc-{i}"
        if i % 4:
            row["path"] = path
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row) for row in rows]
    lines.insert(len(lines) // 2, "")  # a blank line: skipped, line numbers still count it
    data = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data.encode()))
    else:
        path.write_text(data, encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    full = [{"content": r["content"], "id": r.get("id"), "path": r.get("path")} for r in rows]
    pq.write_table(pa.Table.from_pylist(full), path, row_group_size=50)
    return path


def write_record_corpora(root: Path, n: int, seed: int = 0) -> dict[str, Path]:
    """Every record layout of the same `n` documents; name -> path."""
    rows = records(n, seed)
    quarter = max(1, n // 4)
    parts = [rows[i : i + quarter] for i in range(0, n, quarter)]
    shards = root / "jsonl-shards"
    for i, part in enumerate(parts):
        name = f"part-{i}.jsonl" + ("" if i else ".gz")
        write_jsonl(shards / ("b" if i % 2 else "a") / name, part)
    write_jsonl(shards / ".hidden/skipped.jsonl", parts[0])
    (shards / "README.md").write_text("not a record file\n")
    for i, part in enumerate(parts):
        write_parquet(root / "parquet-shards" / f"part-{i:02d}.parquet", part)
    return {
        "jsonl": write_jsonl(root / "train.jsonl", rows),
        "jsonl_gz": write_jsonl(root / "train.jsonl.gz", rows),
        "jsonl_folder": shards,
        "parquet": write_parquet(root / "train.parquet", rows),
        "parquet_folder": root / "parquet-shards",
    }


def write_saved_dataset(path: Path, n: int, seed: int = 0) -> Path:
    import datasets

    rows = records(n, seed)
    full = [{"content": r["content"], "id": r.get("id"), "path": r.get("path")} for r in rows]
    datasets.Dataset.from_list(full).save_to_disk(str(path))
    return path
