"""`codeeraser erase`: unlearn the memorized secrets and write a remediated model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.progress import TextColumn

from audit.corpus import CorpusSpec
from audit.findings import read_findings
from audit.measurements import read_measurements
from gate import ui
from gate.commands.measure import launch_shard, thresholds_paths
from gate.commands.options import (
    announce,
    corpus_options,
    corpus_spec,
    data_of,
    findings_option,
    heldout_option,
    model_of,
    model_options,
    options_from,
    prefix_tokens_option,
    thresholds_option,
    values_of,
)
from gate.paths import check_paths, data_paths, model_paths, path_option
from gate.unlearn.settings import EraseOptions, UnlearnArgs, UnlearnConfig

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from audit.measurements import Measurement
    from gate.unlearn.remediation import EpochLog, Remediation


@click.command("erase")
@model_options
@corpus_options("--data", "The training data the findings come from (as given to scan).")
@findings_option
@click.option(
    "--measurements",
    "measurements_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Measurements of the model by `codeeraser measure`: the memorized or extracted "
    "findings are erased.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for the remediated model (weights, config, tokenizer, remediation.json). "
    "It appears only once complete.",
)
@thresholds_option
@options_from(UnlearnConfig, only=("method",))
@options_from(UnlearnArgs)
@click.option(
    "--retain",
    "retain_path",
    type=click.Path(path_type=Path),
    help="Clean code to keep the model's behaviour on (folder or JSONL). Default: the "
    "samples of --data that have no finding.",
)
@heldout_option
@click.option(
    "--heldout-findings",
    "heldout_findings",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Findings in the held-out code; their samples are left out of the perplexity.",
)
@click.option(
    "--humaneval",
    type=click.IntRange(min=0, max=164),
    default=0,
    show_default=True,
    help="HumanEval problems to score pass@1 on before and after (0: off; 164: all). "
    "Generated code runs in a sandbox; tiny models score 0.",
)
@prefix_tokens_option
@click.option(
    "--force",
    is_flag=True,
    help="Replace --out if it exists (only once the new model is complete).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted run from its checkpoint (next to --out); the other "
    "options must be the same. Without a checkpoint, starts from the beginning.",
)
def erase(**options: Any) -> None:
    """Erase the memorized secrets from a model and write the remediated model.

    The findings whose measurement says memorized (or extracted) are unlearned
    together, k at a time, until each one's MA and EL_10 are under the thresholds and
    greedy decoding no longer gives the secret. The input model is only read; the new
    model folder appears at --out only when complete. The run checkpoints after every
    epoch in a hidden folder next to --out; Ctrl-C or SIGTERM stops it after the current
    step, and --resume continues it to the result an uninterrupted run gives. Its path
    goes to stdout, a summary to stderr; remediation.json holds the details (no secrets).

    Under `accelerate launch` the processes train together (DDP, or FSDP with an
    accelerate config); only the first one writes --out and prints. Checkpoints and
    --resume are for single-process runs.

    Exit codes: 0 written (or nothing to erase), 2 bad input (or disk full), 3 the model
    failed to load or the run was interrupted.
    """
    _run(**options)


def _run(
    *,
    model: str,
    data: str,
    data_config: str | None,
    data_split: str | None,
    fmt: str,
    text_field: str,
    id_field: str,
    findings_path: Path,
    measurements_path: Path,
    out_dir: Path,
    thresholds_spec: str | None,
    retain_path: Path | None,
    heldout: Path | None,
    heldout_findings: tuple[Path, ...],
    **settings: Any,
) -> None:
    from audit.calibrate import resolve_thresholds
    from audit.model import check_model_dir
    from gate.unlearn.checkpoint import work_dir
    from gate.unlearn.erase import check_output, select_forget_set

    source, corpus = model_of(model), data_of(data, data_config, data_split)  # Hub ids first
    check_paths(
        [
            *model_paths("--model", source.path, source.hub),
            *data_paths("--data", corpus.path, corpus.hub),
            *path_option("--findings", findings_path, "file", "findings file"),
            *path_option("--measurements", measurements_path, "file", "measurements file"),
            *thresholds_paths(thresholds_spec),
            *path_option("--retain", retain_path, "data"),
            *path_option("--heldout", heldout, "data"),
            *(g for p in heldout_findings for g in path_option("--heldout-findings", p, "file")),
        ],
        [
            *path_option("--out", out_dir, "folder"),
            *path_option("--out", work_dir(out_dir), "folder"),
        ],
    )
    model_dir = source.path
    check_model_dir(model_dir)
    check_output(out_dir, model_dir, settings["force"])
    announce(source, corpus)
    shard = launch_shard()
    thresholds = resolve_thresholds(thresholds_spec)
    findings = read_findings(findings_path)
    measurements = read_measurements(measurements_path)
    forget, _ = select_forget_set(findings, measurements)
    if not forget:
        if shard.is_main:
            ui.console.print(
                f"Nothing to erase: none of the {len(measurements)} measured findings is "
                "memorized or extracted; no model was written."
            )
        return
    options = _options(
        settings,
        retain=CorpusSpec(retain_path) if retain_path else None,
        heldout=CorpusSpec(heldout) if heldout else None,
        heldout_findings=heldout_findings,
    )
    record = _erase_interruptibly(
        model_dir,
        corpus_spec(corpus, fmt, text_field, id_field),
        findings,
        measurements,
        thresholds=thresholds,
        out_dir=out_dir,
        options=options,
        total=len(forget),
        provenance=source.hub,
    )
    if not shard.is_main:
        return
    if not ui.is_quiet():
        _summary(record)
    click.echo(str(out_dir))


def _options(settings: dict[str, Any], **extra: Any) -> EraseOptions:
    return EraseOptions(
        config=UnlearnConfig.model_validate(values_of(UnlearnConfig, settings)),
        device=settings["device"],
        dtype=settings["dtype"],
        prefix_tokens=settings["prefix_tokens"],
        batch_tokens=settings["batch_tokens"],
        force=settings["force"],
        humaneval=settings["humaneval"],
        resume=settings["resume"],
        **extra,
    )


def _erase_interruptibly(*args: Any, out_dir: Path, total: int, **kwargs: Any) -> Remediation:
    """Run erase_model with a progress bar. Ctrl-C and SIGTERM (the CLI turns it into
    Ctrl-C) stop it at a checkpoint; erase_model says how to resume."""
    from gate.unlearn.erase import erase_model

    with ui.progress(click_column()) as progress:
        task = progress.add_task("erasing", total=kwargs["options"].config.epochs, status="")
        report = _reporter(progress, task, total)
        return erase_model(*args, out_dir=out_dir, report=report, **kwargs)


def click_column() -> Any:

    return TextColumn("{task.fields[status]}")


def _reporter(progress: Progress, task: TaskID, total: int) -> Any:
    def report(log: EpochLog) -> None:
        parts = " ".join(f"{name} {value:.3f}" for name, value in sorted(log.loss.items()))
        el = "-" if log.el_10_mean is None else f"{log.el_10_mean:.3f}"
        status = (
            f"{parts} | MA {log.ma_mean:.3f} EL10 {el} | "
            f"extracted {log.extracted}/{total} | left {log.remaining}"
        )
        progress.update(task, advance=1, description=f"epoch {log.epoch}", status=status)

    return report


def _mean(rows: list[Measurement], key: str) -> float:
    return sum(float(getattr(r, key)) for r in rows) / max(1, len(rows))


def _summary(record: Remediation) -> None:

    before = [o.before for o in record.outcomes]
    after = [o.after for o in record.outcomes if o.after is not None]
    limits, utility = record.thresholds, record.utility
    ui.console.print(
        f"{record.method}: {record.forgotten} of {len(before)} findings forgotten in "
        f"{record.epochs} epochs ({record.stop_reason}; best epoch {record.best_epoch})."
    )
    ui.console.print(
        f"Extracted greedily: {sum(b.extracted_greedy for b in before)} → "
        f"{sum(a.extracted_greedy for a in after)}; mean MA {_mean(before, 'ma'):.3f} → "
        f"{_mean(after, 'ma'):.3f} (threshold {limits.ma:.3f}); mean EL_10 "
        f"{_mean(before, 'el_10'):.3f} → {_mean(after, 'el_10'):.3f} "
        f"(threshold {limits.el_10:.3f})."
    )
    if utility.humaneval_before is not None and utility.humaneval_after is not None:
        ui.console.print(
            f"HumanEval pass@1: {utility.humaneval_before.pass_at_1:.3f} → "
            f"{utility.humaneval_after.pass_at_1:.3f} "
            f"({utility.humaneval_after.problems} problems)."
        )
    if utility.perplexity_before is not None and utility.perplexity_after is not None:
        ui.console.print(
            f"Held-out perplexity: {utility.perplexity_before.perplexity:.3f} → "
            f"{utility.perplexity_after.perplexity:.3f} ({utility.perplexity_increase:+.1%})."
        )
    ui.console.print(
        f"{record.wall_seconds:.1f} s, peak memory {record.peak_memory_bytes / 2**20:.0f} MB; "
        f"p0 for the KL terms: {record.kl_reference.kind} "
        f"({record.kl_reference.bytes / 2**20:.1f} MB)."
    )
