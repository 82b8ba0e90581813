"""Placeholders for secrets found in identifiers, and text made safe for a terminal.

A secret found in a file name, record id, path or context name (see `audit.redact`)
is replaced by a placeholder: its redacted preview (`audit.findings.make_preview`) and
8 hex digits of a keyed SHA-256 of it,

    https://bot:ghp_…(40)#5c1e07a2@github.com/org/repo   →   «ghp_…(40)#5c1e07a2»

The same secret always gives the same placeholder, so one file keeps one name in every
output and run; 32 bits of a hash leave far too many candidate values to recover a
secret from it. Because the preview holds the secret's public prefix and length, a
redacted id still identifies its sample: `matches_redacted` checks a raw id against
it without running any detector.

`printable` removes what a terminal would interpret in text that came from input: C0
and C1 control characters (escape sequences included), DEL, the Unicode bidirectional
overrides that reorder what a reader sees, and lone surrogates (which cannot be
written).
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from audit.findings import make_preview

_KEY = b"codeeraser-identifier\0"
PLACEHOLDER = re.compile(r"«([^«»]*)…\((\d+)\)#([0-9a-f]{8})»")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def placeholder(value: str) -> str:
    """The stable, non-reversible stand-in for one secret value."""
    return f"«{make_preview(value)}#{_hash(value)}»"


def _hash(value: str) -> str:
    digest = hashlib.sha256(_KEY + value.encode("utf-8", errors="surrogatepass"))
    return digest.hexdigest()[:8]


def is_redacted(identifier: str) -> bool:
    """True when `identifier` holds a placeholder (it names no file as it stands)."""
    return PLACEHOLDER.search(identifier) is not None


def replace_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with each span (overlapping ones merged) replaced by its placeholder."""
    out, last = [], 0
    for start, end in _merged(spans):
        out += [text[last:start], placeholder(text[start:end])]
        last = end
    return "".join([*out, text[last:]])


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def raw_length(redacted: str) -> int:
    """The length of the identifier that `redacted` was made from."""
    return len(PLACEHOLDER.sub("", redacted)) + sum(
        int(m.group(2)) for m in PLACEHOLDER.finditer(redacted)
    )


def matches_redacted(raw: str, redacted: str) -> bool:
    """True when redacting `raw` gave `redacted`: the text around the placeholders is the
    same, and each placeholder's secret (its prefix and length fix where it is) hashes
    to the placeholder's hash."""
    pattern, hashes = _pattern(redacted)
    found = pattern.fullmatch(raw)
    return found is not None and all(
        _hash(value) == digest for value, digest in zip(found.groups(), hashes, strict=True)
    )


@lru_cache(maxsize=1 << 12)
def _pattern(redacted: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    parts, hashes, last = [], [], 0
    for match in PLACEHOLDER.finditer(redacted):
        prefix, length = match.group(1), int(match.group(2))
        parts.append(re.escape(redacted[last : match.start()]))
        parts.append(f"({re.escape(prefix)}.{{{length - len(prefix)}}})")
        hashes.append(match.group(3))
        last = match.end()
    parts.append(re.escape(redacted[last:]))
    return re.compile("".join(parts), re.DOTALL), tuple(hashes)


def printable(text: str, one_line: bool = True) -> str:
    """`text` without control characters, bidirectional overrides or lone surrogates;
    on one line unless `one_line` is False (then its line breaks are kept)."""
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
