"""LoRA: adapters on a frozen base, the base as an exact p0, and the merged output."""

from __future__ import annotations

import copy
import sys

import pytest
import torch

from audit.errors import InputError
from audit.findings import Finding
from gate.unlearn.data import ForgetWindow, RetainWindow, collate
from gate.unlearn.lora import BaseReference, add_adapters, default_targets, merged
from gate.unlearn.reference import aligned_logprobs
from gate.unlearn.settings import UnlearnConfig
from tests.audit import tiny_lm
from tests.gate.unlearn.conftest import micro_model
from tests.gate.unlearn.test_trainer import THRESHOLDS, Scripted, _m

VOCAB = 320
Data = tuple[list[Finding], list[ForgetWindow], list[RetainWindow]]


def _adapted_names(model: torch.nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if hasattr(m, "lora_A")}


def test_gpt2_gets_adapters_on_attention_and_mlp_and_starts_as_the_base() -> None:
    base = micro_model(VOCAB)
    ids = torch.arange(1, 20)[None, :]
    with torch.no_grad():
        before = base(input_ids=ids).logits
    model = add_adapters(base, rank=4, alpha=8)
    assert _adapted_names(model) == {"c_attn", "c_proj", "c_fc"}
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable
    assert all("lora_" in name for name in trainable), "only the adapters train"
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)


def test_llama_gets_adapters_on_every_projection() -> None:
    model = add_adapters(tiny_lm.llama(), rank=2, alpha=4)
    assert _adapted_names(model) == set(default_targets("llama"))
    assert default_targets("some_new_arch") == "all-linear"


def test_unknown_targets_and_a_missing_peft_are_input_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(InputError, match="LoRA target modules"):
        add_adapters(micro_model(VOCAB), rank=2, alpha=4, targets=["no_such_layer"])
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(InputError, match=r"codeeraser\[lora\]"):
        add_adapters(micro_model(VOCAB), rank=2, alpha=4)


def test_base_reference_is_p0_exactly_after_training_and_merging_keeps_the_function(
    forget_and_retain: Data,
) -> None:
    _, windows, _ = forget_and_retain
    original = micro_model(VOCAB)
    model = add_adapters(copy.deepcopy(original), rank=4, alpha=8)
    batch = collate(windows, 0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):  # move the adapters away from zero
        optimizer.zero_grad()
        torch.autograd.backward(-aligned_logprobs(model, batch)[batch.valid].mean())
        optimizer.step()
    with torch.no_grad():
        p0 = aligned_logprobs(original, batch)[batch.valid]
        now = aligned_logprobs(model, batch)[batch.valid]
    reference = BaseReference(model).forget([0], batch, batch.valid).rows(0, len(p0))
    assert torch.allclose(reference.probs.log(), p0, atol=1e-5)
    assert not torch.allclose(now, p0, atol=1e-3), "the adapted model did change"
    plain = merged(model)
    assert not any("lora" in name for name, _ in plain.named_parameters())
    assert type(plain) is type(original)
    with torch.no_grad():
        assert torch.allclose(aligned_logprobs(plain, batch)[batch.valid], now, atol=1e-5)


def test_unlearning_with_lora_trains_the_adapters_against_the_base(
    forget_and_retain: Data,
) -> None:
    findings, windows, retain = forget_and_retain
    model = add_adapters(micro_model(VOCAB), rank=4, alpha=8)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    from gate.unlearn.trainer import Unlearner

    config = UnlearnConfig(lr=1e-2, batch_size=2, epochs=2, patience=0, lora=True)
    assert config.kl_reference == "base"
    result = Unlearner(
        model,
        windows,
        retain,
        before=[_m(f.id, ma=0.9, extracted=True) for f in findings],
        measure=Scripted(model, [{f.id: (0.9, True) for f in findings}]),
        thresholds=THRESHOLDS,
        config=config,
        pad_id=0,
    ).run()
    assert result.reference_kind == "base"
    assert result.reference_bytes == 0
    assert result.steps == 4
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[name]), f"{name} is part of the frozen base"


def test_the_base_reference_needs_lora() -> None:
    assert UnlearnConfig().kl_reference == "cached"
    with pytest.raises(InputError, match="needs LoRA"):
        UnlearnConfig(reference="base")
    with pytest.raises(InputError, match="needs a LoRA model"):
        BaseReference(micro_model(VOCAB))
