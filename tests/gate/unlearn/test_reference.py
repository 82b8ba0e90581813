from __future__ import annotations

from typing import Literal
from unittest.mock import patch

import pytest
import torch

from audit.findings import Finding
from gate.unlearn.data import ForgetWindow, RetainWindow, collate
from gate.unlearn.losses import (
    FullReference,
    TopKReference,
    full_reference,
    kl_mean,
    topk_reference,
)
from gate.unlearn.reference import (
    FrozenReference,
    _concat,
    aligned_logprobs,
    build_cache,
    forget_positions,
)
from tests.gate.unlearn.conftest import micro_model

Data = tuple[list[Finding], list[ForgetWindow], list[RetainWindow]]
VOCAB = 320


def _params_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def test_cached_log_probs_equal_a_frozen_copy_at_the_same_positions(
    forget_and_retain: Data,
) -> None:
    _, windows, retain = forget_and_retain
    model = micro_model(VOCAB)
    cache = build_cache(
        model, windows, retain, forget_kl="secret", retain_kl=True, pad_id=0, batch_size=3
    )
    frozen = FrozenReference(model)
    assert cache.kind == "cached-full"
    assert frozen.nbytes == _params_bytes(model)
    picks = [2, 0]  # any order: rows follow the batch
    batch = collate([windows[i] for i in picks], pad_id=0)
    where = forget_positions(batch, "secret")
    ours = cache.forget(picks, batch, where).whole()
    theirs = frozen.forget(picks, batch, where).rows(0, int(where.sum()))
    assert isinstance(ours, FullReference)
    assert ours.probs.shape == (int(where.sum()), VOCAB)
    assert torch.allclose(ours.probs, theirs.probs, atol=1e-6)
    assert torch.allclose(ours.neg_entropy, theirs.neg_entropy, atol=1e-5)
    rpicks = [5, 1, 7]
    rbatch = collate([retain[i] for i in rpicks], pad_id=0)
    ours = cache.retain(rpicks, rbatch, rbatch.valid).whole()
    theirs = frozen.retain(rpicks, rbatch, rbatch.valid).rows(0, int(rbatch.valid.sum()))
    assert isinstance(ours, FullReference)
    assert isinstance(theirs, FullReference)
    assert torch.allclose(ours.probs, theirs.probs, atol=1e-6)
    # the cache is what the KL needs: secret rows of 4 windows + every retain row
    rows = sum(sum(w.secret_labels()) for w in windows) + sum(len(r.input_ids) - 1 for r in retain)
    assert cache.nbytes == rows * (VOCAB + 1) * 4


def test_cached_kl_is_zero_before_training_and_grows_after(forget_and_retain: Data) -> None:
    _, windows, _ = forget_and_retain
    model = micro_model(VOCAB)
    cache = build_cache(model, windows, [], forget_kl="all", retain_kl=False, pad_id=0)
    picks = list(range(len(windows)))
    batch = collate(windows, pad_id=0)
    ref = cache.forget(picks, batch, batch.valid).whole()
    with torch.no_grad():
        assert kl_mean(ref, aligned_logprobs(model, batch)[batch.valid]).item() < 1e-6
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
        assert kl_mean(ref, aligned_logprobs(model, batch)[batch.valid]).item() > 1e-4
    assert all(t is None for t in cache.retain_tables)


def test_auto_mode_switches_to_top_k_over_budget(forget_and_retain: Data) -> None:
    _, windows, retain = forget_and_retain
    model = micro_model(VOCAB)
    args = {"forget_kl": "all", "retain_kl": True, "pad_id": 0}
    full = build_cache(model, windows, retain, mode="auto", budget_mb=64, **args)  # type: ignore[arg-type]
    top = build_cache(model, windows, retain, mode="auto", budget_mb=0, topk=8, **args)  # type: ignore[arg-type]
    assert full.kind == "cached-full"
    assert top.kind == "cached-top8"
    assert top.nbytes * 10 < full.nbytes
    batch = collate(windows, pad_id=0)
    picks = list(range(len(windows)))
    approx = top.forget(picks, batch, batch.valid).whole()
    assert isinstance(approx, TopKReference)
    assert approx.indices.shape == (int(batch.valid.sum()), 8)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
        now = aligned_logprobs(model, batch)[batch.valid]
    exact_kl = kl_mean(full.forget(picks, batch, batch.valid).whole(), now).item()
    approx_kl = kl_mean(approx, now).item()
    assert 0 < approx_kl <= exact_kl + 1e-6


@pytest.mark.parametrize("budget", [1, 3 * VOCAB, 1 << 24])  # 1 position per chunk, 3, all
@pytest.mark.parametrize("mode", ["full", "topk"])
def test_the_cache_built_a_chunk_of_positions_at_a_time_equals_the_whole_log_probs(
    forget_and_retain: Data, budget: int, mode: Literal["full", "topk"]
) -> None:
    _, windows, retain = forget_and_retain
    model = micro_model(VOCAB)
    with patch("audit.model.LOGIT_BUDGET", budget):
        cache = build_cache(
            model,
            windows,
            retain,
            forget_kl="secret",
            retain_kl=True,
            pad_id=0,
            mode=mode,
            topk=7,
            batch_size=3,
        )
    picks = [3, 0, 2]
    batch = collate([windows[i] for i in picks], pad_id=0)
    where = forget_positions(batch, "secret")
    rbatch = collate(retain[:5], pad_id=0)
    with torch.no_grad():  # the unchunked computation: (B, L, V) log-probs at once
        whole = aligned_logprobs(model, batch)[where]
        rwhole = aligned_logprobs(model, rbatch)[rbatch.valid]
    _assert_same_table(cache.forget(picks, batch, where).whole(), whole, mode)
    _assert_same_table(cache.retain(list(range(5)), rbatch, rbatch.valid).whole(), rwhole, mode)


def _assert_same_table(table: object, logprobs: torch.Tensor, mode: str) -> None:
    """Values within 1e-6 (a product of fewer rows may round differently); top-k indices equal."""
    if mode == "full":
        expected = full_reference(logprobs)
        assert isinstance(table, FullReference)
        assert torch.allclose(table.probs, expected.probs, atol=1e-6)
        assert torch.allclose(table.neg_entropy, expected.neg_entropy, atol=1e-5)
        return
    top = topk_reference(logprobs, 7)
    assert isinstance(table, TopKReference)
    assert torch.equal(table.indices, top.indices)
    assert torch.allclose(table.logprobs, top.logprobs, atol=1e-6)
    assert torch.allclose(table.tail, top.tail, atol=1e-5)


@pytest.mark.parametrize("mode", ["full", "topk"])
def test_stacked_rows_cut_any_range_out_of_the_windows_tables_like_the_joined_table(
    forget_and_retain: Data, mode: Literal["full", "topk"]
) -> None:
    _, windows, _ = forget_and_retain
    model = micro_model(VOCAB)
    cache = build_cache(model, windows, [], forget_kl="all", retain_kl=False, pad_id=0, mode=mode)
    picks = [3, 1, 2]
    batch = collate([windows[i] for i in picks], pad_id=0)
    stacked = cache.forget(picks, batch, batch.valid)
    joined = _concat([cache.forget_tables[i] for i in picks])
    total = int(batch.valid.sum())
    for start, stop in [(0, total), (0, 1), (5, 37), (total - 3, total), (17, 17)]:
        ours, theirs = stacked.rows(start, stop), joined.rows(start, stop)
        for a, b in zip(_tensors(ours), _tensors(theirs), strict=True):
            assert torch.equal(a, b)


def _tensors(table: object) -> list[torch.Tensor]:
    if isinstance(table, FullReference):
        return [table.probs, table.neg_entropy]
    assert isinstance(table, TopKReference)
    return [table.indices, table.logprobs, table.tail]
