from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

from audit.errors import InputError
from audit.findings import Finding
from audit.measurements import Measurement, Thresholds
from gate.unlearn import methods
from gate.unlearn.data import ForgetWindow, RetainWindow, collate
from gate.unlearn.losses import full_reference, masked_ce, stats_from_logprobs
from gate.unlearn.methods import ForgetView, GradientAscent, Loss
from gate.unlearn.optim import BF16AdamW
from gate.unlearn.reference import aligned_logprobs
from gate.unlearn.remediation import EpochLog
from gate.unlearn.settings import UnlearnConfig
from gate.unlearn.trainer import Unlearner, UnlearnResult, is_forgotten
from tests.gate.unlearn.conftest import micro_model

Data = tuple[list[Finding], list[ForgetWindow], list[RetainWindow]]
VOCAB = 320
THRESHOLDS = Thresholds(ma=0.3, el_10=0.1, source="test")


def _m(fid: str, *, ma: float, extracted: bool = False) -> Measurement:
    return Measurement(
        finding_id=fid,
        sample_id="s",
        secret_type="Test Key",
        ma=ma,
        el_3=ma,
        el_5=ma,
        el_10=ma / 2,
        extracted_greedy=extracted,
        extracted_sampled=None,
        samples=0,
        longest_leaked_prefix=0,
        secret_tokens=16,
        prefix_tokens=24,
        truncated=False,
        memorized=THRESHOLDS.memorized(ma, ma / 2),
    )


def _checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


class Scripted:
    """A fake measure: call k answers from script[k] (finding id -> (ma, extracted))."""

    def __init__(self, model: torch.nn.Module, script: list[dict[str, tuple[float, bool]]]):
        self.model, self.script = model, script
        self.calls: list[list[str]] = []
        self.sums: list[float] = []

    def __call__(self, ids: Sequence[str]) -> list[Measurement]:
        answers = self.script[min(len(self.calls), len(self.script) - 1)]
        self.calls.append(list(ids))
        self.sums.append(_checksum(self.model))
        return [_m(fid, ma=answers[fid][0], extracted=answers[fid][1]) for fid in ids]


def _run(
    data: Data,
    measure: Callable[[Sequence[str]], list[Measurement]],
    model: torch.nn.Module,
    **overrides: object,
) -> UnlearnResult:
    findings, windows, retain = data
    settings: dict[str, object] = {"lr": 1e-2, "batch_size": 2, "epochs": 10, "patience": 0}
    settings.update(overrides)
    config = UnlearnConfig(**settings)  # type: ignore[arg-type]
    before = [_m(f.id, ma=0.9, extracted=True) for f in findings]
    return Unlearner(
        model,
        windows,
        retain,
        before=before,
        measure=measure,
        thresholds=THRESHOLDS,
        config=config,
        pad_id=0,
    ).run()


def _secret_ce(model: torch.nn.Module, windows: list[ForgetWindow], fid: str) -> float:
    window = next(w for w in windows if fid in w.finding_ids)
    batch = collate([window], 0, {fid})
    with torch.no_grad():
        return float(masked_ce(aligned_logprobs(model, batch), batch.labels, batch.active))


def test_stops_when_every_finding_is_forgotten_measuring_only_those_left(
    forget_and_retain: Data,
) -> None:
    findings, windows, _ = forget_and_retain
    model = micro_model(VOCAB)
    start = {f.id: _secret_ce(model, windows, f.id) for f in findings}
    margin = {f.id: 0.3 * (i + 1) for i, f in enumerate(findings)}  # forgotten at different times
    calls: list[list[str]] = []

    def measure(ids: Sequence[str]) -> list[Measurement]:
        """Memorized until the secret's CE rose by its margin: a stand-in for MA."""
        calls.append(list(ids))
        return [
            _m(fid, ma=0.0 if _secret_ce(model, windows, fid) > start[fid] + margin[fid] else 0.9)
            for fid in ids
        ]

    logs: list[EpochLog] = []
    result = Unlearner(
        model,
        windows,
        forget_and_retain[2],
        before=[_m(f.id, ma=0.9, extracted=True) for f in findings],
        measure=measure,
        thresholds=THRESHOLDS,
        config=UnlearnConfig(lr=1e-2, batch_size=2, epochs=30, patience=0, ascend_on="all"),
        pad_id=0,
        report=logs.append,
    ).run()
    assert result.stop_reason == "every finding forgotten"
    assert result.forgotten == len(findings)
    assert all(o.after is not None and is_forgotten(o.after, THRESHOLDS) for o in result.outcomes)
    epochs = [o.forgotten_epoch for o in result.outcomes]
    assert len(set(epochs)) > 1  # findings left the forget set at different epochs
    # each epoch measured exactly the findings not yet forgotten; the last call checks all
    left = {f.id for f in findings}
    for epoch, ids in enumerate(calls[:-1], start=1):
        assert set(ids) == left
        left -= {o.finding_id for o in result.outcomes if o.forgotten_epoch == epoch}
    assert set(calls[-1]) == {f.id for f in findings}
    assert [log.epoch for log in logs] == list(range(1, result.epochs + 1))
    assert logs[-1].remaining == 0
    assert {"ce_secret", "ce_context", "kl_secret", "kl_retain"} <= set(logs[0].loss)
    assert result.best_epoch == result.epochs
    assert result.reference_kind == "cached-full"


def test_the_state_with_the_lowest_leak_is_restored(forget_and_retain: Data) -> None:
    findings, _, _ = forget_and_retain
    model = micro_model(VOCAB)
    a, b = findings[0].id, findings[1].id
    rest = {f.id: (0.9, True) for f in findings[2:]}
    script = [
        {a: (0.9, True), b: (0.9, True), **rest},
        {a: (0.9, False), b: (0.8, True), **rest},  # epoch 2: one fewer extracted, the best
        {a: (0.9, True), b: (0.7, True), **rest},
        {a: (0.9, True), b: (0.6, True), **rest},
    ]
    measure = Scripted(model, script)
    result = _run(forget_and_retain, measure, model, method="ga", epochs=4)
    assert result.stop_reason == "ran out of epochs (4)"
    assert result.best_epoch == 2
    assert len(measure.calls) == 5  # four epochs and one final measure of the restored state
    assert measure.sums[-1] == pytest.approx(measure.sums[1], rel=0, abs=1e-9)
    assert measure.sums[-1] != pytest.approx(measure.sums[3], rel=0, abs=1e-6)
    assert all(not o.forgotten for o in result.outcomes)
    assert all(o.stop_reason.startswith("still memorized") for o in result.outcomes)


def test_patience_stops_and_restores_the_original_weights(forget_and_retain: Data) -> None:
    findings, _, _ = forget_and_retain
    model = micro_model(VOCAB)
    original = _checksum(model)
    measure = Scripted(model, [{f.id: (0.95, True) for f in findings}])
    result = _run(forget_and_retain, measure, model, method="ga", epochs=50, patience=3)
    assert result.stop_reason == "no lower leak for 3 epochs"
    assert result.epochs == 3
    assert result.best_epoch == 0
    assert _checksum(model) == pytest.approx(original, rel=0, abs=1e-9)


def test_a_finding_that_comes_back_is_unlearned_again(forget_and_retain: Data) -> None:
    findings, _, _ = forget_and_retain
    model = micro_model(VOCAB)
    ids = [f.id for f in findings]
    gone = {fid: (0.0, False) for fid in ids}
    script = [
        gone,  # epoch 1: all forgotten ...
        {**gone, ids[0]: (0.9, True)},  # ... but the check of all finds the first one back
        gone,  # epoch 2: forgotten again
        gone,  # and the check of all agrees
    ]
    measure = Scripted(model, script)
    result = _run(forget_and_retain, measure, model, method="ga")
    assert result.stop_reason == "every finding forgotten"
    assert result.epochs == 2
    assert measure.calls[2] == [ids[0]]
    first = result.outcomes[0]
    assert first.forgotten_epoch == 2
    assert first.stop_reason == "forgotten at epoch 2"
    assert all(o.forgotten_epoch == 1 for o in result.outcomes[1:])


def test_joint_step_is_one_adamw_step_on_forget_plus_retain(forget_and_retain: Data) -> None:
    findings, windows, retain = forget_and_retain
    config = UnlearnConfig(
        lr=1e-3, batch_size=8, epochs=1, max_grad_norm=0, ascend_on="all", schedule="joint"
    )
    model = micro_model(VOCAB)
    manual = micro_model(VOCAB)
    gone = Scripted(model, [{f.id: (0.0, False) for f in findings}])
    Unlearner(
        model,
        windows,
        retain[:8],
        before=[_m(f.id, ma=0.9, extracted=True) for f in findings],
        measure=gone,
        thresholds=THRESHOLDS,
        config=config,
        pad_id=0,
    ).run()
    # by hand: one AdamW step on the gradient of forget loss + retain loss
    method = methods.CodeEraser()
    with torch.no_grad():
        batch, rbatch = collate(windows, 0, None), collate(retain[:8], 0)
        ref = aligned_logprobs(manual, batch)[batch.secret]
        rref = aligned_logprobs(manual, rbatch)[rbatch.valid]
    optimizer = torch.optim.AdamW(manual.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0)
    stats = stats_from_logprobs(
        aligned_logprobs(manual, batch), batch.labels, full_reference(ref), batch.secret
    )
    forget = methods.ForgetView(stats, batch.valid, batch.secret, batch.context)
    rlp = aligned_logprobs(manual, rbatch)
    rstats = stats_from_logprobs(rlp, rbatch.labels, full_reference(rref), rbatch.valid)
    retained = method.retain_loss(methods.RetainView(rstats, rbatch.valid))
    assert retained is not None
    torch.autograd.backward(method.forget_loss(forget).value + retained.value)
    optimizer.step()
    for ours, theirs in zip(model.parameters(), manual.parameters(), strict=True):
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_cached_p0_trains_exactly_like_a_frozen_copy(forget_and_retain: Data) -> None:
    findings, _, _ = forget_and_retain
    sums = []
    for reference in ("cached", "frozen"):
        model = micro_model(VOCAB)
        measure = Scripted(model, [{f.id: (0.9, True) for f in findings}])
        _run(
            forget_and_retain, measure, model, reference=reference, epochs=2, schedule="alternating"
        )
        sums.append([p.detach().clone() for p in model.parameters()])
    for ours, theirs in zip(*sums, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_a_non_finite_loss_stops_the_run(
    forget_and_retain: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken(GradientAscent):  # plain ascent whose loss is NaN, in ga's place
        def forget_loss(self, view: ForgetView) -> Loss:
            loss = super().forget_loss(view)
            return Loss(loss.value * float("nan"), loss.parts)

    monkeypatch.setitem(methods.METHODS, "ga", Broken)
    findings, _, _ = forget_and_retain
    model = micro_model(VOCAB)
    original = _checksum(model)
    measure = Scripted(model, [{f.id: (0.9, True) for f in findings}])
    result = _run(forget_and_retain, measure, model, method="ga")
    assert result.stop_reason == "the loss stopped being finite at epoch 1"
    assert _checksum(model) == pytest.approx(original, rel=0, abs=1e-9)


def test_bad_settings_are_input_errors(forget_and_retain: Data) -> None:
    with pytest.raises(InputError, match="valid: codeeraser, ga, cu"):
        UnlearnConfig(method="nope")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="lr: must be greater than 0"):
        UnlearnConfig(lr=0)
    findings, windows, _ = forget_and_retain
    model = micro_model(VOCAB)
    with pytest.raises(InputError, match="needs a retain set"):
        Unlearner(
            model,
            windows,
            [],
            before=[_m(f.id, ma=0.9) for f in findings],
            measure=Scripted(model, [{}]),
            thresholds=THRESHOLDS,
            config=UnlearnConfig(),
            pad_id=0,
        )


def test_config_from_policy_arguments() -> None:
    config = UnlearnConfig.of(
        "cu", {"lr": 1e-4, "lambda": 0.2, "max_epochs": 7, "batch_size": 4, "seed": 3}
    )
    assert (config.method, config.lr, config.lam, config.epochs) == ("cu", 1e-4, 0.2, 7)
    assert (config.batch_size, config.seed) == (4, 3)
    with pytest.raises(InputError, match="unknown unlearning argument 'beta'"):
        UnlearnConfig.of("ga", {"beta": 1.0})


def test_a_screen_spares_the_full_measure_of_findings_over_the_ma_threshold(
    forget_and_retain: Data,
) -> None:
    findings, _, _ = forget_and_retain
    ids = [f.id for f in findings]
    model = micro_model(VOCAB)
    screened: list[list[str]] = []

    def screen(asked: Sequence[str]) -> dict[str, tuple[float, bool]]:
        """The first finding's MA drops under the threshold at epoch 2; the rest stay."""
        screened.append(list(asked))
        low = len(screened) >= 2
        return {fid: (0.1 if fid == ids[0] and low else 0.9, fid != ids[0]) for fid in asked}

    measure = Scripted(model, [{fid: (0.1, False) for fid in ids}])
    logs: list[EpochLog] = []
    result = Unlearner(
        model,
        forget_and_retain[1],
        forget_and_retain[2],
        before=[_m(fid, ma=0.9, extracted=True) for fid in ids],
        measure=measure,
        thresholds=THRESHOLDS,
        config=UnlearnConfig(method="ga", lr=1e-3, batch_size=2, epochs=3, patience=0),
        pad_id=0,
        screen=screen,
        report=logs.append,
    ).run()
    assert screened[0] == sorted(ids)
    assert measure.calls[0] == [ids[0]]  # epoch 2: only the finding under the MA threshold
    assert [o.forgotten_epoch for o in result.outcomes] == [2, None, None, None]
    assert (logs[0].measured, logs[0].screened, logs[0].el_10_mean) == (0, 4, None)
    assert (logs[1].measured, logs[1].screened) == (1, 3)
    assert logs[0].extracted == 3  # the screen's greedy decode counts as a measurement


def test_ascending_on_predicted_tokens_skips_the_ones_already_forgotten(
    forget_and_retain: Data,
) -> None:
    findings, windows, retain = forget_and_retain
    model = micro_model(VOCAB)
    batch = collate(windows, 0, None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(25):  # learn the windows a little: some secret tokens become predicted
        optimizer.zero_grad()
        loss = masked_ce(aligned_logprobs(model, batch), batch.labels, batch.valid)
        torch.autograd.backward(loss)
        optimizer.step()
    with torch.no_grad():
        logprobs = aligned_logprobs(model, batch)
    hits = batch.secret & (logprobs.argmax(-1) == batch.labels)
    assert 0 < int(hits.sum()) < int(batch.secret.sum())
    expected = float(masked_ce(logprobs, batch.labels, hits))
    parts = {}
    for ascend_on in ("predicted", "all"):
        loop = Unlearner(
            model,
            windows,
            retain,
            before=[_m(f.id, ma=0.9, extracted=True) for f in findings],
            measure=Scripted(model, [{}]),
            thresholds=THRESHOLDS,
            config=UnlearnConfig(ascend_on=ascend_on),
            pad_id=0,
        )
        source = loop.reference_source()
        parts[ascend_on] = loop._backward_forget(list(range(len(windows))), source).parts
    assert parts["predicted"]["ce_secret"] == pytest.approx(expected, rel=1e-5)
    assert parts["all"]["ce_secret"] > parts["predicted"]["ce_secret"]
    with pytest.raises(InputError, match="ascend_on"):
        UnlearnConfig(ascend_on="some")  # type: ignore[arg-type]


def test_no_gradient_is_held_while_the_loop_measures(forget_and_retain: Data) -> None:
    model = micro_model(VOCAB)
    held: list[bool] = []

    def measure(ids: Sequence[str]) -> list[Measurement]:
        held.append(any(p.grad is not None for p in model.parameters()))
        return [_m(fid, ma=0.9) for fid in ids]

    _run(forget_and_retain, measure, model, epochs=2)
    assert held
    assert not any(held)


@pytest.mark.parametrize(
    ("setting", "kind"), [("auto", torch.optim.AdamW), ("bfloat16", BF16AdamW)]
)
def test_the_loop_optimizer_keeps_its_moments_as_set(
    forget_and_retain: Data, setting: str, kind: type
) -> None:
    findings, windows, retain = forget_and_retain
    config = UnlearnConfig(lr=1e-3, optimizer_states=setting)  # type: ignore[arg-type]
    before = [_m(f.id, ma=0.9) for f in findings]
    unlearner = Unlearner(
        micro_model(VOCAB), windows, retain, before=before, measure=lambda ids: [],
        thresholds=THRESHOLDS, config=config, pad_id=0,
    )  # fmt: skip
    assert type(unlearner.optimizer(1e-3, 0.0)) is kind  # auto: a micro model is float32
