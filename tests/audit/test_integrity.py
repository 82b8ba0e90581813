from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from audit.errors import InputError, ModelLoadError
from audit.integrity import (
    SanityProbe,
    check_loading_info,
    check_sanity,
    probe_texts,
    sanity_probe,
)
from audit.model import load_model
from tests.audit import tiny_lm


def _info(**keys: object) -> dict[str, object]:
    return {
        "missing_keys": set(),
        "unexpected_keys": set(),
        "mismatched_keys": set(),
        "error_msgs": [],
        **keys,
    }


def test_a_clean_load_passes() -> None:
    check_loading_info(Path("m"), "gpt2", _info())


def test_the_message_names_the_first_keys_and_the_counts() -> None:
    missing = {f"transformer.h.{i}.attn.bias" for i in range(5)}
    unexpected = {f"module.transformer.h.{i}.attn.bias" for i in range(5)}
    with pytest.raises(ModelLoadError) as caught:
        check_loading_info(
            Path("m"), "gpt2", _info(missing_keys=missing, unexpected_keys=unexpected)
        )
    message = caught.value.message
    first = ", ".join(f"transformer.h.{i}.attn.bias" for i in range(3))
    assert f"5 tensors missing ({first}, …)" in message
    assert "5 tensors unexpected (module.transformer.h.0" in message
    assert "'module.'" in message
    assert "\n" not in message
    with pytest.raises(ModelLoadError, match=r"1 tensor of another shape \(wpe\)"):
        check_loading_info(Path("m"), "gpt2", _info(mismatched_keys={("wpe", (64, 8), (128, 8))}))


def test_a_tied_head_is_not_missing_and_an_untied_one_must_be_there(tmp_path: Path) -> None:
    """A Llama saved with tied embeddings has no lm_head tensor: loading it is clean. The
    same weights under a config that unties the head are refused."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tiny_lm.tokenizer()), hidden_size=32, intermediate_size=64,
        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tiny_lm.tokenizer().save_pretrained(tmp_path)
    loaded = load_model(tmp_path, device="cpu")
    head = loaded.model.get_output_embeddings().weight  # type: ignore[operator]
    assert head.data_ptr() == loaded.model.get_input_embeddings().weight.data_ptr()  # type: ignore[operator]
    config_file = tmp_path / "config.json"
    config_file.write_text(
        config_file.read_text().replace(
            '"tie_word_embeddings": true', '"tie_word_embeddings": false'
        )
    )
    with pytest.raises(ModelLoadError, match=r"1 tensor missing \(lm_head.weight\)"):
        load_model(tmp_path, device="cpu")


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
