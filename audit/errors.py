"""One exception root and the process exit codes.

Every expected failure is a `CodeEraserError` whose message is one line that names
what to fix. The CLI prints it as ``Error: <message>`` and exits with its code; no
traceback. Messages never contain a secret value: name the finding id or the file and
line instead.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of every command."""

    PASSED = 0  # the policy holds (before remediation, or after it)
    FAILED = 1  # the policy still fails
    USAGE = 2  # usage, policy or input error: the user can fix the input
    INTERNAL = 3  # internal or model-load error


class CodeEraserError(Exception):
    """Root of all expected errors; the message is shown to the user as one line."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class InputError(CodeEraserError):
    """Bad data, findings, model directory or output path: exit 2."""

    exit_code = ExitCode.USAGE


class PolicyError(CodeEraserError):
    """A policy file that does not validate: exit 2. Name the file, line and field."""

    exit_code = ExitCode.USAGE


class ModelLoadError(CodeEraserError):
    """A model that exists and looks valid but cannot be loaded or run: exit 3."""

    exit_code = ExitCode.INTERNAL


class Interrupted(CodeEraserError):
    """SIGINT/SIGTERM reached a safe point; the message says how to resume."""

    exit_code = ExitCode.INTERNAL
