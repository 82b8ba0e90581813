"""GGUF files written in tests with the `gguf` package, in the layout transformers reads.

llama.cpp's converter names tensors by block (``blk.N.attn_q.weight``), stores a
GPT-2's fused attention and MLP weights transposed from the Conv1D layout, permutes a
Llama's query and key rows for its rotary kernel, and keeps the tokenizer as metadata
(``tokenizer.ggml.*``). These writers do the same from a model in memory, in float32,
so a test can compare what transformers loads back with what was written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

_GPT2_BLOCK = {
    "ln_1": "attn_norm",
    "attn.c_attn": "attn_qkv",
    "attn.c_proj": "attn_output",
    "ln_2": "ffn_norm",
    "mlp.c_fc": "ffn_up",
    "mlp.c_proj": "ffn_down",
}
_GPT2_TOP = {
    "wte.weight": "token_embd.weight",
    "wpe.weight": "position_embd.weight",
    "ln_f.weight": "output_norm.weight",
    "ln_f.bias": "output_norm.bias",
}
_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # stored as (in, out)

_LLAMA_BLOCK = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def add_tokenizer(writer: gguf.GGUFWriter, tokenizer_json: Path) -> None:
    """A byte-level BPE tokenizer.json as GGUF metadata ("gpt2" model), with BOS added
    as its post-processor adds it."""
    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab: dict[str, int] = spec["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    special = {t["content"] for t in spec["added_tokens"] if t["special"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])  # 3: control
    writer.add_token_merges([" ".join(pair) for pair in spec["model"]["merges"]])
    first = vocab[next(iter(sorted(special)))]
    writer.add_bos_token_id(first)
    writer.add_eos_token_id(first)
    writer.add_add_bos_token(True)


def write_gpt2(model: Any, tokenizer_json: Path, out: Path, skip: str | None = None) -> Path:
    """A GPT2LMHeadModel as a GGUF file (`skip`: a GGUF tensor name left out)."""
    config = model.config
    writer = gguf.GGUFWriter(str(out), "gpt2")
    writer.add_block_count(config.n_layer)
    writer.add_context_length(config.n_positions)
    writer.add_embedding_length(config.n_embd)
    writer.add_feed_forward_length(config.n_inner or 4 * config.n_embd)
    writer.add_head_count(config.n_head)
    writer.add_layer_norm_eps(config.layer_norm_epsilon)
    add_tokenizer(writer, tokenizer_json)
    for name, tensor in model.transformer.state_dict().items():
        gguf_name, array = _gpt2_tensor(name, tensor)
        if gguf_name != skip:
            writer.add_tensor(gguf_name, array)
    _finish(writer)
    return out


def _gpt2_tensor(name: str, tensor: torch.Tensor) -> tuple[str, np.ndarray]:
    if name in _GPT2_TOP:
        return _GPT2_TOP[name], _array(tensor)
    _, block, rest = name.split(".", 2)  # h.N.part.kind
    part, kind = rest.rsplit(".", 1)
    flipped = kind == "weight" and part in _CONV1D
    return f"blk.{block}.{_GPT2_BLOCK[part]}.{kind}", _array(tensor.T if flipped else tensor)


def write_llama(model: Any, tokenizer_json: Path, out: Path) -> Path:
    """A LlamaForCausalLM (untied head) as a GGUF file, query and key rows permuted as
    llama.cpp's converter permutes them."""
    config = model.config
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    add_tokenizer(writer, tokenizer_json)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    for name, tensor in model.state_dict().items():
        writer.add_tensor(*_llama_tensor(name, tensor, heads, kv_heads))
    _finish(writer)
    return out


def _llama_tensor(
    name: str, tensor: torch.Tensor, heads: int, kv_heads: int
) -> tuple[str, np.ndarray]:
    top = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if name in top:
        return top[name], _array(tensor)
    _, _, block, rest = name.split(".", 3)  # model.layers.N.part.kind
    part, kind = rest.rsplit(".", 1)
    if part == "self_attn.q_proj":
        tensor = _permute(tensor, heads)
    elif part == "self_attn.k_proj":
        tensor = _permute(tensor, kv_heads)
    return f"blk.{block}.{_LLAMA_BLOCK[part]}.{kind}", _array(tensor)


def _permute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's row order for a rotary projection: each head's two halves interleaved."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _array(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().float().cpu().numpy())


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
