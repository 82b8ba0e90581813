"""The unlearning loop: steps on forget and retain batches, re-measure, stop per finding.

One epoch is one pass over the forget windows that still hold a secret to forget, k
windows at a time; each forget batch is paired with the next k retain windows. Two
schedules:

- ``alternating`` (default, the reference's): an optimizer step on the forget batch,
  then another on the retain batch.
- ``joint``: the forget loss and the retain loss are backpropagated one after the other
  into the same gradients and the optimizer takes one step. Cheaper per batch, but
  measured slower to forget on the demo (BENCHMARKS.md): Adam scales the one update by
  the summed gradient, in which a strong retain term dilutes the ascent.

After every epoch the findings still to forget are measured again (`measure` is
`audit.extraction`'s batched MA / EL / greedy extraction, passed in). A finding is
forgotten when MA < the MA threshold, EL_10 < the EL threshold and greedy decoding
from its prefix no longer gives the secret; it then leaves the forget set (its secret
tokens are neither ascended nor descended on any more). With a `screen` (MA and greedy
extraction only: one teacher-forced pass and one decode per finding), only the
findings whose MA is already under the threshold are measured in full: EL_n needs
m − n + 1 decodes per finding, and a finding over the MA threshold cannot stop anyway.
When none is left, the whole forget set is measured once more: findings that came
back re-enter the forget set.
The run stops when every finding is forgotten, when the epochs run out, when the
leak has not improved for `patience` epochs, or when the loss stops being finite. The
state with the lowest leak (extracted count, then findings not forgotten, then mean
MA) is kept and restored at the end.

`hooks` (`TrainerHooks`, implemented by `gate.unlearn.checkpoint.Checkpointer`) are
called after every step and every epoch, the loop's safe points: to save a checkpoint,
to stop there, and at the start to resume from one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import torch

from audit.errors import InputError
from audit.measurements import Measurement, Thresholds
from gate.unlearn.data import ForgetWindow, RetainWindow, collate
from gate.unlearn.engine import Engine, Piece, engine_settings
from gate.unlearn.lora import BaseReference
from gate.unlearn.methods import (
    ForgetView,
    Hyper,
    Loss,
    RetainView,
    UnlearningMethod,
    get_method,
)
from gate.unlearn.optim import make_optimizer, states_dtype
from gate.unlearn.reference import (
    FrozenReference,
    ReferenceSource,
    build_cache,
    forget_positions,
)
from gate.unlearn.remediation import EpochLog, FindingOutcome, LrProbe
from gate.unlearn.settings import UnlearnConfig


class HeldoutCheck(Protocol):
    """Held-out perplexity of the current weights against the erase's start."""

    def change(self) -> float: ...


Measure = Callable[[Sequence[str]], list[Measurement]]  # finding ids -> measurements
Screen = Callable[[Sequence[str]], dict[str, tuple[float, bool]]]  # ids -> (MA, extracted)


def is_forgotten(m: Measurement, thresholds: Thresholds) -> bool:
    """The stopping rule for one finding: under both thresholds and not extracted greedily."""
    return m.ma < thresholds.ma and m.el_10 < thresholds.el_10 and not m.extracted_greedy


@dataclass
class UnlearnResult:
    """What the loop did; `outcomes` are in the forget set's order."""

    outcomes: list[FindingOutcome]
    history: list[EpochLog] = field(default_factory=list)
    epochs: int = 0
    best_epoch: int = 0
    steps: int = 0
    stop_reason: str = ""
    reference_kind: str = ""
    reference_bytes: int = 0
    seconds: float = 0.0
    lr_probe: LrProbe | None = None  # lr auto: what the probe chose

    @property
    def forgotten(self) -> int:
        return sum(o.forgotten for o in self.outcomes)


@dataclass
class EpochProgress:
    """Where the current epoch is: its forget batches, how many are done, loss parts so far."""

    epoch: int
    batches: list[list[int]]  # forget-window indices, in this epoch's order
    done: int = 0  # batches trained on
    parts: dict[str, list[float]] = field(default_factory=dict)

    def pending(self) -> Iterator[list[int]]:
        while self.done < len(self.batches):
            yield self.batches[self.done]

    def record(self, losses: Sequence[Loss]) -> None:
        for loss in losses:
            for name, value in loss.parts.items():
                self.parts.setdefault(name, []).append(value)
        self.done += 1


class Steer(Protocol):
    """Called after every epoch (`gate.unlearn.autolr.LrSteer`): the learning rate for
    the next epoch, whether this epoch's weights may be kept as the best, and a reason
    to stop (empty: go on)."""

    def after_epoch(self, log: EpochLog) -> tuple[float, bool, str]: ...


class TrainerHooks(Protocol):
    """Called by the loop at its safe points (`gate.unlearn.checkpoint` saves and resumes)."""

    def resume(
        self, unlearner: Unlearner, optimizer: torch.optim.Optimizer, result: UnlearnResult
    ) -> int:
        """Load a saved state into the loop; return the first epoch still to run."""
        ...

    def after_step(
        self, unlearner: Unlearner, optimizer: torch.optim.Optimizer, result: UnlearnResult
    ) -> None: ...

    def after_epoch(
        self, unlearner: Unlearner, optimizer: torch.optim.Optimizer, result: UnlearnResult
    ) -> None: ...


def leak_score(latest: Sequence[Measurement], thresholds: Thresholds) -> tuple[float, ...]:
    """Lower is better: extracted count, then findings not forgotten, then mean MA."""
    extracted = sum(m.extracted_greedy for m in latest)
    remaining = sum(not is_forgotten(m, thresholds) for m in latest)
    mean_ma = sum(m.ma for m in latest) / max(1, len(latest))
    return (float(extracted), float(remaining), round(mean_ma, 6))


class Unlearner:
    """Runs one unlearning job on an in-memory model."""

    def __init__(
        self,
        model: torch.nn.Module,
        forget: Sequence[ForgetWindow],
        retain: Sequence[RetainWindow],
        *,
        before: Sequence[Measurement],
        measure: Measure,
        thresholds: Thresholds,
        config: UnlearnConfig,
        pad_id: int,
        best_dir: Path | None = None,
        report: Callable[[EpochLog], None] | None = None,
        screen: Screen | None = None,
        engine: Engine | None = None,
        hooks: TrainerHooks | None = None,
        steer: Steer | None = None,
        heldout: HeldoutCheck | None = None,
    ) -> None:
        self.model, self.forget, self.retain = model, list(forget), list(retain)
        self.engine = engine or Engine(**engine_settings(config))
        self.train_model = model  # what training forwards go through (a DDP wrapper, ...)
        self.measure, self.thresholds, self.config = measure, thresholds, config
        self.pad_id, self.report, self.screen = pad_id, report, screen
        self.method: UnlearningMethod = get_method(config.method)(
            Hyper(alpha=config.alpha, lam=config.lam, gamma=config.gamma)
        )
        if self.method.retain_kl and not self.retain:
            raise InputError(
                f"the {config.method} method needs a retain set of clean code and got none "
                "(give --retain, or data with samples that have no findings)"
            )
        self.latest = {m.finding_id: m for m in before}
        self.outcomes = {m.finding_id: FindingOutcome(m.finding_id, m) for m in before}
        missing = {fid for w in self.forget for fid in w.finding_ids} - self.outcomes.keys()
        if missing:
            raise InputError(f"finding {sorted(missing)[0]} has a window but no measurement")
        self.active = {fid for fid, m in self.latest.items() if not is_forgotten(m, thresholds)}
        for fid in self.outcomes.keys() - self.active:
            self.outcomes[fid].forgotten_epoch = 0
            self.outcomes[fid].stop_reason = "not memorized before unlearning"
        self.best = self.engine.best_state(best_dir)
        self._best_seen = (dict(self.latest), set(self.active))  # measured on the best
        self.diverged = False
        self.rng = random.Random(config.seed)  # noqa: S311 - batch order, not a secret
        self._retain_order: list[int] = []
        self.hooks, self.steer, self.heldout = hooks, steer, heldout
        self.admissible = True  # this epoch's weights may be kept (the steer's say)
        self.progress: EpochProgress | None = None  # the epoch under way
        self.finished = False  # the loop has decided to stop (or ran out of epochs)

    def run(self) -> UnlearnResult:

        start = time.perf_counter()
        result = UnlearnResult(list(self.outcomes.values()))
        reference = self.reference_source()
        result.reference_kind, result.reference_bytes = reference.kind, reference.nbytes
        optimizer = self.optimizer(self.config.rate, self.config.weight_decay)
        self.train_model, optimizer = self.engine.prepare(self.model, optimizer)
        self.best.offer(leak_score(list(self.latest.values()), self.thresholds), 0, self.model)
        self.model.eval()  # no dropout: the losses compare deterministic distributions
        result.stop_reason = f"ran out of epochs ({self.config.epochs})"
        first = self.hooks.resume(self, optimizer, result) if self.hooks else 1
        for epoch in range(first, self.config.epochs + 1):
            reason = self._epoch(epoch, reference, optimizer, result)
            if reason:
                result.stop_reason = reason
            self.finished = bool(reason) or epoch == self.config.epochs
            if self.hooks is not None:
                self.hooks.after_epoch(self, optimizer, result)
            if reason:
                break
        self._finish(result)
        result.seconds = time.perf_counter() - start
        return result

    def optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """AdamW over the trained weights (LoRA: the adapters), its moments in the
        dtype `optimizer_states` resolves to for this model."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        states = states_dtype(self.config.optimizer_states, params)
        return make_optimizer(params, lr=lr, weight_decay=weight_decay, states=states)

    def reference_source(self) -> ReferenceSource:
        """p0 for the KL terms: the cache built now, a frozen copy of the model, or (LoRA)
        the model with its adapters switched off."""
        if self.config.kl_reference == "frozen":
            return FrozenReference(self.model)
        if self.config.kl_reference == "base":
            return BaseReference(self.model)
        return build_cache(
            self.model,
            self.forget,
            self.retain if self.method.retain_kl else [],
            forget_kl=self.method.forget_kl,
            retain_kl=self.method.retain_kl,
            pad_id=self.pad_id,
            mode=self.config.kl_cache,
            topk=self.config.kl_topk,
            budget_mb=self.config.kl_cache_mb,
            batch_size=self.config.batch_size,
        )

    def _epoch(
        self,
        epoch: int,
        reference: ReferenceSource,
        optimizer: torch.optim.Optimizer,
        result: UnlearnResult,
    ) -> str:
        started = time.perf_counter()
        if self.progress is None or self.progress.epoch != epoch:  # else resumed mid-epoch
            self.progress = EpochProgress(epoch, list(self._forget_batches()))
        progress = self.progress
        result.epochs = epoch
        for indices in progress.pending():
            try:
                losses = self.step(indices, reference, optimizer)
            except NotFinite:
                self.diverged = True
                self.progress = None
                return f"the loss stopped being finite at epoch {epoch}"
            progress.record(losses)
            result.steps += 1
            if self.hooks is not None:
                self.hooks.after_step(self, optimizer, result)
        self.progress = None
        ids, measured = self._remeasure(epoch)
        if not self.active:
            ids, measured = self._verify(epoch)
        elapsed = time.perf_counter() - started
        log = self._log(epoch, progress.done, progress.parts, (ids, measured), elapsed)
        result.history.append(log)
        if self.report is not None:
            self.report(log)
        return self._decide(epoch, log, optimizer)

    def _decide(self, epoch: int, log: EpochLog, optimizer: torch.optim.Optimizer) -> str:
        """After an epoch: the steer's say (rate, weights kept or rolled back), then why
        to stop, if at all."""
        steered = ""
        if self.steer is not None:
            rate, self.admissible, steered = self.steer.after_epoch(log)
            for group in optimizer.param_groups:
                group["lr"] = rate
        if not self.admissible:  # over the budget, even if it forgot everything
            if not steered:
                self._roll_back()
            return steered  # a stop here restores the best weights: say why, not "forgotten"
        return self._stop_reason(epoch) or steered

    def _roll_back(self) -> None:
        """Back to the best weights within the budget (and what was measured on them):
        the next epoch, at the lowered rate, does not build on weights over it. An epoch
        that forgot every finding over the budget does not end the loop: it goes on from
        the weights before it (a new round would cost a reload and a probe)."""
        self.best.restore(self.model)
        self.latest, self.active = dict(self._best_seen[0]), set(self._best_seen[1])

    def _stop_reason(self, epoch: int) -> str:
        score = leak_score(list(self.latest.values()), self.thresholds)
        improved = self.admissible and self.best.offer(score, epoch, self.model)
        if improved:
            self._best_seen = (dict(self.latest), set(self.active))
        if not self.active:
            return "every finding forgotten"
        patience = self.config.patience
        if not improved and patience and epoch - self.best.epoch >= patience:
            return f"no lower leak for {patience} epochs"
        return ""

    def _forget_batches(self) -> Iterator[list[int]]:
        order = [i for i, w in enumerate(self.forget) if w.finding_ids & self.active]
        self.rng.shuffle(order)
        size = self.config.batch_size
        for first in range(0, len(order), size):
            yield order[first : first + size]

    def _retain_batch(self) -> list[int]:
        size = min(self.config.batch_size, len(self.retain))
        while len(self._retain_order) < size:
            fresh = list(range(len(self.retain)))
            self.rng.shuffle(fresh)
            self._retain_order.extend(fresh)
        batch, self._retain_order = self._retain_order[:size], self._retain_order[size:]
        return batch

    def step(
        self, indices: list[int], reference: ReferenceSource, optimizer: torch.optim.Optimizer
    ) -> list[Loss]:
        """One forget batch (forget windows `indices`) and the next retain batch."""
        joint = self.config.schedule == "joint"
        optimizer.zero_grad(set_to_none=True)
        losses = [self._backward_forget(indices, reference)]
        if not joint:
            self._update(optimizer)
        if self.method.retain_kl:
            if not joint:
                optimizer.zero_grad(set_to_none=True)
            retained = self._backward_retain(self._retain_batch(), reference)
            if retained is not None:
                losses.append(retained)
            if not joint:
                self._update(optimizer)
        if joint:
            self._update(optimizer)
        optimizer.zero_grad(set_to_none=True)  # no gradients held through a re-measure
        return losses

    def _update(self, optimizer: torch.optim.Optimizer) -> None:
        self.engine.step(self.train_model, optimizer, self.config.max_grad_norm)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _backward_forget(self, indices: list[int], reference: ReferenceSource) -> Loss:
        """Backward of the forget loss of windows `indices`, micro-batch by micro-batch."""
        pieces = self.engine.pieces(indices, self.forget)
        return _combined([self._forget_piece(piece, reference) for piece in pieces])

    def _forget_piece(self, piece: Piece, reference: ReferenceSource) -> tuple[Loss, Piece]:

        windows = [self.forget[i] for i in piece.indices]
        batch = collate(windows, self.pad_id, self.active).to(self._device())
        ref, where = None, None
        if self.method.forget_kl != "none":  # before the training forward: a reference
            where = forget_positions(batch, self.method.forget_kl)  # that runs a model
            ref = reference.forget(piece.indices, batch, where)  # then adds no peak
        stats = self.engine.token_stats(self.train_model, batch, batch.valid, ref, where)
        secret = batch.active  # (B, L)
        if self.config.ascend_on == "predicted":  # tokens the model still predicts greedily
            secret = secret & stats.predicted
        view = ForgetView(stats=stats, valid=batch.valid, secret=secret, context=batch.context)
        loss = self._finite(self.method.forget_loss(view))
        self.engine.backward(loss.value * piece.weight)
        return loss, piece

    def _backward_retain(self, indices: list[int], reference: ReferenceSource) -> Loss | None:
        done = [self._retain_piece(p, reference) for p in self.engine.pieces(indices, self.retain)]
        present = [(loss, piece) for loss, piece in done if loss is not None]
        return _combined(present) if present else None

    def _retain_piece(self, piece: Piece, reference: ReferenceSource) -> tuple[Loss | None, Piece]:
        batch = collate([self.retain[i] for i in piece.indices], self.pad_id).to(self._device())
        ref = reference.retain(piece.indices, batch, batch.valid) if self.method.retain_kl else None
        stats = self.engine.token_stats(self.train_model, batch, batch.valid, ref, batch.valid)
        loss = self.method.retain_loss(RetainView(stats, batch.valid))
        if loss is not None:
            loss = self._finite(loss)
            self.engine.backward(loss.value * piece.weight)
        return loss, piece

    def _finite(self, loss: Loss) -> Loss:
        """The loss, if it is finite on every process; else no step is taken with it."""
        if not self.engine.all_finite(float(loss.value.detach())):
            raise NotFinite
        return loss

    def _remeasure(self, epoch: int) -> tuple[list[str], list[Measurement]]:
        """Measure the findings still to forget; return their ids and the full measurements."""
        ids = sorted(self.active)
        full = ids
        if self.screen is not None:
            quick = self.screen(ids)
            full = [fid for fid in ids if quick[fid][0] < self.thresholds.ma]
            for fid in set(ids) - set(full):  # MA over the threshold: EL is not re-measured
                ma, extracted = quick[fid]
                self.latest[fid] = replace(
                    self.latest[fid], ma=ma, extracted_greedy=extracted, memorized=True
                )
        measured = self.measure(full) if full else []
        for m in measured:
            self.latest[m.finding_id] = m
            if is_forgotten(m, self.thresholds):
                self.active.discard(m.finding_id)
                self.outcomes[m.finding_id].forgotten_epoch = epoch
                self.outcomes[m.finding_id].stop_reason = f"forgotten at epoch {epoch}"
        return ids, measured

    def _verify(self, epoch: int) -> tuple[list[str], list[Measurement]]:
        """Measure every forget finding once more; the ones that came back resume."""
        ids = sorted(self.outcomes)
        measured = self.measure(ids)
        for m in measured:
            self.latest[m.finding_id] = m
            if not is_forgotten(m, self.thresholds):
                self.active.add(m.finding_id)
                self.outcomes[m.finding_id].forgotten_epoch = None
                self.outcomes[m.finding_id].stop_reason = f"came back at epoch {epoch}"
        return ids, measured

    def _log(
        self,
        epoch: int,
        steps: int,
        parts: dict[str, list[float]],
        seen: tuple[list[str], list[Measurement]],
        seconds: float,
    ) -> EpochLog:
        ids, measured = seen
        return EpochLog(
            epoch=epoch,
            steps=steps,
            loss={name: sum(values) / len(values) for name, values in parts.items()},
            measured=len(measured),
            screened=len(ids) - len(measured),
            ma_mean=sum(self.latest[fid].ma for fid in ids) / max(1, len(ids)),
            el_10_mean=sum(m.el_10 for m in measured) / len(measured) if measured else None,
            extracted=sum(m.extracted_greedy for m in self.latest.values()),
            remaining=len(self.active),
            seconds=seconds,
            heldout_change=self.heldout.change() if self.heldout is not None else None,
        )

    def _finish(self, result: UnlearnResult) -> None:
        """Restore the best state, and measure every forget finding on it once."""
        restore = self.best.epoch != result.epochs or self.diverged
        if restore:
            self.best.restore(self.model)
        result.best_epoch = self.best.epoch
        if restore or self.active:
            for m in self.measure(sorted(self.outcomes)):
                self.latest[m.finding_id] = m
        for fid, outcome in self.outcomes.items():
            outcome.after = self.latest[fid]
            if not is_forgotten(outcome.after, self.thresholds):
                outcome.forgotten_epoch = None
                outcome.stop_reason = f"still memorized: {result.stop_reason}"


class NotFinite(Exception):
    """A loss became NaN or infinite: no step is taken with it."""


def _combined(done: Sequence[tuple[Loss, Piece]]) -> Loss:
    """One step's loss from its micro-batches: their values and parts weighted by their
    share of the step's windows (a process's own share under Accelerate)."""

    total = sum(piece.weight for _, piece in done) or 1.0
    value = (
        sum((loss.value.detach() * piece.weight for loss, piece in done), torch.zeros(())) / total
    )
    names = {name for loss, _ in done for name in loss.parts}
    parts = {
        name: sum(loss.parts.get(name, 0.0) * piece.weight for loss, piece in done) / total
        for name in names
    }
    return Loss(value, parts)
