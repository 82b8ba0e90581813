"""The verdict: measurements + policy → pass or fail, rule by rule. Pure: no I/O.

Each policy rule is evaluated over the measured findings (optionally only those of
some secret types) with its registered metric (`gate.rule_metrics`); it passes when
the value is at most the limit. A `warn` rule never fails the gate but is reported.
After remediation, the utility budget adds two rules of kind "utility": the relative
held-out perplexity increase, and the HumanEval pass@1 drop when the policy sets a
budget for it. A budget whose figure was not measured fails, with a note: the gate
does not pass on what it did not check.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field, model_validator

from audit.findings import Finding
from audit.measurements import HumanEvalResult, Measurement, Perplexity
from gate.policy import Policy, Rule
from gate.rule_metrics import get_metric

Severity = Literal["block", "warn"]
Kind = Literal["security", "utility"]


@dataclass(frozen=True)
class RuleResult:
    """One rule held against one model's measurements."""

    rule: str  # the rule's name (its id, or metric[types])
    metric: str
    limit: float
    value: float | None  # None: not measured (see note)
    passed: bool
    severity: Severity
    kind: Kind = "security"
    secret_types: tuple[str, ...] | None = None
    evaluated: int = 0  # findings the rule looked at
    offending: tuple[str, ...] = ()  # finding ids that break it
    note: str = ""

    @property
    def blocks(self) -> bool:
        """True when this result fails the gate."""
        return not self.passed and self.severity == "block"


@dataclass(frozen=True)
class Verdict:
    """All rule results for one model; it passes when no block rule fails."""

    results: tuple[RuleResult, ...]
    findings: int  # findings in scope
    measured: int  # of those, findings with a measurement

    @property
    def passed(self) -> bool:
        return not any(r.blocks for r in self.results)

    @property
    def blocking(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if r.blocks)

    @property
    def warnings(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if not r.passed and r.severity == "warn")

    def offending_ids(self) -> list[str]:
        """Findings that break a blocking rule: the forget set for remediation."""
        seen: dict[str, None] = {}
        for result in self.blocking:
            seen.update(dict.fromkeys(result.offending))
        return list(seen)


class UtilityFigures(BaseModel):
    """Utility of the original and the remediated model (None: not measured): the one
    shape from the erase stage to the verdict, remediation.json and the record."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    perplexity_before: Perplexity | None = None  # held-out perplexity
    perplexity_after: Perplexity | None = None
    humaneval_before: HumanEvalResult | None = None  # pass@1
    humaneval_after: HumanEvalResult | None = None

    @model_validator(mode="before")
    @classmethod
    def _derived_figures_are_not_read(cls, data: Any) -> Any:
        """A written record holds the derived figures too; they are computed again."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in cls.model_computed_fields}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def perplexity_increase(self) -> float | None:
        """Relative change: 0.05 means the remediated model's perplexity is 5% higher."""
        if self.perplexity_before is None or self.perplexity_after is None:
            return None
        return self.perplexity_after.perplexity / self.perplexity_before.perplexity - 1.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def humaneval_drop(self) -> float | None:
        """Absolute pass@1 lost (negative: the remediated model does better)."""
        if self.humaneval_before is None or self.humaneval_after is None:
            return None
        return self.humaneval_before.pass_at_1 - self.humaneval_after.pass_at_1


class SanityInfo(BaseModel):
    """The sanity probe of one model: its loss on training code against a uniform guess
    (`audit.sanity.SanityProbe.to_dict`), in the record and remediation.json."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    loss: float  # mean cross-entropy on training samples, nats per token (secrets left out)
    uniform: float  # ln V
    vocabulary: int
    samples: int
    tokens: int
    max_ratio: float
    ratio: float
    passed: bool


def evaluate(
    measurements: Iterable[Measurement],
    findings: Sequence[Finding],
    policy: Policy,
    utility: UtilityFigures | None = None,
) -> Verdict:
    """Hold one model's measurements against the policy's rules.

    Only measurements of the given findings count. Pass `utility` for a remediated
    model: the policy's utility budget is then checked too.
    """
    in_scope = {f.id for f in findings}
    rows = [m for m in measurements if m.finding_id in in_scope]
    results = [_evaluate_rule(rule, rows) for rule in policy.rules]
    if utility is not None:
        results.extend(_utility_results(policy, utility))
    return Verdict(results=tuple(results), findings=len(in_scope), measured=len(rows))


def _evaluate_rule(rule: Rule, rows: Sequence[Measurement]) -> RuleResult:
    types = tuple(rule.secret_types) if rule.secret_types else None
    selected = [m for m in rows if types is None or m.secret_type in types]
    outcome = get_metric(rule.metric).fn(selected, rule.limit)
    passed = outcome.value is not None and outcome.value <= rule.limit
    return RuleResult(
        rule=rule.name,
        metric=rule.metric,
        limit=rule.limit,
        value=outcome.value,
        passed=passed,
        severity=rule.severity,
        secret_types=types,
        evaluated=len(selected),
        offending=outcome.offending if not passed else (),
        note=outcome.note,
    )


def _utility_results(policy: Policy, utility: UtilityFigures) -> list[RuleResult]:
    budget = policy.utility
    results = []
    if budget.max_perplexity_increase is not None:  # null: released without this check
        results.append(
            _budget_rule(
                "perplexity-budget",
                "perplexity_increase",
                budget.max_perplexity_increase,
                utility.perplexity_increase,
            )
        )
    if budget.max_humaneval_drop is not None:
        results.append(
            _budget_rule(
                "humaneval-budget",
                "humaneval_pass1_drop",
                budget.max_humaneval_drop,
                utility.humaneval_drop,
            )
        )
    return results


def _budget_rule(name: str, metric: str, limit: float, value: float | None) -> RuleResult:
    return RuleResult(
        rule=name,
        metric=metric,
        limit=limit,
        value=value,
        passed=value is not None and value <= limit,
        severity="block",
        kind="utility",
        note="" if value is not None else "not measured before and after remediation",
    )


def worst_case(*sets: Iterable[Measurement]) -> list[Measurement]:
    """Combine several measurements of the same findings into the worst one for each.

    After remediation a finding is measured more than one way (the original prefix
    with the sampled attack, a second prefix length); the verdict takes, per finding,
    the highest MA and EL, and "extracted" when any attack extracted it. Findings keep
    the order in which they first appear.
    """
    merged: dict[str, Measurement] = {}
    for rows in sets:
        for m in rows:
            prior = merged.get(m.finding_id)
            merged[m.finding_id] = m if prior is None else _worse(prior, m)
    return list(merged.values())


def _worse(a: Measurement, b: Measurement) -> Measurement:
    sampled = None
    if a.extracted_sampled is not None or b.extracted_sampled is not None:
        sampled = bool(a.extracted_sampled) or bool(b.extracted_sampled)
    return Measurement(
        finding_id=a.finding_id,
        sample_id=a.sample_id,
        secret_type=a.secret_type,
        ma=max(a.ma, b.ma),
        el_3=max(a.el_3, b.el_3),
        el_5=max(a.el_5, b.el_5),
        el_10=max(a.el_10, b.el_10),
        extracted_greedy=a.extracted_greedy or b.extracted_greedy,
        extracted_sampled=sampled,
        samples=max(a.samples, b.samples),
        longest_leaked_prefix=max(a.longest_leaked_prefix, b.longest_leaked_prefix),
        secret_tokens=max(a.secret_tokens, b.secret_tokens),
        prefix_tokens=a.prefix_tokens,
        truncated=a.truncated or b.truncated,
        memorized=a.memorized or b.memorized,
    )
