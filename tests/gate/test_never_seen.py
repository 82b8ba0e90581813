"""The erased secrets' MA against never-seen secrets' of the same types."""

from __future__ import annotations

from dataclasses import replace

import pytest

from audit.measurements import Measurement
from gate.never_seen import RULE, compare, never_seen_rule
from gate.report import render_html
from tests.gate import fakes

ITEMS = fakes.findings(fakes.corpus())


def _row(index: int, ma: float, kind: str | None = None) -> Measurement:
    m = fakes.CLEAN(ITEMS[index % len(ITEMS)])
    return replace(m, finding_id=f"f{index}", ma=ma, secret_type=kind or m.secret_type)


def test_only_shared_types_are_compared_and_the_gap_is_their_mean_difference() -> None:
    erased = [_row(0, 0.5, "A"), _row(1, 0.3, "A"), _row(2, 0.9, "B")]
    controls = [_row(3, 0.2, "A"), _row(4, 0.4, "A"), _row(5, 0.1, "C")]
    result = compare(erased, controls)
    assert (result.erased, result.never_seen) == (2, 2)
    assert result.erased_ma == pytest.approx(0.4)
    assert result.never_seen_ma == pytest.approx(0.3)
    assert result.gap == pytest.approx(0.1)
    assert [t.secret_type for t in result.by_type] == ["A"]
    assert result.unmatched_types == ["B"]


@pytest.mark.parametrize(("margin", "passed"), [(0.05, False), (0.1001, True)])
def test_the_rule_holds_the_gap_to_the_margin(margin: float, passed: bool) -> None:
    result = compare([_row(0, 0.5, "A")], [_row(1, 0.4, "A")])
    rule = never_seen_rule(result, margin)
    assert (rule.rule, rule.passed, rule.severity) == (RULE, passed, "block")


def test_no_comparison_fails_the_rule() -> None:
    rule = never_seen_rule(compare([_row(0, 0.5, "A")], [_row(1, 0.4, "B")]), 1.0)
    assert rule.value is None
    assert not rule.passed
    assert not never_seen_rule(None, 1.0).passed


def test_the_report_shows_the_comparison() -> None:
    record = fakes.build_record(fakes.LEAKY, fakes.CLEAN)
    record.never_seen = compare([_row(0, 0.25, "A")], [_row(1, 0.2, "A"), _row(2, 0.3, "A")])
    page = render_html(record)
    assert "Against never-seen secrets" in page
    assert "0.250 (1 findings)" in page
    assert "Gap: +0.000" in page
