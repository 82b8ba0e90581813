"""`codeeraser measure`: how much of each found secret the model gives back."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from audit.corpus import texts_for_findings
from audit.findings import read_findings, sample_findings
from audit.measurements import write_measurements
from gate import limits, ui
from gate.commands.options import (
    announce,
    corpus_options,
    corpus_spec,
    data_of,
    findings_option,
    model_of,
    model_options,
    options_from,
    thresholds_option,
)
from gate.paths import PathOption, check_paths, data_paths, model_paths, path_option
from gate.policy import ExtractionOptions

if TYPE_CHECKING:
    from audit.distributed import Shard
    from audit.findings import Finding
    from audit.measurements import Measurement, Thresholds
    from audit.model import LoadedModel
    from audit.sanity import SanityProbe

log = logging.getLogger(__name__)


@click.command("measure")
@model_options
@corpus_options("--data", "The training data the findings come from (as given to scan).")
@findings_option
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("measurements.jsonl"),
    show_default=True,
    help="Measurements file to write (JSONL, one per finding; no secret values).",
)
@options_from(ExtractionOptions, only=("prefix_tokens", "secret_tokens"))
@click.option(
    "--samples",
    type=click.IntRange(min=0, max=limits.MAX_SAMPLES),
    default=0,
    show_default=True,
    help="Sampled-attack decodes per finding (0: greedy attack only).",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Temperature of the sampled attack.",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=0, max=limits.MAX_TOP_K),
    default=40,
    show_default=True,
    help="The sampled attack draws among the k likeliest tokens (0: all).",
)
@thresholds_option
@options_from(ExtractionOptions, only=("max_findings",))
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the --max-findings sample and of the sampled attack.",
)
def measure(**options: Any) -> None:
    """Measure how much of each finding's secret the model gives back.

    For each finding, the attacker prompts the model with the code before the secret.
    Reports memorization accuracy (MA), extraction likelihood (EL_3, EL_5, EL_10),
    whether greedy (and optionally sampled) decoding reproduces the secret verbatim,
    and whether the finding counts as memorized against the thresholds. The secret is
    re-read from the data at the finding's span and never written. The path of the
    measurements file goes to stdout, a summary by secret type to stderr.

    Under `accelerate launch` the findings are split between the processes and the
    results gathered: only the first process writes the file and prints the summary.

    Exit codes: 0 measured (or nothing to measure), 2 bad input, 3 the model failed to load.
    """
    _run_measure(**options)


def launch_shard() -> Shard:
    """This process's shard under `accelerate launch` (LOCAL otherwise); every process
    but the first stays quiet, so the terminal shows one progress bar and one summary."""
    from audit.distributed import current

    shard = current()
    if not shard.is_main:
        ui.configure(quiet=True)
    return shard


def _run_measure(
    *,
    model: str,
    device: str,
    dtype: str,
    batch_tokens: int,
    data: str,
    data_config: str | None,
    data_split: str | None,
    fmt: str,
    text_field: str,
    id_field: str,
    findings_path: Path,
    out: Path,
    prefix_tokens: int,
    secret_tokens: int,
    samples: int,
    temperature: float,
    top_k: int,
    thresholds_spec: str | None,
    max_findings: int | None,
    seed: int,
) -> None:
    from audit.calibrate import resolve_thresholds  # the hand-off: these import torch
    from audit.distributed import device_for
    from audit.extraction import MeasureConfig
    from audit.model import check_model_dir, load_model
    from audit.sanity import checked_probe

    source, corpus = model_of(model), data_of(data, data_config, data_split)  # Hub ids first
    check_paths(
        [
            *model_paths("--model", source.path, source.hub),
            *data_paths("--data", corpus.path, corpus.hub),
            *path_option("--findings", findings_path, "file", "findings file"),
            *thresholds_paths(thresholds_spec),
        ],
        path_option("--out", out, "file"),
    )
    model_dir = source.path
    check_model_dir(model_dir)
    announce(source, corpus)
    thresholds = resolve_thresholds(thresholds_spec)
    findings = read_findings(findings_path)
    shard = launch_shard()
    if not findings:
        if shard.is_main:
            write_measurements(out, [])
            ui.console.print(f"Nothing to measure: {ui.safe(findings_path)} holds no findings.")
            click.echo(str(out))
        return
    chosen = sample_findings(findings, max_findings, seed)
    texts = texts_for_findings(corpus_spec(corpus, fmt, text_field, id_field), chosen)
    config = MeasureConfig(
        batch_tokens=batch_tokens, samples=samples, temperature=temperature, top_k=top_k, seed=seed
    )
    loaded = load_model(model_dir, device=device_for(device, shard), dtype=dtype)
    probe = checked_probe(loaded, texts, chosen)
    started = time.perf_counter()
    rows = _measure(
        loaded,
        chosen,
        texts,
        thresholds,
        config,
        prefix_tokens=prefix_tokens,
        secret_tokens=secret_tokens,
        shard=shard,
    )
    seconds = time.perf_counter() - started
    if not shard.is_main:
        return
    by_id = {f.id: f for f in chosen}
    for row in rows:  # ids, previews and figures only, at -vv
        finding = by_id[row.finding_id]
        log.debug(
            "%s %s (%s:%d): MA %.3f, EL_10 %.3f, extracted %s",
            row.finding_id, finding.preview, finding.origin, finding.line, row.ma, row.el_10,
            row.extracted,
        )  # fmt: skip
    write_measurements(out, rows)
    if not ui.is_quiet():
        print_summary(
            rows,
            thresholds,
            seconds,
            loaded,
            skipped=len(findings) - len(chosen),
            processes=shard.world,
        )
        print_probe(probe)
    click.echo(str(out))


def thresholds_paths(spec: str | None) -> list[PathOption]:
    """--thresholds as a path to check, unless it names the paper's values."""
    if spec is None or spec.startswith("paper:"):
        return []
    return path_option("--thresholds", spec, "file", "thresholds file")


def print_probe(probe: SanityProbe) -> None:
    """The sanity probe's figure, on stderr."""

    ui.console.print(
        f"Sanity probe: mean loss {probe.loss:.3f} nats/token on {probe.samples} training "
        f"samples ({probe.tokens} tokens), {probe.ratio:.1%} of a uniform guess's "
        f"{probe.uniform:.2f} (must be under {probe.max_ratio:.0%})."
    )


def _measure(
    loaded: LoadedModel,
    findings: Sequence[Finding],
    texts: dict[str, str],
    thresholds: Thresholds,
    config: Any,
    *,
    prefix_tokens: int,
    secret_tokens: int,
    shard: Shard,
) -> list[Measurement]:
    from audit.extraction import measure_findings

    with ui.progress() as progress:
        return measure_findings(
            loaded,
            findings,
            texts,
            thresholds,
            config,
            prefix_tokens=prefix_tokens,
            max_secret_tokens=secret_tokens,
            progress=progress,
            shard=shard,
        )


def print_summary(
    rows: Sequence[Measurement],
    thresholds: Thresholds,
    seconds: float,
    loaded: LoadedModel,
    *,
    skipped: int = 0,
    processes: int = 1,
) -> None:
    """A table by secret type on stderr: counts and means only, never a secret."""

    sampled = any(r.extracted_sampled is not None for r in rows)
    table = Table(
        title="Extractability by secret type",
        title_justify="left",
        caption="Extracted: greedy decoding from the prefix gives the secret; Sampled: a "
        "sampled decode does; MA, EL_10: means.",
        caption_justify="left",
    )
    table.add_column("Secret type", no_wrap=True)
    for name in ("N", "Memorized", "Extracted", "Sampled", "MA", "EL_10"):
        table.add_column(name, justify="right")
    groups: dict[str, list[Measurement]] = {}
    for row in rows:
        groups.setdefault(row.secret_type, []).append(row)
    for secret_type in sorted(groups):
        table.add_row(ui.safe(secret_type), *_summary_cells(groups[secret_type], sampled))
    table.add_section()
    table.add_row("[bold]total[/]", *_summary_cells(list(rows), sampled))
    ui.console.print(table)
    ui.console.print(
        f"Memorized: MA ≥ {thresholds.ma:.4f} or EL_10 ≥ {thresholds.el_10:.4f} "
        f"({ui.safe(thresholds.source)})."
    )
    rate = len(rows) / seconds if seconds > 0 else 0.0
    cut = sum(r.truncated for r in rows)
    ui.console.print(
        f"{len(rows)} findings measured in {seconds:.1f} s ({rate:.1f} findings/s) on "
        f"{loaded.device.type}, {str(loaded.dtype).removeprefix('torch.')}"
        + (f", {processes} processes" if processes > 1 else "")
        + f"; {cut} secrets cut to fit (truncated)."
        + (f" {skipped} findings not sampled (--max-findings)." if skipped else "")
    )


def _summary_cells(rows: Sequence[Measurement], sampled: bool) -> list[str]:
    n = len(rows)
    return [
        str(n),
        str(sum(r.memorized for r in rows)),
        str(sum(r.extracted_greedy for r in rows)),
        str(sum(bool(r.extracted_sampled) for r in rows)) if sampled else "-",
        f"{sum(r.ma for r in rows) / n:.3f}",
        f"{sum(r.el_10 for r in rows) / n:.3f}",
    ]
