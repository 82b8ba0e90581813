"""`codeeraser scan-files`: fail when files hold a secret the baseline has not accepted.

Made for pre-commit (`.pre-commit-hooks.yaml`), which passes the staged files as
arguments. New = found − baseline, matched by secret hash and type as `scan --baseline`
matches, so a secret that moves to another line or file stays accepted. Each new finding
is listed as file, line, type and redacted preview; then the command exits 1.

A source or config file is one sample; a JSONL(.gz) or Parquet file is read record by
record; a folder as `codeeraser scan` reads it. `--accept` adds what the files hold to
the baseline instead of failing on it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import click

from audit.corpus import CorpusSpec, ReadStats, detect_format, file_sample
from audit.detectors import build_detectors
from audit.errors import ExitCode, InputError
from audit.findings import Finding, baseline_key, read_findings, write_findings
from audit.redact import safe_text
from audit.scan import ScanOptions, resolve_jobs, scan_corpus, scan_samples
from gate.commands.options import jobs_option, options_from
from gate.policy import ScanOptions as PolicyScanOptions

log = logging.getLogger(__name__)

Located = tuple[Path, Finding]  # the file given on the command line, a finding in it


@click.command("scan-files")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--baseline",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Findings file of accepted secrets (as `codeeraser scan --out` writes it); "
    "never scanned itself.",
)
@click.option(
    "--accept",
    is_flag=True,
    help="Add every finding in FILES to --baseline (created if missing) and exit 0.",
)
@options_from(PolicyScanOptions, only=("text_field", "id_field", "on_bad_record"))
@click.option(
    "--detector",
    "detectors",
    multiple=True,
    metavar="NAME",
    help="Run only this detector (repeatable); see `codeeraser scan --list-detectors`.",
)
@jobs_option
@click.pass_context
def scan_files(
    ctx: click.Context,
    *,
    files: tuple[Path, ...],
    baseline: Path | None,
    accept: bool,
    text_field: str,
    id_field: str,
    on_bad_record: str,
    detectors: tuple[str, ...],
    jobs: int,
) -> None:
    """Scan FILES; list the findings the baseline does not accept and exit 1.

    For a pre-commit hook (see .pre-commit-hooks.yaml) over a training-data repository.
    Exit codes: 0 nothing new (or --accept), 1 new findings, 2 bad input.
    """
    if accept and baseline is None:
        raise InputError("--accept needs --baseline FILE: the baseline to add the findings to")
    accepted = _read_baseline(baseline, missing_ok=accept)
    spec = CorpusSpec(
        path=Path(),  # each data file or folder in turn
        text_field=text_field,
        id_field=id_field,
        on_bad_record=on_bad_record,  # type: ignore[arg-type]  # click.Choice checked it
    )
    targets = [f for f in files if baseline is None or not _same_file(f, baseline)]
    found = list(_scan(targets, spec, detectors or None, jobs))
    if accept and baseline is not None:
        _accept(baseline, accepted, [finding for _, finding in found])
        return
    keys = {baseline_key(f) for f in accepted}
    new = [(path, f) for path, f in found if baseline_key(f) not in keys]
    if new:
        _report(new, baseline)
        ctx.exit(int(ExitCode.FAILED))


def _read_baseline(baseline: Path | None, *, missing_ok: bool) -> list[Finding]:
    if baseline is None or (missing_ok and not baseline.exists()):
        return []
    if not baseline.is_file():
        raise InputError(
            f"{baseline}: no such baseline; make it with "
            f"`codeeraser scan-files --baseline {baseline} --accept FILE...`"
        )
    return read_findings(baseline)


def _same_file(path: Path, other: Path) -> bool:
    return path.resolve() == other.resolve()


def _scan(
    files: list[Path], spec: CorpusSpec, detectors: tuple[str, ...] | None, jobs: int
) -> Iterator[Located]:

    build_detectors(detectors)  # an unknown name fails before any file is read
    for path in files:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if _is_source_file(path):
            stats = ReadStats()
            sample = file_sample(path, stats)
            for reason in stats.skipped:
                log.info("Skipped %s (%s)", path, reason)
            for result in scan_samples([sample] if sample else [], detectors):
                yield from ((path, f) for f in result.findings)
        elif path.stat().st_size > 0:  # an empty data file holds no record
            corpus = replace(spec, path=path)
            options = ScanOptions(detectors=detectors)
            yield from ((path, f) for f in scan_corpus(corpus, options, resolve_jobs(jobs)))


def _is_source_file(path: Path) -> bool:
    """A file that is not a JSONL or Parquet data file (those are read record by record)."""
    if not path.is_file():
        return False
    try:
        detect_format(path)
    except InputError:
        return True
    return False


def _report(new: list[Located], baseline: Path | None) -> None:
    """One line per new finding: file, line, type and preview; never the value."""
    for path, finding in new:
        name = safe_text(path.as_posix())  # a file name can hold a secret too
        where = f"{name}:{finding.line}:{finding.column}"
        if finding.origin != name:  # a record of a data file, or a folder's file
            where = f"{name}: {safe_text(finding.origin)} at {finding.line}:{finding.column}"
        click.echo(f"{where}: {finding.secret_type} {finding.preview}")
    files = len({path for path, _ in new})
    against = f"baseline {safe_text(baseline)}" if baseline else "baseline (none given)"
    click.echo(
        f"{len(new)} finding(s) in {files} file(s) not in the {against}. Remove the "
        "secret, or accept it (a false positive, or a revoked key that must stay): "
        f"codeeraser scan-files --baseline {safe_text(baseline or 'FILE')} --accept FILE...",
        err=True,
    )


def _accept(baseline: Path, accepted: list[Finding], found: list[Finding]) -> None:
    keys = {baseline_key(f) for f in accepted}
    added: list[Finding] = []
    for finding in found:
        if baseline_key(finding) not in keys:
            keys.add(baseline_key(finding))
            added.append(finding)
    write_findings(baseline, [*accepted, *added])
    total = len(accepted) + len(added)
    click.echo(f"{len(added)} finding(s) added to {safe_text(baseline)} ({total} in all).")
