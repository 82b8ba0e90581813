"""The bad-input suite's harness: hostile inputs through the real CLI.

Each case builds its inputs in its own folder (from the tiny demo build: model, corpus,
findings) and runs one command. The harness asserts, for every case:

- the exit code (2 for what the user can fix; 3 for a model that is not the model it
  claims to be, as the README's exit codes say);
- stderr is exactly one line, ``Error: ...``, holding the case's fragments (and for
  exit 2, not an internal error);
- none of the case's `absent` strings (secrets, control characters) appears in stdout,
  stderr or any file the command wrote;
- no input changed: every file of the demo build and every file the case created before
  the command keeps its bytes, and no file appears in the demo build.

Cases live in `test_bad_inputs*.py`, one file per class; `ALL_CASES` gathers them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from audit.findings import Finding, read_findings
from audit.measurements import Measurement, write_measurements
from gate.cli import cli
from gate.demo.build import DemoBuild


@dataclass(frozen=True)
class Env:
    """What a case may use: its own folder, the demo build, and monkeypatch."""

    tmp: Path
    demo: DemoBuild
    monkeypatch: pytest.MonkeyPatch
    models: Path | None = None  # the hostile model folders (see test_bad_inputs_model.py)
    cleanups: list[Callable[[], object]] = field(default_factory=list)  # run after the case

    def model(self, name: str) -> Path:
        """One of the hostile model folders."""
        assert self.models is not None
        return self.models / name

    def file(self, name: str, data: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
        return path

    def model_copy(self, drop: str | None = None) -> Path:
        folder = self.tmp / "model"
        shutil.copytree(self.demo.model_dir, folder)
        if drop is not None:
            for path in folder.glob(drop):
                path.unlink()
        return folder

    def corpus_copy(self, name: str = "corpus") -> Path:
        folder = self.tmp / name
        shutil.copytree(self.demo.corpus_dir, folder)
        return folder

    def scan(self, data: Path, *extra: str) -> list[str]:
        return ["scan", str(data), "--out", str(self.tmp / "findings.jsonl"), "--jobs", "1", *extra]

    def measure(
        self,
        model: Path,
        data: Path | None = None,
        findings: Path | None = None,
        out: Path | None = None,
    ) -> list[str]:
        return [
            "measure", "--model", str(model),
            "--data", str(data or self.demo.corpus_dir),
            "--findings", str(findings or self.demo.planted),
            "--out", str(out or self.tmp / "measurements.jsonl"),
        ]  # fmt: skip

    def erase(self, model: Path | None = None, out: Path | None = None, *extra: str) -> list[str]:
        """`erase` of the planted findings, all measured as memorized."""
        measurements = self.tmp / "m.jsonl"
        if not measurements.exists():
            write_measurements(
                measurements, [_memorized(f) for f in read_findings(self.demo.planted)]
            )
        return [
            "erase", "--model", str(model or self.demo.model_dir),
            "--data", str(self.demo.corpus_dir), "--findings", str(self.demo.planted),
            "--measurements", str(measurements), "--out", str(out or self.tmp / "erased"), *extra,
        ]  # fmt: skip

    def gate(
        self,
        policy: str | None = None,
        out: Path | None = None,
        *extra: str,
        model: Path | None = None,
        heldout: bool = True,
    ) -> list[str]:
        args = [  # -q: a run stopped mid-way prints no progress before its error line
            "-q", "gate", "--model", str(model or self.demo.model_dir),
            "--data", str(self.demo.corpus_dir), "--jobs", "1",
        ]  # fmt: skip
        if heldout:
            args += ["--heldout", str(self.demo.heldout_dir)]
        if policy is not None:
            args += ["--policy", str(self.file("policy.yaml", policy))]
        return [*args, "--out", str(out or self.tmp / "run"), *extra]


def _memorized(finding: Finding) -> Measurement:
    return Measurement(
        finding_id=finding.id, sample_id=finding.sample_id, secret_type=finding.secret_type,
        ma=1.0, el_3=1.0, el_5=1.0, el_10=1.0, extracted_greedy=True, extracted_sampled=None,
        samples=0, longest_leaked_prefix=finding.length, secret_tokens=8, prefix_tokens=96,
        truncated=False, memorized=True,
    )  # fmt: skip


Build = Callable[[Env], list[str]]


@dataclass(frozen=True)
class Case:
    name: str
    build: Build
    fragments: tuple[str, ...]  # all must appear in the error line
    exit_code: int = 2
    absent: tuple[str, ...] = ()  # none may appear in any output (secrets, escapes)
    kept: tuple[str, ...] = ()  # files (relative to the case folder) that must survive


@dataclass
class Snapshot:
    """Every file's bytes (as a hash) under some folders, to prove nothing changed."""

    files: dict[Path, str] = field(default_factory=dict)

    @classmethod
    def of(cls, *folders: Path) -> Snapshot:
        snapshot = cls()
        for folder in folders:
            for root, _dirs, names in os.walk(folder):
                for name in names:
                    path = Path(root) / name
                    if path.is_file() and not path.is_symlink():
                        snapshot.files[path] = _digest(path)
        return snapshot

    def changed(self) -> list[str]:
        """The files that are gone or hold other bytes now."""
        return sorted(str(p) for p, d in self.files.items() if not p.is_file() or _digest(p) != d)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_case(case: Case, env: Env) -> Result:
    """Build the case, run it, and assert the suite's promises; return the result."""
    try:
        return _run_case(case, env)
    finally:
        for cleanup in env.cleanups:
            cleanup()


def _run_case(case: Case, env: Env) -> Result:
    args = case.build(env)
    inputs = Snapshot.of(env.tmp)
    demo = Snapshot.of(env.demo.root)
    result = CliRunner().invoke(cli, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == case.exit_code, result.output
    assert isinstance(result.exception, SystemExit)  # no exception escaped the CLI
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines
    if case.exit_code == 2:
        assert "internal error" not in lines[0]
    for fragment in case.fragments:
        assert fragment in lines[0]
    written = [p.read_bytes().decode(errors="replace") for p in _new_files(env.tmp, inputs)]
    for text in (result.output, *written):
        assert not any(a in text for a in case.absent)  # a bare flag: never show a secret
    assert inputs.changed() == []
    assert demo.changed() == []
    assert set(Snapshot.of(env.demo.root).files) == set(demo.files)
    for name in case.kept:
        assert (env.tmp / name).exists(), name
    return result


def _new_files(folder: Path, before: Snapshot) -> list[Path]:
    after = Snapshot.of(folder)
    return [p for p in after.files if p not in before.files]


def unwritable_folder(tmp: Path) -> Path:
    """A folder this process cannot create anything in (root ignores permissions, so
    as root a folder in sysfs, where nobody may create one)."""
    if os.geteuid() == 0:
        return Path("/sys/codeeraser-test")
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked / "sub"
