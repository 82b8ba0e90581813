from __future__ import annotations

from pathlib import Path

import pytest

from audit.errors import ModelLoadError
from audit.integrity import check_loading_info
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
