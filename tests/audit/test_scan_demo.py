"""The scanner against the demo corpus: every planted secret, at its exact span."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from audit.corpus import CorpusSpec
from audit.findings import read_findings
from audit.scan import scan_corpus

if TYPE_CHECKING:
    from gate.demo.build import DemoBuild


def test_every_planted_demo_secret_is_found(tiny_demo: DemoBuild) -> None:
    for data, expected in (
        (tiny_demo.corpus_dir, tiny_demo.planted),
        (tiny_demo.corpus_jsonl, tiny_demo.planted),
        (tiny_demo.heldout_dir, tiny_demo.controls),
    ):
        found = {(f.sample_id, f.start, f.end): f for f in scan_corpus(CorpusSpec(data), jobs=1)}
        planted = read_findings(expected)
        assert planted
        for p in planted:
            f = found.get((p.sample_id, p.start, p.end))
            assert f is not None, f"{p.id} ({p.secret_type}) at {p.origin}:{p.line} not found"
            assert (f.secret_type, f.secret_sha256) == (p.secret_type, p.secret_sha256), p.id


@pytest.mark.parametrize("preset", ["gpt2-alt", "llama-49k"])
def test_every_planted_zoo_secret_is_found(preset: str, tmp_path: Path) -> None:
    """The test-model presets' corpora (no model needed): their new secret kinds and
    file formats are found by the scanner at their exact spans, with their types."""
    from gate.demo.build import PRESETS, write_corpus
    from gate.demo.corpus import make_corpus

    write_corpus(tmp_path, make_corpus(PRESETS[preset].corpus_settings(), seed=0))
    for data, expected in (
        (tmp_path / "corpus", tmp_path / "planted.jsonl"),
        (tmp_path / "heldout", tmp_path / "controls.jsonl"),
    ):
        found = {(f.sample_id, f.start, f.end): f for f in scan_corpus(CorpusSpec(data), jobs=1)}
        planted = read_findings(expected)
        assert planted
        for p in planted:
            f = found.get((p.sample_id, p.start, p.end))
            assert f is not None, f"{p.id} ({p.secret_type}) at {p.origin}:{p.line} not found"
            assert (f.secret_type, f.secret_sha256) == (p.secret_type, p.secret_sha256), p.id
