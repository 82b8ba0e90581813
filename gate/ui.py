"""Terminal output: one stderr console, progress bars, and the log level.

Everything human-readable goes to stderr so that stdout stays free for machine output
(paths, JSON). Progress bars are drawn only on a terminal; in CI they print nothing.
Never pass a secret value to anything here.
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from audit.redact import printable, redact_identifier, safe_text

console = Console(stderr=True, highlight=False)

_state = {"quiet": False}


def configure(verbosity: int = 0, quiet: bool = False) -> None:
    """Set the log level from -v/-q: warnings by default, -v info, -vv debug."""
    _state["quiet"] = quiet
    level = (
        logging.ERROR
        if quiet
        else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbosity, 2)]
    )
    handler = RichHandler(console=console, show_path=False, show_time=False, markup=False)
    handler.addFilter(_SafeRecords())
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)


def safe(value: object) -> str:
    """A value that came from input (a path, an id, a type name), ready to print through
    Rich: secrets redacted, control characters removed, markup escaped."""

    return escape(safe_text(value))


class _SafeRecords(logging.Filter):
    """Every log record's message is made safe the same way before it is shown."""

    def filter(self, record: logging.LogRecord) -> bool:

        record.msg = printable(redact_identifier(record.getMessage()), one_line=False)
        record.args = None
        return True


def is_quiet() -> bool:
    return _state["quiet"]


def progress(*extra_columns: TextColumn) -> Progress:
    """A progress bar for long work: description, bar, n/total, elapsed, remaining."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=_state["quiet"] or not console.is_terminal,
    )
