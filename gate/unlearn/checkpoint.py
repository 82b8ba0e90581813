"""Checkpoint an erase run, stop it at a safe point, and resume it exactly.

An erase run works in a hidden sibling of its output folder, ``.NAME.partial/``:

    checkpoint/      the latest complete checkpoint
      state.json     the loop: epoch, batch position inside it, findings still to forget,
                     latest measurements, outcomes, best score, history, the batch-order
                     RNG, the run's fingerprint, the utility measured before training
      model.pt       the weights being trained (trainable parameters only: under LoRA
                     the adapters; the rest is the original model, loaded on resume)
      optimizer.pt   AdamW's moments and step counts
      best.pt        the trainable weights with the lowest leak so far
    best/            the trainer's working copy of the best weights
    output/          the remediated model being written; renamed to NAME when complete

A checkpoint is written as ``checkpoint.new/`` (state.json last, every file synced),
then swapped in by renames; at any moment one complete checkpoint exists, and a crash
mid-save leaves the previous one intact. Checkpoints are taken after every epoch
(the `checkpoint_every` setting), after the step that ends `checkpoint_minutes` since
the last one, and at a stop request after the current step.

Stopping: while the loop runs, the first Ctrl-C or SIGTERM only asks for a stop
(`STOP`); the loop finishes its step, saves, and raises `Interrupted` ("rerun with
--resume"). A second one stops at once; the last checkpoint is still intact.

Resuming: the original model is loaded and the run prepared as before (forget
windows, probes, retain set, the KL reference from the original weights), the
fingerprint is checked (model weights, findings, settings, data: any difference is
refused), then the checkpoint's weights, optimizer and loop state are loaded and the
loop goes on from the step after the last one saved. With the same seed on the same
machine the result is the one an uninterrupted run gives, bit for bit.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

import torch

from audit.errors import InputError, Interrupted
from audit.io import output_error
from audit.measurements import Measurement
from audit.redact import redact_path
from gate.unlearn.best import load_trainable, trainable_state
from gate.unlearn.remediation import EpochLog
from gate.unlearn.trainer import EpochProgress

if TYPE_CHECKING:
    from gate.unlearn.trainer import Unlearner, UnlearnResult

log = logging.getLogger(__name__)

STATE = "state.json"
WORK_MARKER = ".codeeraser-erase"  # marks a working folder as one this tool made
FORMAT = 2  # checkpoint layout version (2: trainable parameters only)
_KEYS = {"sequence", "epochs_done", "fingerprint", "extra", "loop"}


def work_dir(out_dir: Path) -> Path:
    """The run's working folder: a hidden sibling of the output folder."""
    return out_dir.parent / f".{out_dir.name}.partial"


# ---------------------------------------------------------------- stop requests


class StopSignal:
    """Turns the first SIGINT/SIGTERM during the loop into a request to stop at a safe
    point; a second one raises KeyboardInterrupt at once."""

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning(
            "Stopping after the current step to save a checkpoint (press Ctrl-C again to "
            "stop at once; the last checkpoint stays intact)."
        )

    @contextmanager
    def deferring(self) -> Iterator[None]:
        """Within this block, a signal asks for a stop instead of interrupting."""
        self.requested = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.requested = False


STOP = StopSignal()  # signals are per process: one for all runs


# ---------------------------------------------------------------- checkpoints


class Checkpointer:
    """Saves and restores the loop's state in a run's working folder (a `TrainerHooks`)."""

    def __init__(
        self, folder: Path, stop: StopSignal = STOP, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.folder = folder
        self.stop = stop
        self.clock = clock  # seconds, for the `checkpoint_minutes` setting
        self._saved_at = clock()
        self.fingerprint: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}  # saved with every checkpoint (e.g. utility before)
        self.saved: dict[str, Any] | None = None  # state.json of the latest checkpoint
        self._sequence = 0

    @property
    def best_dir(self) -> Path:
        return self.folder / "best"

    @property
    def output_dir(self) -> Path:
        return self.folder / "output"

    @property
    def path(self) -> Path:
        return self.folder / "checkpoint"

    # -- opening a run

    def open(self, fingerprint: dict[str, Any], *, resume: bool) -> None:
        """Start a fresh run, or (resume) take up the checkpoint if there is one.

        A checkpoint made with a different fingerprint is refused; without `resume` an
        old working folder is discarded (it is never a result).
        """
        self.fingerprint = dict(fingerprint)
        self._check_ours()
        latest = self._latest() if resume else None
        if latest is None:
            if self.folder.exists():
                if not resume and self._latest() is not None:
                    log.warning("Discarded the checkpoint of an earlier run in %s.", self.folder)
                shutil.rmtree(self.folder)
            self._mkdir(self.folder)
            (self.folder / WORK_MARKER).touch()
            if resume:
                log.info("No checkpoint in %s: starting from the beginning.", self.folder)
        else:
            self.saved = latest
            self._sequence = int(latest["sequence"])
            self.extra = dict(latest.get("extra", {}))
            self.check(fingerprint)
        self._mkdir(self.best_dir)

    def _check_ours(self) -> None:
        """Refuse a working folder this tool did not make: it is never deleted."""
        if not self.folder.is_dir() or (self.folder / WORK_MARKER).exists():
            return
        if any(self.folder.iterdir()):  # an empty folder loses nothing
            raise InputError(
                f"{redact_path(self.folder)}: exists and was not made by codeeraser erase "
                "(the working folder of a run has this name): move it away"
            )

    def check(self, fingerprint: dict[str, Any]) -> None:
        """Refuse to resume a checkpoint whose run differs from this one."""
        self.fingerprint.update(fingerprint)
        if self.saved is None:
            return
        theirs: dict[str, Any] = self.saved["fingerprint"]
        for key, value in fingerprint.items():
            if key == "settings":
                changed = _changed(theirs.get(key, {}), value)
                if changed:
                    raise InputError(self._mismatch(f"other settings ({changed})"))
            elif theirs.get(key) != value:
                raise InputError(self._mismatch(f"other {_WHAT.get(key, key)}"))

    def _mismatch(self, what: str) -> str:
        return (
            f"{self.path}: cannot resume: the checkpoint was made with {what}; rerun the "
            "same command as before with --resume, or without --resume to start over"
        )

    @property
    def epoch(self) -> int:
        """Epochs completed in the latest checkpoint (0: none yet)."""
        return int(self.saved["epochs_done"]) if self.saved else 0

    # -- trainer hooks

    def resume(
        self, unlearner: Unlearner, optimizer: torch.optim.Optimizer, result: UnlearnResult
    ) -> int:
        """Load the latest checkpoint into the loop; the first epoch still to run."""
        if self.saved is None:
            return 1

        device = next(unlearner.model.parameters()).device
        model_state = torch.load(self.path / "model.pt", map_location=device, weights_only=True)
        try:
            load_trainable(unlearner.model, model_state)
        except ValueError as error:
            raise InputError(f"{error} in {self.path}: rerun without --resume") from None
        optimizer.load_state_dict(
            torch.load(self.path / "optimizer.pt", map_location=device, weights_only=True)
        )
        _load_loop(unlearner, result, self.saved["loop"])
        best = unlearner.best
        if best.folder is not None and (self.path / "best.pt").exists():
            shutil.copyfile(self.path / "best.pt", best.folder / "best.pt")
        elif (self.path / "best.pt").exists():
            best._memory = torch.load(self.path / "best.pt", map_location="cpu", weights_only=True)
        log.info("Resumed from the checkpoint of epoch %d in %s.", self.epoch, self.path)
        if unlearner.finished:
            return unlearner.config.epochs + 1  # only the end of the run is left
        if unlearner.progress is not None:
            return unlearner.progress.epoch  # saved mid-epoch: that epoch goes on
        return result.epochs + 1

    def after_step(
        self, unlearner: Unlearner, optimizer: torch.optim.Optimizer, result: UnlearnResult
    ) -> None:
        if self.stop.requested:
            self.save(unlearner, optimizer, result)
            raise Interrupted(self.stopped_message(unlearner))
        minutes = unlearner.config.checkpoint_minutes  # 0: off
        if minutes > 0 and self.clock() - self._saved_at >= minutes * 60:
            self.save(unlearner, optimizer, result)

    def after_epoch(
        self, unlearner: Unlearner, optimizer: torch.optim.Optimizer, result: UnlearnResult
    ) -> None:
        every = unlearner.config.checkpoint_every  # 0: only when stopping
        due = every > 0 and result.epochs % every == 0
        if due or unlearner.finished or self.stop.requested:
            self.save(unlearner, optimizer, result)
        if self.stop.requested:
            raise Interrupted(self.stopped_message(unlearner))

    def stopped_message(self, unlearner: Unlearner) -> str:
        progress = unlearner.progress
        where = (
            f"epoch {progress.epoch}, after step {progress.done} of {len(progress.batches)}"
            if progress is not None
            else f"the end of epoch {self.epoch}"
        )
        return (
            f"interrupted at {where}; the checkpoint is in {self.path}: rerun the same "
            "command with --resume to continue (the input model is unchanged)"
        )

    def interrupted_message(self) -> str:
        """For a stop that did not wait for a safe point."""
        if self.saved is None:
            return (
                "interrupted before the first checkpoint; nothing was written and the input "
                "model is unchanged: rerun the command"
            )
        return (
            f"interrupted; the checkpoint of epoch {self.epoch} in {self.path} is intact: "
            "rerun the same command with --resume to continue"
        )

    # -- saving

    def save(
        self, unlearner: Unlearner, optimizer: torch.optim.Optimizer, result: UnlearnResult
    ) -> None:
        """Write a complete new checkpoint, then swap it in."""

        new = self.folder / "checkpoint.new"
        if new.exists():
            shutil.rmtree(new)
        self._mkdir(new)
        _write(new / "model.pt", lambda f: torch.save(trainable_state(unlearner.model), f))
        _write(new / "optimizer.pt", lambda f: torch.save(optimizer.state_dict(), f))
        self._save_best(unlearner, new)
        self._sequence += 1
        state = {
            "format": FORMAT,
            "sequence": self._sequence,
            "epochs_done": result.epochs if unlearner.progress is None else result.epochs - 1,
            "fingerprint": self.fingerprint,
            "extra": self.extra,
            "loop": _dump_loop(unlearner, result),
        }
        _write(new / STATE, lambda f: f.write(json.dumps(state).encode()))
        self._swap(new)
        self.saved = state
        self._saved_at = self.clock()

    def _save_best(self, unlearner: Unlearner, new: Path) -> None:

        best = unlearner.best
        if best.score is None:
            return
        previous = self.saved["loop"]["best_epoch"] if self.saved else None
        if previous == best.epoch and (self.path / "best.pt").exists():
            _link_or_copy(self.path / "best.pt", new / "best.pt")
        elif best.folder is not None:
            source = best.folder / "best.pt"
            _write(new / "best.pt", lambda f: _copy_into(source, f))
        else:
            _write(new / "best.pt", lambda f: torch.save(best._memory, f))

    def _swap(self, new: Path) -> None:
        old = self.folder / "checkpoint.old"
        if old.exists():
            shutil.rmtree(old)
        if self.path.exists():
            self.path.rename(old)
        new.rename(self.path)
        _sync_dir(self.folder)
        shutil.rmtree(old, ignore_errors=True)

    def _latest(self) -> dict[str, Any] | None:
        """The complete checkpoint with the highest sequence number, moved into place."""
        found: list[tuple[int, Path, dict[str, Any]]] = []
        for name in ("checkpoint", "checkpoint.new", "checkpoint.old"):
            state = _read_state(self.folder / name)
            if state is not None:
                found.append((int(state["sequence"]), self.folder / name, state))
        if not found:
            return None
        _, where, state = max(found, key=lambda item: item[0])
        if where != self.path:  # a save was cut between its renames
            if self.path.exists():
                shutil.rmtree(self.path)
            where.rename(self.path)
        return state

    # -- cleaning up

    def keep_checkpoint_only(self) -> None:
        """After a failure: drop everything but the latest complete checkpoint (and the
        folder itself when there is none)."""
        if self.saved is None:
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        for path in self.folder.iterdir():
            if path not in (self.path, self.folder / WORK_MARKER):
                _remove(path)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    @staticmethod
    def _mkdir(path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error(path, exc) from None


_WHAT = {"model": "model weights", "findings": "findings or measurements", "data": "data"}


def _changed(before: dict[str, Any], now: dict[str, Any]) -> str:
    """The settings that differ, as `name old → new` (at most four)."""
    names = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    return ", ".join(f"{k} {before.get(k)!r} → {now.get(k)!r}" for k in names[:4])


# ---------------------------------------------------------------- the loop's state


def _dump_loop(unlearner: Unlearner, result: UnlearnResult) -> dict[str, Any]:

    progress = unlearner.progress
    return {
        "epochs": result.epochs,
        "steps": result.steps,
        "stop_reason": result.stop_reason,
        "history": [asdict(h) for h in result.history],
        "finished": unlearner.finished,
        "diverged": unlearner.diverged,
        "active": sorted(unlearner.active),
        "latest": {fid: m.to_dict() for fid, m in sorted(unlearner.latest.items())},
        "outcomes": {
            fid: [o.forgotten_epoch, o.stop_reason] for fid, o in sorted(unlearner.outcomes.items())
        },
        "best_score": list(unlearner.best.score) if unlearner.best.score is not None else None,
        "best_epoch": unlearner.best.epoch,
        "rng": _rng_state(unlearner.rng),
        "torch_rng": torch.get_rng_state().tolist(),
        "retain_order": list(unlearner._retain_order),
        "progress": asdict(progress) if progress is not None else None,
    }


def _load_loop(unlearner: Unlearner, result: UnlearnResult, loop: dict[str, Any]) -> None:

    result.epochs, result.steps = int(loop["epochs"]), int(loop["steps"])
    result.stop_reason = str(loop["stop_reason"])
    result.history = [EpochLog(**h) for h in loop["history"]]
    unlearner.finished, unlearner.diverged = bool(loop["finished"]), bool(loop["diverged"])
    unlearner.active = set(loop["active"])
    unlearner.latest = {fid: Measurement.from_dict(m) for fid, m in loop["latest"].items()}
    for fid, (epoch, reason) in loop["outcomes"].items():
        unlearner.outcomes[fid].forgotten_epoch = epoch
        unlearner.outcomes[fid].stop_reason = reason
    score = loop["best_score"]
    unlearner.best.score = tuple(score) if score is not None else None
    unlearner.best.epoch = int(loop["best_epoch"])
    unlearner.rng.setstate(_rng_from(loop["rng"]))
    torch.set_rng_state(torch.tensor(loop["torch_rng"], dtype=torch.uint8))
    unlearner._retain_order = list(loop["retain_order"])
    progress = loop["progress"]
    unlearner.progress = EpochProgress(**progress) if progress is not None else None


def _rng_state(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_from(state: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


# ---------------------------------------------------------------- files


class _Recording:
    """A file wrapper that keeps the OSError of a failed write: torch.save reports a
    failed write as a RuntimeError about stream positions, which says nothing of a
    full disk."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def _write(path: Path, fill: Callable[[Any], object]) -> None:
    """Write a file through `fill`, synced to disk; an OSError becomes an InputError
    naming the path (disk full, not writable)."""
    try:
        with path.open("wb") as handle:
            recording = _Recording(handle)
            try:
                fill(recording)
            except RuntimeError:
                if recording.error is not None:
                    raise recording.error from None
                raise
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise output_error(path, exc) from None


def _copy_into(source: Path, target: Any) -> None:
    with source.open("rb") as handle:
        shutil.copyfileobj(handle, target, 1 << 20)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        _write(target, lambda f: _copy_into(source, f))


def _read_state(folder: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return None
    if not state.keys() >= _KEYS or not isinstance(state["sequence"], int):
        return None  # not written by this version: never resumed from
    return state


def _sync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
