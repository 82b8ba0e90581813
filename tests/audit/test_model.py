from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import Gemma2Config, Gemma2ForCausalLM

from audit.errors import InputError, ModelLoadError
from audit.model import (
    bypassed,
    check_model_dir,
    chunked_argmax,
    chunked_nll,
    context_length_of,
    forward_hidden,
    head_chunks,
    load_model,
    pad_token_id,
    resolve_device,
    resolve_dtype,
    split_head,
)
from tests.audit import tiny_lm


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model")
    tiny_lm.gpt2().save_pretrained(path)
    tiny_lm.tokenizer().save_pretrained(path)
    return path


def copy_of(saved: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(saved, target)
    return target


def test_load_round_trip(saved: Path) -> None:
    loaded = load_model(saved, device="cpu", dtype="auto")
    assert loaded.device == torch.device("cpu")
    assert loaded.dtype == torch.float32
    assert loaded.context_length == tiny_lm.CONTEXT
    assert not loaded.model.training
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.tokenizer.pad_token == tiny_lm.EOS  # the tokenizer had none
    assert loaded.pad_id == 0
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=ids).logits, tiny_lm.gpt2()(input_ids=ids).logits)


def test_forced_dtype(saved: Path) -> None:
    loaded = load_model(saved, device="cpu", dtype="bfloat16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_missing_or_foreign_folders_are_input_errors(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such model folder"):
        load_model(tmp_path / "nope")
    with pytest.raises(InputError, match=r"no config\.json"):
        load_model(tmp_path)
    model_dir = copy_of(saved, tmp_path)
    config = model_dir / "config.json"
    config.write_text("{not json")
    with pytest.raises(InputError, match="not a readable JSON"):
        load_model(model_dir)
    config.write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(InputError, match="'t5' model is not a causal language model"):
        load_model(model_dir)
    config.write_text(json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    with pytest.raises(InputError, match="BertForMaskedLM is not a causal language model"):
        load_model(model_dir)


def test_no_weights_or_tokenizer(saved: Path, tmp_path: Path) -> None:
    model_dir = copy_of(saved, tmp_path)
    for weights in model_dir.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(InputError, match=r"no \*\.safetensors"):
        check_model_dir(model_dir)
    shutil.rmtree(model_dir)
    model_dir = copy_of(saved, tmp_path)
    (model_dir / "tokenizer.json").unlink()
    (model_dir / "tokenizer_config.json").unlink()
    with pytest.raises(InputError, match="no tokenizer files"):
        load_model(model_dir)


def test_corrupt_weights_are_a_model_load_error(saved: Path, tmp_path: Path) -> None:
    model_dir = copy_of(saved, tmp_path)
    for weights in model_dir.glob("*.safetensors"):
        weights.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="failed to load"):
        load_model(model_dir)


def test_device_and_dtype_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="not available"):
            resolve_device("cuda")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) in (torch.bfloat16, torch.float16)
    with pytest.raises(InputError, match="unknown dtype"):
        resolve_dtype("int4", torch.device("cpu"))


def test_context_and_pad_for_in_memory_models() -> None:
    assert context_length_of(tiny_lm.llama()) == tiny_lm.CONTEXT
    assert context_length_of(torch.nn.Linear(2, 2)) == 2048
    assert pad_token_id(tiny_lm.tokenizer(), tiny_lm.gpt2()) == 0


# --- the output layer, a chunk of positions at a time ---------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5000), st.integers(1, 300_000), st.integers(1, 1 << 20))
def test_head_chunks_cover_every_position_once_in_near_equal_chunks(
    positions: int, vocab: int, budget: int
) -> None:
    chunks = head_chunks(positions, vocab, budget)
    covered = [i for rows in chunks for i in range(rows.start, rows.stop)]
    assert covered == list(range(positions))
    sizes = [rows.stop - rows.start for rows in chunks]
    assert max(sizes) <= max(1, budget // vocab) or positions == 0
    assert max(sizes) - min(sizes) <= 1 or len(sizes) == 1 or sizes[-1] < sizes[0]
    assert min(sizes) * 2 >= max(sizes) or positions == 0  # no short straggler


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_the_split_head_gives_the_models_own_logits(kind: str) -> None:
    model = tiny_lm.model(kind)
    ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 3, 4, 5]])
    mask = (ids != 0).long()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        hidden, head = forward_hidden(model, ids, mask)
        assert split_head(model) is model.get_output_embeddings()
        assert hidden.shape == (*ids.shape, model.config.hidden_size)
        assert torch.equal(head(hidden), logits)
        last, _ = forward_hidden(model, ids, mask, keep=2)
        assert torch.equal(head(last), logits[:, -2:])
    assert model.get_output_embeddings()(hidden).shape == logits.shape  # the layer is back


def test_a_model_whose_logits_are_more_than_its_head_keeps_its_logits() -> None:
    config = Gemma2Config(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=5.0,  # logits = 5·tanh(head / 5)
    )
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config)
    model.train(False)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        out, head = forward_hidden(model, ids, torch.ones_like(ids))
    assert split_head(model) is None
    assert torch.equal(head(out), logits)


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(0, 40),
    vocab=st.integers(2, 400),
    width=st.integers(1, 24),
    budget=st.integers(1, 4000),
    seed=st.integers(0, 2**31),
)
def test_chunked_argmax_and_nll_equal_the_whole_logits(
    rows: int, vocab: int, width: int, budget: int, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(width, vocab, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, width, generator=generator))
        hidden = torch.randn(rows, width, generator=generator)
        labels = torch.randint(0, vocab, (rows,), generator=generator)
        logits = head(hidden)  # (N, V) at once: the unchunked computation
        preds = chunked_argmax(head, hidden, vocab, budget)
        nll = chunked_nll(head, hidden, labels, vocab, budget)
    assert torch.equal(preds, logits.argmax(dim=-1)) or _near_tie(logits, preds)
    whole = F.cross_entropy(logits, labels, reduction="none")
    assert torch.allclose(nll, whole, rtol=1e-5, atol=1e-5)


def _near_tie(logits: torch.Tensor, preds: torch.Tensor) -> bool:
    """Rounding of a product of fewer rows may differ in the last bit: a different
    argmax is then one whose logit is within that rounding of the maximum."""
    chosen = logits.gather(-1, preds[:, None]).squeeze(-1)
    return bool(torch.allclose(chosen, logits.max(dim=-1).values, rtol=1e-5, atol=1e-5))


def test_the_head_is_bypassed_only_in_the_thread_that_asks() -> None:
    """Ranks may run as threads on one model: another thread still gets logits."""
    head = torch.nn.Linear(4, 9)
    hidden = torch.randn(2, 4)
    inside, outside = threading.Event(), threading.Event()
    seen: list[torch.Tensor] = []

    def other() -> None:
        inside.wait(timeout=10)
        seen.append(head(hidden))
        outside.set()

    thread = threading.Thread(target=other)
    thread.start()
    with bypassed(head):
        inside.set()
        outside.wait(timeout=10)
        assert torch.equal(head(hidden), hidden)  # this thread: the identity
    thread.join(timeout=10)
    assert seen
    assert seen[0].shape == (2, 9)  # the other thread: logits
    assert "forward" not in head.__dict__  # the layer's own forward is back
