"""`codeeraser report`: re-render a gate run's reports from its record.json, no model."""

from __future__ import annotations

from pathlib import Path

import click

from audit.errors import InputError
from gate import ui
from gate.paths import check_paths, path_option
from gate.record import read_record
from gate.report import FILENAMES, HEADLINES, policy_formats, write_reports


def _parse_formats(value: str | None) -> list[str] | None:
    if value is None:
        return None
    formats = [part.strip().lower() for part in value.split(",") if part.strip()]
    if not formats:
        raise InputError("--format: give one or more of html, json, sarif, md")
    unknown = [f for f in formats if f not in ("html", "json", "sarif", "md")]
    if unknown:
        raise InputError(f"unknown report format {unknown[0]!r} (valid: html, json, sarif, md)")
    return formats


def _formats_to_write(record: Path, folder: Path, formats: list[str]) -> list[str]:
    """The formats to write; record.json is not rewritten over the record being read."""
    same = (folder / "record.json").resolve() == record.resolve()
    return [f for f in formats if not (f == "json" and same)]


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
    folder = out if out is not None else record.parent
    run = read_record(record)
    chosen = _formats_to_write(record, folder, wanted or policy_formats(run))
    check_paths(
        path_option("RECORD", record, "file", "record file"),
        [o for f in chosen for o in path_option("--out", folder / FILENAMES[f], "file")],
    )
    written = write_reports(run, folder, chosen)
    for path in written.values():
        click.echo(str(path))
    if not ui.is_quiet():
        ui.console.print(
            f"Gate run of {ui.safe(run.started_at)}: {HEADLINES[run.outcome]} "
            f"(exit code {run.exit_code}); {len(written)} files written."
        )
