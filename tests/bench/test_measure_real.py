"""bench/measure_real.py: its pure helpers, and the clock's sorting of a model's calls
(a tiny random GPT-2: passes, decode steps, the output layer inside and outside)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel

from tests.bench import load_script


@pytest.fixture(scope="module")
def script() -> ModuleType:
    load_script("measure")  # measure_real imports it by name
    return load_script("measure_real")


@pytest.fixture(scope="module")
def model() -> Any:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    model.eval()  # type: ignore[no-untyped-call]
    return model


def test_call_kind(script: ModuleType) -> None:
    assert script.call_kind(1) == "step"
    assert script.call_kind(2) == "pass"
    assert script.call_kind(40) == "pass"


def test_tree_args_drops_tree_and_rounds(script: ModuleType) -> None:
    argv = ["--model", "M", "--tree", "a=/x", "--first", "3", "--rounds=2", "--tree=b=/y"]
    argv += ["--rounds", "4", "--data", "D"]
    assert script.tree_args(argv) == ["--model", "M", "--first", "3", "--data", "D"]


def test_parse_trees(script: ModuleType) -> None:
    trees = script.parse_trees(["before=/tmp/b", "after=."])
    assert [(name, str(path)) for name, path in trees] == [("before", "/tmp/b"), ("after", ".")]
    for bad in ("before", "=/tmp/b", "before="):
        with pytest.raises(SystemExit, match="NAME=DIR"):
            script.parse_trees([bad])


def _run(values: list[float], ids: tuple[str, ...] = ("a", "b")) -> dict[str, Any]:
    return {"measurements": [{"finding_id": i, "ma": v} for i, v in zip(ids, values, strict=True)]}


def test_differing_names_the_findings_that_differ(script: ModuleType) -> None:
    assert script.differing([_run([0.5, 1.0]), _run([0.5, 1.0]), _run([0.5, 1.0])]) == []
    assert script.differing([_run([0.5, 1.0]), _run([0.5, 0.9])]) == ["b"]
    assert script.differing([_run([0.5, 1.0]), _run([0.4, 1.0]), _run([0.5, 0.9])]) == ["a", "b"]
    short = {"measurements": [{"finding_id": "a", "ma": 0.5}]}
    assert script.differing([_run([0.5, 1.0]), short]) == ["(different numbers of findings)"]


def test_share(script: ModuleType) -> None:
    assert script.share(10e9, 2.0, 10e9) == pytest.approx(0.5)
    assert script.share(10e9, 0.0, 10e9) == 0.0
    assert script.share(10e9, 1.0, 0.0) == 0.0


def test_breakdown_parts_add_up_to_the_total(script: ModuleType) -> None:
    clock = script.Clock()
    clock.kinds["pass"].add(2.0, 1e9, 4)
    clock.kinds["step"].add(3.0, 1e8, 8)
    clock.head_outside = 0.5
    parts = script.breakdown(clock, 10.0)
    assert parts == {"pass": 2.0, "step": 3.0, "head_outside": 0.5, "rest": 4.5}
    assert sum(parts.values()) == pytest.approx(10.0)


def test_clock_sorts_calls_and_counts_the_counters_flops(script: ModuleType, model: Any) -> None:
    counter = script.FlopCounter(model)
    clock = script.Clock()
    script.attach(model, counter, clock)
    with torch.no_grad():
        cache = DynamicCache()
        model(input_ids=torch.ones((3, 5), dtype=torch.long), cache=cache, use_cache=True)
        model(input_ids=torch.ones((3, 1), dtype=torch.long), cache=cache, use_cache=True)
        model(input_ids=torch.ones((2, 4), dtype=torch.long), logits_to_keep=1)
    kinds = clock.kinds
    assert (kinds["pass"].calls, kinds["pass"].rows) == (2, 5)
    assert (kinds["step"].calls, kinds["step"].rows) == (1, 3)
    assert kinds["pass"].flops + kinds["step"].flops == pytest.approx(counter.flops)
    assert counter.calls == 3
    assert clock.depth == 0
    assert clock.head_outside == 0.0  # every head call so far ran inside a model call
    assert clock.head_seconds > 0.0


def test_clock_times_the_head_outside_the_model(script: ModuleType, model: Any) -> None:
    counter = script.FlopCounter(model)
    clock = script.Clock()
    script.attach(model, counter, clock)
    with torch.no_grad():
        model.get_output_embeddings()(torch.randn(4, 32))
    assert clock.head_outside == clock.head_seconds > 0.0
    assert counter.calls == 0
    clock.reset()
    assert (clock.head_seconds, clock.kinds["pass"].calls) == (0.0, 0)


def test_call_flops_matches_the_counters_hook(script: ModuleType, model: Any) -> None:
    counter = script.FlopCounter(model)
    ids = torch.ones((2, 6), dtype=torch.long)
    kwargs = {"attention_mask": torch.ones((2, 9)), "logits_to_keep": 2}
    with torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones((2, 6)), logits_to_keep=2)
    expected = 2 * counter.dense * 12 + 4 * 2 * 32 * 12 * 9 + 2 * 32 * 64 * 2 * 2
    assert counter.call_flops(ids, kwargs) == expected
    same = {"attention_mask": torch.ones((2, 6)), "logits_to_keep": 2}
    assert counter.flops == counter.call_flops(ids, same)
