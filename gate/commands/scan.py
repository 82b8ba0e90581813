"""`codeeraser scan`: find the secrets in a training corpus and write findings.jsonl."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import click
from rich.table import Table

from audit.detectors import build_detectors
from audit.errors import Interrupted
from audit.findings import Baseline, Finding, read_baseline, subtract_baseline, write_findings
from audit.hub import Source
from audit.scan import ScanOptions, ScanSummary, resolve_jobs, scan_corpus
from gate import ui
from gate.commands.options import (
    announce,
    data_format_options,
    data_of,
    hub_data_options,
    jobs_option,
    options_from,
)
from gate.commands.scan_engine import EngineOptions, engine_options, run_datatrove
from gate.paths import check_paths, data_paths, path_option
from gate.policy import ScanOptions as PolicyScanOptions

log = logging.getLogger(__name__)


@click.command("scan")
@click.argument("data", required=False)
@hub_data_options
@data_format_options
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("findings.jsonl"),
    show_default=True,
    help="Findings file to write (JSONL, one finding per line; no secret values).",
)
@click.option(
    "--baseline",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Accepted secrets, left out (matched by hash and type): a findings file, or a "
    "detect-secrets .secrets.baseline.",
)
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="GLOB",
    help="Skip samples whose path matches GLOB (repeatable), e.g. 'tests/*'.",
)
@jobs_option
@options_from(PolicyScanOptions, only=("on_bad_record",))
@click.option(
    "--detector",
    "detectors",
    multiple=True,
    metavar="NAME",
    help="Run only this detector (repeatable); see --list-detectors.",
)
@click.option(
    "--list-detectors",
    is_flag=True,
    help="Print every detector with the secret type it reports, and exit.",
)
@engine_options
def scan(
    *,
    data: str | None,
    data_config: str | None,
    data_split: str | None,
    fmt: str,
    text_field: str,
    id_field: str,
    out: Path,
    baseline: Path | None,
    excludes: tuple[str, ...],
    jobs: int,
    on_bad_record: str,
    detectors: tuple[str, ...],
    list_detectors: bool,
    engine: EngineOptions,
) -> None:
    """Find the secrets in the training data DATA and write them to --out.

    DATA is a folder (scanned recursively; binary and very large files are skipped
    and counted), a JSONL or JSONL.GZ file of records (e.g. codeparrot's
    {"id", "path", "content"}), a Parquet file, or a dataset saved with
    `datasets.save_to_disk`, or a Hugging Face Hub dataset id
    (hf://datasets/ORG/NAME[@REVISION], or ORG/NAME[@REVISION] when no such local path
    exists), streamed at the commit it resolves to. Each finding has the secret's exact
    character span, its SHA-256 and a redacted preview, never the secret itself.

    With --engine datatrove the scan runs as datatrove tasks (locally, on Slurm or
    Ray; resumable), DATA may be an s3:// or hf://datasets/ URL or a folder of JSONL
    or Parquet files (with --format), and the findings file is the same.

    Exit codes: 0 scanned (whether or not secrets were found), 2 bad input.
    """

    if list_detectors:
        _print_detectors()
        return
    if data is None:
        raise click.UsageError("missing argument DATA (the training data to scan)")
    source = _source(data, data_config, data_split, engine)
    check_paths(
        [
            *(data_paths("DATA", source.path, source.hub) if source else []),
            *path_option("--baseline", baseline, "file", "findings file"),
        ],
        path_option("--out", out, "file"),
    )
    spec = PolicyScanOptions.model_validate(
        {
            "format": fmt,
            "text_field": text_field,
            "id_field": id_field,
            "excludes": list(excludes),
            "on_bad_record": on_bad_record,
        }
    ).corpus_spec(source.path if source else Path(data), hub=source.hub if source else None)
    if source:
        announce(source)
    accepted = read_baseline(baseline) if baseline else Baseline()
    options = ScanOptions(detectors=detectors or None)
    summary = ScanSummary()
    log.info("Scanning %s (format %s) with %d worker process(es)", data, fmt, resolve_jobs(jobs))
    started = time.perf_counter()
    with ui.progress() as bar:
        task = bar.add_task(f"Scanning {ui.safe(spec.path.name)}", total=None)
        if engine.datatrove:  # datatrove tasks, then their shards merged in this order
            findings = run_datatrove(
                data,
                spec=spec,
                detectors=options.detectors,
                engine=engine,
                out=out,
                summary=summary,
                progress=lambda done, tasks: bar.update(task, advance=done, total=tasks),
            )
            if findings is None:
                return  # submitted to Slurm: its merge job writes --out
        else:
            findings = scan_corpus(
                spec,
                options,
                jobs=resolve_jobs(jobs),
                summary=summary,
                progress=lambda samples, _chars: bar.advance(task, samples),
            )
        kept: Counter[str] = Counter()
        try:
            written = write_findings(out, _counted(subtract_baseline(findings, accepted), kept))
        except KeyboardInterrupt:
            raise Interrupted(f"scan interrupted; {out} was not written") from None
    summary.baseline_accepted = summary.findings - written
    summary.by_type = kept
    if not ui.is_quiet():
        _print_summary(summary, time.perf_counter() - started, out)
    click.echo(str(out))


def _source(
    data: str, config: str | None, split: str | None, engine: EngineOptions
) -> Source | None:
    """DATA as the local engine reads it (a path, or a Hub dataset by id); None for a
    URL the datatrove tasks read through fsspec themselves."""
    if "://" in data and engine.datatrove:
        return None
    if "://" in data and not data.startswith("hf://datasets/"):
        raise click.UsageError("DATA is a URL: reading remote data needs --engine datatrove")
    source = data_of(data, config, split)
    if source.hub is not None and engine.datatrove:
        raise click.UsageError(
            "--engine datatrove reads a Hub dataset by URL: give hf://datasets/ORG/NAME"
        )
    return source


def _counted(findings: Iterator[Finding], by_type: Counter[str]) -> Iterator[Finding]:
    """Pass findings through, counting them by type; log each one (redacted) at -vv."""
    for finding in findings:
        by_type[finding.secret_type] += 1
        log.debug(
            "%s:%d:%d %s %s (%s, %s)",
            finding.origin,
            finding.line,
            finding.column,
            finding.secret_type,
            finding.preview,
            finding.detector,
            finding.id,
        )
        yield finding


def _print_summary(summary: ScanSummary, seconds: float, out: Path) -> None:

    table = Table(title="Secrets found", title_justify="left")
    table.add_column("Secret type")
    table.add_column("Findings", justify="right")
    for secret_type, count in sorted(summary.by_type.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(ui.safe(secret_type), str(count))
    table.add_section()
    table.add_row("[bold]total[/]", f"[bold]{summary.findings}[/]")
    ui.console.print(table)
    rate = summary.samples / seconds if seconds > 0 else 0.0
    ui.console.print(
        f"{summary.samples} samples ({summary.chars / 1e6:.1f} M characters) in {seconds:.1f} s "
        f"({rate:.0f} samples/s); {summary.samples_with_findings} with findings."
    )
    for label, counts in (
        ("Skipped", summary.skipped),
        ("Dropped as false positives", summary.filtered),
    ):
        if counts:
            parts = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))
            ui.console.print(f"{label}: {parts}.")
    for origin, reason in summary.skipped_files:
        log.info("not read: %s (%s)", origin, reason)  # names redacted by the scan
    if summary.allowlisted:
        parts = ", ".join(f"{kind} {n}" for kind, n in sorted(summary.allowlisted.items()))
        ui.console.print(f"Allowlisted inline (pragma: allowlist secret), not written: {parts}.")
    if summary.baseline_accepted:
        ui.console.print(f"Accepted by the baseline: {summary.baseline_accepted}.")
    ui.console.print(f"Findings written to {ui.safe(out)}.")


def _print_detectors() -> None:

    for detector in build_detectors():
        types = sorted(detector.secret_types())
        shown = ", ".join(types) if len(types) <= 3 else "the type of the secret inside it"
        click.echo(f"{detector.name}\t{shown}")
