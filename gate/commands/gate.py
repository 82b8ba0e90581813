"""`codeeraser gate`: the whole release gate in one command, one exit code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from audit.redact import printable
from gate import ui
from gate.commands.measure import launch_shard
from gate.commands.options import (
    DATA_HELP,
    announce,
    data_of,
    heldout_option,
    hub_data_options,
    jobs_option,
    model_of,
    model_options,
)
from gate.paths import check_paths, data_paths, model_paths, path_option
from gate.policy import load_policy
from gate.report import format_value

if TYPE_CHECKING:
    from gate.record import RunRecord
    from gate.verdict import RuleResult


@click.command("gate")
@model_options
@click.option(
    "--data",
    required=True,
    metavar="PATH|ID",
    envvar="CODEERASER_DATA",
    help="The model's training data: a folder, JSONL(.gz), Parquet or a saved HF dataset "
    "(how to read it is set in the policy's scan section)." + DATA_HELP,
)
@hub_data_options
@click.option(
    "--policy",
    "policy_source",
    default="default",
    show_default=True,
    envvar="CODEERASER_POLICY",
    help="Policy YAML file, or a built-in policy by name (default, strict, demo).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("codeeraser-out"),
    show_default=True,
    envvar="CODEERASER_OUT",
    help="Run folder: stage outputs, the remediated model, record.json and the reports.",
)
@click.option(
    "--unseen",
    type=click.Path(path_type=Path),
    help="Code the model never saw, for `auto` thresholds (overrides thresholds.unseen).",
)
@heldout_option
@jobs_option
@click.option(
    "--findings",
    "findings_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Findings file of a scan of --data (e.g. `scan --engine datatrove` on a cluster): "
    "used instead of scanning; every finding is checked against the data first.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Write into an --out folder that exists and is not a gate run folder.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Reuse the finished stages of an interrupted run in --out and continue its erase "
    "stage from the checkpoint (same model, data and policy; else refused).",
)
@click.pass_context
def gate(ctx: click.Context, /, **options: Any) -> None:
    """Audit a model before release: scan, measure, decide, erase if needed, report.

    Scans the training data for secrets, measures how many of them the model
    reproduces from the code before them, and holds that against the policy. When the
    policy fails and remediation is on, erases the offending secrets with CodeEraser,
    measures again (the same prompts, a sampled attack and a second prefix length)
    and checks the utility budget. Writes record.json, report.html, results.sarif and
    summary.md to --out. The input model is only read.

    On a pass, prints the path of the model to release on stdout (the original, or
    the remediated one). In GitHub Actions, also writes the job summary and the
    step outputs verdict, model-path and report.

    Ctrl-C or SIGTERM stops the run (the erase stage at a checkpoint); rerun with
    --resume to reuse what was finished and get the result an uninterrupted run gives.

    Exit codes: 0 passed (possibly after remediation), 1 the policy fails,
    2 usage, policy or input error, 3 internal or model-load error.
    """
    record = run_from_options(**options)
    ctx.exit(record.exit_code)


def run_from_options(
    *,
    model: str,
    data: str,
    policy_source: str,
    out_dir: Path,
    unseen: Path | None,
    heldout: Path | None,
    device: str,
    dtype: str,
    batch_tokens: int,
    jobs: int,
    force: bool,
    resume: bool = False,
    findings_path: Path | None = None,
    data_config: str | None = None,
    data_split: str | None = None,
) -> RunRecord:
    """Load the policy with the command-line overrides, run the gate, print the outcome."""
    from gate.pipeline import GateRun, run_gate  # the hand-off: the pipeline imports torch

    source, corpus = model_of(model), data_of(data, data_config, data_split)  # Hub ids first
    check_paths(
        [
            *model_paths("--model", source.path, source.hub),
            *data_paths("--data", corpus.path, corpus.hub),
            *path_option("--findings", findings_path, "file", "findings file"),
            *path_option("--unseen", unseen, "data"),
            *path_option("--heldout", heldout, "data"),
        ]
    )
    overrides = {  # absolute: a relative path in a policy is relative to the policy's folder
        "thresholds.unseen": str(unseen.absolute()) if unseen else None,
        "utility.heldout": str(heldout.absolute()) if heldout else None,
    }
    policy = load_policy(policy_source, {k: v for k, v in overrides.items() if v is not None})
    announce(source, corpus)
    run = GateRun(
        model_dir=source.path,
        data=corpus.path,
        model_hub=source.hub,
        data_hub=corpus.hub,
        policy=policy,
        out_dir=out_dir,
        device=device,
        dtype=dtype,
        jobs=jobs,
        batch_tokens=batch_tokens,
        force=force,
        resume=resume,
        invocation=["codeeraser", *sys.argv[1:]],
        findings=findings_path,
    )
    shard = launch_shard()  # under accelerate launch, only the first process prints
    record = run_gate(run)
    if shard.is_main:
        print_outcome(record, out_dir)
    return record


def print_outcome(record: RunRecord, out_dir: Path) -> None:
    """The verdict per rule on stderr; the model to release on stdout when it passed."""

    if not ui.is_quiet():
        ui.console.print(_rules_table(record))
        ui.console.print(_headline(record))
        ui.console.print(f"Report: {ui.safe(out_dir / 'report.html')}")
    if record.exit_code == 0 and record.released_model:
        click.echo(printable(record.released_model))  # redacted in the record


def _headline(record: RunRecord) -> str:

    if record.outcome == "passed":
        return "[bold green]PASSED[/]: the model meets the policy."
    if record.outcome == "remediated":
        return f"[bold green]PASSED after remediation[/]: release {ui.safe(record.released_model)}"
    return "[bold red]FAILED[/]: the model does not meet the policy."


def _rules_table(record: RunRecord) -> Any:

    table = Table(title="Policy rules")
    for column in ("rule", "severity", "limit", "before", "after"):
        table.add_column(column, justify="left" if column in ("rule", "severity") else "right")
    before = {r.rule: r for r in record.verdict_before.results} if record.verdict_before else {}
    after = {r.rule: r for r in record.verdict_after.results} if record.verdict_after else {}
    for name in dict.fromkeys([*before, *after]):  # before's order, then after-only rules
        rule = before.get(name) or after[name]
        table.add_row(
            ui.safe(name),
            rule.severity,
            _value(rule.metric, rule.limit),
            _cell(before.get(name)),
            _cell(after.get(name)),
        )
    return table


def _value(metric: str, value: float | None) -> str:
    """As the reports print it: counts whole, rates in percent, perplexity as a change."""

    return format_value(metric, value)


def _cell(result: RuleResult | None) -> str:
    if result is None:
        return "–"
    mark = "[green]pass[/]" if result.passed else "[red]fail[/]"
    return f"{_value(result.metric, result.value)} {mark}"
