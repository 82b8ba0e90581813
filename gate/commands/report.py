"""`codeeraser report`: re-render a gate run's reports from its record.json, no model."""

from __future__ import annotations

from pathlib import Path

import click

from audit.errors import InputError
from gate import ui
from gate.record import read_record
from gate.report import HEADLINES, write_reports


def _parse_formats(value: str | None) -> list[str] | None:
    if value is None:
        return None
    formats = [part.strip().lower() for part in value.split(",") if part.strip()]
    if not formats:
        raise InputError("--format: give one or more of html, json, sarif, md")
    return formats


@click.command("report")
@click.argument("record", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder to write the reports into (default: the record's folder).",
)
@click.option(
    "--format",
    "formats",
    default=None,
    metavar="LIST",
    help="Comma-separated formats: html, json, sarif, md "
    "(default: the formats the run's policy asked for).",
)
def report(record: Path, out: Path | None, formats: str | None) -> None:
    """Render report.html, results.sarif, summary.md (and record.json) from RECORD.

    RECORD is the record.json that `codeeraser gate` wrote. Nothing is measured again:
    the reports are rebuilt from the record alone. The written paths go to stdout.
    Exit 0 when written; 2 when RECORD is not a gate record or a format is unknown.
    """

    wanted = _parse_formats(formats)
    run = read_record(record)
    written = write_reports(run, out if out is not None else record.parent, wanted)
    for path in written.values():
        click.echo(str(path))
    if not ui.is_quiet():
        ui.console.print(
            f"Gate run of {run.started_at}: {HEADLINES[run.outcome]} "
            f"(exit code {run.exit_code}); {len(written)} files written."
        )
