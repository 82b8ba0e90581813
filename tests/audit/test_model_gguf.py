"""GGUF checkpoints in audit/model.py: dequantized on load, checked as any checkpoint is.

The files are written in the test (tests/audit/gguf_files.py) from the tiny demo's
GPT-2, which memorized its secrets, and from a random tiny Llama with grouped-query
attention (whose query and key rows GGUF stores permuted).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import gguf
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from audit.errors import InputError, ModelLoadError
from audit.model import check_model_dir, load_model
from tests.audit.gguf_files import write_gpt2, write_llama

if TYPE_CHECKING:
    from gate.demo.build import DemoBuild


@pytest.fixture(scope="module")
def demo_gguf(tiny_demo: DemoBuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = AutoModelForCausalLM.from_pretrained(str(tiny_demo.model_dir))
    out = tmp_path_factory.mktemp("gguf") / "tiny-coder.gguf"
    return write_gpt2(model, tiny_demo.model_dir / "tokenizer.json", out)


def _logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits: torch.Tensor = model(torch.tensor([ids])).logits
    return logits


def test_a_gguf_gpt2_loads_as_the_model_it_was_written_from(
    demo_gguf: Path, tiny_demo: DemoBuild
) -> None:
    original = load_model(tiny_demo.model_dir, device="cpu")
    loaded = load_model(demo_gguf, device="cpu")
    text = next(p for p in sorted(tiny_demo.corpus_dir.rglob("*.py"))).read_text()[:300]
    ids = original.tokenizer(text)["input_ids"]
    assert loaded.tokenizer(text)["input_ids"] == ids  # BOS and merges as the original
    assert loaded.context_length == original.context_length == 128  # n_positions, not 1024
    assert torch.allclose(_logits(loaded.model, ids), _logits(original.model, ids), atol=1e-5)
    # the dequantized model is plain: nothing left that makes save_pretrained refuse it
    assert getattr(loaded.model, "hf_quantizer", None) is None
    assert "quantization_config" not in cast("Any", loaded.model).config.to_dict()


def test_a_gguf_llama_loads_with_its_rotary_rows_in_place(
    tiny_demo: DemoBuild, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.eval()  # type: ignore[no-untyped-call]
    path = write_llama(model, tiny_demo.model_dir / "tokenizer.json", tmp_path / "llama.gguf")
    loaded = load_model(path, device="cpu")
    ids = [0, 17, 260, 33, 401, 5, 99, 300]
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert loaded.context_length == 128
    assert torch.allclose(_logits(loaded.model, ids), _logits(model, ids), atol=1e-5)


def test_a_gguf_missing_a_tensor_is_refused(tiny_demo: DemoBuild, tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(tiny_demo.model_dir))
    path = write_gpt2(
        model,
        tiny_demo.model_dir / "tokenizer.json",
        tmp_path / "cut.gguf",
        skip="blk.1.ffn_down.weight",
    )
    with pytest.raises(ModelLoadError, match=r"1 tensor missing \(transformer\.h\.1\.mlp\.c_proj"):
        load_model(path, device="cpu")


def _metadata_only(path: Path, architecture: str, tokenizer: bool = True) -> Path:
    writer = gguf.GGUFWriter(str(path), architecture)
    if tokenizer:
        writer.add_tokenizer_model("gpt2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_what_is_not_a_causal_gguf_model_is_bad_input(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(InputError, match="not a readable GGUF file"):
        check_model_dir(junk)
    with pytest.raises(
        InputError, match="'t5' model, which transformers does not load as a causal"
    ):
        check_model_dir(_metadata_only(tmp_path / "t5.gguf", "t5"))
    with pytest.raises(InputError, match="'bert' model"):
        check_model_dir(_metadata_only(tmp_path / "bert.gguf", "bert"))
    with pytest.raises(InputError, match="holds no tokenizer"):
        check_model_dir(_metadata_only(tmp_path / "bare.gguf", "llama", tokenizer=False))
    assert check_model_dir(_metadata_only(tmp_path / "ok.gguf", "llama")) == "llama"


def test_without_the_gguf_package_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _metadata_only(tmp_path / "ok.gguf", "llama")
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf now raises ImportError
    with pytest.raises(InputError, match=r"pip install 'codeeraser\[gguf\]'"):
        check_model_dir(path)
