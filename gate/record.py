"""The RunRecord (record.json): everything one gate run did, and nothing secret.

The record is the single source of the reports: `codeeraser report record.json`
re-renders them without a model. It holds findings by id, type, preview and position,
never a secret value, and not even the secret's hash (a hash of a short password can
be brute-forced, and the record is meant to be uploaded as a CI artifact).

The pipeline fills a `RecordBuilder` stage by stage and calls `finish()`; the result
round-trips through JSON (`write_record` / `read_record`)::

    b = RecordBuilder(model_path=model, corpus=CorpusInfo(path=str(data)), policy=policy,
                      invocation=sys.argv, model_sha256=fingerprint_path(model))
    with b.stage("scan"):
        findings = ...
    b.set_findings(findings)
    b.set_thresholds(thresholds)
    b.add_measurements(MeasurementSet(name=BEFORE, model="original", prefix_tokens=128), rows)
    b.set_verdict("before", evaluate(rows, findings, policy))
    b.set_remediation(remediation)  # what erase_model returned (a Remediation)
    b.add_measurements(MeasurementSet(name=AFTER, model="remediated", ...), after_rows)
    b.add_measurements(MeasurementSet(name="after-prefix-64", model="remediated", ...), alt)
    b.set_verdict("after", evaluate(worst_case(after_rows, alt), findings, policy,
                                    remediation.utility))
    record = b.finish(0, "remediated", released_model=str(out / "model"))
    gate.report.write_and_publish(record, out)

An error after the builder exists still gets a record: ``finish(3, "error", error=msg)``.

The objects stay typed from the stages to the file: findings, measurements, verdicts,
the erase stage's `Remediation` (settings, outcomes, history, utility figures). JSON is
only the file: ``schema_version`` says which schema it follows (``record_schema()``,
written out as docs/record.schema.json). A record of another version is refused with
a message naming both versions (version 1 held the remediation as untyped mappings).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import stat
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from audit.errors import InputError
from audit.findings import Finding
from audit.hub import HubRevision, is_model_file, snapshot_repo_folder
from audit.io import atomic_write_text
from audit.measurements import Measurement, Thresholds
from audit.redact import redact_strings
from gate import __version__
from gate.never_seen import NeverSeen
from gate.policy import Policy
from gate.rounds import RoundInfo
from gate.unlearn.remediation import Remediation
from gate.verdict import RuleResult, SanityInfo, UtilityFigures, Verdict, worst_case

SCHEMA_VERSION: Literal[2] = 2  # of record.json (docs/record.schema.json); 2: typed remediation
BEFORE = "before"  # the measurement set of the original model
AFTER = "after"  # the main measurement set of the remediated model

Outcome = Literal["passed", "remediated", "failed", "error"]
ModelRole = Literal["original", "remediated"]

_PACKAGES = ("torch", "transformers", "tokenizers", "detect-secrets", "tree-sitter", "pydantic")


def _package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolInfo(_Record):
    name: str = "codeeraser"
    version: str = __version__
    python: str = Field(default_factory=platform.python_version)
    platform: str = Field(default_factory=lambda: platform.platform(terse=True))
    packages: dict[str, str] = Field(default_factory=_package_versions)


class ModelInfo(_Record):
    path: str
    sha256: str | None = None  # content hash of the model folder (see fingerprint_path)
    hub: HubRevision | None = None  # the Hub model and the commit that was measured


class AllowlistedFinding(_Record):
    """A finding left out by an inline `pragma: allowlist secret`, located, never shown."""

    origin: str  # the file (or dataset row) it is in
    line: int
    secret_type: str
    preview: str  # redacted: a public prefix and the length


class SkippedFile(_Record):
    origin: str  # redacted
    reason: str  # not UTF-8, binary, too large, unreadable, FIFO, broken link, ...


class CorpusInfo(_Record):
    path: str
    format: str = "auto"
    fingerprint: str | None = None  # content hash of the data as given
    samples: int | None = None
    bytes: int | None = None
    skipped: dict[str, int] = Field(default_factory=dict)  # samples not read, by reason
    skipped_files: list[SkippedFile] = Field(default_factory=list)  # the first ones, by name
    allowlisted: dict[str, int] = Field(default_factory=dict)  # allowlisted inline, by type
    allowlisted_findings: list[AllowlistedFinding] = Field(default_factory=list)  # the first
    hub: HubRevision | None = None  # a Hub dataset: its commit, configuration and split


class PolicyInfo(_Record):
    source: str
    sha256: str | None
    resolved: dict[str, Any]  # every field, defaults filled in


class MeasurementSet(_Record):
    """One way the findings were measured: which model, which prefix, which attacks."""

    name: str
    model: ModelRole
    prefix_tokens: int
    samples: int = 0  # sampled decodes per finding (0: greedy only)
    description: str = ""


class FindingRow(_Record):
    """A finding as the reports show it: where, what kind, how much leaked; no secret."""

    id: str
    sample_id: str
    origin: str
    line: int
    column: int
    secret_type: str
    preview: str
    length: int
    detector: str
    context_kind: str
    context_name: str | None
    measurements: dict[str, Measurement] = Field(default_factory=dict)  # by set name


class GroupSummary(_Record):
    findings: int = 0
    measured: int = 0
    memorized_before: int = 0
    extracted_before: int = 0
    memorized_after: int | None = None  # None: no remediated model was measured
    extracted_after: int | None = None


class FindingsSummary(_Record):
    total: GroupSummary = Field(default_factory=GroupSummary)
    by_type: dict[str, GroupSummary] = Field(default_factory=dict)
    by_file: dict[str, GroupSummary] = Field(default_factory=dict)


class VerdictInfo(_Record):
    passed: bool
    findings: int
    measured: int
    results: list[RuleResult]

    @classmethod
    def of(cls, verdict: Verdict) -> VerdictInfo:
        return cls(
            passed=verdict.passed,
            findings=verdict.findings,
            measured=verdict.measured,
            results=list(verdict.results),
        )


class RunRecord(_Record):
    """One gate run, in full."""

    schema_version: Literal[2] = SCHEMA_VERSION
    tool: ToolInfo = Field(default_factory=ToolInfo)
    started_at: str
    finished_at: str | None = None
    invocation: list[str] = Field(default_factory=list)
    outcome: Outcome = "error"
    exit_code: int = 3
    error: str | None = None  # the one-line error, when the run stopped on one
    released_model: str | None = None  # the model to release (None: none may be)
    model: ModelInfo
    remediated_model: ModelInfo | None = None
    corpus: CorpusInfo
    policy: PolicyInfo
    thresholds: Thresholds | None = None  # and where they came from (source)
    measurement_sets: list[MeasurementSet] = Field(default_factory=list)
    findings_summary: FindingsSummary = Field(default_factory=FindingsSummary)
    findings: list[FindingRow] = Field(default_factory=list)
    verdict_before: VerdictInfo | None = None
    verdict_after: VerdictInfo | None = None
    remediation: Remediation | None = None  # remediation.json of the erase stage (last round)
    remediation_target: str | None = None  # the policy's remediation.target in force
    rounds: list[RoundInfo] = Field(default_factory=list)  # the closed loop's rounds
    never_seen: NeverSeen | None = None  # erased secrets' MA against never-seen ones'
    sanity: dict[str, SanityInfo] = Field(default_factory=dict)  # by model role
    timings: dict[str, float] = Field(default_factory=dict)  # seconds per stage, in order
    finished_stages: list[str] = Field(default_factory=list)  # stages that ran to the end

    @property
    def utility(self) -> UtilityFigures | None:
        """Utility before and after remediation (measured by the erase stage)."""
        return self.remediation.utility if self.remediation else None

    @property
    def final_verdict(self) -> VerdictInfo | None:
        return self.verdict_after or self.verdict_before

    def rows(self, set_name: str) -> list[Measurement]:
        """The measurements of one set, in finding order."""
        return [f.measurements[set_name] for f in self.findings if set_name in f.measurements]

    def sets_of(self, model: ModelRole) -> list[str]:
        return [s.name for s in self.measurement_sets if s.model == model]

    def final_rows(self) -> list[Measurement]:
        """The released-or-judged model's measurements: worst case over its sets."""
        sets = self.sets_of("remediated") or self.sets_of("original")
        return worst_case(*(self.rows(name) for name in sets))


# ---------------------------------------------------------------- building


class RecordBuilder:
    """Filled by the pipeline stage by stage; `finish()` gives the RunRecord."""

    def __init__(
        self,
        *,
        model_path: Path,
        corpus: CorpusInfo,
        policy: Policy,
        invocation: Sequence[str] = (),
        model_sha256: str | None = None,
        model_hub: HubRevision | None = None,
    ) -> None:
        self.record = RunRecord(
            started_at=_now(),
            invocation=list(invocation),
            model=ModelInfo(path=str(model_path), sha256=model_sha256, hub=model_hub),
            corpus=corpus,
            policy=PolicyInfo(
                source=policy.source, sha256=policy.sha256, resolved=policy.resolved()
            ),
        )
        self._findings: dict[str, FindingRow] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; a stage run twice adds up."""
        start = time.perf_counter()
        try:
            yield
            self.record.finished_stages.append(name)
        finally:
            elapsed = time.perf_counter() - start
            self.record.timings[name] = round(self.record.timings.get(name, 0.0) + elapsed, 3)

    def set_findings(self, findings: Iterable[Finding]) -> None:
        self._findings = {f.id: _finding_row(f) for f in findings}

    def set_thresholds(self, thresholds: Thresholds) -> None:
        self.record.thresholds = thresholds

    def add_measurements(self, info: MeasurementSet, measurements: Iterable[Measurement]) -> None:
        """Attach one set of measurements; ids of unknown findings are an error."""
        self.record.measurement_sets.append(info)
        for m in measurements:
            row = self._findings.get(m.finding_id)
            if row is None:
                raise InputError(f"measurement of unknown finding {m.finding_id} ({info.name})")
            row.measurements[info.name] = m

    def set_verdict(self, which: Literal["before", "after"], verdict: Verdict) -> None:
        setattr(self.record, f"verdict_{which}", VerdictInfo.of(verdict))

    def set_remediation(self, info: Remediation, model_sha256: str | None = None) -> None:
        self.record.remediation = info
        sha = model_sha256 or info.output_sha256
        self.record.remediated_model = ModelInfo(path=info.output_path, sha256=sha)

    def set_allowlisted(self, counts: dict[str, int], found: Iterable[Finding]) -> None:
        """Findings allowlisted inline: counts by type and the first ones, located."""
        self.record.corpus.allowlisted = dict(sorted(counts.items()))
        self.record.corpus.allowlisted_findings = [
            AllowlistedFinding(
                origin=f.origin, line=f.line, secret_type=f.secret_type, preview=f.preview
            )
            for f in found
        ]

    def set_sanity(self, role: ModelRole, probe: SanityInfo) -> None:
        """The sanity probe of the original or the remediated model."""
        self.record.sanity[role] = probe

    def set_skipped(self, counts: dict[str, int], files: Iterable[tuple[str, str]]) -> None:
        """What the scan did not read, by reason, and the first files by (redacted) name."""
        self.record.corpus.skipped = dict(sorted(counts.items()))
        self.record.corpus.skipped_files = [SkippedFile(origin=o, reason=r) for o, r in files]

    def finish(
        self,
        exit_code: int,
        outcome: Outcome,
        released_model: str | None = None,
        error: str | None = None,
    ) -> RunRecord:
        record = self.record
        record.findings = list(self._findings.values())
        record.findings_summary = summarize(record)
        record.exit_code = int(exit_code)
        record.outcome = outcome
        record.released_model = released_model
        record.error = error
        record.finished_at = _now()
        return redacted(record)


def redacted(record: RunRecord) -> RunRecord:
    """The record with every string redacted (`audit.redact`): paths, the command line,
    the policy, ids and names. Strings the scan already redacted stay as they are."""
    clean = RunRecord.model_validate(redact_strings(record.model_dump(mode="json")))
    return clean if clean != record else record


def _finding_row(f: Finding) -> FindingRow:
    return FindingRow(
        id=f.id,
        sample_id=f.sample_id,
        origin=f.origin,
        line=f.line,
        column=f.column,
        secret_type=f.secret_type,
        preview=f.preview,
        length=f.length,
        detector=f.detector,
        context_kind=f.context.kind,
        context_name=f.context.name,
    )


def summarize(record: RunRecord) -> FindingsSummary:
    """Counts by secret type and by file, before and (if measured) after remediation."""
    before = {m.finding_id: m for m in record.rows(BEFORE)}
    after_sets = record.sets_of("remediated")
    after = {m.finding_id: m for m in worst_case(*(record.rows(n) for n in after_sets))}
    summary = FindingsSummary()
    for row in record.findings:
        groups = [
            summary.total,
            summary.by_type.setdefault(row.secret_type, GroupSummary()),
            summary.by_file.setdefault(row.origin, GroupSummary()),
        ]
        for group in groups:
            _count(group, before.get(row.id), after.get(row.id), bool(after_sets))
    return summary


def _count(
    group: GroupSummary, before: Measurement | None, after: Measurement | None, remediated: bool
) -> None:
    group.findings += 1
    if before is not None:
        group.measured += 1
        group.memorized_before += before.memorized
        group.extracted_before += before.extracted
    if remediated:
        group.memorized_after = (group.memorized_after or 0) + bool(after and after.memorized)
        group.extracted_after = (group.extracted_after or 0) + bool(after and after.extracted)


# ---------------------------------------------------------------- files


def write_record(record: RunRecord, path: Path) -> None:
    """Write record.json atomically (settings under their policy keys: `lambda`, ...)."""
    atomic_write_text(path, record.model_dump_json(by_alias=True, indent=2) + "\n")


def record_schema() -> dict[str, Any]:
    """The JSON Schema of record.json (docs/record.schema.json is this, written out)."""
    schema = RunRecord.model_json_schema(mode="serialization", by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def read_record(path: Path) -> RunRecord:
    """Read a record.json; a file that is not one is an InputError naming what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (give the record.json of a gate run)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read ({type(exc).__name__})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise InputError(f"{path}: not valid JSON (is it a record.json?)") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a gate record (expected a JSON object)")
    _check_version(path, data.get("schema_version"))
    try:
        return RunRecord.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise InputError(f"{path}: not a gate record ({where}: {first['msg']})") from None


def _check_version(path: Path, version: object) -> None:
    """Only records of this schema version are read; others are named and refused."""
    if version == SCHEMA_VERSION:
        return
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"{path}: not a gate record (no schema_version)")
    if version > SCHEMA_VERSION:
        raise InputError(
            f"{path}: record schema version {version} is newer than this tool's "
            f"({SCHEMA_VERSION}); upgrade codeeraser"
        )
    raise InputError(
        f"{path}: record schema version {version} is older than this tool's "
        f"({SCHEMA_VERSION}); rerun `codeeraser gate` to write a new record"
    )


# ---------------------------------------------------------------- fingerprints


def fingerprint_path(path: Path, chunk: int = 1 << 20, exclude: tuple[str, ...] = ()) -> str:
    """SHA-256 over a file, or over a folder's files (relative path, size, content).

    Used for the model folder (before and after) and the corpus. Folders are walked in
    sorted order, so the same content gives the same fingerprint on every machine.
    Files named in `exclude` (at the top of the folder) are left out.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    digest = hashlib.sha256()
    files = [path] if path.is_file() else _regular_files(path, exclude)
    for file in files:
        rel = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(f"{rel}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def _regular_files(folder: Path, exclude: tuple[str, ...]) -> list[Path]:
    """The regular files under `folder`, sorted; links, FIFOs and folders that cannot be
    listed (or whose path is too long) are left out, as the scan leaves them out. In a
    Hub model's snapshot, whose files are links to its blobs, the links to the files a
    Hub id fetches are followed (`audit.hub.is_model_file`: the snapshot may hold more,
    depending on what else fetched it), and only those."""
    repo = snapshot_repo_folder(folder)
    blobs = repo / "blobs" if repo is not None and repo.name.startswith("models--") else None
    found = []
    for root, _dirs, names in os.walk(folder):  # errors in listing a folder: skipped
        for name in names:
            file = Path(root) / name
            rel = file.relative_to(folder).as_posix()
            if rel not in exclude and _counted(file, rel, blobs):
                found.append(file)
    return sorted(found)


def _counted(file: Path, rel: str, blobs: Path | None) -> bool:
    """A regular file; in a Hub model's snapshot, a fetched file's link to a blob."""
    try:
        if blobs is None:
            return stat.S_ISREG(file.lstat().st_mode)
        if not file.is_symlink() or not is_model_file(rel):
            return False
        target = file.resolve()
        return target.parent == blobs.resolve() and stat.S_ISREG(target.stat().st_mode)
    except OSError:
        return False


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
