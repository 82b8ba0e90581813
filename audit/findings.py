"""The Finding record: where a secret sits in the training data, never what it is.

A Finding keeps the secret's SHA-256 and a redacted preview (a public provider prefix
and the length, e.g. ``AKIA…(20)``). The plaintext is re-read from the corpus at
``[start, end)`` only when a measurement needs it and is never written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import InputError
from audit.io import atomic_write_jsonl, read_jsonl, type_problem

# Prefixes that providers publish as part of the key format: showing them tells a
# reviewer what kind of key it is and reveals nothing secret.
_PUBLIC_PREFIXES = re.compile(
    r"^(?:AKIA|ASIA|AGPA|AIDA|AROA|ghp_|gho_|ghu_|ghs_|ghr_|github_pat_|glpat-|xox[abposr]-|"
    r"sk_live_|sk_test_|rk_live_|pk_live_|sk-ant-|sk-proj-|sk-|hf_|AIza|SG\.|npm_|pypi-|"
    r"dop_v1_|shpat_|shpss_|shpca_|AC|SK|eyJ|-----BEGIN [A-Z ]*PRIVATE KEY-----)"
)


def sha1_hex(value: str) -> str:
    """SHA-1 of a secret value: what a detect-secrets baseline keeps (`hashed_secret`)."""
    data = value.encode("utf-8", errors="surrogatepass")
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def sha256_hex(value: str) -> str:
    """SHA-256 of the UTF-8 encoding of a secret value."""
    # surrogatepass: a JSON record may hold a lone surrogate (\ud800), which strict UTF-8 rejects
    return hashlib.sha256(value.encode("utf-8", errors="surrogatepass")).hexdigest()


def make_preview(value: str) -> str:
    """A redacted preview: a public provider prefix (if any) and the length in characters."""
    match = _PUBLIC_PREFIXES.match(value)
    prefix = match.group(0) if match and match.end() < len(value) else ""
    return f"{prefix}…({len(value)})"


def make_finding_id(sample_id: str, start: int, end: int, secret_type: str) -> str:
    """A stable id for one occurrence: same sample, span and type give the same id."""
    key = f"{sample_id}\0{start}\0{end}\0{secret_type}".encode(errors="surrogatepass")
    return hashlib.sha256(key).hexdigest()[:16]


@dataclass(frozen=True)
class Context:
    """The syntactic role of a secret's span in the code around it."""

    kind: str = "other"  # string | comment | docstring | config_value | other
    name: str | None = None  # the variable, keyword argument or config key it is assigned to
    node: str | None = None  # the tree-sitter node type (or config format) it was found in


@dataclass(frozen=True)
class Finding:
    """One occurrence of a secret in one training sample."""

    id: str
    sample_id: str
    origin: str  # file path relative to the data root, or "<dataset>:<row>"
    secret_type: str
    start: int  # character offset of the secret in the sample text
    end: int  # exclusive
    line: int  # 1-based
    column: int  # 1-based, in characters
    secret_sha256: str
    preview: str
    detector: str
    context: Context = field(default_factory=Context)
    secret_sha1: str = ""  # to match detect-secrets baselines; older files lack it

    @classmethod
    def create(
        cls,
        *,
        sample_id: str,
        origin: str,
        text: str,
        start: int,
        end: int,
        secret_type: str,
        detector: str,
        context: Context | None = None,
    ) -> Finding:
        """Build a Finding from a span of `text`, computing hash, preview and position."""
        value = text[start:end]
        line = text.count("\n", 0, start) + 1
        column = start - (text.rfind("\n", 0, start) + 1) + 1
        return cls(
            id=make_finding_id(sample_id, start, end, secret_type),
            sample_id=sample_id,
            origin=origin,
            secret_type=secret_type,
            start=start,
            end=end,
            line=line,
            column=column,
            secret_sha256=sha256_hex(value),
            preview=make_preview(value),
            detector=detector,
            context=context or Context(),
            secret_sha1=sha1_hex(value),
        )

    def matches(self, text: str) -> bool:
        """True when `text` holds this finding's secret at its span."""
        return (
            self.end <= len(text) and sha256_hex(text[self.start : self.end]) == self.secret_sha256
        )

    @property
    def length(self) -> int:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        """As `dataclasses.asdict` gives it (every value is a str, int or None), made
        directly: `asdict` copies deeply and took most of the time of merging shards."""
        data = {name: getattr(self, name) for name in _FIELDS}
        data["context"] = {name: getattr(self.context, name) for name in _CONTEXT_FIELDS}
        return data

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Finding:
        data = dict(obj)
        data["context"] = Context(**data.get("context") or {})
        return cls(**data)


_REQUIRED = {f for f in Finding.__dataclass_fields__ if f not in ("context", "secret_sha1")}
_FIELDS = tuple(Finding.__dataclass_fields__)
_CONTEXT_FIELDS = tuple(Context.__dataclass_fields__)


def checked_text(findings: Sequence[Finding], texts: Mapping[str, str]) -> str:
    """The text of the sample that `findings` (all of one sample) are in, once each
    finding's span is checked against its hash; an InputError names the first that fails."""
    first = findings[0]
    text = texts.get(first.sample_id)
    if text is None:
        raise InputError(
            f"finding {first.id}: sample {first.sample_id!r} is not in the data "
            "(is the findings file from another corpus?)"
        )
    for finding in findings:
        if finding.start >= finding.end or not finding.matches(text):
            raise InputError(
                f"finding {finding.id} ({finding.origin}:{finding.line}): the data at its "
                "span does not match its hash (the findings file is from another corpus, or "
                "the data changed since the scan): scan this data again"
            )
    return text


def write_findings(path: Path, findings: Iterable[Finding]) -> int:
    """Write findings as JSONL atomically; return how many were written."""
    return atomic_write_jsonl(path, (f.to_dict() for f in findings))


def iter_findings(path: Path) -> Iterator[Finding]:
    """Read a findings JSONL file; a malformed line is an InputError naming file and line."""
    for lineno, obj in read_jsonl(path, what="finding"):
        missing = sorted(_REQUIRED - obj.keys())
        if missing:
            raise InputError(f"{path}:{lineno}: not a finding (missing {', '.join(missing)})")
        wrong = type_problem(Finding, obj)
        if wrong is not None:
            raise InputError(f"{path}:{lineno}: not a finding ({wrong})")
        try:
            yield Finding.from_dict(obj)
        except TypeError:
            raise InputError(f"{path}:{lineno}: not a finding (unexpected fields)") from None


def read_findings(path: Path) -> list[Finding]:
    return list(iter_findings(path))


def sample_findings(findings: Sequence[Finding], limit: int | None, seed: int) -> list[Finding]:
    """All findings, or `limit` of them chosen by a seeded hash of their ids (stable order)."""
    if limit is None or limit >= len(findings):
        return list(findings)

    def rank(finding: Finding) -> str:
        return hashlib.sha256(f"{seed}\0{finding.id}".encode()).hexdigest()

    keep = {f.id for f in sorted(findings, key=rank)[:limit]}
    return [f for f in findings if f.id in keep]


def baseline_key(finding: Finding) -> tuple[str, str]:
    """Findings are accepted in a baseline by secret hash and type, not by position."""
    return (finding.secret_sha256, finding.secret_type)


# detect-secrets types whose findings we report under another name
_DETECT_SECRETS_TYPES = {"Public IP (ipv4)": "IP Address"}


@dataclass(frozen=True)
class Baseline:
    """Accepted secrets: (SHA-256, type) from our findings files, (SHA-1, type) from a
    detect-secrets `.secrets.baseline`."""

    sha256: frozenset[tuple[str, str]] = frozenset()
    sha1: frozenset[tuple[str, str]] = frozenset()

    def accepts(self, finding: Finding) -> bool:
        return baseline_key(finding) in self.sha256 or (
            bool(finding.secret_sha1) and (finding.secret_sha1, finding.secret_type) in self.sha1
        )


def read_baseline(path: Path) -> Baseline:
    """A findings JSONL file, or a detect-secrets baseline (JSON with `results`)."""
    results = _detect_secrets_results(path)
    if results is None:
        return Baseline(sha256=frozenset(baseline_key(f) for f in iter_findings(path)))
    return Baseline(sha1=frozenset(_detect_secrets_keys(path, results)))


def _detect_secrets_results(path: Path) -> dict[str, Any] | None:
    try:
        with path.open(encoding="utf-8") as handle:
            if handle.read(1) != "{":
                return None
            handle.seek(0)
            data = json.load(handle)
    except OSError as exc:
        raise InputError(f"cannot read baseline {path}: {exc.strerror}") from None
    except ValueError:
        return None  # one JSON object per line: a findings file
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict):
        return None
    return results


def _detect_secrets_keys(path: Path, results: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for filename, entries in results.items():
        for entry in entries if isinstance(entries, list) else [None]:
            if not (isinstance(entry, dict) and {"hashed_secret", "type"} <= entry.keys()):
                raise InputError(
                    f"{path}: detect-secrets baseline entry for {filename!r} lacks "
                    "hashed_secret or type"
                )
            kind = str(entry["type"])
            yield str(entry["hashed_secret"]), _DETECT_SECRETS_TYPES.get(kind, kind)


def subtract_baseline(findings: Iterable[Finding], baseline: Baseline) -> Iterator[Finding]:
    """new = current − baseline: drop the findings the baseline accepts."""
    return (f for f in findings if not baseline.accepts(f))
