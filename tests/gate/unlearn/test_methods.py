from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from audit.errors import InputError
from audit.findings import Finding
from gate.unlearn.data import ForgetWindow, RetainWindow, collate
from gate.unlearn.losses import full_reference, stats_from_logprobs
from gate.unlearn.methods import (
    METHODS,
    CodeEraser,
    ConstraintUnlearning,
    ForgetView,
    GradientAscent,
    Hyper,
    RetainView,
    UnlearningMethod,
    get_method,
)
from gate.unlearn.reference import aligned_logprobs, forget_positions
from tests.gate.unlearn.conftest import micro_model

Data = tuple[list[Finding], list[ForgetWindow], list[RetainWindow]]
VOCAB = 320


class Views:
    """A forget and a retain view of the same batches, and the log-probs they came from."""

    def __init__(
        self, method: UnlearningMethod, data: Data, model: torch.nn.Module, p0: torch.nn.Module
    ) -> None:
        _, windows, retain = data
        batch = collate(windows, pad_id=0)
        rbatch = collate(retain[:4], pad_id=0)
        self.logprobs = aligned_logprobs(model, batch)
        self.rlogprobs = aligned_logprobs(model, rbatch)
        self.labels, self.rlabels = batch.labels, rbatch.labels
        with torch.no_grad():
            where = forget_positions(batch, method.forget_kl)
            self.ref = full_reference(aligned_logprobs(p0, batch)[where])
            self.rref = full_reference(aligned_logprobs(p0, rbatch)[rbatch.valid])
        stats = stats_from_logprobs(self.logprobs, batch.labels, self.ref, where)
        self.forget = ForgetView(stats, batch.valid, batch.active, batch.context)
        rstats = stats_from_logprobs(self.rlogprobs, rbatch.labels, self.rref, rbatch.valid)
        self.retain = RetainView(rstats, rbatch.valid)

    def ce(self, mask: torch.Tensor) -> torch.Tensor:
        logits = self.logprobs[mask]  # log-softmax values are valid logits
        return F.cross_entropy(logits, self.labels[mask])


def _views(
    method: UnlearningMethod, data: Data, model: torch.nn.Module, p0: torch.nn.Module
) -> tuple[ForgetView, RetainView]:
    views = Views(method, data, model, p0)
    return views.forget, views.retain


def test_unknown_method_lists_the_valid_ones() -> None:
    with pytest.raises(
        InputError, match=r"unknown unlearning method 'npo' \(valid: codeeraser, cu, ga\)"
    ):
        get_method("npo")
    assert get_method("codeeraser") is CodeEraser
    assert set(METHODS) == {"ga", "cu", "codeeraser"}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_gives_a_finite_differentiable_loss(
    name: str, forget_and_retain: Data
) -> None:
    method = get_method(name)()
    model = micro_model(VOCAB)
    forget, retain = _views(method, forget_and_retain, model, micro_model(VOCAB, seed=1))
    loss = method.forget_loss(forget)
    assert loss.value.shape == ()
    assert torch.isfinite(loss.value)
    assert loss.parts
    assert all(isinstance(v, float) for v in loss.parts.values())
    torch.autograd.backward(loss.value)
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())
    retained = method.retain_loss(retain)
    assert (retained is None) == (not method.retain_kl)


def test_ga_is_minus_the_library_lm_loss(forget_and_retain: Data) -> None:
    _, windows, _ = forget_and_retain
    model = micro_model(VOCAB)
    batch = collate(windows, pad_id=0)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    library = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels)
    forget, _ = _views(GradientAscent(), forget_and_retain, model, model)
    assert torch.allclose(GradientAscent().forget_loss(forget).value, -library.loss, atol=1e-5)


def test_codeeraser_and_cu_follow_the_design_table(forget_and_retain: Data) -> None:
    hyper = Hyper(alpha=0.5, lam=0.3, gamma=0.2)
    model, p0 = micro_model(VOCAB), micro_model(VOCAB, seed=1)
    views = Views(CodeEraser(hyper), forget_and_retain, model, p0)
    forget, retain = views.forget, views.retain
    kl_s = F.kl_div(
        views.logprobs[forget.secret], views.ref.probs, log_target=False, reduction="batchmean"
    )
    expected = -views.ce(forget.secret) + 0.2 * views.ce(forget.context) - 0.3 * kl_s
    assert torch.allclose(CodeEraser(hyper).forget_loss(forget).value, expected, atol=1e-5)
    assert forget.secret.sum() < forget.valid.sum()  # S is a strict part of the window

    kl_r = F.kl_div(
        views.rlogprobs[retain.valid], views.rref.probs, log_target=False, reduction="batchmean"
    )
    got = CodeEraser(hyper).retain_loss(retain)
    assert got is not None
    assert torch.allclose(got.value, 0.3 * 0.5 * kl_r, atol=1e-6)

    views = Views(ConstraintUnlearning(hyper), forget_and_retain, model, p0)
    forget = views.forget
    kl_a = F.kl_div(
        views.logprobs[forget.valid], views.ref.probs, log_target=False, reduction="batchmean"
    )
    expected = -views.ce(forget.valid) - 0.3 * kl_a
    assert torch.allclose(
        ConstraintUnlearning(hyper).forget_loss(forget).value, expected, atol=1e-5
    )


def _train(method: UnlearningMethod, data: Data, steps: int) -> tuple[float, float, float, float]:
    """(CE on S, CE on C) before and after `steps` AdamW steps on the forget loss."""
    model, p0 = micro_model(VOCAB), micro_model(VOCAB)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with torch.no_grad():
        views = Views(method, data, model, p0)
        before = (views.ce(views.forget.secret).item(), views.ce(views.forget.context).item())
    for _ in range(steps):
        optimizer.zero_grad()
        forget, _ = _views(method, data, model, p0)
        torch.autograd.backward(method.forget_loss(forget).value)
        optimizer.step()
    with torch.no_grad():
        views = Views(method, data, model, p0)
        after = (views.ce(views.forget.secret).item(), views.ce(views.forget.context).item())
    return (*before, *after)


def test_codeeraser_ascends_on_secrets_only_while_ga_ascends_everywhere(
    forget_and_retain: Data,
) -> None:
    s0, c0, s1, c1 = _train(CodeEraser(), forget_and_retain, 15)
    g_s0, g_c0, g_s1, g_c1 = _train(GradientAscent(), forget_and_retain, 15)
    assert s1 > s0 + 0.5  # the secret became much less likely
    assert c1 < c0 + 0.1 * (s1 - s0)  # the code around it barely moved
    assert g_s1 > g_s0 + 0.5  # GA made everything less likely
    assert g_c1 > g_c0 + 0.5
