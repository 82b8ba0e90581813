"""The `codeeraser` command: a thin Click group.

Subcommands live in `gate/commands/` and are imported only when invoked, so that
`--help` and `scan` start without importing torch.

How a command ends, whatever happens inside it:

- an expected error (`CodeEraserError`): ``Error: <message>`` and its exit code;
- Ctrl-C or SIGTERM: ``Error: interrupted ...`` and exit 3 (never 1, which means
  "the policy fails"); commands that can resume say how;
- any other exception is a bug: one line naming its type and where it was raised,
  exit 3. Its message is not shown, not even with ``-vv`` (which logs the traceback's
  frames): an exception raised while a secret is in scope may carry it.
  ``CODEERASER_DEBUG=1`` lets the exception through untouched, for a developer.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click

from audit.allocator import release_freed_memory
from audit.errors import CodeEraserError, ExitCode
from audit.redact import safe_text
from gate import __version__, ui

log = logging.getLogger(__name__)
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]

# name -> "module:attribute"; each module defines one click command.
COMMANDS: dict[str, str] = {
    "scan": "gate.commands.scan:scan",
    "scan-files": "gate.commands.scan_files:scan_files",
    "measure": "gate.commands.measure:measure",
    "calibrate": "gate.commands.calibrate:calibrate",
    "erase": "gate.commands.erase:erase",
    "gate": "gate.commands.gate:gate",
    "report": "gate.commands.report:report",
    "demo": "gate.commands.demo:demo",
}


class _InputProblem(click.ClickException):
    """Shown as `Error: <message>`, exit 2: the user can fix the input."""

    exit_code = int(ExitCode.USAGE)


class _InternalProblem(click.ClickException):
    """Shown as `Error: <message>`, exit 3."""

    exit_code = int(ExitCode.INTERNAL)


def _as_click(error: CodeEraserError) -> click.ClickException:

    message = safe_text(error.message)  # it may quote a path or id that holds a secret
    if error.exit_code == ExitCode.USAGE:
        return _InputProblem(message)
    return _InternalProblem(message)


def _safe_click(error: click.ClickException) -> click.ClickException:
    """Click's own errors, on one line like ours: a usage error without the usage
    block (its --help named instead), and the values it quotes (a bad choice, a path)
    made safe."""

    message = safe_text(error.format_message())
    if isinstance(error, click.UsageError):
        where = error.ctx.command_path if error.ctx is not None else "codeeraser"
        return _InputProblem(f"{message} (see {where} --help)")  # exit 2, as click's
    error.__dict__["message"] = safe_text(error.message)  # `message` is typed Final
    return error


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:  # a bad option of the group itself
            raise _safe_click(exc) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of --help, read from each command's source: listing the
        commands imports none of them (they import the schemas, the scanner, the
        report renderer)."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        with formatter.section("Commands"):
            formatter.write_dl([(name, short_help(COMMANDS[name], limit)) for name in names])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with _sigterm_as_interrupt():
                return super().invoke(ctx)
        except CodeEraserError as exc:
            raise _as_click(exc) from None
        except KeyboardInterrupt:
            raise _InternalProblem(
                "interrupted; no output was left half-written (each file appears only "
                "when complete): rerun the command"
            ) from None
        except click.ClickException as exc:
            raise _safe_click(exc) from None
        except (click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get("CODEERASER_DEBUG") == "1":
                raise
            raise _InternalProblem(internal_error_message(exc)) from None


def short_help(target: str, limit: int = 45) -> str:
    """A command's short help (the start of its docstring, as Click shortens it), read
    from the source of its module without importing it."""
    module_name, attr = target.split(":")
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise TypeError(f"{target}: no such module")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == attr:
            stand_in = click.Command(attr, help=ast.get_docstring(node))
            return stand_in.get_short_help_str(limit)
    raise TypeError(f"{target}: no such command function")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (CI cancelling a job) unwinds like Ctrl-C, so every cleanup runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def internal_error_message(exc: BaseException) -> str:
    """One line for a bug: the exception's type and where it was raised, not its message.

    The traceback's frames (file, line, function, source line) and the types of the
    chained exceptions are logged at debug level (-vv); no message is, since it may
    quote training data.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if _relative(f.filename) is not None] or frames
    where = ""
    if ours:
        frame = ours[-1]
        name = _relative(frame.filename) or Path(frame.filename).name
        where = f" at {name}:{frame.lineno} in {frame.name}"
    reason = f": {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else ""
    log.debug("%s", redacted_traceback(exc))
    return (
        f"internal error ({type(exc).__name__}{reason}{where}); rerun with -vv for the "
        "traceback, and report it if it is not a problem of this machine (memory, disk)"
    )


def redacted_traceback(exc: BaseException) -> str:
    """The traceback of `exc` and its causes, with every exception message left out."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        lines = traceback.format_list(traceback.extract_tb(current.__traceback__))
        parts.insert(0, "".join(lines) + f"{type(current).__name__} (message withheld)\n")
        current = current.__cause__ or current.__context__
    return "Traceback (most recent call last):\n" + "\nwhich led to:\n".join(parts)


def _relative(filename: str) -> str | None:
    """`filename` relative to the source root when it is in audit/ or gate/, else None."""
    path = Path(filename).resolve()
    if not path.is_relative_to(_PACKAGE_ROOT):
        return None
    relative = path.relative_to(_PACKAGE_ROOT)
    return relative.as_posix() if relative.parts[:1] in (("audit",), ("gate",)) else None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codeeraser")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars or summaries.")
def cli(verbose: int, quiet: bool) -> None:
    """Find, measure and erase secrets that a code model memorized from its training data.

    Exit codes: 0 passed, 1 policy failed, 2 usage/policy/input error, 3 internal error.
    """

    release_freed_memory()
    ui.configure(verbose, quiet)


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="codeeraser")
    finally:
        close_process_group()


def close_process_group() -> None:
    """Under a launcher, leave the process group before the interpreter exits: a
    process that exits with its gloo threads still running can abort ("terminate
    called without an active exception", SIGABRT) after its work is done, and the
    launcher then fails the whole run. torch is not imported here for this."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
