"""Close matches for a name that matches nothing: "(close: GitHub Token)"."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(name: str, choices: Iterable[str], limit: int = 3) -> str:
    """ " (close: a, b)" for the choices nearest to `name` (case aside), or ""."""
    options = sorted(set(choices))
    same_case = [c for c in options if c.lower() == name.lower()]
    by_lower = {c.lower(): c for c in options}
    near = difflib.get_close_matches(name.lower(), list(by_lower), n=limit, cutoff=0.6)
    found = list(dict.fromkeys([*same_case, *(by_lower[n] for n in near)]))[:limit]
    return f" (close: {', '.join(found)})" if found else ""
