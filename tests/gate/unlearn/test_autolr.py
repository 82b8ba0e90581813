"""lr auto: the probe picks the largest rung within the KL budget and leaves the weights
as they were; the steering lowers, raises and stops as documented."""

from __future__ import annotations

import pytest
import torch

from gate.unlearn.autolr import (
    AUTO_FACTOR,
    AUTO_LADDER,
    AUTO_START,
    HELDOUT_GAUGE,
    PROBE_SHARE,
    Gauge,
    LrSteer,
    WatchKL,
    probe_lr,
    rung_text,
)
from gate.unlearn.remediation import EpochLog, LrProbe
from gate.unlearn.settings import UnlearnConfig
from gate.unlearn.trainer import Steer, Unlearner
from tests.gate.unlearn.conftest import micro_model
from tests.gate.unlearn.test_trainer import THRESHOLDS, VOCAB, Data, Scripted, _checksum, _m


def _probe(data: Data, budget: float) -> tuple[LrProbe, torch.nn.Module, float]:
    findings, windows, retain = data
    model = micro_model(VOCAB)
    start = _checksum(model)
    config = UnlearnConfig(lr="auto", auto_kl=budget, batch_size=2, auto_probe_steps=2)
    before = [_m(f.id, ma=0.9, extracted=True) for f in findings]
    probe = probe_lr(
        model, windows, retain, before=before, thresholds=THRESHOLDS, config=config, pad_id=0
    )
    return probe, model, start


@pytest.mark.parametrize("budget", [1e-4, 1e-2])
def test_the_probe_takes_the_largest_rung_within_the_budget(
    forget_and_retain: Data, budget: float
) -> None:
    probe, model, start = _probe(forget_and_retain, budget)
    assert _checksum(model) == start  # the weights are put back
    ok = [t.lr for t in probe.trials if t.retain_kl is not None and t.retain_kl <= budget]
    assert probe.chosen == (max(ok) if ok else AUTO_LADDER[0])
    rungs = [AUTO_LADDER.index(t.lr) for t in probe.trials]
    assert rungs[0] == AUTO_START
    assert rungs == sorted(rungs) or rungs == sorted(rungs, reverse=True)  # one direction
    if AUTO_LADDER.index(probe.chosen) + 1 < len(AUTO_LADDER) and ok:  # the next was tried
        above = next(t for t in probe.trials if t.lr > probe.chosen)
        assert above.retain_kl is None or above.retain_kl > budget


def test_a_tighter_budget_never_picks_a_larger_rate(forget_and_retain: Data) -> None:
    tight, _, _ = _probe(forget_and_retain, 1e-5)
    loose, _, _ = _probe(forget_and_retain, 1e-1)
    assert tight.chosen < loose.chosen  # the KL grows with the rate on this model


class FixedKL(WatchKL):
    def __init__(self, values: list[float]) -> None:
        self.values = values

    def __call__(self) -> float:
        return self.values.pop(0)


def _log(epoch: int, ma: float, remaining: int) -> EpochLog:
    return EpochLog(epoch, 1, {}, 0, remaining, ma, None, 0, remaining, 1.0)


def _steer(kls: list[float]) -> LrSteer:
    probe = LrProbe(chosen=1e-4, kl_budget=0.005, steps=3, windows=8, trials=[], seconds=0.0)
    return LrSteer(lambda: FixedKL(kls), probe, UnlearnConfig(lr="auto", auto_kl_max=0.02))


def test_steering_lowers_on_drift_and_stops_on_a_second_epoch_over() -> None:
    steer = _steer([0.03, 0.01, 0.03, 0.05])
    rate, ok, stop = steer.after_epoch(_log(1, 0.9, 4))
    assert (rate, ok, stop) == (pytest.approx(1e-4 / AUTO_FACTOR), False, "")  # type: ignore[comparison-overlap]
    assert steer.after_epoch(_log(2, 0.5, 3))[1:] == (True, "")
    assert steer.after_epoch(_log(3, 0.4, 2))[1] is False
    _, ok, stop = steer.after_epoch(_log(4, 0.3, 1))
    assert not ok
    assert "2 epochs" in stop


def test_steering_raises_when_forgetting_stalls_up_to_its_ceiling() -> None:
    steer = _steer([0.0] * 6)
    rates = [steer.after_epoch(_log(e, 0.9, 4))[0] for e in range(1, 6)]
    assert rates[0] == pytest.approx(1e-4)  # nothing to compare with yet
    assert rates[1] == pytest.approx(1e-4 * AUTO_FACTOR)
    assert rates[-1] == pytest.approx(1e-4 * AUTO_FACTOR**2)  # the ceiling: two rungs
    assert len(steer.probe.changes) == 2


def _steered_loop(
    data: Data, model: torch.nn.Module, measured: tuple[float, bool], steer: Steer
) -> Unlearner:
    """A 10-epoch loop at lr 1e-2 whose every measure gives each finding `measured`
    (MA, extracted), under `steer`."""
    findings, windows, retain = data
    return Unlearner(
        model, windows, retain, before=[_m(f.id, ma=0.9, extracted=True) for f in findings],
        measure=Scripted(model, [{f.id: measured for f in findings}]), thresholds=THRESHOLDS,
        config=UnlearnConfig(lr=1e-2, batch_size=2, epochs=10, patience=0), pad_id=0,
        steer=steer,
    )  # fmt: skip


class Refusing:
    """A steer that keeps no epoch's weights and stops at epoch 2, halving the rate."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def after_epoch(self, log: EpochLog) -> tuple[float, bool, str]:
        self.seen.append(log.epoch)
        return 5e-3, False, "stop here" if log.epoch == 2 else ""


def test_the_loop_obeys_its_steer(forget_and_retain: Data) -> None:
    model = micro_model(VOCAB)
    start = _checksum(model)
    steer = Refusing()
    unlearner = _steered_loop(forget_and_retain, model, (0.9, True), steer)
    result = unlearner.run()
    assert steer.seen == [1, 2]
    assert result.stop_reason == "stop here"
    assert result.best_epoch == 0  # no epoch was admissible: the original weights are back
    assert _checksum(model) == pytest.approx(start)


def test_each_probe_rung_prints_a_line(
    forget_and_retain: Data, capsys: pytest.CaptureFixture[str]
) -> None:
    """The probe is not silent: one line per rung tried, with its rate and verdict."""
    probe, _, _ = _probe(forget_and_retain, 1e-2)
    lines = [line for line in capsys.readouterr().err.splitlines() if "lr auto: probe" in line]
    assert len(lines) == len(probe.trials) > 0
    for line, trial in zip(lines, probe.trials, strict=True):
        assert f"{trial.lr:.1e}" in line
        within = trial.retain_kl is not None and trial.retain_kl <= 1e-2
        assert ("within the budget" in line) is within


def test_the_rung_line_says_when_a_rate_diverged() -> None:
    kl = Gauge("retain KL", lambda: 0.0, 0.005)
    assert "diverged, over the budget" in rung_text(1e-2, None, kl, 1.0)
    assert "retain KL 0.0010, within the budget 0.005" in rung_text(1e-4, 0.001, kl, 1.0)
    heldout = Gauge(HELDOUT_GAUGE, lambda: 0.0, 0.005)
    line = rung_text(1e-4, 0.012, heldout, 1.0)
    assert "held-out perplexity +1.20%, over the budget +0.50%" in line


class Drift:
    """A held-out check whose perplexity rises with how far the weights moved from where
    they started (as a real model's does, monotone in the rate on this one)."""

    def __init__(self, model: torch.nn.Module, scale: float) -> None:
        self.model, self.scale = model, scale
        self.start = [p.detach().clone() for p in model.parameters()]
        self.calls = 0

    def change(self) -> float:
        self.calls += 1
        pairs = zip(self.model.parameters(), self.start, strict=True)
        moved = sum(float((p.detach() - s).abs().sum()) for p, s in pairs)
        return self.scale * moved


@pytest.mark.parametrize("limit", [1e-3, 1e-1])
def test_with_held_out_code_the_probe_holds_rungs_to_a_share_of_its_budget(
    forget_and_retain: Data, limit: float
) -> None:
    findings, windows, retain = forget_and_retain
    model = micro_model(VOCAB)
    drift = Drift(model, scale=1e-3)
    config = UnlearnConfig(lr="auto", auto_ppl_max=limit, batch_size=2, auto_probe_steps=2)
    before = [_m(f.id, ma=0.9, extracted=True) for f in findings]
    probe = probe_lr(
        model, windows, retain, before=before, thresholds=THRESHOLDS, config=config, pad_id=0,
        heldout=drift,
    )  # fmt: skip
    assert probe.gauge == HELDOUT_GAUGE
    assert probe.kl_budget == pytest.approx(limit * PROBE_SHARE)
    assert drift.calls == len(probe.trials) > 0
    assert all(t.retain_kl is None and t.heldout_change is not None for t in probe.trials)
    ok = [t.lr for t in probe.trials if t.heldout_change <= limit * PROBE_SHARE]  # type: ignore[operator]
    assert probe.chosen == (max(ok) if ok else AUTO_LADDER[0])


def test_a_tighter_held_out_budget_never_picks_a_larger_rate(forget_and_retain: Data) -> None:
    findings, windows, retain = forget_and_retain
    chosen = []
    for limit in (1e-4, 1.0):
        model = micro_model(VOCAB)
        config = UnlearnConfig(lr="auto", auto_ppl_max=limit, batch_size=2, auto_probe_steps=2)
        probe = probe_lr(
            model, windows, retain, before=[_m(f.id, ma=0.9, extracted=True) for f in findings],
            thresholds=THRESHOLDS, config=config, pad_id=0, heldout=Drift(model, scale=1e-3),
        )  # fmt: skip
        chosen.append(probe.chosen)
    assert chosen[0] < chosen[1]


def test_with_held_out_code_the_steering_watches_perplexity_not_the_kl() -> None:
    probe = LrProbe(chosen=1e-4, kl_budget=0.005, steps=3, windows=8, trials=[], seconds=0.0)
    config = UnlearnConfig(lr="auto", auto_ppl_max=0.02, auto_kl_max=1e-9)
    steer = LrSteer(_no_watch, probe, config, heldout=True)  # the KL is never made
    rate, ok, stop = steer.after_epoch(_held(1, 0.9, 4, 0.01))
    assert (ok, stop) == (True, "")
    rate, ok, stop = steer.after_epoch(_held(2, 0.5, 3, 0.03))
    assert (rate, ok, stop) == (pytest.approx(1e-4 / AUTO_FACTOR), False, "")  # type: ignore[comparison-overlap]
    _, ok, stop = steer.after_epoch(_held(3, 0.4, 2, 0.025))
    assert not ok
    assert "held-out perplexity increase over 0.02 for 2 epochs" in stop


def test_without_a_held_out_figure_the_steering_falls_back_to_the_kl() -> None:
    probe = LrProbe(chosen=1e-4, kl_budget=0.005, steps=3, windows=8, trials=[], seconds=0.0)
    config = UnlearnConfig(lr="auto", auto_ppl_max=0.02, auto_kl_max=0.02)
    steer = LrSteer(lambda: FixedKL([0.03]), probe, config, heldout=True)
    assert steer.after_epoch(_log(1, 0.9, 4))[1] is False  # heldout_change None: the KL


def _no_watch() -> WatchKL:
    raise AssertionError("the KL watch was made though held-out perplexity steers")


def _held(epoch: int, ma: float, remaining: int, change: float) -> EpochLog:
    return EpochLog(epoch, 1, {}, 0, remaining, ma, None, 0, remaining, 1.0, change)


class RefusingOnce:
    """Keeps no weights of epoch 1 (the rate then 0: epoch 2 changes nothing), then
    stops; it records the weights it sees at epoch 2."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.seen: list[float] = []

    def after_epoch(self, log: EpochLog) -> tuple[float, bool, str]:
        self.seen.append(_checksum(self.model))
        return 0.0, log.epoch != 1, "stop here" if log.epoch == 2 else ""


def test_an_epoch_over_the_budget_is_rolled_back(forget_and_retain: Data) -> None:
    model = micro_model(VOCAB)
    start = _checksum(model)
    steer = RefusingOnce(model)
    unlearner = _steered_loop(forget_and_retain, model, (0.9, True), steer)
    unlearner.run()
    assert steer.seen[0] != pytest.approx(start)  # epoch 1 moved the weights
    assert steer.seen[1] == pytest.approx(start)  # epoch 2 started from the rolled-back ones


def test_after_going_over_the_steering_never_raises_back_to_that_rate() -> None:
    """Rolled back to lower rates, forgetting looks stalled: raising again would go over
    once more (it ping-ponged for 12 epochs on a test model before this rule)."""
    probe = LrProbe(chosen=1e-4, kl_budget=0.005, steps=3, windows=8, trials=[], seconds=0.0)
    steer = LrSteer(_no_watch, probe, UnlearnConfig(lr="auto", auto_ppl_max=0.02), heldout=True)
    assert steer.after_epoch(_held(1, 0.9, 4, 0.03))[0] == pytest.approx(1e-4 / AUTO_FACTOR)
    rates = [steer.after_epoch(_held(e, 0.9, 4, 0.01))[0] for e in range(2, 6)]
    assert rates == pytest.approx([1e-4 / AUTO_FACTOR] * 4)  # stalled, but no raise


class OverOnFirst:
    """Epoch 1 is over the budget, later ones within."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def after_epoch(self, log: EpochLog) -> tuple[float, bool, str]:
        self.seen.append(log.epoch)
        return 1e-2, log.epoch != 1, ""


def test_an_epoch_that_forgets_everything_over_the_budget_does_not_end_the_loop(
    forget_and_retain: Data,
) -> None:
    steer = OverOnFirst()
    unlearner = _steered_loop(forget_and_retain, micro_model(VOCAB), (0.1, False), steer)
    result = unlearner.run()
    assert steer.seen == [1, 2]  # epoch 1 forgot all over the budget: rolled back, went on
    assert result.stop_reason == "every finding forgotten"
    assert result.best_epoch == 2


class OverTwice:
    """Every epoch over the budget; the second one stops."""

    def after_epoch(self, log: EpochLog) -> tuple[float, bool, str]:
        return 1e-2, False, "over for 2 epochs" if log.epoch == 2 else ""


def test_a_stop_over_the_budget_gives_the_steer_s_reason_not_forgotten(
    forget_and_retain: Data,
) -> None:
    """The weights that forgot everything are not kept: the run must not say they were."""
    unlearner = _steered_loop(forget_and_retain, micro_model(VOCAB), (0.1, False), OverTwice())
    result = unlearner.run()
    assert result.stop_reason == "over for 2 epochs"
    assert result.best_epoch == 0
