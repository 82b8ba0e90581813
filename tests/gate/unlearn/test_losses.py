from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel

from gate.unlearn.losses import (
    full_reference,
    kl_mean,
    kl_per_position,
    masked_ce,
    masked_mean,
    rows,
    token_nll,
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
    assert bool((approx <= exact + 1e-5).all())
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
