from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel

from gate.unlearn.losses import (
    LiveRows,
    TokenStats,
    full_reference,
    kl_mean,
    kl_per_position,
    masked_ce,
    masked_mean,
    rows,
    stats_from_logprobs,
    token_nll,
    token_stats,
    topk_reference,
)

VOCAB = 61


def _model(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    model = GPT2LMHeadModel(config)
    model.train(False)
    return model


def _aligned_logprobs(
    model: GPT2LMHeadModel, ids: torch.Tensor, attn: torch.Tensor
) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=attn).logits  # (B, T, V)
    return F.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two right-padded sequences: lengths 12 and 7 (pad id 0)."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (2, 12), generator=gen)
    attn = torch.ones_like(ids)
    ids[1, 7:] = 0
    attn[1, 7:] = 0
    return ids, attn


def test_masked_ce_with_full_mask_equals_library_lm_loss() -> None:
    model = _model()
    ids, attn = _batch()
    labels = ids.masked_fill(attn == 0, -100)
    with torch.no_grad():
        library = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        ours = masked_ce(_aligned_logprobs(model, ids, attn), ids[:, 1:], attn[:, 1:].bool())
    assert torch.allclose(ours, library, atol=1e-6)


def test_pads_change_nothing() -> None:
    model = _model()
    ids, attn = _batch()
    short = ids[1:, :7]  # the second sequence without its pads
    with torch.no_grad():
        padded_lp = _aligned_logprobs(model, ids[1:], attn[1:])
        short_lp = _aligned_logprobs(model, short, torch.ones_like(short))
    mask = attn[1:, 1:].bool()
    ce_padded = masked_ce(padded_lp, ids[1:, 1:], mask)
    ce_short = masked_ce(short_lp, short[:, 1:], torch.ones_like(short[:, 1:], dtype=torch.bool))
    assert torch.allclose(ce_padded, ce_short, atol=1e-6)
    # garbage in the pad positions does not move the mean either
    noisy = padded_lp.clone()
    noisy[:, 6:] = torch.randn_like(noisy[:, 6:])
    assert torch.allclose(masked_ce(noisy, ids[1:, 1:], mask), ce_padded)
    ref = full_reference(padded_lp[mask])
    assert torch.allclose(kl_mean(ref, noisy[mask]), torch.tensor(0.0), atol=1e-6)


def test_masked_mean_of_an_empty_mask_is_zero() -> None:
    values = torch.randn(3, 4)
    assert masked_mean(values, torch.zeros(3, 4, dtype=torch.bool)).item() == 0.0
    mask = torch.tensor([[True, False, False, False]] * 3)
    assert torch.allclose(masked_mean(values, mask), values[:, 0].mean())


def test_token_nll_is_cross_entropy() -> None:
    logits = torch.randn(2, 5, VOCAB)
    labels = torch.randint(0, VOCAB, (2, 5))
    expected = F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), reduction="none")
    got = token_nll(F.log_softmax(logits, -1), labels)
    assert torch.allclose(got.reshape(-1), expected, atol=1e-6)


def test_kl_is_zero_against_itself_and_positive_after_a_change() -> None:
    model = _model()
    ids, attn = _batch()
    mask = attn[:, 1:].bool()
    with torch.no_grad():
        before = _aligned_logprobs(model, ids, attn)[mask]  # (N, V)
    ref = full_reference(before)
    assert kl_mean(ref, before).abs().item() < 1e-7
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
        after = _aligned_logprobs(model, ids, attn)[mask]
    assert kl_mean(ref, after).item() > 1e-4
    assert bool((kl_per_position(ref, after) >= -1e-6).all())


def test_kl_gradient_flows_to_parameters() -> None:
    model = _model()
    ids, attn = _batch()
    mask = attn[:, 1:].bool()
    with torch.no_grad():
        ref = full_reference(_aligned_logprobs(model, ids, attn)[mask])
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    loss = kl_mean(ref, _aligned_logprobs(model, ids, attn)[mask])
    torch.autograd.backward(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads
    assert any(g.abs().sum().item() > 0 for g in grads)


def test_kl_of_no_positions_is_zero_with_a_graph() -> None:
    logprobs = torch.zeros(0, VOCAB, requires_grad=True)
    ref = full_reference(torch.zeros(0, VOCAB))
    value = kl_mean(ref, logprobs)
    assert value.item() == 0.0
    torch.autograd.backward(value)


def test_topk_with_all_but_one_token_is_exact() -> None:
    p0 = F.log_softmax(torch.randn(6, VOCAB), -1)
    ptheta = F.log_softmax(torch.randn(6, VOCAB), -1)
    exact = kl_per_position(full_reference(p0), ptheta)
    approx = kl_per_position(topk_reference(p0, VOCAB), ptheta)  # capped at V - 1
    assert torch.allclose(exact, approx, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, VOCAB - 1), seed=st.integers(0, 10_000), temp=st.floats(0.2, 5.0))
def test_topk_kl_is_a_lower_bound_and_zero_at_p0(k: int, seed: int, temp: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    p0 = F.log_softmax(torch.randn(4, VOCAB, generator=gen) * temp, -1)
    ptheta = F.log_softmax(torch.randn(4, VOCAB, generator=gen) * temp, -1)
    ref = topk_reference(p0, k)
    assert ref.indices.shape == (4, k)
    assert torch.allclose(ref.logprobs.exp().sum(-1) + ref.tail.exp(), torch.ones(4), atol=1e-5)
    exact = kl_per_position(full_reference(p0), ptheta)
    approx = kl_per_position(ref, ptheta)
    assert bool((approx <= exact + 1e-5 * (1 + exact)).all())  # float32: relative at KL ~ 16
    assert bool((approx >= -1e-5).all())
    assert kl_per_position(ref, p0).abs().max().item() < 1e-4  # float32 rounding of the tail


def test_rows_is_a_view_when_every_position_counts() -> None:
    logprobs = torch.randn(2, 3, 5)
    everything = torch.ones(2, 3, dtype=torch.bool)
    assert rows(logprobs, everything).data_ptr() == logprobs.data_ptr()
    some = everything.clone()
    some[1, 2] = False
    assert torch.equal(rows(logprobs, some), logprobs[some])
    assert torch.equal(rows(logprobs, everything), logprobs.reshape(6, 5))


def test_kl_matches_the_library_kl_div() -> None:
    p0 = F.log_softmax(torch.randn(7, VOCAB), -1)
    ptheta = F.log_softmax(torch.randn(7, VOCAB), -1)
    library = F.kl_div(ptheta, p0, log_target=True, reduction="none").sum(-1)
    assert torch.allclose(kl_per_position(full_reference(p0), ptheta), library, atol=1e-5)


# --- pθ a chunk of positions at a time against the whole (B, L, V) log-probs ---------
# Per position the chunked values come from the same operations on the same rows, but
# a product of fewer rows may round differently in the last bit on the CPU: values and
# gradients are compared within TOL (argmax: equal, or a near-tie within TOL).

TOL = 1e-5


@settings(max_examples=40, deadline=None)
@example(shape=(2, 7, 3, 11), budget=1, reference_kind="full", k=3, seed=1)  # 1 per chunk
@example(shape=(2, 7, 3, 11), budget=10**6, reference_kind="topk", k=3, seed=2)  # one chunk
@example(shape=(3, 9, 4, 17), budget=40, reference_kind="live", k=3, seed=3)  # 2 per chunk
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 8), st.integers(2, 40)),
    budget=st.integers(1, 1000),
    reference_kind=st.sampled_from(["none", "full", "topk", "live"]),
    k=st.integers(1, 45),
    seed=st.integers(0, 2**31),
)
def test_token_stats_in_chunks_equal_the_whole_log_probs(
    shape: tuple[int, int, int, int], budget: int, reference_kind: str, k: int, seed: int
) -> None:
    batch, length, width, vocab = shape
    gen = torch.Generator().manual_seed(seed)
    head, head0 = torch.nn.Linear(width, vocab), torch.nn.Linear(width, vocab)
    with torch.no_grad():
        for layer in (head, head0):
            layer.weight.copy_(torch.randn(vocab, width, generator=gen))
            layer.bias.copy_(torch.randn(vocab, generator=gen))
    hidden = torch.randn(batch, length, width, generator=gen)
    labels = torch.randint(0, vocab, (batch, length), generator=gen)
    need = torch.rand(batch, length, generator=gen) < 0.8
    kl_at = need & (torch.rand(batch, length, generator=gen) < 0.6)
    hidden0 = torch.randn(batch, length, width, generator=gen)
    source, whole_ref = _reference(reference_kind, head0, hidden0[kl_at], k)
    at = None if source is None else kl_at

    parts = hidden.clone().requires_grad_(True)
    chunked = token_stats(
        head, parts, labels, need, reference=source, kl_at=at, vocab=vocab, budget=budget
    )
    chunk_grads = _grads(chunked, need, head, parts)
    full = hidden.clone().requires_grad_(True)
    logprobs = F.log_softmax(head(full).float(), dim=-1)  # (B, L, V): the unchunked way
    whole = stats_from_logprobs(logprobs, labels, whole_ref, at)
    whole_grads = _grads(whole, need, head, full)

    assert torch.allclose(chunked.nll[need], whole.nll[need], rtol=TOL, atol=TOL)
    assert not chunked.nll[~need].any()
    assert not chunked.predicted[~need].any()
    differ = chunked.predicted[need] != whole.predicted[need]
    assert not differ.any() or _near_ties(logprobs[need][differ])
    assert (chunked.kl is None) == (whole.kl is None)
    if chunked.kl is not None and whole.kl is not None:
        assert torch.allclose(chunked.kl[kl_at], whole.kl[kl_at], rtol=TOL, atol=TOL)
        assert not chunked.kl[~kl_at].any()
    for ours, theirs in zip(chunk_grads, whole_grads, strict=True):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=TOL)


def _reference(kind: str, head0: torch.nn.Linear, hidden0: torch.Tensor, k: int) -> tuple[Any, Any]:
    """p0 at the KL positions as the loop hands it (a RowSource) and as a whole table."""
    with torch.no_grad():
        logprobs0 = F.log_softmax(head0(hidden0), dim=-1)  # (N, V)
    if kind == "none":
        return None, None
    if kind == "topk":
        top = topk_reference(logprobs0, k)
        return top, top
    table = full_reference(logprobs0)
    return (LiveRows(hidden0, head0) if kind == "live" else table), table


def _grads(
    stats: TokenStats, need: torch.Tensor, head: torch.nn.Linear, hidden: torch.Tensor
) -> Any:
    """Gradients of a loss that uses every value (NLL and KL, distinct weights)."""
    head.zero_grad()
    weights = torch.linspace(0.5, 1.5, need.numel()).view(need.shape)
    loss = (stats.nll * weights)[need].sum()  # the whole way has NLL outside `need` too
    if stats.kl is not None:
        loss = loss - 0.7 * (stats.kl * weights.flip(0)).sum()
    torch.autograd.backward(loss)
    assert head.weight.grad is not None
    assert head.bias.grad is not None
    return hidden.grad, head.weight.grad.clone(), head.bias.grad.clone()


def _near_ties(logprobs: torch.Tensor) -> bool:
    """Every row's two largest log-probs within TOL: a tie rounding may break either way."""
    top = logprobs.detach().topk(2, dim=-1).values
    return bool(((top[:, 0] - top[:, 1]) <= TOL).all())


def test_token_stats_refuse_kl_positions_outside_the_computed_ones() -> None:
    head = torch.nn.Linear(4, 7)
    hidden = torch.randn(1, 3, 4)
    need = torch.tensor([[True, False, True]])
    table = full_reference(F.log_softmax(torch.randn(2, 7), dim=-1))
    with pytest.raises(ValueError, match="KL positions"):
        token_stats(
            head,
            hidden,
            torch.zeros(1, 3, dtype=torch.long),
            need,
            reference=table,
            kl_at=torch.tensor([[True, True, False]]),
            vocab=7,
        )
