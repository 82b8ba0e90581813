from __future__ import annotations

from pathlib import Path

import pytest

from audit import metrics
from audit.calibrate import DEFAULT_THRESHOLDS, PAPER_THRESHOLDS, calibrate
from audit.corpus import CorpusSpec
from audit.errors import InputError
from audit.measurements import Thresholds
from tests.audit import tiny_lm
from tests.audit.tiny_lm import slow_greedy, slow_ma_hits


@pytest.fixture
def unseen(tmp_path: Path) -> Path:
    (tmp_path / "a.py").write_text(tiny_lm.CODE)
    (tmp_path / "b.py").write_text("x = 1\n")  # too short for a sequence
    (tmp_path / "c.py").write_text(tiny_lm.CODE[200:] + tiny_lm.CODE[:200])
    return tmp_path


def test_calibration_scores_each_sequence_as_the_paper_defines(unseen: Path) -> None:
    model, tok = tiny_lm.llama(), tiny_lm.tokenizer()
    result = calibrate(model, tok, CorpusSpec(unseen), sequence_tokens=16, max_sequences=5)
    assert [s.sample_id for s in result.sequences] == ["a.py", "c.py"]
    for figures, name in zip(result.sequences, ("a.py", "c.py"), strict=True):
        ids = tok((unseen / name).read_text(), add_special_tokens=False)["input_ids"][:16]
        probe = type("P", (), {"m": 15, "prefix_ids": tuple(ids[:1]), "secret_ids": tuple(ids[1:])})
        hits = slow_ma_hits(model, probe)
        assert figures.tokens == 16
        assert figures.ma == sum(hits) / 15
        decodes = {i: slow_greedy(model, ids[: 1 + i], 15 - i) for i in range(15 - 3 + 1)}
        assert figures.el_10 == metrics.extraction_likelihood(ids[1:], decodes, 10)
        assert figures.el_3 == metrics.extraction_likelihood(ids[1:], decodes, 3)
    means = result.thresholds
    assert means.ma == sum(s.ma for s in result.sequences) / 2
    assert means.el_10 == sum(s.el_10 for s in result.sequences) / 2
    assert means.source == f"calibrated:{unseen}"
    assert Thresholds.from_dict(result.to_dict()) == means
    assert result.to_dict()["sequence_count"] == 2


def test_sequences_are_cut_to_the_context(unseen: Path) -> None:
    result = calibrate(
        tiny_lm.gpt2(),
        tiny_lm.tokenizer(),
        CorpusSpec(unseen),
        sequence_tokens=4096,
        max_sequences=1,
    )
    assert [s.tokens for s in result.sequences] == [tiny_lm.CONTEXT]


def test_no_long_enough_sample_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "b.py").write_text("x = 1\n")
    with pytest.raises(InputError, match="no sample has 16 tokens"):
        calibrate(tiny_lm.gpt2(), tiny_lm.tokenizer(), CorpusSpec(tmp_path), sequence_tokens=16)


def test_paper_thresholds_are_fractions() -> None:
    assert PAPER_THRESHOLDS["codegen-350m-mono"] == Thresholds(
        0.4879, 0.0592, "paper:codegen-350m-mono"
    )
    assert all(0 < t.ma < 1 and 0 < t.el_10 < 1 for t in PAPER_THRESHOLDS.values())
    assert DEFAULT_THRESHOLDS in PAPER_THRESHOLDS.values()
