"""`codeeraser demo`: build (or reuse) the demo corpus and model and show what it memorized."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from gate import ui
from gate.commands.gate import run_from_options
from gate.paths import check_paths, path_option

if TYPE_CHECKING:
    from gate.demo.build import DemoBuild

# gate.demo.build.PRESETS, listed here to keep --help free of torch
PRESET_NAMES = ("tiny", "demo", "gpt2-alt", "llama-49k", "gpt2-gen", "llama-gen")


@click.command("demo")
@click.option(
    "--preset",
    type=click.Choice(PRESET_NAMES),
    default="demo",
    show_default=True,
    help="demo: 20 secrets in 300 files (build ~2.5 min on 2 cores); tiny: 6 secrets (~40 s); "
    "test models beyond the demo: gpt2-alt (another GPT-2, 27 secrets with 1-12 copies) and "
    "llama-49k (a Llama with a 49,152-token vocabulary).",
)
@click.option(
    "--build-only",
    is_flag=True,
    help="Only build (or reuse) the corpus and model and print the figures.",
)
@click.option("--rebuild", is_flag=True, help="Build again even if a cached build exists.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CODEERASER_CACHE_DIR",
    help="Cache root (builds go to DIR/demo/<preset>-<hash>). "
    "[default: $XDG_CACHE_HOME/codeeraser or ~/.cache/codeeraser]",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of corpus and training.")
@click.option(
    "--policy",
    "policy_source",
    default="demo",
    show_default=True,
    help="Policy for the gate run (a file, or a built-in name).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("codeeraser-demo"),
    show_default=True,
    help="Run folder of the gate: stage outputs, remediated model, record and reports.",
)
@click.option("--force", is_flag=True, help="Write into an --out folder that is not a run folder.")
@click.pass_context
def demo(
    ctx: click.Context,
    /,
    *,
    preset: str,
    build_only: bool,
    rebuild: bool,
    cache_dir: Path | None,
    seed: int,
    policy_source: str,
    out_dir: Path,
    force: bool,
) -> None:
    """Run the whole gate on a demo model that memorized planted secrets.

    Builds (or reuses) a corpus of excerpts of this Python's standard library with
    fake secrets of several types planted and repeated, and a small GPT-2 trained on
    it until it reproduces them; a held-out split holds control secrets the model
    never saw. Prints the build's figures, then runs `codeeraser gate` on it with the
    demo policy: the model fails, CodeEraser erases the secrets, the remediated model
    is measured again and the report is written to --out. Builds are cached.

    With --build-only, prints the model folder on stdout and stops.

    Exit codes: the gate's (0 passed, possibly after remediation; 1 failed), 2 bad
    option, 3 internal error.
    """
    from gate.demo.build import build_demo, build_dir, cache_root

    check_paths([], path_option("--cache-dir", cache_root(cache_dir), "folder"))
    target = build_dir(preset, cache_dir, seed)
    if (rebuild or not target.is_dir()) and not ui.is_quiet():
        ui.console.print(f"Building the {preset} demo into {ui.safe(target)}; cached afterwards")
    build = build_demo(preset, cache_dir=cache_dir, seed=seed, rebuild=rebuild)
    if not ui.is_quiet():
        ui.console.print(figures_table(build))
    if build_only:
        click.echo(str(build.model_dir))
        return
    ctx.exit(run_demo_gate(build, policy_source, out_dir, force))


def run_demo_gate(build: DemoBuild, policy_source: str, out_dir: Path, force: bool) -> int:
    """`codeeraser gate` on the demo build; its held-out split is the utility check's code."""

    record = run_from_options(
        model=str(build.model_dir),
        data=str(build.corpus_dir),
        policy_source=policy_source,
        out_dir=out_dir,
        unseen=None,
        heldout=build.heldout_dir,
        device="auto",
        dtype="auto",
        batch_tokens=16384,
        jobs=0,
        force=force,
    )
    return record.exit_code


def figures_table(build: DemoBuild) -> Table:
    """The build's figures as a two-column table (no secret values, only counts)."""

    f = build.figures
    table = Table(title=f"demo model ({build.preset.name}, seed {build.seed})", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    rows = [
        ("model", ui.safe(build.model_dir)),
        ("parameters", f"{f.parameters:,}"),
        ("training", f"{f.steps} steps, {f.train_seconds:.0f} s (final loss {f.final_loss:.3f})"),
        (
            "planted secrets",
            f"{f.planted_secrets} ({f.planted_occurrences} occurrences with the copies)",
        ),
        ("planted: memorization accuracy", f"{f.planted_ma:.3f} (mean)"),
        ("planted: extracted verbatim", f"{f.planted_extracted}/{f.planted_secrets} (greedy)"),
        ("held-out controls: extracted", f"{f.controls_extracted}/{f.controls}"),
        ("held-out controls: memorization accuracy", f"{f.controls_ma:.3f} (mean)"),
        ("build", f"{f.build_seconds:.0f} s" + (" (cached: reused)" if build.cached else "")),
    ]
    for row in rows:
        table.add_row(*row)
    return table
