"""Our inline allowlist against detect-secrets' own filter, over its documented forms
and their variations (comment styles, spacing, case, hyphens, text around, YAML)."""

from __future__ import annotations

import itertools

import pytest

from audit.allowlist import is_allowlisted
from audit.scan import scan_text
from tests.audit.fakes import FAKES

COMMENTS = [("#", ""), ("//", ""), ("/*", " */"), ("/*", "*/"), ("'", ""), ("--", ""),
            ("<!--", " -->"), ("<!-- #", "-->"), (";", ""), ("%", ""), ("", "")]  # fmt: skip
PRAGMAS = [
    "pragma: allowlist secret", "pragma:allowlist secret", "pragma: whitelist secret",
    "pragma: allowlist-secret", "pragma:  allowlist secret", "Pragma: allowlist secret",
    "pragma: ALLOWLIST secret", "pragma: allowlist secret because it is a test key",
    "pragma: allowlist nextline secret", "pragma: allowlist-nextline-secret",
    "pragma: whitelist nextline secret", "pragma allowlist secret",
]  # fmt: skip
LEADS = ["", " ", "\t", "  "]
CODE = ["", "x = 'v'", "x = 'v' "]
FILES = ["app.py", "values.yaml", "values.yml", "web.xml", "q.sql"]


def _lines() -> list[str]:
    lines = []
    for (start, end), pragma, lead, code in itertools.product(COMMENTS, PRAGMAS, LEADS, CODE):
        lines.append(f"{code}{lead}{start}{lead}{pragma}{end}")
        lines.append(f"{code}{lead}{start} {pragma}{end}  ")
    return lines


def _reference(filename: str, line: str, previous: str) -> bool:
    from detect_secrets.filters.allowlist import is_line_allowlisted
    from detect_secrets.util.code_snippet import CodeSnippet

    snippet = CodeSnippet(snippet=[previous, line], start_line=1, target_index=1)
    return bool(is_line_allowlisted(filename, line, snippet))


@pytest.mark.parametrize("filename", FILES)
def test_same_answer_as_detect_secrets(filename: str) -> None:
    lines = _lines()
    cases = [(line, "") for line in lines] + [("x = 'v'", line) for line in lines]
    differ = [c for c in cases if is_allowlisted(filename, *c) != _reference(filename, *c)]
    assert not differ, differ[:5]
    assert sum(is_allowlisted(filename, *c) for c in cases) > 50  # the forms do allowlist


def test_a_scan_reports_allowlisted_findings_apart() -> None:
    key = FAKES["github"]
    text = (
        f"a = '{key}'  # pragma: allowlist secret\n"
        f"# pragma: allowlist nextline secret\nb = '{key}'\nc = '{key}'\n"
    )
    result = scan_text(text, "app.py")
    assert [f.line for f in result.allowlisted] == [1, 3]
    assert [f.line for f in result.findings] == [4]
