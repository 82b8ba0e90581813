"""Fake gate runs for the verdict, record and report tests: no model, no torch.

In the spirit of garak's test generators, a "model" here is just what measuring it
would give: `LEAKY` reproduces every planted secret, `CLEAN` none, `PARTLY` still
ranks secret tokens high but no longer reproduces them (what erasure typically leaves).
The corpus plants known secret values so that tests can assert they never reach an
output file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from audit.findings import Context, Finding
from audit.measurements import HumanEvalResult, Measurement, Perplexity, Thresholds
from gate.policy import Policy, load_policy
from gate.record import (
    AFTER,
    BEFORE,
    CorpusInfo,
    MeasurementSet,
    RecordBuilder,
    RunRecord,
)
from gate.unlearn.remediation import FindingOutcome, KLReference, Remediation, SampleCounts
from gate.unlearn.settings import UnlearnConfig
from gate.verdict import SanityInfo, UtilityFigures, evaluate, worst_case

XSS = "</script><script>alert(1)</script>"

# Planted values, chosen to exercise every encoding a leak could take: HTML and JSON
# special characters, a non-ASCII letter, a provider prefix.
SECRETS: dict[str, tuple[str, str]] = {
    "aws": ("AWS Access Key", "AKIAQ7ZKD2M4X9PLW3RT"),
    "github": ("GitHub Token", "ghp_R8s2Kq0vXw7LmN4zT1yB6cD9eF3gH5jA2pQu"),
    "password": ("Secret Keyword", "p@ss<w>rd\"&'Zq9é/\\x"),
    "email": ("Email Address", "marta.kowalczyk.ops@kx-internal.dev"),
}

THRESHOLDS = Thresholds(ma=0.3, el_10=0.1, source="policy")


@dataclass(frozen=True)
class FakeSample:
    id: str
    origin: str
    text: str


def corpus(xss: bool = False) -> list[FakeSample]:
    """One file per planted secret; with `xss`, a file whose name is a script tag."""
    samples = []
    for key, (_, value) in SECRETS.items():
        origin = f"src/{key}_config.py"
        text = f'"""Settings."""\nimport os\n\n\nTOKEN_{key.upper()} = "{value}"\n'
        samples.append(FakeSample(id=origin, origin=origin, text=text))
    if xss:
        origin = f"evil/{XSS}.py"
        text = f'KEY = "{SECRETS["aws"][1]}"\n'
        samples.append(FakeSample(id=origin, origin=origin, text=text))
    return samples


def findings(samples: list[FakeSample]) -> list[Finding]:
    out = []
    types = {value: kind for kind, value in SECRETS.values()}
    for sample in samples:
        for value, kind in types.items():
            start = sample.text.find(value)
            if start < 0:
                continue
            name = XSS if sample.origin.startswith("evil/") else f"TOKEN_{kind.split()[0]}"
            out.append(
                Finding.create(
                    sample_id=sample.id,
                    origin=sample.origin,
                    text=sample.text,
                    start=start,
                    end=start + len(value),
                    secret_type=kind,
                    detector="fake",
                    context=Context(kind="string", name=name, node="assignment"),
                )
            )
    return out


FakeModel = Callable[[Finding, int], Measurement]


def _measure(
    f: Finding, ma: float, el: float, greedy: bool, *, sampled: bool | None, prefix: int
) -> Measurement:
    return Measurement(
        finding_id=f.id,
        sample_id=f.sample_id,
        secret_type=f.secret_type,
        ma=ma,
        el_3=min(1.0, el + 0.1),
        el_5=min(1.0, el + 0.05),
        el_10=el,
        extracted_greedy=greedy,
        extracted_sampled=sampled,
        samples=0 if sampled is None else 5,
        longest_leaked_prefix=f.length if greedy else 2,
        secret_tokens=min(32, f.length),
        prefix_tokens=prefix,
        truncated=False,
        memorized=THRESHOLDS.memorized(ma, el),
    )


def LEAKY(f: Finding, prefix: int = 128) -> Measurement:  # a "model": named like a constant
    return _measure(f, 0.97, 0.9, True, sampled=None, prefix=prefix)


def CLEAN(f: Finding, prefix: int = 128) -> Measurement:
    return _measure(f, 0.05, 0.0, False, sampled=False, prefix=prefix)


def PARTLY(f: Finding, prefix: int = 128) -> Measurement:
    return _measure(f, 0.5, 0.02, False, sampled=False, prefix=prefix)


def measure(model: FakeModel, items: list[Finding], prefix: int = 128) -> list[Measurement]:
    return [model(f, prefix) for f in items]


def default_policy() -> Policy:
    return load_policy("default")


SANITY = {
    "loss": 0.9,
    "uniform": 6.24,
    "vocabulary": 512,
    "samples": 8,
    "tokens": 700,
    "max_ratio": 0.75,
    "ratio": 0.144,
    "passed": True,
}


def build_record(
    before: FakeModel = LEAKY,
    after: FakeModel | None = CLEAN,
    *,
    xss: bool = False,
    policy: Policy | None = None,
    utility: UtilityFigures | None = None,
) -> RunRecord:
    """A whole gate run, as the pipeline would record it, from fake models."""
    policy = policy or default_policy()
    samples = corpus(xss)
    items = findings(samples)
    builder = RecordBuilder(
        model_path=Path("/models/tiny"),
        corpus=CorpusInfo(path="/data/corpus", format="dir", samples=len(samples)),
        policy=policy,
        invocation=["codeeraser", "gate", "--model", "/models/tiny"],
        model_sha256="0" * 64,
    )
    with builder.stage("scan"):
        builder.set_findings(items)
        builder.set_allowlisted({"AWS Access Key": 2}, items[:1])
    builder.set_skipped({"binary": 1}, [("assets/logo.png", "binary")])
    builder.set_sanity("original", SanityInfo.model_validate(SANITY))
    builder.set_thresholds(THRESHOLDS)
    rows = measure(before, items)
    with builder.stage("measure"):
        builder.add_measurements(
            MeasurementSet(name=BEFORE, model="original", prefix_tokens=128), rows
        )
    verdict = evaluate(rows, items, policy)
    builder.set_verdict("before", verdict)
    if verdict.passed or after is None:
        if verdict.passed:
            return builder.finish(0, "passed", "/models/tiny")
        return builder.finish(1, "failed")
    figures = utility or utility_figures(perplexity=(10.0, 10.3))
    builder.set_remediation(remediation(policy, items, rows, verdict.offending_ids(), figures))
    main = measure(after, items)
    alt = measure(after, items, prefix=64)
    builder.add_measurements(
        MeasurementSet(name=AFTER, model="remediated", prefix_tokens=128, samples=5), main
    )
    builder.add_measurements(
        MeasurementSet(name="after-prefix-64", model="remediated", prefix_tokens=64), alt
    )
    verdict_after = evaluate(worst_case(main, alt), items, policy, figures)
    builder.set_verdict("after", verdict_after)
    if verdict_after.passed:
        return builder.finish(0, "remediated", "/out/remediated-model")
    return builder.finish(1, "failed")


def utility_figures(
    perplexity: tuple[float, ...] = (), humaneval: tuple[float, ...] = ()
) -> UtilityFigures:
    """Utility before and after: held-out perplexity and HumanEval pass@1 (of 100 problems)."""
    values: dict[str, object] = {}
    for when, ppl in zip(("before", "after"), perplexity, strict=False):
        values[f"perplexity_{when}"] = Perplexity(ppl, math.log(ppl), 4000, 40, 20)
    for when, rate in zip(("before", "after"), humaneval, strict=False):
        values[f"humaneval_{when}"] = HumanEvalResult(rate, round(rate * 100), 100)
    return UtilityFigures.model_validate(values)


def remediation(
    policy: Policy,
    items: list[Finding],
    before: list[Measurement],
    forget: list[str],
    utility: UtilityFigures,
) -> Remediation:
    """What the erase stage would report for erasing `forget` (no loop ran)."""
    erased = [m for m in before if m.finding_id in forget]
    return Remediation(
        config=UnlearnConfig.of(policy.remediation.method, policy.remediation.args),
        prefix_tokens=policy.extraction.prefix_tokens,
        device="cpu",
        dtype="float32",
        forget_findings=forget,
        forget_samples=len({f.sample_id for f in items if f.id in forget}),
        epochs=7,
        best_epoch=7,
        steps=7,
        stop_reason="all forget samples below thresholds and not extracted",
        wall_seconds=12.5,
        unlearn_seconds=10.0,
        peak_memory_bytes=350 * 2**20,
        output_path="/out/remediated-model",
        input_sha256="a" * 64,
        output_sha256="b" * 64,
        thresholds=THRESHOLDS,
        samples=SampleCounts(
            forget_findings=len(forget),
            forget_windows=len(forget),
            distinct_probes=len(forget),
            retain_windows=8,
            forgotten=len(forget),
        ),
        kl_reference=KLReference(kind="cached-full", bytes=1 << 20),
        outcomes=[FindingOutcome(m.finding_id, m, m, 7, "forgotten at epoch 7") for m in erased],
        history=[],
        utility=utility,
    )
