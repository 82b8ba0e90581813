"""`codeeraser calibrate`: forgetting thresholds from code the model never saw."""

from __future__ import annotations

import time
from pathlib import Path

import click

from audit.corpus import CorpusSpec
from audit.io import atomic_write_json
from audit.redact import redact_path
from gate import limits, ui
from gate.commands.measure import print_probe
from gate.commands.options import (
    announce,
    corpus_options,
    corpus_spec,
    model_of,
    model_options,
)
from gate.paths import check_paths, model_paths, path_option


@click.command("calibrate")
@model_options
@corpus_options(
    "--unseen",
    "Code the model never saw (e.g. published after its training data was collected).",
    hub=False,
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("thresholds.json"),
    show_default=True,
    help="Thresholds file to write (give it to measure --thresholds, or to a policy).",
)
@click.option(
    "--data",
    "training_data",
    type=click.Path(path_type=Path),
    help="The model's training data (folder or JSONL), for the sanity probe: the model's "
    "loss on its first samples must be well under a uniform guess's. Without it only the "
    "checkpoint is checked (wrong weights could only lower the thresholds).",
)
@click.option(
    "--sequences",
    type=click.IntRange(min=1, max=limits.MAX_WINDOWS),
    default=64,
    show_default=True,
    help="Unseen sequences to score at most (the first of each sample long enough).",
)
@click.option(
    "--sequence-tokens",
    type=click.IntRange(min=2, max=limits.MAX_TOKENS),
    default=128,
    show_default=True,
    help="Tokens per sequence (the paper's 128; cut to the model's context).",
)
def calibrate(
    *,
    model: str,
    device: str,
    dtype: str,
    batch_tokens: int,
    data: Path,
    fmt: str,
    text_field: str,
    id_field: str,
    out: Path,
    training_data: Path | None,
    sequences: int,
    sequence_tokens: int,
) -> None:
    """Compute forgetting thresholds: the mean MA and EL_10 the model shows on unseen code.

    Following the paper, a secret counts as forgotten once its MA and EL_10 fall to
    what the model scores on code it never saw. Each sequence's first token is the
    prompt; MA is the share of the following tokens predicted greedily, EL_n the
    extraction likelihood over the sequence. The thresholds file holds the means
    and every sequence's figures; its path goes to stdout.

    With --data (the model's training data), the model must first pass the sanity
    probe on its first samples; its figure goes into the thresholds file.

    Exit codes: 0 written, 2 bad input (no sample long enough), 3 the model failed to
    load, does not match its config, or fails the sanity probe.
    """
    from audit.calibrate import calibrate as run_calibration
    from audit.extraction import MeasureConfig
    from audit.model import check_model_dir, load_model
    from audit.sanity import corpus_probe

    source = model_of(model)  # a Hub id is resolved before the paths are checked
    check_paths(
        [
            *model_paths("--model", source.path, source.hub),
            *path_option("--unseen", data, "data"),
            *path_option("--data", training_data, "data"),
        ],
        path_option("--out", out, "file"),
    )
    model_dir = source.path
    check_model_dir(model_dir)
    announce(source)
    spec = corpus_spec(data, fmt, text_field, id_field)
    loaded = load_model(model_dir, device=device, dtype=dtype)  # every tensor accounted for
    probe = corpus_probe(loaded, CorpusSpec(training_data)) if training_data else None
    started = time.perf_counter()
    with ui.progress() as progress:
        result = run_calibration(
            loaded.model,
            loaded.tokenizer,
            spec,
            sequence_tokens=sequence_tokens,
            max_sequences=sequences,
            config=MeasureConfig(batch_tokens=batch_tokens),
            progress=progress,
        )
    sanity = {"sanity": probe.to_dict()} if probe else {}
    hub = {"model_hub": source.hub.model_dump()} if source.hub else {}
    atomic_write_json(out, {**result.to_dict(), "model": redact_path(model_dir), **hub, **sanity})
    if not ui.is_quiet():
        found = result.sequences
        ui.console.print(
            f"Thresholds from {len(found)} unseen sequences of {found[0].tokens} tokens "
            f"({time.perf_counter() - started:.1f} s): MA {result.thresholds.ma:.4f}, "
            f"EL_10 {result.thresholds.el_10:.4f} (EL_3 {result.el_3:.4f}, EL_5 {result.el_5:.4f})."
        )
        if probe is not None:
            print_probe(probe)
    click.echo(str(out))
