from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from audit.sandbox import SandboxLimits, run_python


def test_a_clean_exit_passes_and_an_exception_fails() -> None:
    ok = run_python("print('hello')")
    assert ok.status == "passed"
    assert ok.stdout == "hello\n"
    assert "rlimits" in ok.isolation
    bad = run_python("assert 1 == 2")
    assert bad.status == "failed"
    assert "AssertionError" in bad.stderr


def test_an_endless_loop_times_out() -> None:
    result = run_python("while True:\n    pass\n", SandboxLimits(timeout_s=1.0, cpu_s=5))
    assert result.status == "timeout"
    assert result.seconds < 4


def test_no_connection_reaches_a_local_server() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        port = server.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        result = run_python(program)
        assert result.status == "failed"
        try:
            server.accept()
            connected = True
        except TimeoutError:
            connected = False
    assert not connected


def test_files_written_outside_its_folder_do_not_survive(tmp_path: Path) -> None:
    name = f"codeeraser-escape-{uuid.uuid4().hex}"
    targets = [Path("/tmp") / name, tmp_path / name]
    os.chmod(tmp_path, 0o777)  # writable for anyone: only the sandbox may stop the write
    program = "".join(
        f"try:\n    open({str(t)!r}, 'w').write('x')\nexcept OSError:\n    pass\n" for t in targets
    )
    result = run_python(program + "open('inside.txt', 'w').write('fine')\n")
    assert result.status == "passed"
    assert not any(t.exists() for t in targets)


def test_memory_and_output_are_capped() -> None:
    result = run_python("x = bytearray(4 * 1024**3)\n", SandboxLimits(memory_mb=256))
    assert result.status == "failed"
    assert "MemoryError" in result.stderr
    loud = run_python("print('x' * 10**7)\n", SandboxLimits(fsize_mb=1))
    assert loud.status == "failed"
    assert len(loud.stdout) <= 64 * 1024


def _processes_with(marker: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(pid)
    return found


def test_a_fork_bomb_is_contained_and_leaves_no_process() -> None:
    marker = f"codeeraser-fork-bomb-{uuid.uuid4().hex}"  # in the bomb's command line only
    program = (
        "import os, sys\n"
        f"if sys.argv[-1] != {marker!r}:  # run again with the marker as an argument\n"
        "    python = sys.executable\n"
        f"    os.execv(python, [python, '-I', '-S', '-B', 'program.py', {marker!r}])\n"
        "while True:\n"
        "    os.fork()\n"
    )
    result = run_python(program, SandboxLimits(timeout_s=5))
    assert result.status in ("failed", "timeout")
    assert result.seconds < 8
    assert _processes_with(marker) == []
