"""One contract for every registered detector: its positives are found at exactly the
marked span, alone and through the whole scan; its negatives give it no span."""

from __future__ import annotations

import random

import pytest

from audit.detectors import Detector, build_detectors, detector_names, secret_types
from audit.scan import Scanner, scan_text
from tests.audit.detector_cases import NEGATIVES, POSITIVES, render

# Detectors whose format rows share one generic negative below.
GENERIC_NEGATIVES = [
    ("just some words and a path/to/file.txt", None),
    ('name = "configuration"', "python"),
]


def _spans(detector: Detector, text: str, language: str | None) -> set[tuple[int, int]]:
    """The detector's own candidate spans (encoded blobs need the others to look inside)."""
    raw = Scanner(build_detectors()).raw(text, language)
    return {(r.start, r.end) for r in raw if r.detector is detector}


def test_every_detector_has_positive_cases() -> None:
    assert sorted(POSITIVES) == detector_names()


@pytest.mark.parametrize("detector", build_detectors(), ids=lambda d: d.name)
def test_positives_have_exact_spans(detector: Detector) -> None:
    rng = random.Random(detector.name)
    for template, language in POSITIVES[detector.name]:
        text, marked = render(template, rng)
        assert set(marked) <= _spans(detector, text, language), template
        found = {(f.start, f.end) for f in scan_text(text, "case", language).findings}
        assert set(marked) <= found, template


@pytest.mark.parametrize("detector", build_detectors(), ids=lambda d: d.name)
def test_negatives_give_no_span(detector: Detector) -> None:
    rng = random.Random(detector.name)
    for template, language in NEGATIVES.get(detector.name, []) + GENERIC_NEGATIVES:
        text, _ = render(template, rng)
        assert not _spans(detector, text, language), template


@pytest.mark.parametrize(
    "detector", [d for d in build_detectors() if d.mode == "anchored"], ids=lambda d: d.name
)
def test_truncated_or_glued_tokens_are_not_found(detector: Detector) -> None:
    """A prefixed token cut short, or glued to a longer word, is not a token."""
    rng = random.Random(detector.name)
    text, ((start, end),) = render(POSITIVES[detector.name][0][0], rng)
    token = text[start:end]
    cut = text[:start] + token[: len(token) // 2 + 2] + " " + text[end:]
    glued = text[:start] + "x" + token + text[end:]
    assert (start, start + len(token)) not in _spans(detector, cut, None)
    assert (start + 1, end + 1) not in _spans(detector, glued, None)


def test_secret_types_covers_every_detector() -> None:
    types = set(secret_types())
    assert {d.secret_type for d in build_detectors()} - {"Encoded Secret"} <= types
    assert secret_types(["EmailDetector"]) == ["Email Address"]


def test_the_docs_list_every_detector() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "secret-types.md").read_text()
    missing = [name for name in detector_names() if f"| {name} |" not in doc]
    assert not missing, f"add to docs/secret-types.md: {missing}"
