"""Fixtures for the unlearning tests: a byte-level BPE tokenizer and micro models."""

from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from audit.findings import Finding
from gate.unlearn.data import (
    ForgetWindow,
    RetainWindow,
    build_forget_windows,
    build_retain_windows,
)

torch.set_num_threads(1)  # test processes may overlap on two cores

_TRAIN_TEXT = [
    "import os\nimport sys\n\ndef main(argv):\n    return len(argv)\n",
    "class Config:\n    api_key = 'xxx'\n    password = \"yyy\"\n    host = 'localhost'\n",
    "for i in range(10):\n    print(i, i * i)\n# a comment about things\n",
] * 20


@pytest.fixture(scope="session")
def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A GPT-2 style byte-level BPE tokenizer (vocab 320) trained on a few code lines."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TRAIN_TEXT, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")  # type: ignore[no-untyped-call]


CODE = "def handler(event, context):\n    value = compute(event)\n    return value\n"


def micro_model(vocab: int, seed: int = 0) -> GPT2LMHeadModel:
    """A random one-layer GPT-2 (32 wide, 64 positions): fast enough for loss tests."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    model.train(False)
    return model


def planted_sample(seed: int, n: int = 16) -> tuple[str, tuple[int, int]]:
    """A code sample with one random secret; returns the text and the secret's span."""
    rng = random.Random(seed)
    secret = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(n))
    head = CODE * (1 + seed % 3) + "API_KEY = '"
    return head + secret + "'\n" + CODE, (len(head), len(head) + n)


def make_finding(sample_id: str, text: str, span: tuple[int, int]) -> Finding:
    return Finding.create(
        sample_id=sample_id,
        origin=sample_id,
        text=text,
        start=span[0],
        end=span[1],
        secret_type="Test Key",
        detector="test",
    )


@pytest.fixture(scope="session")
def forget_and_retain(
    bpe_tokenizer: PreTrainedTokenizerFast,
) -> tuple[list[Finding], list[ForgetWindow], list[RetainWindow]]:
    """Four one-secret samples as 40-token windows, and eight clean retain windows."""
    findings, texts = [], {}
    for i in range(4):
        text, span = planted_sample(i)
        texts[f"s{i}.py"] = text
        findings.append(make_finding(f"s{i}.py", text, span))
    windows = build_forget_windows(findings, texts, bpe_tokenizer, 40)
    clean = [(f"c{i}.py", CODE * (2 + i)) for i in range(8)]
    retain = build_retain_windows(iter(clean), bpe_tokenizer, retain_tokens=24, count=8)
    return findings, windows, retain
