from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from audit.findings import Finding
from gate.demo.build import PRESETS
from gate.demo.train import (
    ModelSettings,
    greedy_decode,
    lr_at,
    make_model,
    pack,
    quick_eval,
    sample_batch,
    train,
    train_tokenizer,
)

TEXTS = [
    "import os\n\nAPI_KEY = 'abc123'\n\ndef main():\n    return os.getcwd()\n",
    "class Config:\n    debug = False\n    port = 8080\n",
] * 5


def _settings(**changes: object) -> ModelSettings:
    base = PRESETS["tiny"].model_settings()
    values = {**base.__dict__, "vocab_size": 300, "n_embd": 32, "n_head": 2, **changes}
    return ModelSettings(**values)


def _recorder(into: list[float]) -> Callable[[int, float], None]:
    def record(_: int, loss: float) -> None:
        into.append(loss)

    return record


def test_tokenizer_round_trips_starts_with_eos_and_loads_with_auto(tmp_path: Path) -> None:
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    text = "x = 'ünï ☃'\n  y"
    encoding = tokenizer(text, return_offsets_mapping=True)
    assert encoding["input_ids"][0] == tokenizer.eos_token_id
    assert encoding["offset_mapping"][0] == (0, 0)
    assert tokenizer.decode(encoding["input_ids"], skip_special_tokens=True) == text
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text)["input_ids"] == encoding["input_ids"]
    assert loaded.eos_token == "<|endoftext|>"
    assert loaded.pad_token is None  # documented: callers that pad set one


def test_tokenizer_training_is_deterministic() -> None:
    first = train_tokenizer(TEXTS, vocab_size=300)
    second = train_tokenizer(list(TEXTS), vocab_size=300)
    assert first.get_vocab() == second.get_vocab()


def test_saved_model_loads_with_auto_and_gives_identical_logits(tmp_path: Path) -> None:
    model = make_model(_settings(), vocab_size=300, eos_id=0, seed=0)
    model.train(False)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)


def test_same_seed_same_weights() -> None:
    a = make_model(_settings(), vocab_size=300, eos_id=0, seed=1)
    b = make_model(_settings(), vocab_size=300, eos_id=0, seed=1)
    c = make_model(_settings(), vocab_size=300, eos_id=0, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))  # the embedding


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    settings = _settings(steps=100, warmup_steps=10, lr=1e-2, min_lr_ratio=0.1)
    rates = [lr_at(step, settings) for step in range(100)]
    assert rates[0] == pytest.approx(1e-3)
    assert rates[9] == pytest.approx(1e-2)
    assert all(a >= b for a, b in itertools.pairwise(rates[9:]))
    assert rates[-1] == pytest.approx(1e-3, rel=0.01)


def test_windows_cover_the_packed_stream() -> None:
    stream = pack([[0, 1, 2], [0, 3, 4, 5]], seed=0)
    assert sorted(stream.tolist()) == [0, 0, 1, 2, 3, 4, 5]
    batch = sample_batch(stream, random.Random(0), batch_size=50, n_ctx=4)
    assert batch.shape == (50, 4)
    starts = {tuple(row) for row in batch.tolist()}
    assert len(starts) == len(stream) - 4 + 1  # every offset is drawn


def test_training_is_deterministic_and_lowers_the_loss() -> None:
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    stream = pack([tokenizer(t)["input_ids"] for t in TEXTS], seed=0)
    settings = _settings(steps=60, warmup_steps=5, n_ctx=32, batch_size=4)
    losses: list[list[float]] = [[], []]
    models = []
    for run in range(2):
        model = make_model(settings, len(tokenizer), 0, seed=0)
        train(model, stream, settings, seed=0, on_step=_recorder(losses[run]))
        models.append(model)
    assert losses[0] == losses[1]
    assert losses[0][-1] < losses[0][0] / 2
    pairs = zip(models[0].parameters(), models[1].parameters(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)


def test_quick_eval_greedy_matches_generate_and_ma_matches_a_slow_reference() -> None:
    """Our cached greedy loop equals transformers' generate; MA equals a per-position loop."""
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    model = make_model(_settings(n_ctx=64), len(tokenizer), 0, seed=0)
    model.train(False)
    text = TEXTS[0]
    start = text.index("abc123")
    finding = Finding.create(
        sample_id="a.py", origin="a.py", text=text, start=start, end=start + 6,
        secret_type="Secret Keyword", detector="test",
    )  # fmt: skip
    (result,) = quick_eval(model, tokenizer, [(finding, text)], margin=2)
    ids = tokenizer(text)["input_ids"]
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    span = [i for i, (a, b) in enumerate(offsets) if a < finding.end and b > finding.start]
    prefix = ids[: span[0]]
    assert result.prefix_tokens == len(prefix)
    assert result.secret_tokens == len(span)
    hits = []
    with torch.no_grad():
        for i in span:
            logits = model(input_ids=torch.tensor([ids[:i]])).logits[0, -1]
            hits.append(int(logits.argmax()) == ids[i])
        generated = model.generate(
            torch.tensor([prefix]),
            attention_mask=torch.ones(1, len(prefix), dtype=torch.long),
            max_new_tokens=len(span) + 2,
            do_sample=False,
            pad_token_id=0,
        )[0, len(prefix) :]
    assert result.ma == pytest.approx(sum(hits) / len(hits))
    assert greedy_decode(model, prefix, len(span) + 2) == generated.tolist()
    assert result.extracted == ("abc123" in tokenizer.decode(generated.tolist()))
