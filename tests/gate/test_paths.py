from __future__ import annotations

import os
from pathlib import Path

import pytest

from audit.errors import InputError
from gate.paths import LOCK, PathOption, check_paths, path_option, run_lock


def _dirs(tmp: Path) -> tuple[Path, Path]:
    data, model = tmp / "data", tmp / "model"
    data.mkdir()
    model.mkdir()
    (data / "a.py").write_text("x = 1\n")
    return data, model


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("data", "is --data"),
        ("data/findings.jsonl", "is inside --data"),
        ("data/sub/deeper/f.jsonl", "is inside --data"),
        (".", "contains --data"),
        ("model/../data/x", "is inside --data"),
    ],
)
def test_an_output_never_touches_an_input(tmp_path: Path, out: str, message: str) -> None:
    data, model = _dirs(tmp_path)
    inputs = [PathOption("--data", data, "data"), PathOption("--model", model, "folder")]
    with pytest.raises(InputError, match=message):
        check_paths(inputs, path_option("--out", tmp_path / out))


def test_an_output_beside_the_inputs_is_fine(tmp_path: Path) -> None:
    data, model = _dirs(tmp_path)
    inputs = [PathOption("--data", data, "data"), PathOption("--model", model, "folder")]
    check_paths(inputs, path_option("--out", tmp_path / "run", "folder"))
    check_paths(inputs, path_option("--out", tmp_path / "datax" / "f.jsonl", "file"))


def test_links_are_followed_before_comparing(tmp_path: Path) -> None:
    data, _ = _dirs(tmp_path)
    (tmp_path / "alias").symlink_to(data)
    with pytest.raises(InputError, match="is inside --data"):
        check_paths(
            [PathOption("--data", data, "data")], path_option("--out", tmp_path / "alias" / "f")
        )


def test_relative_paths_are_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _dirs(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="is inside DATA data"):
        check_paths(path_option("DATA", Path("data"), "data"), path_option("--out", Path("data/f")))


def test_a_second_holder_of_the_lock_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    refused = pytest.raises(InputError, match="another run is using this folder")
    with run_lock(tmp_path), refused, run_lock(tmp_path):
        pass  # pragma: no cover - never entered
    with run_lock(tmp_path):  # released: free again
        assert (tmp_path / LOCK).exists()


def test_a_lock_held_by_another_process_is_seen(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import fcntl, sys, time\n"
        f"f = open({str(tmp_path / LOCK)!r}, 'w'); fcntl.flock(f, fcntl.LOCK_EX)\n"
        "print('held', flush=True); sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match="another run"), run_lock(tmp_path):
            pass  # pragma: no cover
    finally:
        holder.communicate("")
    with run_lock(tmp_path):
        pass


def test_inputs_must_be_of_their_kind(tmp_path: Path) -> None:
    data, model = _dirs(tmp_path)
    os.mkfifo(tmp_path / "pipe")
    cases = [
        (PathOption("--model", data / "a.py", "folder"), "is a file, not a folder"),
        (PathOption("--findings", model, "file"), "is a folder, not a file"),
        (PathOption("DATA", tmp_path / "pipe", "data"), "is a FIFO"),
        (PathOption("--x", tmp_path / "none", "file", "findings file"), "no such findings file"),
        (PathOption("--x", data / "a.py" / "b", "file"), "not a folder"),
    ]
    for given, message in cases:
        with pytest.raises(InputError, match=message):
            check_paths([given])
