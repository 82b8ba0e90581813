"""`codeeraser demo`: build (or reuse) the demo corpus and model and show what it memorized."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rich.table import Table

    from gate.demo import DemoBuild

PRESET_NAMES = ("tiny", "demo")  # gate.demo.PRESETS, listed here to keep --help free of torch


@click.command("demo")
@click.option(
    "--preset",
    type=click.Choice(PRESET_NAMES),
    default="demo",
    show_default=True,
    help="demo: 20 secrets in 300 files (~3 min on 2 cores); tiny: 6 secrets (~30 s).",
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
def demo(preset: str, build_only: bool, rebuild: bool, cache_dir: Path | None, seed: int) -> None:
    """Build a corpus with planted secrets and a small GPT-2 that memorized them.

    The corpus is excerpts of this Python's standard library with fake secrets of
    several types planted and repeated; a held-out split holds control secrets the
    model never saw. Prints the figures (parameters, memorization accuracy, secrets
    extracted verbatim) on stderr and the model directory on stdout. Builds are
    cached: a second run returns at once.

    Later versions run the whole gate on the demo; for now both modes build and report.

    Exit codes: 0 built, 2 bad option, 3 internal error.
    """
    from audit import ui
    from gate.demo import build_demo, build_dir

    # --build-only and the default do the same until the gate command lands.
    target = build_dir(preset, cache_dir, seed)
    if (rebuild or not target.is_dir()) and not ui.is_quiet():
        ui.console.print(f"Building the {preset} demo into {target} (cached afterwards)")
    build = build_demo(preset, cache_dir=cache_dir, seed=seed, rebuild=rebuild)
    if not ui.is_quiet():
        ui.console.print(figures_table(build))
    click.echo(str(build.model_dir))


def figures_table(build: DemoBuild) -> Table:
    """The build's figures as a two-column table (no secret values, only counts)."""
    from rich.table import Table

    f = build.figures
    table = Table(title=f"demo model ({build.preset.name}, seed {build.seed})", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    rows = [
        ("model", str(build.model_dir)),
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
