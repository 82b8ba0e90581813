from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from audit.errors import InputError, ModelLoadError
from audit.sanity import SanityProbe, check_sanity, probe_texts, sanity_probe
from tests.audit import tiny_lm


def test_a_trained_model_passes_the_probe_and_a_random_one_does_not() -> None:
    tok = tiny_lm.tokenizer()
    samples: list[tuple[str, list[tuple[int, int]]]] = [(tiny_lm.CODE, [])]
    good = sanity_probe(tiny_lm.trained(), tok, samples, context_length=tiny_lm.CONTEXT)
    assert good.passed
    assert good.loss < 0.2 * good.uniform
    assert good.vocabulary == len(tok)
    assert math.isclose(good.uniform, math.log(len(tok)))
    torch.manual_seed(1)
    from transformers import GPT2LMHeadModel

    fresh = GPT2LMHeadModel(tiny_lm.gpt2().config)
    fresh.train(False)
    bad = sanity_probe(fresh, tok, samples, context_length=tiny_lm.CONTEXT)
    assert not bad.passed
    with pytest.raises(ModelLoadError, match="fails the sanity probe"):
        check_sanity(bad, Path("m"))


def test_the_secrets_tokens_are_left_out_of_the_probe() -> None:
    tok = tiny_lm.tokenizer()
    start = tiny_lm.CODE.index("AKIA")
    full = sanity_probe(tiny_lm.trained(), tok, [(tiny_lm.CODE, [])], context_length=128)
    masked = sanity_probe(
        tiny_lm.trained(), tok, [(tiny_lm.CODE, [(start, start + 20)])], context_length=128
    )
    assert masked.tokens < full.tokens


def test_too_little_code_is_an_input_error() -> None:
    with pytest.raises(InputError, match="too little to check the model"):
        sanity_probe(tiny_lm.trained(), tiny_lm.tokenizer(), [("x = 1", [])], context_length=128)


def test_a_non_finite_loss_fails() -> None:
    probe = SanityProbe(loss=math.nan, uniform=6.0, vocabulary=400, samples=1, tokens=30)
    assert not probe.passed
    with pytest.raises(ModelLoadError, match="not a number"):
        check_sanity(probe, Path("m"))


def test_probe_texts_are_chosen_in_id_order_with_their_spans() -> None:
    from audit.findings import Finding

    texts = {"b": "bbbb secret", "a": "aaaa secret", "c": "c"}
    finding = Finding.create(
        sample_id="b", origin="b", text=texts["b"], start=5, end=11, secret_type="t", detector="d"
    )
    assert probe_texts(texts, [finding], limit=2) == [
        ("aaaa secret", []),
        ("bbbb secret", [(5, 11)]),
    ]
