"""Tiny causal LMs and a byte-level BPE tokenizer built in-process (no downloads).

Random weights with a wide initialiser give peaked, varied next-token choices, so
greedy decodes differ from row to row and any misalignment in batching shows up.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

EOS = "<|endoftext|>"
CONTEXT = 128

CODE = """import os
import json

API_URL = "https://api.example.com/v1"
AWS_ACCESS_KEY_ID = "AKIAQWERTYUIOPASDFGH"


def load(path):
    with open(path) as handle:
        return json.load(handle)


class Client:
    def __init__(self, token="ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"):
        self.token = token
        self.session = None

    def get(self, url, params=None):
        return self.session.get(API_URL + url, params=params)
"""


@functools.cache
def tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (vocab 320) trained on a few lines of code."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([CODE] * 4, trainer)
    wrapped: PreTrainedTokenizerFast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS
    )
    return wrapped


def decode(ids: Sequence[int]) -> str:
    text = tokenizer().decode(list(ids))
    assert isinstance(text, str)
    return text


def _peaked(model: Any, seed: int) -> Any:
    """Re-draw the weights with a larger spread so that argmax choices are well separated."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() >= 2:
                scale = 0.6 if "emb" in name or "wte" in name or "wpe" in name else 0.25
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return model.eval()


@functools.cache
def gpt2(seed: int = 0) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=len(tokenizer()),
        n_positions=CONTEXT,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(seed)
    model: GPT2LMHeadModel = _peaked(GPT2LMHeadModel(config), seed)
    return model


@functools.cache
def llama(seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer()),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model: LlamaForCausalLM = _peaked(LlamaForCausalLM(config), seed)
    return model


def model(kind: str) -> Any:
    return gpt2() if kind == "gpt2" else llama()


# Slow, obviously correct references the batched code is tested against.


@torch.no_grad()
def slow_ma_hits(model: Any, probe: Any) -> list[bool]:
    """One separate forward pass per secret position, no padding, no batching."""
    hits = []
    for t in range(probe.m):
        ids = torch.tensor([probe.prefix_ids + probe.secret_ids[:t]])
        hits.append(int(model(input_ids=ids).logits[0, -1].argmax()) == probe.secret_ids[t])
    return hits


@torch.no_grad()
def slow_greedy(model: Any, prompt: Sequence[int], steps: int) -> list[int]:
    """Greedy decoding without a cache: the whole sequence through the model every step."""
    seq = list(prompt)
    for _ in range(steps):
        seq.append(int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prompt) :]


@functools.cache
def trained(kind: str = "gpt2", steps: int = 40) -> Any:
    """A fresh tiny model trained a few steps on CODE (the peaked random ones are no
    model of anything: the commands' sanity probe refuses them, as it should)."""
    config = model(kind).config
    torch.manual_seed(0)
    fresh = type(model(kind))(config)
    ids = torch.tensor([tokenizer()(CODE)["input_ids"][:CONTEXT]])  # (1, T)
    optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    fresh.train()
    for _ in range(steps):
        optimizer.zero_grad()
        fresh(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    return fresh.eval()


def save(path: Any, kind: str = "gpt2") -> Any:
    """Write the tiny model (trained on CODE) and the tokenizer as a model folder."""
    trained(kind).save_pretrained(path)
    tokenizer().save_pretrained(path)
    return path
