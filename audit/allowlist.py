"""detect-secrets' inline allowlist, with its exact semantics, without importing it.

A secret is allowlisted when its line ends in a comment `pragma: allowlist secret`
(`whitelist` too, the older spelling), or when the line before *starts* with a comment
`pragma: allowlist nextline secret` (after white space only). A comment starts with
`#`, `//`, `/*` (then ends with `*/`), `'`, `--` or `<!--` (then ends with `-->`); in
YAML files only `#`. The
words are case-sensitive, only spaces may stand between the comment mark and the
pragma, and the words may be joined by a space or a hyphen (`allowlist-secret`).
`tests/audit/test_allowlist.py` checks this module against detect-secrets' own filter.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache

# (comment start, comment end) as regex fragments, in detect-secrets' order
_COMMENTS = (
    ("#", ""),
    ("//", ""),
    (r"/\*", r" *\*/"),
    ("'", ""),
    ("--", ""),
    (r"<!--[# \t]*?", " *?-->"),
)


@lru_cache(maxsize=4)
def _regexes(yaml: bool, nextline: bool) -> re.Pattern[str]:
    comments = _COMMENTS[:1] if yaml else _COMMENTS
    words = r"allowlist[ -]nextline" if nextline else r"(?:allow|white)list"
    forms = "|".join(
        rf"[ \t]*{start} *pragma: ?{words}[ -]secret.*?{end}[ \t]*$" for start, end in comments
    )
    return re.compile(rf"^(?:{forms})" if nextline else forms)


def is_allowlisted(filename: str, line: str, previous_line: str) -> bool:
    """True when detect-secrets would allowlist a secret on `line`."""
    yaml = os.path.splitext(filename)[1] == ".yaml"
    return bool(
        _regexes(yaml, nextline=False).search(line)
        or _regexes(yaml, nextline=True).search(previous_line)
    )
