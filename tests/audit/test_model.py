from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from audit.errors import InputError, ModelLoadError
from audit.model import (
    check_model_dir,
    context_length_of,
    load_model,
    pad_token_id,
    resolve_device,
    resolve_dtype,
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
