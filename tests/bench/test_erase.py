"""bench/erase.py: the side-by-side table of the shipped default and the reference loop."""

from __future__ import annotations

from typing import Any

from tests.bench import load_script

erase = load_script("erase")


def _run(variant: str, seconds: float, forgotten: int, ppl_after: float) -> dict[str, Any]:
    return {
        "variant": variant,
        "lr": 3.2e-4,
        "epochs": 4,
        "stop_reason": "every finding forgotten",
        "forgotten": forgotten,
        "after": {"findings": 10, "extracted_greedy": 10 - forgotten, "extracted_sampled": 1},
        "perplexity_before": 2.0,
        "perplexity_after": ppl_after,
        "seconds": seconds,
        "seconds_per_forgotten": seconds / forgotten if forgotten else None,
    }


def test_ratio_meets_the_target_at_equal_or_better_utility() -> None:
    lines = erase.default_verdict(
        _run("default", 10, 10, 2.02), _run("reference-default", 60, 10, 2.04)
    )
    assert lines[0].endswith("6.00× (meets 3×)")
    assert "+1.00% against reference at lr 0.00032 +2.00%" in lines[1]
    assert lines[1].endswith("equal or better")


def test_ratio_under_the_target_and_worse_utility() -> None:
    lines = erase.default_verdict(
        _run("default", 40, 8, 2.1), _run("reference-default", 50, 5, 2.0)
    )
    assert lines[0].endswith("2.00× (misses 3×)")
    assert lines[1].endswith("worse")


def test_nothing_forgotten_gives_no_ratio() -> None:
    ours = erase.default_verdict(_run("default", 10, 0, 2.0), _run("reference-default", 10, 5, 2.0))
    theirs = erase.default_verdict(
        _run("default", 10, 5, 2.0), _run("reference-default", 10, 0, 2.0)
    )
    assert "target not met" in ours[0]
    assert "no ratio" in theirs[0]


def test_table_has_a_row_per_loop() -> None:
    runs = [_run("default", 10, 10, 2.02), _run("reference-default", 60, 5, 2.0)]
    table = erase.default_table(runs)
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 3  # header and two loops
    assert "| 5/10 | 5, 1 | +0.00% | 60.0 | 12.000 |" in rows[2]
    assert "12.00× (meets 3×)" in table


def test_table_gives_a_verdict_per_reference_run() -> None:
    slower = {**_run("reference-default", 90, 5, 2.0), "lr": 1e-3}
    runs = [_run("default", 10, 10, 2.02), _run("reference-default", 60, 5, 2.0), slower]
    table = erase.default_table(runs)
    assert "reference at lr 0.00032 / default, s per forgotten sample: 12.00×" in table
    assert "reference at lr 0.001 / default, s per forgotten sample: 18.00×" in table
