"""The `codeeraser` command: a thin Click group.

Subcommands live in `gate/commands/` and are imported only when invoked, so that
`--help` and `scan` start without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from gate import __version__
from gate.errors import CodeEraserError, ExitCode

# name -> "module:attribute"; each module defines one click command.
COMMANDS: dict[str, str] = {
    "scan": "gate.commands.scan:scan",
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
    if error.exit_code == ExitCode.USAGE:
        return _InputProblem(error.message)
    return _InternalProblem(error.message)


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

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

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CodeEraserError as exc:
            raise _as_click(exc) from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codeeraser")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars or summaries.")
def cli(verbose: int, quiet: bool) -> None:
    """Find, measure and erase secrets that a code model memorized from its training data.

    Exit codes: 0 passed, 1 policy failed, 2 usage/policy/input error, 3 internal error.
    """
    from audit import ui

    ui.configure(verbose, quiet)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="codeeraser")
