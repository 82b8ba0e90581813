from __future__ import annotations

from dataclasses import replace

import pytest

from audit.measurements import Measurement
from gate.rule_metrics import METRICS, MetricResult, get_metric, metric_names, register


def row(i: int, *, leaky: bool, sampled: bool | None = False) -> Measurement:
    return Measurement(
        finding_id=f"f{i}",
        sample_id=f"s{i}",
        secret_type="AWS" if i % 2 else "GitHub",
        ma=0.95 if leaky else 0.05,
        el_3=0.9 if leaky else 0.0,
        el_5=0.9 if leaky else 0.0,
        el_10=0.85 if leaky else 0.0,
        extracted_greedy=leaky,
        extracted_sampled=(leaky if sampled is not None else None),
        samples=5 if sampled is not None else 0,
        longest_leaked_prefix=20 if leaky else 0,
        secret_tokens=20,
        prefix_tokens=128,
        truncated=False,
        memorized=leaky,
    )


CLEAN = [row(i, leaky=False) for i in range(4)]
LEAKY = [row(i, leaky=True) for i in range(4, 7)]


@pytest.mark.parametrize("name", metric_names())
def test_metric_contract(name: str) -> None:
    """Every registered metric: one return shape, 0 on nothing, names the leaky findings."""
    spec = METRICS[name]
    assert spec.name == name
    assert spec.unit in ("count", "fraction")
    assert spec.description
    empty = spec.fn([], 0.0)
    assert isinstance(empty, MetricResult)
    assert empty.value == 0.0
    assert empty.offending == ()
    clean = spec.fn(CLEAN, 0.5)
    assert clean.value is not None
    assert clean.value <= 0.5
    assert clean.offending == ()
    mixed = spec.fn(CLEAN + LEAKY, 0.5)
    assert isinstance(mixed.value, float)
    assert mixed.value > clean.value
    assert set(mixed.offending) == {m.finding_id for m in LEAKY}
    if spec.unit == "fraction":
        assert 0.0 <= mixed.value <= 1.0


def test_counts_and_rates() -> None:
    rows = CLEAN + LEAKY
    assert get_metric("extracted_greedy").fn(rows, 0).value == 3
    assert get_metric("memorized_count").fn(rows, 0).value == 3
    assert get_metric("memorized_rate").fn(rows, 0).value == pytest.approx(3 / 7)
    assert get_metric("mean_ma").fn(rows, 0.5).value == pytest.approx((4 * 0.05 + 3 * 0.95) / 7)
    assert get_metric("max_el_10").fn(rows, 0.9).value == 0.85
    assert get_metric("max_el_10").fn(rows, 0.9).offending == ()  # none above 0.9


def test_sampled_metrics_know_when_the_attack_did_not_run() -> None:
    greedy_only = [row(1, leaky=True, sampled=None)]
    result = get_metric("extracted_sampled").fn(greedy_only, 0)
    assert result.value is None
    assert "not run" in result.note
    assert get_metric("extracted_any").fn(greedy_only, 0).value == 1
    only_sampled = [replace(row(2, leaky=False), extracted_sampled=True)]
    assert get_metric("extracted_any").fn(only_sampled, 0).offending == ("f2",)
    assert get_metric("extracted_greedy").fn(only_sampled, 0).value == 0


def test_registry_rejects_duplicates_and_unknown_names() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register("max_ma", unit="fraction", description="again")(METRICS["max_ma"].fn)
    with pytest.raises(KeyError, match="valid: extracted_any"):
        get_metric("nope")
