"""Secrets outside the text: file names, record ids, paths and context names.

Training data carries secrets in more places than its text: a file named after a
token, a record whose ``path`` is a clone URL with credentials, a config key that is
itself a key, a data folder whose name holds a password. Anything of that kind that
can reach an output (findings, measurements, records, reports, logs, the terminal,
an error message) goes through `redact_identifier` first, which runs the scan's own
detectors over it and replaces each secret by a placeholder:

    https://bot:ghp_…(40)#5c1e07a2@github.com/org/repo   →   «ghp_…(40)#5c1e07a2»

The placeholder is the secret's redacted preview (see `audit.findings.make_preview`)
and 8 hex digits of a keyed SHA-256 of it: the same secret always gives the same
placeholder, so one file keeps one name in every output and run, and 32 bits of a
hash leave far too many candidate values to recover a secret from it. Redacting is
idempotent: a placeholder is never redacted again.

`printable` removes what a terminal would interpret in text that came from input:
C0 and C1 control characters (escape sequences included), DEL, and the Unicode
bidirectional overrides that reorder what a reader sees.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from audit.findings import Finding, make_finding_id, make_preview

if TYPE_CHECKING:
    from audit.detectors import Detector

_KEY = b"codeeraser-identifier\0"
PLACEHOLDER = re.compile(r"«[^«»\s]*»")
_ORIGIN = "identifier"  # the file name the detectors see: no extension, no special case
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_MAX_PASSES = 3
# A file extension at the end of a path part: blanked (same length) in a second look, so
# that `alice@corp.com.json` is seen as the address it holds, not as a file name.
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,7}(?=/|$)")


def placeholder(value: str) -> str:
    """The stable, non-reversible stand-in for one secret value."""
    digest = hashlib.sha256(_KEY + value.encode("utf-8", errors="surrogatepass")).hexdigest()
    return f"«{make_preview(value)}#{digest[:8]}»"


@lru_cache(maxsize=1 << 16)
def redact_identifier(text: str) -> str:
    """`text` with every secret the detectors find in it replaced by its placeholder."""
    for _ in range(_MAX_PASSES):
        spans = _secret_spans(text)
        if not spans:
            return text
        text = _replace(text, spans)
    return PLACEHOLDER.sub("", text) if _secret_spans(text) else text


def redact_finding(finding: Finding) -> Finding:
    """`finding` with its sample id, origin and context name redacted (and its id, which
    is derived from the sample id, made from the redacted one)."""
    sample_id = redact_identifier(finding.sample_id)
    origin = redact_identifier(finding.origin)
    name = finding.context.name
    clean_name = redact_identifier(name) if name else name
    if (sample_id, origin, clean_name) == (finding.sample_id, finding.origin, name):
        return finding
    return replace(
        finding,
        id=make_finding_id(sample_id, finding.start, finding.end, finding.secret_type),
        sample_id=sample_id,
        origin=origin,
        context=replace(finding.context, name=clean_name),
    )


def is_redacted(identifier: str) -> bool:
    """True when `identifier` holds a placeholder (it names no file as it stands)."""
    return PLACEHOLDER.search(identifier) is not None


def redact_strings(data: Any) -> Any:
    """A copy of JSON-like `data` with every string (keys too) redacted."""
    if isinstance(data, str):
        return redact_identifier(data)
    if isinstance(data, dict):
        return {redact_strings(k): redact_strings(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact_strings(v) for v in data]
    return data


def redact_path(path: object) -> str:
    """A path (or any value) as text, redacted; for records, reports and messages."""
    return redact_identifier(str(path))


def printable(text: str, one_line: bool = True) -> str:
    """`text` without control characters or bidirectional overrides; on one line unless
    `one_line` is False (then its line breaks are kept)."""
    if one_line:
        text = text.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    if not _encodable(text):  # a lone surrogate: a terminal cannot be written it
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    return _CONTROL.sub("", text)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def safe_text(value: object) -> str:
    """Redacted and printable: what may be shown of a value that came from input."""
    return printable(redact_identifier(str(value)))


def _secret_spans(text: str) -> list[tuple[int, int]]:
    """Spans the detectors report in `text` (and in `text` with its file extensions
    blanked), less the value filters' false positives and existing placeholders."""
    if not text or text.isspace():
        return []
    kept = [m.span() for m in PLACEHOLDER.finditer(text)]
    found: list[tuple[int, int]] = []
    for variant in dict.fromkeys([text, _EXTENSION.sub(_blank, text)]):
        found += _detected(variant)
    return [
        (first, last)
        for first, last in found
        if not any(start < last and first < end for start, end in kept)
    ]


def _detected(text: str) -> list[tuple[int, int]]:
    """Every detector whose hints occur in `text`, on `text` as one line (an identifier
    has no syntax to give context, so only the value filters apply)."""
    from audit.detectors import scoped_settings
    from audit.filters import Candidate, false_positive

    low = text.lower() if len(text.lower()) == len(text) else text
    chosen = [entry[0] for entry in _detectors() if _hinted(entry, low)]
    if not chosen:
        return []
    spans = []
    with scoped_settings():
        for detector in chosen:
            for start, end in detector.spans(text, _ORIGIN, None):
                candidate = Candidate(
                    value=text[start:end],
                    secret_type=detector.secret_type,
                    line=text,
                    column=start,
                    filename=_ORIGIN,
                )
                if end > start and false_positive(candidate) is None:
                    spans.append((start, end))
    return spans


@lru_cache(maxsize=1)
def _detectors() -> tuple[tuple[Detector, tuple[re.Pattern[str], ...]], ...]:
    """Every registered detector, with its trigger regexes compiled."""
    from audit.detectors import build_detectors

    return tuple((d, tuple(re.compile(t) for t in d.triggers)) for d in build_detectors())


def _hinted(entry: tuple[Detector, tuple[re.Pattern[str], ...]], low: str) -> bool:
    detector, triggers = entry
    return any(k in low for k in detector.keywords) or any(t.search(low) for t in triggers)


def _blank(match: re.Match[str]) -> str:
    return " " * len(match.group(0))


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    out, last = [], 0
    for start, end in sorted(spans):
        if start < last:
            continue
        out += [text[last:start], placeholder(text[start:end])]
        last = end
    return "".join([*out, text[last:]])
