"""The closed remediation loop: erase → re-measure → decide, for a bounded number of rounds.

Erasing some secrets can make others extractable: a secret that was memorized but not
extracted before can come out once its neighbours are gone. So the gate does not stop
after one erase. Each round erases a forget set from the current weights, the
remediated model is measured again (both prefixes, the sampled attack), and the policy
is evaluated; when a blocking security rule still fails, the utility budget still
holds and rounds are left, the findings now at risk join the forget set and the next
round continues from the current weights.

`run_rounds` holds the decisions only; the gate pipeline passes in how a round erases
and how a model is measured (`RoundStep`), so the loop is tested without a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from audit.measurements import Measurement
from gate.policy import RemediationTarget as Target
from gate.unlearn.remediation import Remediation
from gate.verdict import Verdict


def at_risk(rows: Sequence[Measurement], verdict: Verdict, target: Target) -> list[str]:
    """The findings to forget: memorized (MA or EL_10 over its threshold) or extracted by
    any attack (`at-risk`), or only the offenders of the failing blocking rules."""
    if target == "offending":
        return verdict.offending_ids()
    return [m.finding_id for m in rows if m.memorized or m.extracted]


class RoundRule(BaseModel):
    """One rule's result after a round."""

    model_config = ConfigDict(extra="forbid")

    rule: str
    kind: str
    value: float | None
    limit: float
    passed: bool
    blocks: bool


class RoundInfo(BaseModel):
    """One round of the closed loop, in record.json and the report (ids and counts only)."""

    model_config = ConfigDict(extra="forbid")

    round: int
    forget: int  # findings in this round's forget set
    added: int  # of those, findings that joined in this round
    forgotten: int  # of the forget set, found forgotten by the erase's last measure
    epochs: int
    lr: float | None  # the learning rate the round started with (None: not recorded)
    erase_stop: str  # why the round's erase stopped
    extracted_after: int  # findings extracted by any attack after the round
    memorized_after: int
    rules: list[RoundRule]
    perplexity_increase: float | None  # against the original model
    erase_seconds: float
    measure_seconds: float
    decision: str  # what the loop did next, and why


@dataclass(frozen=True)
class RoundResult:
    """What the pipeline hands back for one round: the erase record, the remediated
    model's measurements (worst case over the prefixes and attacks) and its verdict."""

    remediation: Remediation
    rows: list[Measurement]
    verdict: Verdict
    erase_seconds: float
    measure_seconds: float


# round number, forget ids (the ones still to forget first) -> its result
RoundStep = Callable[[int, list[str]], RoundResult]


@dataclass
class LoopOutcome:
    rounds: list[RoundInfo]
    last: RoundResult
    forget: list[str]  # every finding any round erased


def run_rounds(
    first: Sequence[str],
    step: RoundStep,
    *,
    before: Sequence[Measurement],
    max_rounds: int,
    target: Target,
) -> LoopOutcome:
    """Run rounds until the verdict passes, the utility budget breaks, no blocking
    security rule fails, a round leaves nothing new at risk and leaks no less than the
    best model so far (`before`: the original's measurements), or `max_rounds` ran."""
    forget, added = list(first), len(first)
    infos: list[RoundInfo] = []
    leak = _leak(before)
    while True:
        number = len(infos) + 1
        result = step(number, list(forget))
        risk = at_risk(result.rows, result.verdict, target)
        new = [fid for fid in risk if fid not in set(forget)]
        decision = _decide(result, number, max_rounds, new, progressed=_leak(result.rows) < leak)
        leak = min(leak, _leak(result.rows))
        infos.append(_info(number, forget, added, result, decision))
        if not decision.startswith("next round"):
            return LoopOutcome(infos, result, forget)
        forget, added = forget + new, len(new)


def _leak(rows: Sequence[Measurement]) -> tuple[int, int, float]:
    """Lower is better: extracted by any attack, memorized, then total MA."""
    return (
        sum(m.extracted for m in rows),
        sum(m.memorized for m in rows),
        round(sum(m.ma for m in rows), 6),
    )


def _decide(
    result: RoundResult, number: int, max_rounds: int, new: list[str], *, progressed: bool
) -> str:
    verdict = result.verdict
    if verdict.passed:
        return "stop: the policy passes"
    if any(r.blocks and r.kind == "utility" for r in verdict.results):
        return "stop: the utility budget is spent"
    if not any(r.blocks and r.kind == "security" for r in verdict.results):
        return "stop: no blocking security rule fails"
    if number >= max_rounds:
        return f"stop: {max_rounds} rounds run (remediation.max_rounds)"
    if not new and not progressed:
        return "stop: the round leaked no less than before and nothing new is at risk"
    return f"next round: {len(new)} more findings at risk"


def _info(
    number: int,
    forget: list[str],
    added: int,
    result: RoundResult,
    decision: str,
) -> RoundInfo:
    rem = result.remediation
    return RoundInfo(
        round=number,
        forget=len(forget),
        added=added,
        forgotten=rem.forgotten,
        epochs=rem.epochs,
        lr=None if rem.config.lr == "auto" else rem.config.lr,
        erase_stop=rem.stop_reason,
        extracted_after=sum(m.extracted for m in result.rows),
        memorized_after=sum(m.memorized for m in result.rows),
        rules=[
            RoundRule(
                rule=r.rule,
                kind=r.kind,
                value=r.value,
                limit=r.limit,
                passed=r.passed,
                blocks=r.blocks,
            )
            for r in result.verdict.results
        ],
        perplexity_increase=rem.utility.perplexity_increase,
        erase_seconds=round(result.erase_seconds, 3),
        measure_seconds=round(result.measure_seconds, 3),
        decision=decision,
    )
