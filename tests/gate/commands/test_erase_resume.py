"""`codeeraser erase` stopped mid-run (SIGKILL, a full disk) and resumed with --resume
writes the model an uninterrupted run writes, bit for bit. (SIGTERM, which stops at a
safe point and saves first: the gate's resume test in tests/gate/test_pipeline.py
stops a real gate process in its erase stage.)"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from audit.measurements import write_measurements
from gate.cli import cli
from gate.demo.build import DemoBuild
from gate.unlearn.checkpoint import work_dir
from gate.unlearn.erase import weights_sha256
from gate.unlearn.remediation import Remediation
from tests.gate.commands.test_erase import _measure
from tests.gate.demo.test_build import secret_values

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = ["--lr", "1e-3", "--epochs", "30"]  # the tiny model forgets in about 5 epochs


@pytest.fixture(scope="module")
def work(tiny_demo: DemoBuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    write_measurements(root / "before.jsonl", _measure(tiny_demo.model_dir, tiny_demo))
    return root


def _args(demo: DemoBuild, work: Path, out: Path, *extra: str) -> list[str]:
    return [
        "erase",
        "--model", str(demo.model_dir),
        "--data", str(demo.corpus_dir),
        "--findings", str(demo.planted),
        "--measurements", str(work / "before.jsonl"),
        "--out", str(out),
        *SETTINGS,
        *extra,
    ]  # fmt: skip


def _outcome(out: Path) -> dict[str, Any]:
    """What must not depend on interruptions: the weights and everything measured."""
    record = Remediation.read(out)
    return {
        "weights": weights_sha256(out),
        "recorded": record.output_sha256,
        "epochs": record.epochs,
        "stop_reason": record.stop_reason,
        "best_epoch": record.best_epoch,
        "steps": record.steps,
        "outcomes": record.outcomes,
        "history": [replace(h, seconds=0) for h in record.history],
    }


@pytest.fixture(scope="module")
def reference(tiny_demo: DemoBuild, work: Path) -> dict[str, Any]:
    """One uninterrupted run."""
    out = work / "uninterrupted"
    result = CliRunner().invoke(cli, _args(tiny_demo, work, out))
    assert result.exit_code == 0, result.output
    outcome = _outcome(out)
    assert outcome["stop_reason"] == "every finding forgotten"
    assert outcome["epochs"] >= 4
    return outcome


def _epochs_saved(folder: Path) -> int:
    try:
        return int(json.loads((folder / "checkpoint" / "state.json").read_text())["epochs_done"])
    except (OSError, ValueError, KeyError):
        return -1


def _stop_after(args: list[str], folder: Path, epochs: int, sig: int) -> int:
    """Start a real erase process; send `sig` once `epochs` epochs are checkpointed;
    return its exit status."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gate", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while _epochs_saved(folder) < epochs and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be stopped"
    process.send_signal(sig)
    process.communicate(timeout=300)
    return process.returncode


def _full_disk_at_the_next_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing the next checkpoint's weights fails as on a full disk."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("checkpoint.new/model.pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_killed_then_out_of_disk_then_resumed_gives_the_uninterrupted_result(
    tiny_demo: DemoBuild, work: Path, reference: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run, stopped twice, each time resumed from its checkpoint: a real process
    killed with SIGKILL (no warning: the last epoch's checkpoint is what is left), then a
    full disk while saving (the checkpoint before stays intact). The model it ends with
    is the uninterrupted run's, bit for bit."""
    out, folder = work / "stopped", work_dir(work / "stopped")
    args, before = _args(tiny_demo, work, out), weights_sha256(tiny_demo.model_dir)

    status = _stop_after(args, folder, 2, signal.SIGKILL)
    assert status == -signal.SIGKILL
    assert not out.exists()  # never a half-finished result
    killed_at = _epochs_saved(folder)
    assert killed_at >= 2
    state = (folder / "checkpoint" / "state.json").read_text()
    assert not any(value in state for value in secret_values(tiny_demo))  # ids and figures

    changed = CliRunner().invoke(cli, [*args, "--resume", "--lr", "2e-3"])
    assert changed.exit_code == 2
    assert "other settings (lr 0.001 → 0.002)" in changed.output

    _full_disk_at_the_next_checkpoint(monkeypatch)
    full = CliRunner().invoke(cli, [*args, "--resume"])
    monkeypatch.undo()
    line = full.stderr.strip().splitlines()[-1]
    assert full.exit_code == 2, full.output
    assert line.startswith(f"Error: {folder}/checkpoint.new/model.pt: disk full"), line
    assert f"the checkpoint of epoch {killed_at} is intact" in line
    assert sorted(p.name for p in folder.iterdir()) == [
        ".codeeraser-erase",
        "checkpoint",
    ]  # nothing half-written
    assert _epochs_saved(folder) == killed_at

    resumed = CliRunner().invoke(cli, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert _outcome(out) == reference
    assert not folder.exists()  # the working folder goes once the result is in place
    assert weights_sha256(tiny_demo.model_dir) == before
