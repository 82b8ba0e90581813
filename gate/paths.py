"""Path options, checked before any work: inputs exist, outputs never touch an input.

Every command that reads or writes files calls `check_paths` first, with each path and
the option that gave it. Inputs must exist and be of the right kind (a file, a folder,
or training data: either); a problem is an `InputError` (exit 2) that names the option.
An output must not be an input, sit inside an input folder, or contain an input: so
``scan DATA.jsonl --out DATA.jsonl`` cannot replace the training data, ``measure --out
MODEL/config.json`` cannot overwrite the model, and no run folder can hold the data it
audits. Paths are compared after resolving links, and an existing output that is the
same file as an input (a hard link) counts as that input.

Relative paths on the command line are relative to the working directory; relative
paths in a policy file are resolved against the policy's folder by the policy loader
(`gate.policy`) before they get here.

`run_lock` keeps two gate runs out of one run folder: the first holds an exclusive
lock on a file in it for as long as it runs; the second is refused (exit 2).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from audit.errors import InputError
from audit.hub import HubRevision, cache_folder
from audit.redact import safe_text

Kind = Literal["file", "folder", "data", "any"]
LOCK = ".codeeraser-lock"

_KIND_NAMES = {"file": "a file", "folder": "a folder", "data": "a file or folder"}


@dataclass(frozen=True)
class PathOption:
    """One path a command was given, and what it must be."""

    option: str  # as the user wrote it: "--data", "DATA", "utility.heldout (policy.yaml)"
    path: Path
    kind: Kind = "any"
    what: str = "file or folder"  # for "no such ...": "model folder", "policy file"

    def describe(self) -> str:
        return f"{self.option} {safe_text(self.path)}"


def path_option(
    name: str, path: Path | str | None, kind: Kind = "any", what: str = ""
) -> list[PathOption]:
    """`[PathOption]` for a given path, `[]` for an option left out (to splice into lists)."""
    if path is None or str(path) == "":
        return []
    noun = what or {"file": "file", "folder": "folder"}.get(kind, "file or folder")
    return [PathOption(name, Path(path), kind, noun)]


def model_paths(option: str, path: Path, hub: HubRevision | None = None) -> list[PathOption]:
    """A model's paths to check: its folder (or GGUF file); for a Hub model also the
    repository's Hub cache folder, so that no output lands among its blobs."""
    gguf = path.suffix.lower() == ".gguf"
    checked = path_option(
        option, path, "file" if gguf else "folder", "GGUF file" if gguf else "model folder"
    )
    if hub is not None:
        checked += path_option(f"{option} (its Hub cache)", cache_folder(hub), "folder")
    return checked


def data_paths(
    option: str, path: Path | str | None, hub: HubRevision | None = None, kind: Kind = "data"
) -> list[PathOption]:
    """The training data's path to check; for a Hub dataset (streamed: there may be
    nothing local) its Hub cache folder when there is one."""
    if hub is None:
        return path_option(option, path, kind)
    folder = cache_folder(hub)
    return path_option(f"{option} (its Hub cache)", folder, "folder") if folder.is_dir() else []


def check_paths(inputs: Sequence[PathOption], outputs: Sequence[PathOption] = ()) -> None:
    """Refuse a missing or unusable input, or an output that collides with an input."""
    for given in inputs:
        check_input(given)
    for out in outputs:
        check_output(out, inputs)


def check_input(given: PathOption) -> None:
    """`given` exists, is readable, and is of its kind."""
    try:
        info = os.stat(given.path)
    except OSError as exc:
        raise InputError(f"{given.describe()}: {_stat_problem(exc, given.what)}") from None
    mode = info.st_mode
    if given.kind in ("file", "data") and stat.S_ISFIFO(mode):
        raise InputError(f"{given.describe()}: is a FIFO, not {_KIND_NAMES[given.kind]}")
    if not _fits(mode, given.kind):
        found = "a folder" if stat.S_ISDIR(mode) else "not a regular file or folder"
        if stat.S_ISREG(mode):
            found = "a file"
        raise InputError(f"{given.describe()}: is {found}, not {_KIND_NAMES[given.kind]}")
    needed = os.R_OK | (os.X_OK if stat.S_ISDIR(mode) else 0)
    if not os.access(given.path, needed):
        raise InputError(f"{given.describe()}: cannot be read (permission denied)")


def _fits(mode: int, kind: Kind) -> bool:
    if kind == "file":
        return stat.S_ISREG(mode)
    if kind == "folder":
        return stat.S_ISDIR(mode)
    if kind == "data":
        return stat.S_ISREG(mode) or stat.S_ISDIR(mode)
    return True


def _stat_problem(exc: OSError, what: str) -> str:
    if exc.errno == errno.ENAMETOOLONG:
        return "the path is too long for this system (a name over 255 bytes, or a path over 4096)"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is not a folder"
    if exc.errno == errno.ELOOP:
        return "a loop of symbolic links"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "cannot be read (permission denied)"
    if exc.errno == errno.ENOENT:
        return f"no such {what}"
    return f"cannot be read ({exc.strerror or type(exc).__name__})"


def check_output(out: PathOption, inputs: Iterable[PathOption]) -> None:
    """`out` may be written: of its kind if it exists, and clear of every input."""
    if safe_text(out.path) != str(out.path):
        raise InputError(
            f"{out.describe()}: the path holds what looks like a secret, or a control "
            "character; outputs are named without them (choose another path)"
        )
    target = _resolved(out)
    mode = _mode(out)
    if mode is not None and not _fits(mode, out.kind):
        kind = _KIND_NAMES.get(out.kind, "a file or folder")
        raise InputError(f"{out.describe()}: exists and is not {kind} (choose another path)")
    for given in inputs:
        source = _resolved(given)
        if target == source or _same_file(out.path, given.path):
            raise InputError(
                f"{out.describe()}: is {given.describe()} itself; an output never replaces "
                "an input (choose another path)"
            )
        if target.is_relative_to(source):
            raise InputError(
                f"{out.describe()}: is inside {given.describe()}; outputs go outside the "
                "inputs (choose another path)"
            )
        if source.is_relative_to(target):
            raise InputError(
                f"{out.describe()}: contains {given.describe()}; an output folder holds no "
                "input (choose another path)"
            )


def _mode(given: PathOption) -> int | None:
    """The mode of an existing path; None when there is nothing there yet."""
    try:
        return os.stat(given.path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise InputError(f"{given.describe()}: a part of the path is not a folder") from None
        raise InputError(f"{given.describe()}: {_stat_problem(exc, given.what)}") from None


def _resolved(given: PathOption) -> Path:
    try:
        return given.path.resolve()
    except (OSError, RuntimeError) as exc:  # a link loop, a path too long
        reason = _stat_problem(exc, given.what) if isinstance(exc, OSError) else "a link loop"
        raise InputError(f"{given.describe()}: {reason}") from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextmanager
def run_lock(folder: Path, option_name: str = "--out") -> Iterator[None]:
    """Hold an exclusive lock on `folder` (which must exist) while the block runs; refuse
    (InputError) when another process holds it."""
    path = folder / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise InputError(
            f"{option_name} {safe_text(folder)}: cannot write the run folder ({exc.strerror})"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise InputError(
            f"{option_name} {safe_text(folder)}: another run is using this folder; wait for it "
            "to finish, or choose another folder"
        ) from None
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
