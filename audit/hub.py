"""Models and datasets on the Hugging Face Hub, pinned to the commit that was audited.

A model given as ``ORG/NAME`` or ``ORG/NAME@REVISION`` is fetched with
``huggingface_hub.snapshot_download`` into the Hub cache, and only its safetensors
weights, config, tokenizer files and model card: never pickled weights (``.bin``,
``.pt``), never code (``trust_remote_code`` stays off when it is loaded), nothing in a
subfolder. A dataset given as ``hf://datasets/ORG/NAME[@REVISION]`` (or ``ORG/NAME``)
is read in streaming mode by `audit.corpus`, one record at a time, at the commit
resolved here. Either way the commit hash is what the record, the report and the
remediated model's provenance name.

A path that exists always wins over a Hub id of the same spelling. ``HF_HUB_OFFLINE=1``
(read when a command runs, as ``HF_HUB_CACHE`` and ``HF_HOME`` are) resolves ids from
the local Hub cache alone; a revision that is not there is an `InputError` (exit 2).
A token for a private or gated repository comes from ``HF_TOKEN`` (huggingface_hub
reads it); it is never an argument and never printed.

``huggingface_hub`` and ``datasets`` are imported only when an id is resolved or read
(the Hub reader is one input format: see the import rule in docs/style.md).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from audit.errors import InputError

RepoType = Literal["model", "dataset"]

# The files of a model that are fetched: weights as safetensors only, the config, the
# tokenizer and the model card. Patterns as huggingface_hub matches them (fnmatch over
# the whole path, so `*` crosses `/`: IGNORED keeps subfolders out).
MODEL_FILES: tuple[str, ...] = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
    "README.md",
)
# Subfolders (`*/*`: any path with a `/`), and Mistral's second copy of the weights.
IGNORED: tuple[str, ...] = ("*/*", "consolidated*.safetensors")

HUB_DATASET_PREFIX = "hf://datasets/"
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_REPO_ID = re.compile(rf"^{_NAME}/{_NAME}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,254}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
DEFAULT_SPLIT = "train"


class HubRevision(BaseModel):
    """A Hub repository at the commit that was read (for a dataset: which part of it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repo_id: str  # ORG/NAME
    repo_type: RepoType
    revision: str  # as asked: a branch, tag or commit ("main" when none was given)
    commit: str  # the commit hash it resolved to
    config: str | None = None  # a dataset's configuration (None: its only or default one)
    split: str | None = None  # a dataset's split

    @property
    def pinned(self) -> str:
        """``ORG/NAME@COMMIT``: the exact revision, as the Hub's ids spell it."""
        return f"{self.repo_id}@{self.commit}"

    @property
    def part(self) -> str:
        """Where a record is, as the Hub's dataset viewer names it: ``ORG/NAME[/CONFIG]/SPLIT``."""
        config = f"/{self.config}" if self.config else ""
        return f"{self.repo_id}{config}/{self.split or DEFAULT_SPLIT}"

    @property
    def url(self) -> str:
        """The repository's page at the commit."""
        kind = "datasets/" if self.repo_type == "dataset" else ""
        return f"https://huggingface.co/{kind}{self.repo_id}/tree/{self.commit}"


@dataclass(frozen=True)
class Source:
    """A model or dataset as given on the command line, and where it is read from."""

    given: str
    path: Path  # the local path: a folder, a file, or a Hub model's snapshot folder
    hub: HubRevision | None = None  # set when `given` was a Hub id

    @property
    def is_gguf(self) -> bool:
        return self.path.suffix.lower() == ".gguf"


def is_model_file(name: str) -> bool:
    """A file of a Hub model that is fetched (`MODEL_FILES`, not `IGNORED`): a snapshot in
    the cache may hold more (fetched by another tool), which is never read or copied."""
    return any(fnmatch(name, p) for p in MODEL_FILES) and not any(fnmatch(name, p) for p in IGNORED)


# ---------------------------------------------------------------- ids


def parse_id(text: str) -> tuple[str, str | None] | None:
    """``(ORG/NAME, REVISION or None)`` for a Hub id ``ORG/NAME[@REVISION]``, else None."""
    repo_id, at, revision = text.partition("@")
    if not _REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id:
        return None
    if at and not _REVISION.match(revision):
        return None
    return repo_id, (revision or None)


def parse_dataset_id(text: str) -> tuple[str, str | None] | None:
    """A dataset id: ``hf://datasets/ORG/NAME[@REVISION]`` or ``ORG/NAME[@REVISION]``."""
    return parse_id(text.removeprefix(HUB_DATASET_PREFIX))


def is_hub_url(text: str) -> bool:
    return text.startswith(HUB_DATASET_PREFIX)


# ---------------------------------------------------------------- environment


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now, not when a library was imported."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in ("1", "on", "yes", "true")


def hub_cache() -> Path:
    """The Hub cache folder as the environment says now (HF_HUB_CACHE, else HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def snapshot_repo_folder(path: Path) -> Path | None:
    """The cache folder of the repository whose snapshot `path` is
    (``<cache>/models--ORG--NAME`` for ``.../snapshots/<commit>``), else None."""
    resolved = path.resolve()
    if resolved.parent.name != "snapshots" or not _COMMIT.match(resolved.name):
        return None
    repo = resolved.parent.parent
    return repo if repo.name.startswith(("models--", "datasets--")) else None


# ---------------------------------------------------------------- models


def model_source(given: str) -> Source:
    """The model to load: a local folder or file as given, else a Hub id fetched (or found
    in the cache). Something that is neither stays a path, for the path checks to refuse."""
    path = Path(given)
    gguf = path.suffix.lower() == ".gguf"  # a file name, never a repository's
    parsed = None if gguf or _exists(path) else parse_id(given)
    if parsed is None:
        return Source(given, path)
    folder, hub = fetch_model(*parsed)
    return Source(given, folder, hub)


def _exists(path: Path) -> bool:
    try:
        return path.exists() or path.is_symlink()
    except OSError:  # a name too long for a path is not a path that exists
        return False


def fetch_model(repo_id: str, revision: str | None) -> tuple[Path, HubRevision]:
    """The snapshot folder of a Hub model at `revision` (its safetensors, config,
    tokenizer and card: `MODEL_FILES`), and the commit it is."""
    folder = _snapshot(repo_id, "model", revision, allow=MODEL_FILES)
    hub = HubRevision(
        repo_id=repo_id, repo_type="model", revision=revision or "main", commit=folder.name
    )
    return folder, hub


def _snapshot(
    repo_id: str, repo_type: RepoType, revision: str | None, allow: tuple[str, ...] | None
) -> Path:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id,
            repo_type=repo_type,
            revision=revision,
            cache_dir=hub_cache(),
            local_files_only=offline(),
            allow_patterns=list(allow) if allow is not None else None,
            ignore_patterns=list(IGNORED) if allow is not None else None,
        )
    except Exception as exc:  # huggingface_hub raises its own types, httpx's and OSError
        raise InputError(_hub_problem(repo_id, repo_type, revision, exc)) from None
    path = Path(folder)
    if not _COMMIT.match(path.name):  # never a local_dir copy: a snapshot at a commit
        raise InputError(f"{repo_id}: the Hub cache gave {path.name!r}, not a commit snapshot")
    return path


def _hub_problem(repo_id: str, repo_type: RepoType, revision: str | None, exc: Exception) -> str:
    """One line saying why a Hub id could not be resolved, and what to do."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = f"{repo_id}@{revision}" if revision else repo_id
    kind = "dataset" if repo_type == "dataset" else "model"
    if isinstance(exc, LocalEntryNotFoundError):
        where = "HF_HUB_OFFLINE is set" if offline() else "the Hub could not be reached"
        return (
            f"{what}: this revision of the Hub {kind} is not in the local Hub cache "
            f"({hub_cache()}) and {where}; fetch it once online, or give a revision "
            "that is cached, or a local path"
        )
    if isinstance(exc, GatedRepoError):
        return f"{what}: the Hub {kind} is gated; accept its terms and set HF_TOKEN"
    if isinstance(exc, RevisionNotFoundError):
        return f"{what}: the Hub {kind} has no revision {revision!r} (a branch, tag or commit)"
    if isinstance(exc, RepositoryNotFoundError):
        return (
            f"{what}: no such {kind} on the Hub, or it is private (set HF_TOKEN), "
            "and no such local path"
        )
    return f"{what}: the Hub {kind} could not be fetched ({type(exc).__name__})"


# ---------------------------------------------------------------- datasets


def dataset_source(given: str, config: str | None, split: str | None) -> Source:
    """The training data: a local path as given, else a Hub dataset id resolved to a
    commit (nothing downloaded: it is streamed when read)."""
    path = Path(given)
    url = is_hub_url(given)
    parsed = parse_dataset_id(given) if url or not _exists(path) else None
    if parsed is None:
        if url:
            raise InputError(
                f"{given}: not a Hub dataset id (give hf://datasets/ORG/NAME[@REVISION])"
            )
        if config is not None or split is not None:
            raise InputError(
                f"{given}: --data-config and --data-split are for a Hub dataset id; this is a "
                "local path"
            )
        return Source(given, path)
    repo_id, revision = parsed
    hub = HubRevision(
        repo_id=repo_id,
        repo_type="dataset",
        revision=revision or "main",
        commit=_dataset_commit(repo_id, revision),
        config=config,
        split=split or DEFAULT_SPLIT,
    )
    return Source(given, Path(hub.part), hub)


def _dataset_commit(repo_id: str, revision: str | None) -> str:
    """The commit a dataset revision is at: from the cache when offline, else the Hub."""
    if offline():
        return _snapshot(repo_id, "dataset", revision, allow=None).name
    from huggingface_hub import HfApi

    try:
        sha = HfApi().dataset_info(repo_id, revision=revision).sha
    except Exception as exc:  # as _snapshot: the Hub's own types, httpx's and OSError
        raise InputError(_hub_problem(repo_id, "dataset", revision, exc)) from None
    if not isinstance(sha, str) or not _COMMIT.match(sha):
        raise InputError(f"{repo_id}: the Hub did not say which commit this revision is")
    return sha


def stream_dataset(hub: HubRevision) -> Any:
    """The dataset's split as a `datasets.IterableDataset`, read one record at a time.

    Online it streams from the Hub at the commit; offline, from the commit's snapshot in
    the Hub cache (datasets itself does not stream a Hub id offline: it reads the
    snapshot folder as a local dataset, with the same configurations and splits)."""
    try:
        import datasets
    except ImportError:
        raise InputError(
            f"{hub.repo_id}: reading a Hub dataset needs the `datasets` package "
            "(pip install 'codeeraser[hf]')"
        ) from None
    if offline():
        source = str(_snapshot(hub.repo_id, "dataset", hub.commit, allow=None))
        revision = None
    else:
        source, revision = hub.repo_id, hub.commit
    try:
        return datasets.load_dataset(
            source, name=hub.config, split=hub.split, revision=revision, streaming=True
        )
    except Exception as exc:  # datasets raises many types for a bad name, split or file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{hub.part}@{hub.commit[:12]}: cannot be read ({first})") from None


def cache_folder(hub: HubRevision) -> Path:
    """The repository's folder in the Hub cache (``<cache>/models--ORG--NAME``)."""
    return hub_cache() / f"{hub.repo_type}s--{hub.repo_id.replace('/', '--')}"
