"""The scanner against the demo corpus: every planted secret, at its exact span."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
