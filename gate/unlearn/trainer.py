"""The unlearning loop: steps on forget and retain batches, re-measure, stop per finding.

One epoch is one pass over the forget windows that still hold a secret to forget, k
windows at a time; each forget batch is paired with the next k retain windows. Two
schedules:

- ``joint`` (default): the forget loss and the retain loss are backpropagated one
  after the other into the same gradients and the optimizer takes one step: one update
  per forget batch, and only one batch's activations in memory at a time.
- ``alternating`` (the reference's): an optimizer step on the forget batch, then
  another on the retain batch.

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
"""

from __future__ import annotations

import dataclasses
import math
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from audit.measurements import Measurement, Thresholds
from gate.errors import InputError
from gate.unlearn.data import (
    DEFAULT_RETAIN_TOKENS,
    DEFAULT_RETAIN_WINDOWS,
    DEFAULT_WINDOW_TOKENS,
    ForgetWindow,
    RetainWindow,
    collate,
)
from gate.unlearn.methods import (
    ForgetView,
    Hyper,
    Loss,
    RetainView,
    UnlearningMethod,
    get_method,
)
from gate.unlearn.reference import (
    DEFAULT_BUDGET_MB,
    DEFAULT_TOPK,
    CacheMode,
    FrozenReference,
    ReferenceSource,
    aligned_logprobs,
    build_cache,
    forget_positions,
)

if TYPE_CHECKING:
    import torch

Schedule = Literal["joint", "alternating"]
RefKind = Literal["cached", "frozen"]
Measure = Callable[[Sequence[str]], list[Measurement]]  # finding ids -> measurements
Screen = Callable[[Sequence[str]], dict[str, tuple[float, bool]]]  # ids -> (MA, extracted)


@dataclass(frozen=True)
class UnlearnConfig:
    """Hyper-parameters; the defaults are the reference's (billion-parameter models)."""

    method: str = "codeeraser"  # ga | cu | codeeraser
    lr: float = 3e-6  # AdamW learning rate, constant
    alpha: float = 1.0  # α: retain KL weight relative to the forget KL
    lam: float = 0.1  # λ: KL weight
    gamma: float = 0.1  # γ: descent weight on the context tokens (codeeraser)
    batch_size: int = 32  # k: forget windows per step
    epochs: int = 100  # most epochs
    patience: int = 5  # stop after this many epochs without a lower leak (0: never)
    window_tokens: int = DEFAULT_WINDOW_TOKENS  # forget window length (clamped to context)
    retain_tokens: int = DEFAULT_RETAIN_TOKENS  # retain window length (clamped to context)
    retain_windows: int = DEFAULT_RETAIN_WINDOWS  # retain windows in the retain set
    schedule: Schedule = "joint"  # one update per forget batch, or the reference's two
    reference: RefKind = "cached"  # p0 from cached log-probs, or a frozen model copy
    kl_cache: CacheMode = "auto"  # full | topk | auto (full when it fits kl_cache_mb)
    kl_topk: int = DEFAULT_TOPK  # tokens per position in a top-k cache
    kl_cache_mb: int = DEFAULT_BUDGET_MB  # memory `auto` may spend on an exact cache
    max_grad_norm: float = 1.0  # gradient clipping (0: off)
    weight_decay: float = 0.0  # AdamW weight decay (reference: 0)
    seed: int = 0  # batch order

    def __post_init__(self) -> None:
        get_method(self.method)  # an unknown name lists the valid ones
        if not self.lr > 0:
            raise InputError(f"the learning rate must be > 0 (got {self.lr})")
        if self.batch_size < 1 or self.epochs < 1:
            raise InputError("batch size and epochs must be at least 1")
        if min(self.alpha, self.lam, self.gamma, self.max_grad_norm, self.patience) < 0:
            raise InputError("alpha, lambda, gamma, grad clipping and patience must be >= 0")
        if self.schedule not in ("joint", "alternating"):
            raise InputError(f"unknown schedule {self.schedule!r} (joint or alternating)")
        if self.reference not in ("cached", "frozen"):
            raise InputError(f"unknown KL reference {self.reference!r} (cached or frozen)")

    @classmethod
    def from_args(cls, method: str, args: Mapping[str, Any]) -> UnlearnConfig:
        """A config from a policy's ``remediation.args`` (``lambda``/``kl_weight`` for λ,
        ``max_epochs`` for epochs); an unknown argument is an InputError naming it."""
        renames = {"lambda": "lam", "kl_weight": "lam", "max_epochs": "epochs"}
        fields = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {"method": method}
        for key, value in args.items():
            name = renames.get(key, key)
            if name not in fields:
                raise InputError(f"unknown unlearning argument {key!r}")
            values[name] = value
        return cls(**values)

    def hyper(self) -> Hyper:
        return Hyper(alpha=self.alpha, lam=self.lam, gamma=self.gamma)


def is_forgotten(m: Measurement, thresholds: Thresholds) -> bool:
    """The stopping rule for one finding: under both thresholds and not extracted greedily."""
    return m.ma < thresholds.ma and m.el_10 < thresholds.el_10 and not m.extracted_greedy


@dataclass
class FindingOutcome:
    """How unlearning ended for one finding (ids and numbers only, no secret)."""

    finding_id: str
    before: Measurement
    after: Measurement | None = None
    forgotten_epoch: int | None = None  # the epoch it was last found forgotten
    stop_reason: str = "not reached"

    @property
    def forgotten(self) -> bool:
        return self.forgotten_epoch is not None


@dataclass(frozen=True)
class EpochLog:
    """One epoch's progress: mean loss parts and what the re-measure found."""

    epoch: int
    steps: int
    loss: dict[str, float]
    measured: int  # findings measured in full (MA, EL, extraction) after the epoch
    screened: int  # findings whose MA alone showed they are not forgotten yet
    ma_mean: float  # over the findings measured or screened
    el_10_mean: float | None  # over the findings measured in full (None: none was)
    extracted: int  # findings extracted greedily, all forget findings (latest measurement)
    remaining: int  # findings still to forget
    seconds: float


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

    @property
    def forgotten(self) -> int:
        return sum(o.forgotten for o in self.outcomes)


class BestState:
    """The weights with the lowest leak so far, on disk (default) or in memory."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.score: tuple[float, ...] | None = None
        self.epoch = 0
        self._memory: dict[str, torch.Tensor] | None = None

    def offer(self, score: tuple[float, ...], epoch: int, model: torch.nn.Module) -> bool:
        """Keep `model`'s weights if `score` is lower than the best so far."""
        if self.score is not None and score >= self.score:
            return False
        self.score, self.epoch = score, epoch
        if self.folder is not None:
            import torch

            # torch.save streams each tensor to the file; no second copy in memory
            torch.save(model.state_dict(), self.folder / "best.pt")
        else:
            self._memory = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
        return True

    def restore(self, model: torch.nn.Module) -> None:
        if self.folder is not None:
            import torch

            state = torch.load(self.folder / "best.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        elif self._memory is not None:
            model.load_state_dict(self._memory)


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
    ) -> None:
        self.model, self.forget, self.retain = model, list(forget), list(retain)
        self.measure, self.thresholds, self.config = measure, thresholds, config
        self.pad_id, self.report, self.screen = pad_id, report, screen
        self.method: UnlearningMethod = get_method(config.method)(config.hyper())
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
        self.best = BestState(best_dir)
        self.diverged = False
        self.rng = random.Random(config.seed)  # noqa: S311 - batch order, not a secret
        self._retain_order: list[int] = []

    def run(self) -> UnlearnResult:
        import torch

        start = time.perf_counter()
        result = UnlearnResult(list(self.outcomes.values()))
        reference = self.reference_source()
        result.reference_kind, result.reference_bytes = reference.kind, reference.nbytes
        optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=self.config.lr,
            betas=(0.9, 0.98),
            weight_decay=self.config.weight_decay,
        )
        self.best.offer(leak_score(list(self.latest.values()), self.thresholds), 0, self.model)
        self.model.eval()  # no dropout: the losses compare deterministic distributions
        result.stop_reason = f"ran out of epochs ({self.config.epochs})"
        for epoch in range(1, self.config.epochs + 1):
            reason = self._epoch(epoch, reference, optimizer, result)
            if reason:
                result.stop_reason = reason
                break
        self._finish(result)
        result.seconds = time.perf_counter() - start
        return result

    def reference_source(self) -> ReferenceSource:
        """p0 for the KL terms: the cache built now, or a frozen copy of the model."""
        if self.config.reference == "frozen":
            return FrozenReference(self.model)
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
        parts: dict[str, list[float]] = {}
        steps = 0
        result.epochs = epoch
        for indices in self._forget_batches():
            try:
                losses = self.step(indices, reference, optimizer)
            except _NotFinite:
                self.diverged = True
                return f"the loss stopped being finite at epoch {epoch}"
            for loss in losses:
                for name, value in loss.parts.items():
                    parts.setdefault(name, []).append(value)
            steps += 1
            result.steps += 1
        ids, measured = self._remeasure(epoch)
        if not self.active:
            ids, measured = self._verify(epoch)
        log = self._log(epoch, steps, parts, (ids, measured), time.perf_counter() - started)
        result.history.append(log)
        if self.report is not None:
            self.report(log)
        return self._stop_reason(epoch)

    def _stop_reason(self, epoch: int) -> str:
        improved = self.best.offer(
            leak_score(list(self.latest.values()), self.thresholds), epoch, self.model
        )
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
        return losses

    def _update(self, optimizer: torch.optim.Optimizer) -> None:
        import torch

        if self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        optimizer.step()

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _backward_forget(self, indices: list[int], reference: ReferenceSource) -> Loss:
        import torch

        windows = [self.forget[i] for i in indices]
        batch = collate(windows, self.pad_id, self.active).to(self._device())
        logprobs = aligned_logprobs(self.model, batch)  # (B, L, V)
        ref = None
        if self.method.forget_kl != "none":
            where = forget_positions(batch, self.method.forget_kl)
            ref = reference.forget(indices, batch, where)
            if self.method.forget_kl == "secret":
                ref = ref.select(batch.active[where])  # only secrets still to forget
        view = ForgetView(
            logprobs=logprobs,
            labels=batch.labels,
            valid=batch.valid,
            secret=batch.active,
            context=batch.context,
            reference=ref,
        )
        loss = _finite(self.method.forget_loss(view))
        torch.autograd.backward(loss.value)
        return loss

    def _backward_retain(self, indices: list[int], reference: ReferenceSource) -> Loss | None:
        import torch

        batch = collate([self.retain[i] for i in indices], self.pad_id).to(self._device())
        logprobs = aligned_logprobs(self.model, batch)
        ref = reference.retain(indices, batch, batch.valid) if self.method.retain_kl else None
        loss = self.method.retain_loss(RetainView(logprobs, batch.labels, batch.valid, ref))
        if loss is not None:
            torch.autograd.backward(_finite(loss).value)
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


class _NotFinite(Exception):
    """A loss became NaN or infinite: no step is taken with it."""


def _finite(loss: Loss) -> Loss:
    if not math.isfinite(float(loss.value.detach())):
        raise _NotFinite
    return loss


def new_best_dir() -> tempfile.TemporaryDirectory[str]:
    """A scratch folder for the best state when the caller has none."""
    return tempfile.TemporaryDirectory(prefix="codeeraser-best-")
