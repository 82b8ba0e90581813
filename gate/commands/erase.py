"""`codeeraser erase`: unlearn the memorized secrets and write a remediated model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gate import limits
from gate.commands.measure import corpus_options, corpus_spec, model_options

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from gate.unlearn.erase import Remediation
    from gate.unlearn.trainer import EpochLog

_METHODS = ("codeeraser", "cu", "ga")  # gate.unlearn.methods.METHODS, without importing torch


@click.command("erase")
@model_options
@corpus_options("--data", "The training data the findings come from (as given to scan).")
@click.option(
    "--findings",
    "findings_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Findings file written by `codeeraser scan` on the same data.",
)
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
@click.option(
    "--thresholds",
    "thresholds_spec",
    metavar="FILE|paper:MODEL",
    help="Forgetting thresholds (a file from `codeeraser calibrate`, or paper:<model>); "
    "use the ones the measurements were made against. Default: paper:codeparrot-small.",
)
@click.option(
    "--method",
    type=click.Choice(_METHODS),
    default="codeeraser",
    show_default=True,
    help="codeeraser: ascent on the secret tokens only, descent on the code around them, "
    "KL to the original; cu: ascent on whole windows with KL; ga: plain gradient ascent.",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=3e-6,
    show_default=True,
    help="AdamW learning rate (constant).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1, max=limits.MAX_EPOCHS),
    default=100,
    show_default=True,
    help="Most epochs (passes over the secrets still to forget).",
)
@click.option(
    "--batch-size",
    "batch_size",
    type=click.IntRange(min=1, max=limits.MAX_BATCH_SIZE),
    default=32,
    show_default=True,
    help="k: forget windows (and retain windows) per step.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="α: weight of the retain KL.",
)
@click.option(
    "--lambda",
    "lam",
    type=click.FloatRange(min=0),
    default=0.1,
    show_default=True,
    help="λ: weight of the KL terms.",
)
@click.option(
    "--gamma",
    type=click.FloatRange(min=0),
    default=0.1,
    show_default=True,
    help="γ: weight of the descent on the code around a secret (codeeraser).",
)
@click.option(
    "--ascend-on",
    type=click.Choice(["predicted", "all"]),
    default="predicted",
    show_default=True,
    help="Secret tokens ascended on (codeeraser): the ones the model still predicts "
    "greedily, or all of them (the paper; costs more utility).",
)
@click.option(
    "--patience",
    type=click.IntRange(min=0, max=limits.MAX_EPOCHS),
    default=5,
    show_default=True,
    help="Stop after this many epochs without a lower leak (0: never).",
)
@click.option(
    "--window-tokens",
    type=click.IntRange(min=2, max=limits.MAX_TOKENS),
    default=512,
    show_default=True,
    help="Forget window length (cut to the model's context).",
)
@click.option(
    "--retain-tokens",
    type=click.IntRange(min=2, max=limits.MAX_TOKENS),
    default=128,
    show_default=True,
    help="Retain window length (cut to the model's context).",
)
@click.option(
    "--retain-windows",
    type=click.IntRange(min=1, max=limits.MAX_WINDOWS),
    default=64,
    show_default=True,
    help="Retain windows drawn from the clean code.",
)
@click.option(
    "--retain",
    "retain_path",
    type=click.Path(path_type=Path),
    help="Clean code to keep the model's behaviour on (folder or JSONL). Default: the "
    "samples of --data that have no finding.",
)
@click.option(
    "--heldout",
    "heldout_path",
    type=click.Path(path_type=Path),
    help="Held-out code: held-out perplexity is measured before and after (in remediation.json).",
)
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
@click.option(
    "--prefix-tokens",
    type=click.IntRange(min=0, max=limits.MAX_TOKENS),
    default=128,
    show_default=True,
    help="Tokens of code before a secret the attacker prompts with (as in measure).",
)
@click.option(
    "--schedule",
    type=click.Choice(["alternating", "joint"]),
    default="alternating",
    show_default=True,
    help="alternating: an update on the forget batch, then one on the retain batch (the "
    "reference's); joint: one update from both losses.",
)
@click.option(
    "--kl-reference",
    "kl_reference",
    type=click.Choice(["auto", "cached", "frozen", "base"]),
    default="auto",
    show_default=True,
    help="Original model's log-probs: cached once, a frozen model copy (the reference's "
    "way), or the base model with the LoRA adapters off (exact, no memory; needs --lora). "
    "auto: base with --lora, else cached.",
)
@click.option(
    "--kl-cache",
    type=click.Choice(["auto", "full", "topk"]),
    default="auto",
    show_default=True,
    help="Cached log-probs: full vocabulary (exact), top-k + a tail bucket, or auto (full "
    "when it fits --kl-cache-mb).",
)
@click.option(
    "--kl-topk",
    type=click.IntRange(min=1, max=limits.MAX_TOP_K),
    default=64,
    show_default=True,
    help="Tokens kept per position by the top-k cache.",
)
@click.option(
    "--kl-cache-mb",
    type=click.IntRange(min=0, max=limits.MAX_CACHE_MB),
    default=512,
    show_default=True,
    help="Memory an exact cache may use before auto switches to top-k.",
)
@click.option(
    "--max-grad-norm",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Gradient clipping (0: off).",
)
@click.option(
    "--train-batch-tokens",
    type=click.IntRange(min=0, max=limits.MAX_BATCH_TOKENS),
    default=16384,
    show_default=True,
    help="Padded tokens per forward/backward micro-batch: a step's k windows are sorted by "
    "length and cut to fit, gradients accumulate, one update per step (0: no cut).",
)
@click.option(
    "--gradient-checkpointing",
    is_flag=True,
    help="Recompute activations in the backward pass (less memory, about a third more time).",
)
@click.option(
    "--mixed-precision",
    type=click.Choice(["no", "bf16", "fp16"]),
    default="no",
    show_default=True,
    help="Autocast forward passes to bf16/fp16 with float32 master weights (through "
    "Accelerate: pip install 'codeeraser[dist]').",
)
@click.option(
    "--lora",
    is_flag=True,
    help="Train LoRA adapters on the frozen model instead of every weight (pip install "
    "'codeeraser[lora]'); the output is the merged model.",
)
@click.option(
    "--lora-rank",
    type=click.IntRange(min=1, max=limits.MAX_RANK),
    default=16,
    show_default=True,
    help="LoRA rank r.",
)
@click.option(
    "--lora-alpha",
    type=click.FloatRange(min=0, min_open=True),
    default=32.0,
    show_default=True,
    help="LoRA alpha (the adapters' scale is alpha / r).",
)
@click.option(
    "--lora-target",
    "lora_targets",
    multiple=True,
    metavar="NAME",
    help="Module name to adapt (repeatable). Default per architecture: GPT-2 c_attn, "
    "c_proj, c_fc; Llama-style q/k/v/o_proj, gate/up/down_proj; else every linear layer.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the batch order and the retain sample.",
)
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
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=0, max=limits.MAX_EPOCHS),
    default=1,
    show_default=True,
    help="Checkpoint every N epochs (0: only when stopped by Ctrl-C or SIGTERM).",
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
    model_dir: Path,
    data: Path,
    fmt: str,
    text_field: str,
    id_field: str,
    findings_path: Path,
    measurements_path: Path,
    out_dir: Path,
    thresholds_spec: str | None,
    retain_path: Path | None,
    heldout_path: Path | None,
    heldout_findings: tuple[Path, ...],
    **settings: Any,
) -> None:
    from audit.calibrate import resolve_thresholds
    from audit.corpus import CorpusSpec
    from audit.findings import read_findings
    from audit.measurements import read_measurements
    from audit.model import check_model_dir
    from gate import ui
    from gate.commands.measure import launch_shard, thresholds_option
    from gate.paths import check_paths, path_option
    from gate.unlearn.checkpoint import work_dir
    from gate.unlearn.erase import check_output, select_forget_set

    check_paths(
        [
            *path_option("--model", model_dir, "folder", "model folder"),
            *path_option("--data", data, "data"),
            *path_option("--findings", findings_path, "file", "findings file"),
            *path_option("--measurements", measurements_path, "file", "measurements file"),
            *thresholds_option(thresholds_spec),
            *path_option("--retain", retain_path, "data"),
            *path_option("--heldout", heldout_path, "data"),
            *(g for p in heldout_findings for g in path_option("--heldout-findings", p, "file")),
        ],
        [
            *path_option("--out", out_dir, "folder"),
            *path_option("--out", work_dir(out_dir), "folder"),
        ],
    )
    check_model_dir(model_dir)
    check_output(out_dir, model_dir, settings["force"])
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
        heldout=CorpusSpec(heldout_path) if heldout_path else None,
        heldout_findings=heldout_findings,
    )
    record = _erase_interruptibly(
        model_dir,
        corpus_spec(data, fmt, text_field, id_field),
        findings,
        measurements,
        thresholds=thresholds,
        out_dir=out_dir,
        options=options,
        total=len(forget),
    )
    if not shard.is_main:
        return
    if not ui.is_quiet():
        _summary(record)
    click.echo(str(out_dir))


def _options(settings: dict[str, Any], **extra: Any) -> Any:
    from gate.unlearn.erase import EraseOptions
    from gate.unlearn.trainer import UnlearnConfig

    config_keys = {
        "method", "lr", "epochs", "batch_size", "alpha", "lam", "gamma", "patience",
        "window_tokens", "retain_tokens", "retain_windows", "schedule", "kl_cache",
        "kl_topk", "kl_cache_mb", "max_grad_norm", "seed", "ascend_on", "train_batch_tokens",
        "gradient_checkpointing", "mixed_precision", "lora", "lora_rank", "lora_alpha",
        "lora_targets",
    }  # fmt: skip
    chosen = {k: v for k, v in settings.items() if k in config_keys}
    chosen["lora_targets"] = tuple(chosen.get("lora_targets", ()))
    config = UnlearnConfig(
        **chosen,
        reference=settings["kl_reference"],
    )
    return EraseOptions(
        config=config,
        device=settings["device"],
        dtype=settings["dtype"],
        prefix_tokens=settings["prefix_tokens"],
        batch_tokens=settings["batch_tokens"],
        force=settings["force"],
        humaneval=settings["humaneval"],
        resume=settings["resume"],
        checkpoint_every=settings["checkpoint_every"],
        **extra,
    )


def _erase_interruptibly(*args: Any, out_dir: Path, total: int, **kwargs: Any) -> Remediation:
    """Run erase_model with a progress bar. Ctrl-C and SIGTERM (the CLI turns it into
    Ctrl-C) stop it at a checkpoint; erase_model says how to resume."""
    from gate import ui
    from gate.unlearn.erase import erase_model

    with ui.progress(click_column()) as progress:
        task = progress.add_task("erasing", total=kwargs["options"].config.epochs, status="")
        report = _reporter(progress, task, total)
        return erase_model(*args, out_dir=out_dir, report=report, **kwargs)


def click_column() -> Any:
    from rich.progress import TextColumn

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


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return sum(float(r[key]) for r in rows) / max(1, len(rows))


def _summary(record: Remediation) -> None:
    from gate import ui

    before = [o["before"] for o in record.outcomes]
    after = [o["after"] for o in record.outcomes if o["after"] is not None]
    limits = record.thresholds
    ui.console.print(
        f"{record.method}: {record.forgotten} of {len(before)} findings forgotten in "
        f"{record.epochs} epochs ({record.stop_reason}; best epoch {record.best_epoch})."
    )
    ui.console.print(
        f"Extracted greedily: {sum(b['extracted_greedy'] for b in before)} → "
        f"{sum(a['extracted_greedy'] for a in after)}; mean MA {_mean(before, 'ma'):.3f} → "
        f"{_mean(after, 'ma'):.3f} (threshold {limits['ma']:.3f}); mean EL_10 "
        f"{_mean(before, 'el_10'):.3f} → {_mean(after, 'el_10'):.3f} "
        f"(threshold {limits['el_10']:.3f})."
    )
    if "humaneval_before" in record.utility:
        ui.console.print(
            f"HumanEval pass@1: {record.utility['humaneval_before']['pass_at_1']:.3f} → "
            f"{record.utility['humaneval_after']['pass_at_1']:.3f} "
            f"({record.utility['humaneval_after']['problems']} problems)."
        )
    if "perplexity_change" in record.utility:
        change = record.utility["perplexity_change"]
        ui.console.print(
            f"Held-out perplexity: {record.utility['perplexity_before']['perplexity']:.3f} → "
            f"{record.utility['perplexity_after']['perplexity']:.3f} ({change:+.1%})."
        )
    ui.console.print(
        f"{record.wall_seconds:.1f} s, peak memory {record.peak_memory_bytes / 2**20:.0f} MB; "
        f"p0 for the KL terms: {record.kl_reference['kind']} "
        f"({record.kl_reference['bytes'] / 2**20:.1f} MB)."
    )
