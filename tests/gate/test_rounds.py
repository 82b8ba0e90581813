"""The closed loop's decisions, with the erase and the measuring stubbed at the boundary
the pipeline passes in: a round's "model" is the set of findings it still leaks."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from audit.findings import Finding
from audit.measurements import Measurement
from gate.report import render_html, render_markdown
from gate.rounds import RoundResult, at_risk, run_rounds
from gate.verdict import evaluate
from tests.gate import fakes

POLICY = fakes.default_policy()
ITEMS = fakes.findings(fakes.corpus())
BEFORE = fakes.measure(fakes.LEAKY, ITEMS)


def _leaking(leaks: Mapping[str, fakes.FakeModel]) -> list[Measurement]:
    return [leaks.get(f.id, fakes.CLEAN)(f, 128) for f in ITEMS]


def _world(
    after_round: Callable[[int, list[str]], dict[str, fakes.FakeModel]],
    ppl_after: float = 10.1,
    calls: list[list[str]] | None = None,
) -> Callable[[int, list[str]], RoundResult]:
    """A round erases what it is given; `after_round` says what leaks after it."""
    figures = fakes.utility_figures(perplexity=(10.0, ppl_after))

    def step(number: int, forget: list[str]) -> RoundResult:
        if calls is not None:
            calls.append(forget)
        rows = _leaking(after_round(number, forget))
        verdict = evaluate(rows, ITEMS, POLICY, figures)
        remediation = fakes.remediation(POLICY, ITEMS, rows, forget, figures)
        return RoundResult(remediation, rows, verdict, 1.0, 0.5)

    return step


def _ids(findings: list[Finding]) -> list[str]:
    return [f.id for f in findings]


def test_a_secret_that_becomes_extractable_after_round_1_is_erased_in_round_2() -> None:
    first, late = _ids(ITEMS[:2]), ITEMS[2].id  # `late` leaked nothing before round 1

    def after(number: int, forget: list[str]) -> dict[str, fakes.FakeModel]:
        return {} if late in forget else {late: fakes.LEAKY}  # freed by erasing the others

    calls: list[list[str]] = []
    outcome = run_rounds(
        first, _world(after, calls=calls), before=BEFORE, max_rounds=3, target="at-risk"
    )
    assert len(outcome.rounds) == 2
    assert calls == [first, [*first, late]]  # round 2 continues with the new offender added
    assert outcome.last.verdict.passed
    one, two = outcome.rounds
    assert (one.forget, one.added, one.extracted_after) == (2, 2, 1)
    assert one.decision == "next round: 1 more findings at risk"
    assert (two.forget, two.added, two.extracted_after) == (3, 1, 0)
    assert two.decision == "stop: the policy passes"
    assert not next(r for r in one.rules if r.rule == "no-greedy-extraction").passed


def test_the_rounds_are_bounded() -> None:
    def after(number: int, forget: list[str]) -> dict[str, fakes.FakeModel]:
        return {ITEMS[0].id: fakes.LEAKY}  # never goes

    outcome = run_rounds(
        _ids(ITEMS[:1]), _world(after), before=BEFORE, max_rounds=2, target="at-risk"
    )
    assert len(outcome.rounds) == 2
    assert outcome.rounds[-1].decision == "stop: 2 rounds run (remediation.max_rounds)"
    assert not outcome.last.verdict.passed


def test_a_round_that_leaks_no_less_stops_the_loop() -> None:
    def after(number: int, forget: list[str]) -> dict[str, fakes.FakeModel]:
        return {ITEMS[0].id: fakes.LEAKY} if number == 1 else dict.fromkeys(forget, fakes.LEAKY)

    outcome = run_rounds(
        _ids(ITEMS[:2]), _world(after), before=BEFORE, max_rounds=5, target="at-risk"
    )
    assert [r.decision for r in outcome.rounds] == [
        "next round: 0 more findings at risk",  # round 1 leaked less than the original
        "stop: the round leaked no less than before and nothing new is at risk",
    ]


def test_a_spent_utility_budget_stops_the_loop() -> None:
    def after(number: int, forget: list[str]) -> dict[str, fakes.FakeModel]:
        return {ITEMS[1].id: fakes.LEAKY}

    step = _world(after, ppl_after=11.0)  # +10% against the default policy's 5%
    outcome = run_rounds(_ids(ITEMS[:1]), step, before=BEFORE, max_rounds=5, target="at-risk")
    assert [r.decision for r in outcome.rounds] == ["stop: the utility budget is spent"]
    assert outcome.rounds[0].perplexity_increase == pytest.approx(0.1)


def test_at_risk_takes_memorized_and_extracted_and_offending_only_the_rule_breakers() -> None:
    leaks = {ITEMS[0].id: fakes.LEAKY, ITEMS[1].id: fakes.PARTLY}  # PARTLY: memorized only
    rows = _leaking(leaks)
    verdict = evaluate(rows, ITEMS, POLICY)
    assert at_risk(rows, verdict, "at-risk") == [ITEMS[0].id, ITEMS[1].id]
    only_rule = POLICY.model_copy(update={"rules": POLICY.rules[:1]})  # greedy extraction
    verdict = evaluate(rows, ITEMS, only_rule)
    assert at_risk(rows, verdict, "offending") == [ITEMS[0].id]


def test_the_report_shows_every_round_and_the_target() -> None:
    def after(number: int, forget: list[str]) -> dict[str, fakes.FakeModel]:
        return {} if ITEMS[2].id in forget else {ITEMS[2].id: fakes.LEAKY}

    outcome = run_rounds(
        _ids(ITEMS[:2]), _world(after), before=BEFORE, max_rounds=3, target="at-risk"
    )
    record = fakes.build_record(fakes.LEAKY, fakes.CLEAN)
    record.rounds, record.remediation_target = outcome.rounds, "at-risk"
    page = render_html(record)
    table = page[page.index('id="rounds"') :]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == 3  # the header and one row per round
    assert "next round: 1 more findings at risk" in table
    assert "no-greedy-extraction" in table  # round 1's failing rule
    assert "remediation.target: at-risk" in page
    assert "Rounds: 2" in render_markdown(record)
