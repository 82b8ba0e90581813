"""Checkpoints of the unlearning loop: a run stopped anywhere and resumed ends exactly
where an uninterrupted run ends (weights, outcomes, history), on a micro model."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch

from audit.errors import InputError, Interrupted
from audit.measurements import Measurement
from gate.unlearn.checkpoint import WORK_MARKER, Checkpointer, StopSignal, work_dir
from gate.unlearn.data import ForgetWindow, collate
from gate.unlearn.lora import add_adapters
from gate.unlearn.losses import masked_ce
from gate.unlearn.reference import aligned_logprobs
from gate.unlearn.settings import UnlearnConfig
from gate.unlearn.trainer import Unlearner, UnlearnResult
from tests.gate.unlearn.conftest import micro_model
from tests.gate.unlearn.test_trainer import THRESHOLDS, VOCAB, Data, _m

FINGERPRINT = {"model": "m", "findings": "f", "settings": {"lr": 0.01}}


def _ce(model: torch.nn.Module, windows: list[ForgetWindow], fid: str) -> float:
    window = next(w for w in windows if fid in w.finding_ids)
    batch = collate([window], 0, {fid})
    with torch.no_grad():
        return float(masked_ce(aligned_logprobs(model, batch), batch.labels, batch.active))


def _measure_on(
    model: torch.nn.Module, windows: list[ForgetWindow], margin: dict[str, float]
) -> Callable[[Sequence[str]], list[Measurement]]:
    """MA stand-in: memorized until the secret's CE rose by its margin (a function of the
    weights alone, so a resumed run measures what the uninterrupted one measured)."""
    start = {fid: _ce(model, windows, fid) for fid in margin}

    def measure(ids: Sequence[str]) -> list[Measurement]:
        return [
            _m(fid, ma=0.0 if _ce(model, windows, fid) > start[fid] + margin[fid] else 0.9)
            for fid in ids
        ]

    return measure


class StopAt(Checkpointer):
    """Asks for a stop after step `step` (or at the end of epoch `epoch`), as Ctrl-C would."""

    def __init__(self, folder: Path, *, step: int = 0, epoch: int = 0) -> None:
        super().__init__(folder, stop=StopSignal())
        self.step, self.epoch_due = step, epoch

    def after_step(self, unlearner: Unlearner, optimizer: Any, result: UnlearnResult) -> None:
        self.stop.requested = self.stop.requested or result.steps == self.step
        super().after_step(unlearner, optimizer, result)

    def after_epoch(self, unlearner: Unlearner, optimizer: Any, result: UnlearnResult) -> None:
        self.stop.requested = self.stop.requested or result.epochs == self.epoch_due
        super().after_epoch(unlearner, optimizer, result)


def _run(
    data: Data,
    hooks: Checkpointer,
    *,
    resume: bool = False,
    lora: bool = False,
    **settings: Any,
) -> tuple[UnlearnResult, Any]:
    findings, windows, retain = data
    hooks.open(FINGERPRINT, resume=resume)
    model: torch.nn.Module = micro_model(VOCAB)
    if lora:  # adapters on the frozen model, as erase adds them
        model = add_adapters(model, rank=4, alpha=8.0)
    margin = {f.id: 0.4 * (i + 1) for i, f in enumerate(findings)}  # forgotten at different epochs
    result = Unlearner(
        model,
        windows,
        retain,
        before=[_m(f.id, ma=0.9, extracted=True) for f in findings],
        measure=_measure_on(model, windows, margin),
        thresholds=THRESHOLDS,
        config=UnlearnConfig(
            lr=1e-2, batch_size=3, epochs=12, patience=0, ascend_on="all", **settings
        ),
        pad_id=0,
        best_dir=hooks.best_dir,
        hooks=hooks,
    ).run()
    return result, model.state_dict()


def _summary(result: UnlearnResult) -> dict[str, Any]:
    return {
        "epochs": result.epochs,
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason,
        "outcomes": [
            (o.finding_id, o.forgotten_epoch, o.stop_reason, o.after) for o in result.outcomes
        ],
        "history": [{**asdict(h), "seconds": 0} for h in result.history],
    }


@pytest.fixture(scope="module")
def uninterrupted(
    forget_and_retain: Data, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    result, weights = _run(forget_and_retain, Checkpointer(tmp_path_factory.mktemp("ref")))
    summary = _summary(result)
    assert summary["stop_reason"] == "every finding forgotten"
    assert 3 <= summary["epochs"] < 12  # several epochs, two steps each: room to stop in
    return summary, weights


POINTS = {
    "mid-epoch 1": {"step": 1},
    "last step of epoch 2, before its re-measure": {"step": 4},
    "mid-epoch 3": {"step": 5},
    "end of epoch 2": {"epoch": 2},
    "end of the last epoch": {"epoch": 99},  # after the loop decided to stop
}


@pytest.mark.parametrize("point", POINTS, ids=list(POINTS))
def test_a_run_stopped_anywhere_resumes_to_the_same_result(
    point: str,
    forget_and_retain: Data,
    uninterrupted: tuple[dict[str, Any], dict[str, torch.Tensor]],
    tmp_path: Path,
) -> None:
    reference, weights = uninterrupted
    where = dict(POINTS[point])
    if where.get("epoch") == 99:
        where["epoch"] = reference["epochs"]
    with pytest.raises(Interrupted, match="rerun the same command with --resume"):
        _run(forget_and_retain, StopAt(tmp_path, **where))
    assert (tmp_path / "checkpoint" / "state.json").is_file()
    result, resumed = _run(forget_and_retain, Checkpointer(tmp_path), resume=True)
    assert _summary(result) == reference
    assert resumed.keys() == weights.keys()
    assert all(torch.equal(resumed[k], weights[k]) for k in weights)  # bit for bit


def test_a_hard_stop_resumes_from_the_last_epoch_checkpoint(
    forget_and_retain: Data,
    uninterrupted: tuple[dict[str, Any], dict[str, torch.Tensor]],
    tmp_path: Path,
) -> None:
    """A second Ctrl-C (or a kill) in the middle of an epoch: no save; the checkpoint of
    the epoch before is intact and resuming from it gives the same result."""
    reference, weights = uninterrupted

    class Killed(Checkpointer):
        def after_step(self, unlearner: Unlearner, optimizer: Any, result: UnlearnResult) -> None:
            if result.steps == 5:
                raise KeyboardInterrupt
            super().after_step(unlearner, optimizer, result)

    with pytest.raises(KeyboardInterrupt):
        _run(forget_and_retain, Killed(tmp_path))
    saved = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert saved["epochs_done"] == 2
    result, resumed = _run(forget_and_retain, Checkpointer(tmp_path), resume=True)
    assert _summary(result) == reference
    assert all(torch.equal(resumed[k], weights[k]) for k in weights)


def test_a_save_cut_between_its_renames_is_recovered(
    forget_and_retain: Data, tmp_path: Path
) -> None:
    """The newest complete checkpoint wins, wherever the swap was cut."""
    with pytest.raises(Interrupted):
        _run(forget_and_retain, StopAt(tmp_path, epoch=3))
    (tmp_path / "checkpoint").rename(tmp_path / "checkpoint.new")  # new written, not swapped
    shutil.copytree(tmp_path / "checkpoint.new", tmp_path / "checkpoint.old")
    state = json.loads((tmp_path / "checkpoint.old" / "state.json").read_text())
    state["sequence"] -= 1
    (tmp_path / "checkpoint.old" / "state.json").write_text(json.dumps(state))
    (tmp_path / "checkpoint.new" / "junk").write_text("")
    hooks = Checkpointer(tmp_path)
    hooks.open(FINGERPRINT, resume=True)
    assert hooks.epoch == 3
    assert (tmp_path / "checkpoint" / "junk").exists()  # the one that was moved into place


def test_an_incomplete_checkpoint_is_ignored(tmp_path: Path) -> None:
    (tmp_path / WORK_MARKER).touch()  # a working folder of an earlier run
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "model.pt").write_bytes(b"half")  # no state.json: cut short
    hooks = Checkpointer(tmp_path)
    hooks.open(FINGERPRINT, resume=True)
    assert hooks.saved is None
    assert not (tmp_path / "checkpoint").exists()


def test_a_folder_it_did_not_make_is_never_deleted(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("mine")
    for resume in (False, True):
        with pytest.raises(InputError, match="not made by codeeraser erase"):
            Checkpointer(tmp_path).open(FINGERPRINT, resume=resume)
    assert (tmp_path / "thesis.tex").read_text() == "mine"


def test_resume_refuses_a_checkpoint_of_another_run(
    forget_and_retain: Data, tmp_path: Path
) -> None:
    with pytest.raises(Interrupted):
        _run(forget_and_retain, StopAt(tmp_path, epoch=1))
    other = Checkpointer(tmp_path)
    with pytest.raises(InputError, match=r"other settings \(lr 0.01 → 0.02\)"):
        other.open({**FINGERPRINT, "settings": {"lr": 0.02}}, resume=True)
    with pytest.raises(InputError, match="other model weights"):
        Checkpointer(tmp_path).open({**FINGERPRINT, "model": "x"}, resume=True)
    hooks = Checkpointer(tmp_path)
    hooks.open(FINGERPRINT, resume=True)
    with pytest.raises(InputError, match="other data; rerun the same command"):
        hooks.check({"data": "changed"})
    fresh = Checkpointer(tmp_path)
    fresh.open({**FINGERPRINT, "model": "x"}, resume=False)  # no --resume: start over
    assert not (tmp_path / "checkpoint").exists()


def test_the_stop_signal_defers_the_first_signal_only() -> None:
    import os
    import signal

    # Python's own SIGINT handler, whatever this process inherited (a job started in the
    # background of a shell has SIGINT ignored); put back as it was after the test.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stop = StopSignal()
        seen = []
        with stop.deferring():
            os.kill(os.getpid(), signal.SIGTERM)
            seen.append(stop.requested)
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        seen.append(stop.requested)
        assert seen == [True, False]  # asked to stop inside; reset after
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    finally:
        if inherited is not None:  # None: a handler not set from Python, left as it is
            signal.signal(signal.SIGINT, inherited)


def test_the_work_folder_is_a_hidden_sibling(tmp_path: Path) -> None:
    assert work_dir(tmp_path / "model-erased") == tmp_path / ".model-erased.partial"


class Counting(Checkpointer):
    """Notes each save: the steps done, and whether it fell inside an epoch."""

    def __init__(self, folder: Path, seconds_per_reading: float) -> None:
        self.now = 0.0
        super().__init__(folder, clock=self._tick)
        self.per_reading = seconds_per_reading
        self.saves: list[tuple[int, bool]] = []

    def _tick(self) -> float:
        self.now += getattr(self, "per_reading", 0.0)
        return self.now

    def save(self, unlearner: Unlearner, optimizer: Any, result: UnlearnResult) -> None:
        self.saves.append((result.steps, unlearner.progress is not None))
        super().save(unlearner, optimizer, result)


def test_checkpoint_minutes_saves_after_the_step_that_ends_the_interval(
    forget_and_retain: Data, tmp_path: Path
) -> None:
    by_epoch = Counting(tmp_path / "epochs", seconds_per_reading=61.0)
    result, _ = _run(forget_and_retain, by_epoch, checkpoint_every=0)
    assert by_epoch.saves == [(result.steps, False)]  # only the end of the run
    timed = Counting(tmp_path / "minutes", seconds_per_reading=61.0)  # a minute per step
    result, _ = _run(forget_and_retain, timed, checkpoint_every=0, checkpoint_minutes=1)
    steps = [steps for steps, _ in timed.saves]
    assert steps[:-1] == list(range(1, result.steps + 1))  # after every step
    assert any(mid for _, mid in timed.saves)  # inside an epoch too
    slow = Counting(tmp_path / "slow", seconds_per_reading=1.0)
    _run(forget_and_retain, slow, checkpoint_every=0, checkpoint_minutes=1)
    assert len(slow.saves) == 1  # a minute never passes: only the end of the run


def test_a_checkpoint_keeps_only_the_trained_weights_and_resumes_exactly(
    forget_and_retain: Data, tmp_path: Path
) -> None:
    """Under LoRA model.pt and best.pt hold the adapters alone (the rest is the original
    model, loaded again on resume), and the resumed run ends where the whole one ends."""
    reference, weights = _run(forget_and_retain, Checkpointer(tmp_path / "whole"), lora=True)
    with pytest.raises(Interrupted):
        _run(forget_and_retain, StopAt(tmp_path / "cut", step=4), lora=True)
    folder = tmp_path / "cut" / "checkpoint"
    saved = torch.load(folder / "model.pt", weights_only=True)
    best = torch.load(folder / "best.pt", weights_only=True)
    assert saved.keys() == best.keys()
    assert saved, "the adapters are saved"
    assert all("lora_" in name for name in saved)
    frozen = sum(v.numel() for k, v in weights.items() if "lora_" not in k)
    assert sum(v.numel() for v in saved.values()) < frozen / 10
    result, resumed = _run(
        forget_and_retain, Checkpointer(tmp_path / "cut"), resume=True, lora=True
    )
    assert _summary(result) == _summary(reference)
    assert all(torch.equal(resumed[k], weights[k]) for k in weights)  # bit for bit


def test_a_checkpoint_of_other_weights_is_refused(forget_and_retain: Data, tmp_path: Path) -> None:
    with pytest.raises(Interrupted):
        _run(forget_and_retain, StopAt(tmp_path, step=4), lora=True)
    with pytest.raises(InputError, match="not this model's trainable parameters"):
        _run(forget_and_retain, Checkpointer(tmp_path), resume=True)  # no adapters now
