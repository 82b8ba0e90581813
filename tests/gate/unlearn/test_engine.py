"""Token-budget micro-batches and gradient checkpointing in the unlearning step."""

from __future__ import annotations

import gc
import random
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from audit.errors import InputError
from audit.measurements import Measurement, Thresholds
from gate.unlearn import engine as engines
from gate.unlearn.accelerated import engine_for
from gate.unlearn.data import ForgetWindow, RetainWindow, SecretSpan, collate
from gate.unlearn.engine import Engine, Piece, plan_pieces
from gate.unlearn.losses import TokenStats, stats_from_logprobs
from gate.unlearn.reference import aligned_logprobs, build_cache
from gate.unlearn.settings import DEFAULT_TRAIN_BATCH_TOKENS, Method, UnlearnConfig
from gate.unlearn.trainer import Unlearner
from tests.gate.unlearn.conftest import micro_model

VOCAB = 320
THRESHOLDS = Thresholds(ma=0.3, el_10=0.1, source="test")


def _weights(pieces: Sequence[Piece], world: int) -> float:
    return sum(p.weight for p in pieces) / world


def test_a_step_is_cut_by_the_token_budget_longest_windows_first() -> None:
    lengths = {0: 10, 1: 40, 2: 30, 3: 40, 4: 5}
    pieces = plan_pieces([0, 1, 2, 3, 4], lengths, budget=80)
    # rows × longest ≤ 80: [1, 3] (2 × 40), [2, 0] (2 × 30), then [4] (3 × 30 > 80)
    assert [p.indices for p in pieces] == [[1, 3], [2, 0], [4]]
    assert [p.weight for p in pieces] == pytest.approx([2 / 5, 2 / 5, 1 / 5])
    assert [p.indices for p in plan_pieces([0, 1, 2], lengths, budget=0)] == [[1, 2, 0]]
    assert plan_pieces([], lengths, budget=80) == []


def test_ranks_share_the_micro_batches_and_run_as_many_each() -> None:
    lengths = {i: 20 for i in range(5)}
    ranks = [plan_pieces(range(5), lengths, budget=40, rank=r, world=2) for r in range(2)]
    # three micro-batches of 2, 2 and 1 windows: rank 0 gets two, rank 1 one and a repeat
    assert [[p.indices for p in share] for share in ranks] == [[[0, 1], [4]], [[2, 3], [4]]]
    assert [p.weight for p in ranks[1]] == pytest.approx([2 * 2 / 5, 0.0])
    assert len(ranks[0]) == len(ranks[1]), "collective calls line up"
    assert _weights(ranks[0], 2) + _weights(ranks[1], 2) == pytest.approx(1.0)
    # fewer windows than ranks: the idle rank repeats a real window with weight 0
    idle = plan_pieces([3], lengths, budget=40, rank=1, world=2)
    assert idle == [Piece([3], 0.0)]


def _windows(count: int, length: int, seed: int = 0) -> list[ForgetWindow]:
    rng = random.Random(seed)
    return [
        ForgetWindow(
            f"s{i}",
            tuple(rng.randrange(1, VOCAB) for _ in range(length)),
            (SecretSpan(f"f{i}", length // 2, length // 2 + 5),),
        )
        for i in range(count)
    ]


def _m(fid: str) -> Measurement:
    return Measurement(
        finding_id=fid,
        sample_id="s",
        secret_type="Test Key",
        ma=0.9,
        el_3=0.9,
        el_5=0.9,
        el_10=0.9,
        extracted_greedy=True,
        extracted_sampled=None,
        samples=0,
        longest_leaked_prefix=0,
        secret_tokens=5,
        prefix_tokens=10,
        truncated=False,
        memorized=True,
    )


def _gradients(method: Method, windows: list[ForgetWindow], **settings: Any) -> list[torch.Tensor]:
    """Gradients of one forget step on every window, from a fresh micro model."""
    model = micro_model(VOCAB)
    config = UnlearnConfig(method=method, batch_size=len(windows), ascend_on="all", **settings)
    loop = Unlearner(
        model,
        windows,
        [RetainWindow("r0", tuple(range(1, 17)))],  # the KL methods need one; unused here
        before=[_m(fid) for w in windows for fid in w.finding_ids],
        measure=lambda ids: [_m(fid) for fid in ids],
        thresholds=THRESHOLDS,
        config=config,
        pad_id=0,
    )
    kl = loop.method.forget_kl
    reference = build_cache(
        model, windows, [], forget_kl=kl, retain_kl=False, pad_id=0, mode="full"
    )
    loop.train_model, _ = loop.engine.prepare(model, torch.optim.SGD(model.parameters(), lr=0.0))
    model.zero_grad()
    loop._backward_forget(list(range(len(windows))), reference)
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_micro_batches_accumulate_the_whole_batch_gradient() -> None:
    """Equal-length windows: the per-window weights make the pieces' sum the full mean."""
    windows = _windows(4, 24)
    whole = _gradients("ga", windows, train_batch_tokens=0)
    pieces = _gradients("ga", windows, train_batch_tokens=24)  # one window per micro-batch
    assert len(whole) == len(pieces) > 0
    for a, b in zip(whole, pieces, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def _whole_token_stats(self: Engine, model: Any, batch: Any, *rest: Any) -> TokenStats:
    """The unchunked computation: (B, L, V) log-probs at once, p0's whole table (rest:
    the positions needed, p0's rows, the KL positions, as `Engine.token_stats` takes them)."""
    reference, kl_at = (*rest[1:], None, None)[:2]
    table = None if reference is None else reference.rows(0, int(kl_at.sum()))
    return stats_from_logprobs(aligned_logprobs(model, batch), batch.labels, table, kl_at)


@pytest.mark.parametrize("budget", [VOCAB, 7 * VOCAB])  # 1 and 7 positions per chunk
def test_a_step_in_chunks_of_positions_has_the_whole_logits_gradient(budget: int) -> None:
    """CodeEraser (NLL on S and C, KL to p0 on S): chunks under checkpoint against the
    whole (B, L, V) log-probs; within 1e-5 (the head's gradient sums chunk by chunk)."""
    windows = _windows(3, 24, seed=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Engine, "token_stats", _whole_token_stats)
        whole = _gradients("codeeraser", windows)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engines, "logit_budget", lambda _: budget)
        chunked = _gradients("codeeraser", windows)
    assert len(whole) == len(chunked) > 0
    for a, b in zip(whole, chunked, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    assert any(bool(g.abs().max() > 1e-3) for g in whole)  # a gradient worth comparing


def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients() -> None:
    windows = _windows(3, 24, seed=1)
    plain = _gradients("ga", windows)
    calls: list[int] = []
    real_prepare = Engine.prepare

    def counting(self: Engine, model: Any, optimizer: Any) -> Any:
        out = real_prepare(self, model, optimizer)
        for layer in self._layers:
            func = layer._gradient_checkpointing_func

            def wrapped(*args: Any, _func: Any = func, **kwargs: Any) -> Any:
                calls.append(1)
                return _func(*args, **kwargs)

            setattr(layer, "_gradient_checkpointing_func", wrapped)  # noqa: B010 - a module attribute
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Engine, "prepare", counting)
        checkpointed = _gradients("ga", windows, gradient_checkpointing=True)
    assert calls, "the decoder layers were checkpointed"
    for a, b in zip(plain, checkpointed, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_checkpointing_leaves_the_model_in_eval_mode() -> None:
    model = micro_model(VOCAB)
    engine = Engine(checkpointing=True)
    engine.prepare(model, torch.optim.SGD(model.parameters(), lr=0.0))
    batch = collate(_windows(2, 16), 0)
    with torch.no_grad():
        expected = aligned_logprobs(model, batch)
    out = engine.token_stats(model, batch, batch.valid)
    nll = -expected.gather(-1, batch.labels.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(out.nll[batch.valid], nll[batch.valid], atol=1e-6)  # no dropout on
    assert not any(m.training for m in model.modules())


def test_the_plain_engine_is_chosen_without_a_launcher_or_mixed_precision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    engine = engine_for(UnlearnConfig(train_batch_tokens=123, gradient_checkpointing="on"))
    assert type(engine) is Engine
    assert engine.batch_tokens == 123
    assert engine.checkpointing is True


def _wide_model() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=512, n_embd=64, n_layer=2, n_head=2)
    model: torch.nn.Module = GPT2LMHeadModel(config)
    model.eval()
    return model


@pytest.mark.parametrize(
    ("setting", "batch_mb", "expected"),
    [("auto", 1, True), ("auto", 256, False), (False, 1, False), (True, 256, True)],
)
def test_auto_checkpoints_only_when_one_window_is_over_the_memory_budget(
    setting: bool | str, batch_mb: int, expected: bool
) -> None:
    plain = Engine(batch_mb=batch_mb, probe_tokens=512)
    plain.ready(_wide_model())
    assert plain.token_bytes * 512 > 2**20  # one window keeps more than 1 MB
    engine = Engine(checkpointing=setting, batch_mb=batch_mb, probe_tokens=512)
    engine.ready(_wide_model())
    assert engine.checkpoints is expected
    if expected:  # measured again as it runs: less per token, more tokens a micro-batch
        assert engine.token_bytes < plain.token_bytes / 2
        assert (
            engine.batch_tokens > plain.batch_tokens
            or engine.batch_tokens == DEFAULT_TRAIN_BATCH_TOKENS
        )
    else:
        assert engine.token_bytes == plain.token_bytes


def test_an_engine_is_set_up_once_for_the_probe_and_the_loop() -> None:
    model, engine = _wide_model(), Engine(checkpointing="auto", batch_mb=1, probe_tokens=512)
    engine.ready(model)
    measured = engine.token_bytes
    engine.token_bytes = measured + 1  # a second setup would measure again
    engine.prepare(model, torch.optim.SGD(model.parameters(), lr=0.0))
    assert engine.token_bytes == measured + 1


def test_measuring_the_activations_leaves_no_tensor_behind() -> None:
    model: torch.nn.Module = micro_model(VOCAB)
    model.eval()

    def alive() -> int:
        gc.collect()
        return sum(
            o.untyped_storage().nbytes()
            for o in gc.get_objects()
            if issubclass(type(o), torch.Tensor) and type(o) is not torch.nn.Parameter
        )

    before = alive()
    assert engines.activation_bytes(model, 64) > 0
    assert alive() == before  # the graph it built is freed, not kept by a cycle


def test_auto_leaves_checkpointing_off_on_a_model_that_cannot_and_on_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _wide_model()
    monkeypatch.setattr(type(model), "supports_gradient_checkpointing", False)
    engine = Engine(checkpointing="auto", batch_mb=1, probe_tokens=512)
    engine.ready(model)  # one window is over the budget, as above
    assert not engine.checkpoints
    with pytest.raises(InputError, match="does not support gradient checkpointing"):
        Engine(checkpointing=True, batch_mb=1, probe_tokens=512).ready(model)
