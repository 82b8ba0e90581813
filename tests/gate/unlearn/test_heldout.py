"""The held-out slice checked after every erase epoch: which texts, and its figure."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from audit.utility import perplexity
from gate.unlearn.heldout import HeldoutSlice, heldout_slice
from tests.gate.unlearn.conftest import CODE, micro_model
from tests.gate.unlearn.test_trainer import VOCAB

TEXTS = [CODE * (i + 1) for i in range(6)]


def _tokens(tokenizer: PreTrainedTokenizerFast, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_the_slice_is_the_first_whole_texts_up_to_the_token_budget(
    bpe_tokenizer: PreTrainedTokenizerFast,
) -> None:
    first = _tokens(bpe_tokenizer, TEXTS[0])
    assert heldout_slice(TEXTS, bpe_tokenizer, 1) == TEXTS[:1]  # at least one text
    assert heldout_slice(TEXTS, bpe_tokenizer, first) == TEXTS[:1]
    assert heldout_slice(TEXTS, bpe_tokenizer, first + 1) == TEXTS[:2]
    assert heldout_slice(TEXTS, bpe_tokenizer, 10**9) == TEXTS  # fewer tokens: all


def test_the_change_is_the_perplexity_against_the_baseline(
    bpe_tokenizer: PreTrainedTokenizerFast,
) -> None:
    model = micro_model(VOCAB)
    watch = HeldoutSlice(model, bpe_tokenizer, TEXTS[:2])
    assert watch.baseline == pytest.approx(perplexity(model, bpe_tokenizer, TEXTS[:2]).perplexity)
    assert watch.change() == pytest.approx(0.0, abs=1e-6)  # nothing moved
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    now = perplexity(model, bpe_tokenizer, TEXTS[:2]).perplexity
    assert watch.change() == pytest.approx(now / watch.baseline - 1)
    assert watch.change() != pytest.approx(0.0, abs=1e-4)


def test_a_given_baseline_is_kept(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    """On resume the baseline comes from the checkpoint, not from the resumed weights."""
    model = micro_model(VOCAB)
    ppl = perplexity(model, bpe_tokenizer, TEXTS[:1]).perplexity
    watch = HeldoutSlice(model, bpe_tokenizer, TEXTS[:1], baseline=ppl / 1.1)
    assert watch.baseline == pytest.approx(ppl / 1.1)
    assert watch.change() == pytest.approx(0.1)
