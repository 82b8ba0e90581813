"""Reports rendered from a RunRecord alone: HTML, SARIF 2.1.0, markdown, record.json.

Nothing here needs the model or the corpus, so `codeeraser report record.json`
re-renders every file. The HTML is one self-contained file (inline CSS, inline SVG,
no script, no external resource, a Content-Security-Policy that forbids both), from
Jinja2 templates with autoescape on. No file holds a secret value: the record has
none, only previews and ids.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args
from urllib.parse import quote

import jinja2
import yaml

from audit.errors import InputError
from audit.io import atomic_write_json, atomic_write_text
from audit.measurements import Measurement
from gate import github
from gate.charts import Chart, histogram
from gate.policy import ReportFormat
from gate.record import BEFORE, FindingRow, RunRecord, VerdictInfo, write_record
from gate.resources import templates_dir
from gate.rule_metrics import METRICS
from gate.verdict import RuleResult, worst_case

FORMATS: tuple[str, ...] = get_args(ReportFormat)  # the policy's report.formats choices
FILENAMES = {
    "html": "report.html",
    "json": "record.json",
    "sarif": "results.sarif",
    "md": "summary.md",
}
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_BASE_ID = "TRAININGDATA"

HEADLINES = {
    "passed": "PASSED",
    "remediated": "PASSED after remediation",
    "failed": "FAILED",
    "error": "ERROR",
}


# ---------------------------------------------------------------- writing


def write_reports(
    record: RunRecord, out_dir: Path, formats: Iterable[str] | None = None
) -> dict[str, Path]:
    """Write the requested report files into `out_dir` atomically; return them by format.

    `formats` defaults to the policy's `report.formats`. record.json is written when
    "json" is asked for (the pipeline always asks for it).
    """
    wanted = list(formats) if formats is not None else policy_formats(record)
    unknown = sorted(set(wanted) - set(FORMATS))
    if unknown:
        raise InputError(f"unknown report format {unknown[0]!r} (valid: {', '.join(FORMATS)})")
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    for fmt in FORMATS:
        if fmt not in wanted:
            continue
        path = out_dir / FILENAMES[fmt]
        if fmt == "json":
            write_record(record, path)
        elif fmt == "html":
            atomic_write_text(path, render_html(record))
        elif fmt == "sarif":
            atomic_write_json(path, build_sarif(record))
        else:
            atomic_write_text(path, render_markdown(record, report_name=FILENAMES["html"]))
        written[fmt] = path
    return written


def write_and_publish(
    record: RunRecord, out_dir: Path, env: Mapping[str, str] | None = None
) -> dict[str, Path]:
    """What the gate does at the end: record.json and the policy's reports, then, in
    GitHub Actions, the job summary and the step outputs (see `gate.github`)."""

    formats = dict.fromkeys(["json", *policy_formats(record)])
    written = write_reports(record, out_dir, formats)
    github.publish(record, render_markdown(record), written.get("html"), env)
    return written


def policy_formats(record: RunRecord) -> list[str]:
    formats = record.policy.resolved.get("report", {}).get("formats")
    return list(formats) if isinstance(formats, list) and formats else list(FORMATS)


# ---------------------------------------------------------------- templates


@functools.lru_cache(maxsize=4)
def _environment(folder: Path | None = None) -> jinja2.Environment:
    """The template environment (cached: compiling the templates takes a moment)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder or templates_dir())),
        autoescape=True,  # every template, the markdown one too: `<` never reaches a page raw
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(pct=pct, num=num, md=md_escape, seconds=seconds, size=size)
    return env


def render_html(record: RunRecord) -> str:
    template = _environment().get_template("report.html.j2")
    return template.render(view=build_view(record))


def render_markdown(
    record: RunRecord, report_name: str = "report.html", template: str = "summary.md.j2"
) -> str:
    """A Markdown template of the view (the job summary; the model card's audit section)."""
    page = _environment().get_template(template)
    return page.render(view=build_view(record), report_name=report_name)


# ---------------------------------------------------------------- formatting


def pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def size(value: int | None) -> str:
    if value is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return str(value)


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def md_escape(value: object) -> str:
    """Markdown-escape text for a table cell; autoescape then makes `<` and `&` entities."""
    text = " ".join(str(value).split())
    return _MD_SPECIAL.sub(r"\\\1", text)


def format_value(metric: str, value: float | None) -> str:
    """A rule value as the reports print it: counts whole, fractions in percent."""
    if value is None:
        return "not measured"
    spec = METRICS.get(metric)
    if spec is not None and spec.unit == "count":
        return f"{value:.0f}"
    if metric == "perplexity_increase":
        return f"{value * 100:+.1f}%"
    return pct(value, 2)


# ---------------------------------------------------------------- the view


@dataclass(frozen=True)
class RuleRow:
    rule: str
    metric: str
    kind: str
    severity: str
    types: str
    limit: str
    before: RuleResult | None
    after: RuleResult | None
    before_value: str
    after_value: str
    note: str


@dataclass(frozen=True)
class FindingView:
    row: FindingRow
    before: Measurement | None
    after: Measurement | None
    level: str  # error | warning | note | none


def build_view(record: RunRecord) -> dict[str, Any]:
    """Everything the templates show, computed once from the record."""
    final = record.final_rows()
    final_by_id = {m.finding_id: m for m in final}
    before_by_id = {m.finding_id: m for m in record.rows(BEFORE)}
    remediated = bool(record.sets_of("remediated"))
    findings = [
        FindingView(
            row=f,
            before=before_by_id.get(f.id),
            after=final_by_id.get(f.id) if remediated else None,
            level=finding_level(record, f.id, before_by_id.get(f.id), final_by_id.get(f.id)),
        )
        for f in record.findings
    ]
    findings.sort(key=_finding_order)
    limit = int(record.policy.resolved.get("report", {}).get("max_findings_listed", 500))
    return {
        "record": record,
        "headline": HEADLINES[record.outcome],
        "title": record.policy.resolved.get("report", {}).get("title", "CodeEraser Gate audit"),
        "remediated": remediated,
        "rules": rule_rows(record),
        "findings": findings[:limit],
        "findings_hidden": max(0, len(findings) - limit),
        "leaking": [v for v in findings if v.level != "none"],
        "charts": charts(record),
        "sets": set_rows(record),
        "by_type": sorted(record.findings_summary.by_type.items()),
        "by_file": _top_files(record),
        "policy_yaml": yaml.safe_dump(record.policy.resolved, sort_keys=False, allow_unicode=True),
        "counts": _counts(record, final, remediated),
        "allowlisted": _allowlisted(record),
    }


def _allowlisted(record: RunRecord) -> dict[str, Any]:
    """Findings left out by an inline allowlist: how many, of which types, where."""
    counts = record.corpus.allowlisted
    return {
        "total": sum(counts.values()),
        "by_type": ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())),
        "first": record.corpus.allowlisted_findings,
    }


def _finding_order(view: FindingView) -> tuple[int, float, str, int]:
    rank = {"error": 0, "warning": 1, "note": 2, "none": 3}[view.level]
    ma = view.before.ma if view.before is not None else -1.0
    return (rank, -ma, view.row.origin, view.row.line)


def _top_files(record: RunRecord, limit: int = 50) -> list[tuple[str, Any]]:
    items = record.findings_summary.by_file.items()
    ranked = sorted(items, key=lambda kv: (-kv[1].extracted_before, -kv[1].findings, kv[0]))
    return ranked[:limit]


def _counts(record: RunRecord, final: Sequence[Measurement], remediated: bool) -> dict[str, Any]:
    before = record.rows(BEFORE)
    return {
        "findings": len(record.findings),
        "files": len(record.findings_summary.by_file),
        "measured": record.findings_summary.total.measured,
        "extracted_before": sum(m.extracted for m in before),
        "memorized_before": sum(m.memorized for m in before),
        "extracted_after": sum(m.extracted for m in final) if remediated else None,
        "memorized_after": sum(m.memorized for m in final) if remediated else None,
    }


def rule_rows(record: RunRecord) -> list[RuleRow]:
    """One row per rule name, with its result before and (if any) after remediation."""
    before = _results(record.verdict_before)
    after = _results(record.verdict_after)
    rows = []
    for name in list(dict.fromkeys([*before, *after])):
        first = before.get(name) or after[name]
        b, a = before.get(name), after.get(name)
        rows.append(
            RuleRow(
                rule=name,
                metric=first.metric,
                kind=first.kind,
                severity=first.severity,
                types=_types_label(first),
                limit=format_value(first.metric, first.limit),
                before=b,
                after=a,
                before_value=format_value(first.metric, b.value) if b else "",
                after_value=format_value(first.metric, a.value) if a else "",
                note="; ".join(n for n in {r.note for r in (b, a) if r is not None} if n),
            )
        )
    return rows


def _types_label(result: RuleResult) -> str:
    if result.kind == "utility":
        return "–"
    return ", ".join(result.secret_types) if result.secret_types else "all"


def _results(verdict: VerdictInfo | None) -> dict[str, RuleResult]:
    return {} if verdict is None else {r.rule: r for r in verdict.results}


def set_rows(record: RunRecord) -> list[dict[str, Any]]:
    rows = []
    for info in record.measurement_sets:
        measured = record.rows(info.name)
        rows.append(
            {
                "set": info,
                "measured": len(measured),
                "extracted": sum(m.extracted for m in measured),
                "memorized": sum(m.memorized for m in measured),
                "mean_ma": sum(m.ma for m in measured) / len(measured) if measured else None,
            }
        )
    return rows


def charts(record: RunRecord) -> list[Chart]:
    """MA and EL_10 distributions before and (if remediated) after."""
    before = record.rows(BEFORE)
    after = worst_case(*(record.rows(n) for n in record.sets_of("remediated")))
    th = record.thresholds
    out = []
    for key, label, threshold in (
        ("ma", "Memorization accuracy (MA)", th.ma if th else None),
        ("el_10", "Extraction likelihood (EL_10)", th.el_10 if th else None),
    ):
        series = {"before": [getattr(m, key) for m in before]}
        if record.sets_of("remediated"):
            series["after"] = [getattr(m, key) for m in after]
        out.append(histogram(label, series, threshold))
    return out


# ---------------------------------------------------------------- severity


def finding_level(record: RunRecord, finding_id: str, *measured: Measurement | None) -> str:
    """How the final verdict treats a finding: a failing block rule makes it an error.

    A failing warn rule makes it a warning. A finding that some measured model
    memorized or gave back verbatim but that no failing rule names (e.g. one erased by
    remediation) is a `note`; one that never leaked is `none`.
    """
    verdict = record.final_verdict
    results = verdict.results if verdict is not None else []
    named = [r for r in results if finding_id in r.offending and not r.passed]
    if any(r.severity == "block" for r in named):
        return "error"
    if named:
        return "warning"
    if any(m is not None and (m.memorized or m.extracted) for m in measured):
        return "note"
    return "none"


# ---------------------------------------------------------------- SARIF


def build_sarif(record: RunRecord) -> dict[str, Any]:
    """SARIF 2.1.0: one result per finding that a measured model memorized or gave back.

    The location is the training-data file (the finding's origin) and line, the level
    comes from the final verdict's rules (`finding_level`), and the message uses the
    preview only. A finding erased by remediation stays a `note`: its secret is still
    in the training data and should be rotated. `partialFingerprints` carries the
    finding id, so a code-scanning service tracks a finding across runs.
    """
    before = {m.finding_id: m for m in record.rows(BEFORE)}
    final = {m.finding_id: m for m in record.final_rows()}
    remediated = bool(record.sets_of("remediated"))
    rule_ids: dict[str, int] = {}
    results = []
    for row in record.findings:
        first, last = before.get(row.id), final.get(row.id) if remediated else None
        level = finding_level(record, row.id, first, last)
        if level == "none":
            continue
        rule_id = sarif_rule_id(row.secret_type)
        index = rule_ids.setdefault(rule_id, len(rule_ids))
        results.append(_sarif_result(record, row, (first, last), level, (rule_id, index)))
    types = {sarif_rule_id(r.secret_type): r.secret_type for r in record.findings}
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": _sarif_driver(record, [_sarif_rule(i, types[i]) for i in rule_ids])
                },
                "originalUriBaseIds": {
                    SARIF_BASE_ID: {"description": {"text": f"training data: {record.corpus.path}"}}
                },
                "invocations": [
                    {
                        "executionSuccessful": record.exit_code in (0, 1),
                        "exitCode": record.exit_code,
                    }
                ],
                "results": results,
                "properties": {
                    "outcome": record.outcome,
                    "model": record.model.path,
                    "releasedModel": record.released_model,
                    "policy": record.policy.source,
                },
            }
        ],
    }


def _sarif_driver(record: RunRecord, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "codeeraser",
        "semanticVersion": record.tool.version,
        "version": record.tool.version,
        "rules": rules,
    }


def sarif_rule_id(secret_type: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", secret_type.lower()).strip("-") or "secret"
    return f"codeeraser/memorized/{slug}"


def _sarif_rule(rule_id: str, secret_type: str) -> dict[str, Any]:
    text = f"The model memorized a {secret_type} from its training data"
    return {
        "id": rule_id,
        "name": "MemorizedSecret",
        "shortDescription": {"text": text},
        "fullDescription": {
            "text": (
                f"{text}: prompted with the code that preceded the secret, it reproduces "
                "the secret or ranks its tokens first (memorization accuracy or extraction "
                "likelihood at or above the forgetting threshold)."
            )
        },
        "help": {
            "text": (
                "Rotate the secret, remove it from the training data, and erase it from "
                "the model (codeeraser gate with remediation enabled) before release."
            )
        },
        "defaultConfiguration": {"level": "error"},
        "properties": {"tags": ["security", "secrets", "memorization"]},
    }


def _sarif_result(
    record: RunRecord,
    row: FindingRow,
    measured: tuple[Measurement | None, Measurement | None],
    level: str,
    rule: tuple[str, int],
) -> dict[str, Any]:
    first, last = measured
    broken = [
        r.rule
        for r in (record.final_verdict.results if record.final_verdict else [])
        if row.id in r.offending and not r.passed
    ]
    return {
        "ruleId": rule[0],
        "ruleIndex": rule[1],
        "level": level,
        "message": {"text": _sarif_message(row, first, last, broken)},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": sarif_uri(row.origin), "uriBaseId": SARIF_BASE_ID},
                    "region": {"startLine": max(1, row.line), "startColumn": max(1, row.column)},
                }
            }
        ],
        "partialFingerprints": {"codeeraserFindingId/v1": row.id},
        "properties": {
            "findingId": row.id,
            "secretType": row.secret_type,
            "preview": row.preview,
            "before": _sarif_metrics(first),
            "after": _sarif_metrics(last),
            "rules": broken,
        },
    }


def _sarif_metrics(m: Measurement | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"ma": m.ma, "el10": m.el_10, "extracted": m.extracted, "memorized": m.memorized}


def _describe(m: Measurement) -> str:
    how = "extracted verbatim" if m.extracted else "not extracted verbatim"
    return f"MA {m.ma:.2f}, EL_10 {m.el_10:.2f}, {how}"


def _sarif_message(
    row: FindingRow, first: Measurement | None, last: Measurement | None, broken: list[str]
) -> str:
    what = f"{row.secret_type} {row.preview} (finding {row.id})"
    parts = []
    if first is not None:
        parts.append(f"original model: {_describe(first)}")
    if last is not None:
        parts.append(f"remediated model: {_describe(last)}")
    text = f"The model memorized the {what} from its training data; " + "; ".join(parts) + "."
    if broken:
        text += f" Breaks: {', '.join(broken)}."
    elif last is not None and not (last.memorized or last.extracted):
        text += " Erased from the model; rotate the secret all the same."
    return text


def sarif_uri(origin: str) -> str:
    """A relative URI reference for an origin: percent-encode all but `/` (so `a:b` is no
    scheme)."""
    return quote(origin.lstrip("/"), safe="/")
