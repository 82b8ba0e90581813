"""Secrets outside the text: file names, record ids, paths and context names.

Training data carries secrets in more places than its text: a file named after a
token, a record whose ``path`` is a clone URL with credentials, a config key that is
itself a key, a data folder whose name holds a password. Anything of that kind that
can reach an output (findings, measurements, records, reports, logs, the terminal,
an error message) goes through `redact_identifier` first, which runs the scan's own
detectors over it and replaces each secret by a stable placeholder
(`audit.placeholders`): ``https://bot:«ghp_…(40)#5c1e07a2»@github.com/org/repo``.

The findings of a scan are redacted where they are made (`audit.scan.scan_samples`);
the helpers here are for everything else: a path, a whole JSON document, a message.
"""

from __future__ import annotations

from typing import Any

from audit.placeholders import is_redacted, placeholder, printable
from audit.scan import redact_finding, redact_identifier

__all__ = [
    "is_redacted",
    "placeholder",
    "printable",
    "redact_finding",
    "redact_identifier",
    "redact_path",
    "redact_strings",
    "safe_text",
]


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


def safe_text(value: object) -> str:
    """Redacted and printable: what may be shown of a value that came from input."""
    return printable(redact_identifier(str(value)))
