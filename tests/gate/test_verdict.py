from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from audit.findings import Finding
from audit.measurements import Measurement
from gate.policy import Policy, load_policy
from gate.record import VerdictInfo
from gate.verdict import UtilityFigures, evaluate, worst_case
from tests.gate import fakes


def policy_from(tmp_path: Path, text: str) -> Policy:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    return load_policy(path)


@pytest.fixture(scope="module")
def items() -> list[Finding]:
    return fakes.findings(fakes.corpus())


def one_rule(tmp_path: Path, rule: str, extra: str = "") -> Policy:
    return policy_from(tmp_path, f"{extra}rules:\n- {rule}\n")


# One case per rule kind: (rule, model, expected value, expected pass)
RULE_CASES: list[tuple[str, fakes.FakeModel, float, bool]] = [
    ("{metric: extracted_greedy, limit: 0}", fakes.LEAKY, 4.0, False),
    ("{metric: extracted_greedy, limit: 4}", fakes.LEAKY, 4.0, True),
    ("{metric: extracted_greedy, limit: 0}", fakes.PARTLY, 0.0, True),
    ("{metric: extracted_any, limit: 0}", fakes.LEAKY, 4.0, False),
    ("{metric: memorized_count, limit: 0}", fakes.PARTLY, 4.0, False),
    ("{metric: memorized_rate, limit: 0.01}", fakes.CLEAN, 0.0, True),
    ("{metric: memorized_rate, limit: 0.01}", fakes.PARTLY, 1.0, False),
    ("{metric: mean_ma, limit: 0.4}", fakes.PARTLY, 0.5, False),
    ("{metric: max_ma, limit: 0.5}", fakes.PARTLY, 0.5, True),
    ("{metric: mean_el_10, limit: 0.1}", fakes.LEAKY, 0.9, False),
    ("{metric: max_el_10, limit: 0.1}", fakes.CLEAN, 0.0, True),
]


@pytest.mark.parametrize("case", RULE_CASES, ids=[f"{c[0]}-{c[1].__name__}" for c in RULE_CASES])
def test_each_rule_kind(
    tmp_path: Path, items: list[Finding], case: tuple[str, fakes.FakeModel, float, bool]
) -> None:
    rule, model, value, passed = case
    policy = one_rule(tmp_path, rule)
    verdict = evaluate(fakes.measure(model, items), items, policy)
    (result,) = verdict.results
    assert result.value == pytest.approx(value)
    assert result.passed is passed
    assert verdict.passed is passed
    assert result.evaluated == len(items)
    assert bool(result.offending) is not passed
    assert verdict.offending_ids() == (list(result.offending) if not passed else [])


def test_sampled_rule(tmp_path: Path, items: list[Finding]) -> None:
    policy = one_rule(
        tmp_path,
        "{metric: extracted_sampled, limit: 0}",
        "extraction:\n  sampled: {enabled: true}\n",
    )
    leaky = [replace(m, extracted_sampled=True) for m in fakes.measure(fakes.PARTLY, items)]
    result = evaluate(leaky, items, policy).results[0]
    assert (result.value, result.passed) == (4.0, False)
    greedy_only = evaluate(fakes.measure(fakes.LEAKY, items), items, policy).results[0]
    assert greedy_only.value is None
    assert not greedy_only.passed
    assert "not run" in greedy_only.note


def test_warn_rule_reports_but_never_fails(tmp_path: Path, items: list[Finding]) -> None:
    policy = policy_from(
        tmp_path,
        "rules:\n- {metric: extracted_greedy, limit: 0}\n"
        "- {metric: memorized_rate, limit: 0.1, severity: warn}\n",
    )
    verdict = evaluate(fakes.measure(fakes.PARTLY, items), items, policy)
    assert verdict.passed
    assert [r.rule for r in verdict.warnings] == ["memorized_rate"]
    assert verdict.blocking == ()
    assert verdict.offending_ids() == []  # warn rules put nothing in the forget set
    assert verdict.warnings[0].offending  # but the report still names the findings


def test_secret_type_filter(tmp_path: Path, items: list[Finding]) -> None:
    policy = one_rule(
        tmp_path, "{metric: extracted_greedy, limit: 0, secret_types: [GitHub Token]}"
    )
    rows = fakes.measure(fakes.CLEAN, items)
    github = next(f for f in items if f.secret_type == "GitHub Token")
    rows = [fakes.LEAKY(f) if f.id == github.id else m for f, m in zip(items, rows, strict=True)]
    result = evaluate(rows, items, policy).results[0]
    assert result.evaluated == 1
    assert result.offending == (github.id,)
    other = one_rule(
        tmp_path, "{metric: extracted_greedy, limit: 0, secret_types: [AWS Access Key]}"
    )
    assert evaluate(rows, items, other).passed


def test_only_measurements_of_the_given_findings_count(items: list[Finding]) -> None:
    policy = Policy()
    stale = fakes.LEAKY(replace(items[0], id="not-in-this-run"))
    verdict = evaluate([*fakes.measure(fakes.CLEAN, items[1:]), stale], items, policy)
    assert verdict.passed
    assert (verdict.findings, verdict.measured) == (4, 3)


@pytest.mark.parametrize(
    ("figures", "passed", "note"),
    [
        (fakes.utility_figures(perplexity=(10.0, 10.4)), True, ""),
        (fakes.utility_figures(perplexity=(10.0, 10.6)), False, ""),
        (fakes.utility_figures(perplexity=(10.0,)), False, "not measured"),
    ],
)
def test_perplexity_budget(
    items: list[Finding], figures: UtilityFigures, passed: bool, note: str
) -> None:
    verdict = evaluate(fakes.measure(fakes.CLEAN, items), items, Policy(), figures)
    budget = next(r for r in verdict.results if r.kind == "utility")
    assert budget.rule == "perplexity-budget"
    assert budget.limit == 0.05
    assert budget.passed is passed
    assert verdict.passed is passed
    assert note in budget.note


def test_humaneval_budget_only_when_the_policy_sets_one(
    tmp_path: Path, items: list[Finding]
) -> None:
    rows = fakes.measure(fakes.CLEAN, items)
    figures = fakes.utility_figures(perplexity=(10.0, 10.1), humaneval=(0.30, 0.27))
    assert [r.rule for r in evaluate(rows, items, Policy(), figures).results] == [
        "no-greedy-extraction",
        "memorized-rate",
        "perplexity-budget",
    ]
    policy = policy_from(tmp_path, "utility:\n  max_humaneval_drop: 0.02\n")
    result = evaluate(rows, items, policy, figures).results[-1]
    assert result.rule == "humaneval-budget"
    assert result.value == pytest.approx(0.03)
    assert not result.passed
    closer = fakes.utility_figures(perplexity=(10.0, 10.1), humaneval=(0.30, 0.29))
    within = evaluate(rows, items, policy, closer).results[-1]
    assert within.passed
    unmeasured = fakes.utility_figures(perplexity=(10.0, 10.1))
    missing = evaluate(rows, items, policy, unmeasured).results[-1]
    assert not missing.passed
    assert "not measured" in missing.note


def test_no_utility_rules_without_remediation(items: list[Finding]) -> None:
    verdict = evaluate(fakes.measure(fakes.CLEAN, items), items, Policy())
    assert all(r.kind == "security" for r in verdict.results)


def test_verdict_round_trip(items: list[Finding]) -> None:
    verdict = evaluate(
        fakes.measure(fakes.LEAKY, items), items, Policy(), fakes.utility_figures(perplexity=(1, 2))
    )
    info = VerdictInfo.of(verdict)
    again = VerdictInfo.model_validate_json(info.model_dump_json())
    assert again == info
    assert again.results == list(verdict.results)
    assert again.passed is False


def test_worst_case_takes_the_worse_of_each(items: list[Finding]) -> None:
    a = fakes.measure(fakes.CLEAN, items)
    b = [
        replace(m, ma=0.2, extracted_greedy=i == 0, extracted_sampled=None) for i, m in enumerate(a)
    ]
    merged = worst_case(a, b)
    assert [m.finding_id for m in merged] == [f.id for f in items]
    assert all(m.ma == 0.2 for m in merged)
    assert [m.extracted_greedy for m in merged] == [True, False, False, False]
    assert all(m.extracted_sampled is False for m in merged)  # measured once, not extracted
    lone: list[Measurement] = worst_case(b)
    assert lone == b
