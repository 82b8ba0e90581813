"""`lr: auto`: a learning rate sized to the model at hand by a short probe, then steered.

The paper's lr (3e-6) is tuned for billion-parameter models: it leaves a small model
untouched, and a rate that erases a small model breaks a large one. So `auto` measures,
with a **gauge** (`Gauge`): the perplexity increase of a held-out slice since the erase
started (`gate.unlearn.heldout`), when the loop has held-out code and `auto_ppl_max` is
set (the gate sets it from the policy's perplexity budget); else the KL from the
starting model on `AUTO_WATCH` retain windows (nats per token), which tracks held-out
perplexity only loosely.

1. **Probe** (before the loop). A rung of the ladder (`AUTO_LADDER`: 1e-6 to 1e-2,
   ×√10 a rung) is tried by taking `auto_probe_steps` steps of the chosen method
   (forget batch, then retain batch, as the loop does) on the first
   `auto_probe_windows` forget windows from the current weights, then reading the
   gauge; the weights are put back after each rung. A rung is within when the figure
   is at most `PROBE_SHARE` of `auto_ppl_max` (or `auto_kl`) and the loss stayed
   finite. The search starts at 1e-4: while within, it climbs until a rung is not; if
   not, it descends until one is. The chosen rate is the largest rung found within
   (none: 1e-6).
2. **Steering** (every epoch, `LrSteer`): the gauge is read after each epoch. Over
   `auto_ppl_max` (or `auto_kl_max`) the rate is divided by `AUTO_FACTOR`, that epoch's
   weights are not kept as the best and the loop rolls back to the best ones; a second
   epoch over it in a row stops the loop (the best weights within the budget are
   restored). When no finding was forgotten and the mean MA of what is left fell by
   less than 1% of itself, the rate is multiplied by `AUTO_FACTOR` (at most
   `AUTO_MAX_RAISE` rungs above the probe's choice, and never back up to a rate that
   went over the budget).

Cost: 2 rungs when 1e-4 is within and 3.2e-4 is not, at most 5 (up to 1e-2 or down
to 1e-6), of `auto_probe_steps` steps each on a small batch; one read of the gauge per
rung and per epoch (a forward pass over the slice or the watch windows); one copy of
the trainable weights (with LoRA, the adapters), on disk when they are on the CPU
(`gate.unlearn.spill`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from audit.measurements import Measurement, Thresholds
from gate import ui
from gate.unlearn.data import ForgetWindow, RetainWindow, collate
from gate.unlearn.engine import Engine, engine_settings
from gate.unlearn.reference import ReferenceSource
from gate.unlearn.remediation import EpochLog, LrProbe, LrTrial
from gate.unlearn.settings import UnlearnConfig
from gate.unlearn.spill import WeightCopy
from gate.unlearn.trainer import HeldoutCheck, NotFinite, Unlearner

AUTO_LADDER = tuple(10 ** (-6 + k / 2) for k in range(9))  # 1e-6, 3.2e-6, ..., 1e-2
AUTO_START = 4  # the probe's first rung: 1e-4
AUTO_WATCH = 8  # retain windows the KL is measured on
AUTO_FACTOR = math.sqrt(10)  # one rung
AUTO_MAX_RAISE = 2  # rungs the steering may go above the probe's choice


class WatchKL:
    """KL from the starting model to the current one on a few retain windows."""

    def __init__(self, model: torch.nn.Module, windows: Sequence[RetainWindow], pad_id: int):
        self.model, self.batch = model, collate(list(windows), pad_id)
        self.reference = self._logprobs()

    def _logprobs(self) -> torch.Tensor:
        device = next(self.model.parameters()).device
        batch = self.batch.to(device)
        with torch.no_grad():
            out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            logits = out.logits[:, :-1].float()
            return torch.log_softmax(logits, dim=-1)[batch.valid].cpu()

    def __call__(self) -> float:
        now = self._logprobs()
        kl = (self.reference.exp() * (self.reference - now)).sum(dim=-1)
        return float(kl.mean())


def watch_windows(retain: Sequence[RetainWindow], used: int) -> list[RetainWindow]:
    """The retain windows after the first `used` (the ones trained on first), or the
    first ones when there are too few."""
    spare = list(retain[used : used + AUTO_WATCH])
    return (
        spare if len(spare) >= min(AUTO_WATCH, len(retain)) // 2 + 1 else list(retain[:AUTO_WATCH])
    )


def probe_lr(
    model: torch.nn.Module,
    forget: Sequence[ForgetWindow],
    retain: Sequence[RetainWindow],
    *,
    before: Sequence[Measurement],
    thresholds: Thresholds,
    config: UnlearnConfig,
    pad_id: int,
    heldout: HeldoutCheck | None = None,
    spill: Path | None = None,
) -> LrProbe:
    """The probe (see the module's text); the model's weights are as they were after it.
    `spill`: a folder for the copy of the weights the rungs start from (`WeightCopy`: on
    disk on the CPU, so the copy costs no memory); none: in memory."""
    started = time.perf_counter()
    windows = list(forget[: config.auto_probe_windows])
    size = min(config.batch_size, len(windows))
    stepped = list(retain[:size])  # the retain windows the steps use (no cache for others)
    gauge = _gauge(model, retain, size, pad_id, config=config, heldout=heldout)
    saved = WeightCopy([p for p in model.parameters() if p.requires_grad], spill)
    engine = Engine(**engine_settings(config))  # the loop's micro-batches and checkpointing
    engine.ready(model)
    trials: list[LrTrial] = []
    reference: ReferenceSource | None = None

    def within(index: int) -> bool:
        nonlocal reference
        lr = AUTO_LADDER[index]
        run = config.model_copy(update={"lr": lr, "batch_size": size})
        unlearner = Unlearner(
            model, windows, stepped, before=before, measure=_no_measure,
            thresholds=thresholds, config=run, pad_id=pad_id, engine=engine,
        )  # fmt: skip
        reference = reference or unlearner.reference_source()
        rung_started = time.perf_counter()
        value = _rung(unlearner, reference, gauge.read, lr, config.auto_probe_steps)
        saved.restore()
        trials.append(gauge.trial(lr, value))
        _say(rung_text(lr, value, gauge, time.perf_counter() - rung_started))
        return value is not None and value <= gauge.budget

    try:
        _search(within)
    finally:
        saved.close()
    ok = [t.lr for t in trials if (v := gauge.value(t)) is not None and v <= gauge.budget]
    return LrProbe(
        chosen=max(ok) if ok else AUTO_LADDER[0],
        kl_budget=gauge.budget,
        gauge=gauge.name,
        steps=config.auto_probe_steps,
        windows=len(windows),
        trials=trials,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class Gauge:
    """What a rung is held to: the held-out perplexity increase (when the loop checks
    held-out code and `auto_ppl_max` is set; limit: `PROBE_SHARE` of it), else the
    retain KL (limit: `auto_kl`)."""

    name: str
    read: Callable[[], float]
    budget: float

    @property
    def heldout(self) -> bool:
        return self.name == HELDOUT_GAUGE

    def trial(self, lr: float, value: float | None) -> LrTrial:
        if self.heldout:
            return LrTrial(lr=lr, retain_kl=None, heldout_change=value)
        return LrTrial(lr=lr, retain_kl=value)

    def value(self, trial: LrTrial) -> float | None:
        return trial.heldout_change if self.heldout else trial.retain_kl


HELDOUT_GAUGE = "held-out perplexity"
PROBE_SHARE = 0.25  # of auto_ppl_max: what the probe's few steps may spend


def _gauge(
    model: torch.nn.Module,
    retain: Sequence[RetainWindow],
    used: int,
    pad_id: int,
    *,
    config: UnlearnConfig,
    heldout: HeldoutCheck | None,
) -> Gauge:
    if heldout is not None and config.auto_ppl_max is not None:
        return Gauge(HELDOUT_GAUGE, heldout.change, config.auto_ppl_max * PROBE_SHARE)
    watch = WatchKL(model, watch_windows(retain, used), pad_id)
    return Gauge("retain KL", watch, config.auto_kl)


def rung_text(lr: float, value: float | None, gauge: Gauge, seconds: float) -> str:
    """The probe's line per rung, at default verbosity: the probe takes minutes on a
    large model and would otherwise be silent."""
    if value is None:
        verdict = "diverged"
    elif gauge.heldout:
        verdict = f"held-out perplexity {value:+.2%}"
    else:
        verdict = f"retain KL {value:.4f}"
    within = value is not None and value <= gauge.budget
    limit = f"{gauge.budget:+.2%}" if gauge.heldout else f"{gauge.budget:g}"
    return (
        f"lr auto: probe at {lr:.1e}: {verdict}, {'within' if within else 'over'} "
        f"the budget {limit} ({seconds:.1f} s)"
    )


def _say(message: str) -> None:
    if not ui.is_quiet():
        ui.console.print(message)


def _search(within: Callable[[int], bool]) -> None:
    """From `AUTO_START` up while the rungs are within the budget, else down until one is."""
    index = AUTO_START
    if within(index):
        while index + 1 < len(AUTO_LADDER) and within(index + 1):
            index += 1
        return
    while index > 0 and not within(index - 1):
        index -= 1


def _rung(
    unlearner: Unlearner,
    reference: ReferenceSource,
    read: Callable[[], float],
    lr: float,
    steps: int,
) -> float | None:
    optimizer = unlearner.optimizer(lr, weight_decay=0.0)
    unlearner.model.eval()
    batch = list(range(len(unlearner.forget)))
    try:
        for _ in range(steps):
            unlearner.step(batch, reference, optimizer)
    except NotFinite:
        return None
    value = read()
    return value if math.isfinite(value) else None


def _no_measure(ids: Sequence[str]) -> list[Measurement]:
    raise RuntimeError("the lr probe does not measure")


class LrSteer:
    """Every epoch: lower the rate when the watch KL is over `auto_kl_max`, raise it when
    forgetting stalls (see the module's text)."""

    def __init__(
        self,
        watch: Callable[[], WatchKL],
        probe: LrProbe,
        config: UnlearnConfig,
        *,
        heldout: bool = False,
    ) -> None:
        """`watch` makes the KL watch, only when the KL steers (its reference holds
        full-vocabulary log-probs: 200 MB at a 49k vocabulary)."""
        self.probe, self.config = probe, config
        self.by_heldout = heldout and config.auto_ppl_max is not None
        self._make_watch, self._watch = watch, None if self.by_heldout else watch()
        self.lr = probe.chosen
        self.ceiling = probe.chosen * AUTO_FACTOR**AUTO_MAX_RAISE
        self.last_ma: float | None = None
        self.last_remaining: int | None = None
        self.over = False  # the last epoch was over auto_kl_max

    def after_epoch(self, log: EpochLog) -> tuple[float, bool, str]:
        """The rate for the next epoch, whether this epoch's weights may be kept, and a
        reason to stop the loop (empty: go on)."""
        drift, limit, name = self._drift(log)
        ok = drift <= limit
        stop = ""
        if not ok and self.over:
            stop = f"{name} over {limit:.4g} for 2 epochs"
        elif not ok:
            self.ceiling = min(self.ceiling, self.lr / AUTO_FACTOR)  # never back up to it
            self._change(log.epoch, self.lr / AUTO_FACTOR, f"{name} {drift:.4f} over budget")
        elif self._stalled(log):
            raised = min(self.ceiling, self.lr * AUTO_FACTOR)
            if raised > self.lr:
                self._change(log.epoch, raised, "forgetting stalled")
        self.last_ma, self.last_remaining, self.over = log.ma_mean, log.remaining, not ok
        return self.lr, ok, stop

    def _drift(self, log: EpochLog) -> tuple[float, float, str]:
        """What is held to a limit: the held-out perplexity increase when the loop
        checks one and `auto_ppl_max` is set, else the retain KL."""
        if self.by_heldout and log.heldout_change is not None:
            assert self.config.auto_ppl_max is not None
            return log.heldout_change, self.config.auto_ppl_max, "held-out perplexity increase"
        if self._watch is None:  # a held-out figure was expected and is missing
            self._watch = self._make_watch()
        return self._watch(), self.config.auto_kl_max, "retain KL"

    def _stalled(self, log: EpochLog) -> bool:
        if self.last_ma is None or self.last_remaining is None:
            return False
        fewer = log.remaining < self.last_remaining
        return not fewer and log.ma_mean > self.last_ma * 0.99

    def _change(self, epoch: int, lr: float, why: str) -> None:
        self.probe.changes.append(f"epoch {epoch}: lr {self.lr:.2g} → {lr:.2g} ({why})")
        self.lr = lr
