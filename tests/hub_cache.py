"""A Hugging Face Hub cache written by hand, in the layout huggingface_hub writes.

``<cache>/models--ORG--NAME/`` (``datasets--`` for a dataset) holds ``blobs/`` (each file
once, named by its hash), ``snapshots/<commit>/`` (the repository's files at that
commit, as relative links to the blobs) and ``refs/<branch or tag>`` (a file holding the
commit hash). huggingface_hub resolves ids from it with ``HF_HUB_OFFLINE=1``, so tests
run the Hub code paths with no network.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest


def commit_of(text: str) -> str:
    """A 40-hex commit hash made from a label (as stable as the label)."""
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def populate(
    cache: Path,
    repo_id: str,
    files: Mapping[str, bytes | Path],
    *,
    commit: str,
    refs: Iterable[str] = ("main",),
    repo_type: str = "model",
) -> Path:
    """Put `files` (a path in the repository → bytes, or a file to copy) into the cache
    as the snapshot of `commit`, with each ref pointing at it; return the snapshot."""
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / commit
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def model_files(folder: Path) -> dict[str, bytes | Path]:
    """A saved model folder's files, for `populate`."""
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}


def offline_cache(monkeypatch: pytest.MonkeyPatch, cache: Path) -> Path:
    """Point the Hub cache at `cache` and switch the Hub off, for this test."""
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache.parent / "datasets-cache"))
    return cache
