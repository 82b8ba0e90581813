"""A gate run's folder: what the run writes there, and which earlier outputs it reuses.

Every stage keeps its output in the run folder, so a run can be inspected afterwards:

    OUT/findings.jsonl                  scan
    OUT/thresholds.json                 calibration (only for `auto` thresholds)
    OUT/measurements.before.jsonl       the original model
    OUT/remediated-model/               erase (with remediation.json)
    OUT/measurements.after.jsonl        the remediated model, same prompts + sampled attack
    OUT/measurements.after-prefix-N.jsonl  ... and a second prefix length
    OUT/record.json, report.html, results.sarif, summary.md

``OUT/.codeeraser-gate`` marks the folder as a gate run folder (ours to overwrite); a
folder that holds anything else is refused unless forced.

Resuming (``--resume``): ``OUT/.codeeraser-run.json`` (`RunState`) holds the
fingerprints of the run's inputs (`RunInputs`: model, data, resolved policy, device,
dtype, batch size) and what the finished stages need besides their files (the scan's
counts). A resumed run with the same inputs reuses every stage output already there
(each is written atomically, so one that exists is complete); with other inputs it is
refused. Without ``--resume``, the stage outputs of an earlier run are removed first,
so nothing stale is ever mistaken for this run's.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from audit.errors import InputError
from audit.io import atomic_write_text, digest
from gate import __version__
from gate.policy import Policy
from gate.record import fingerprint_path

MARKER = ".codeeraser-gate"  # marks a folder as a gate run folder (ours to overwrite)
RUN_STATE = ".codeeraser-run.json"  # the run's input fingerprints, for --resume
REMEDIATED = "remediated-model"
# What a gate run writes into its folder (removed before a run that does not resume).
STAGE_OUTPUTS = (
    "findings.jsonl", "thresholds.json", "measurements.before.jsonl", "heldout-findings.jsonl",
    "measurements.after.jsonl", "measurements.after-prefix-*.jsonl", REMEDIATED,
    f".{REMEDIATED}.partial", "record.json", "report.html", "results.sarif", "summary.md",
    RUN_STATE,
)  # fmt: skip


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunInputs(_State):
    """Fingerprints of everything a run's results depend on."""

    tool: str
    model: str  # fingerprint_path of the model folder
    data: str  # ... of the training data
    policy: str  # digest of the resolved policy
    device: str
    dtype: str
    batch_tokens: int

    @classmethod
    def of(
        cls, model_dir: Path, data: Path, policy: Policy, *, device: str, dtype: str,
        batch_tokens: int,
    ) -> RunInputs:  # fmt: skip
        return cls(
            tool=__version__,
            model=fingerprint_path(model_dir),
            data=fingerprint_path(data),
            policy=digest(policy.resolved()),
            device=device,
            dtype=dtype,
            batch_tokens=batch_tokens,
        )


class ScanCounts(_State):
    """What a reused scan stage gives the record besides findings.jsonl."""

    samples: int
    chars: int


class FinishedStages(_State):
    scan: ScanCounts | None = None


class RunState(_State):
    """OUT/.codeeraser-run.json."""

    inputs: RunInputs
    stages: FinishedStages = FinishedStages()


# ---------------------------------------------------------------- the folder


def check_out_dir(out_dir: Path, model_dir: Path, force: bool) -> None:
    """Refuse a run folder inside the model, or one that holds something else (unless
    `force`); write nothing."""
    out, model = out_dir.resolve(), model_dir.resolve()
    if out == model or out.is_relative_to(model) or model.is_relative_to(out):
        raise InputError(f"{out_dir}: the output folder must be outside the model folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder (choose another --out)")
    foreign = out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).exists()
    if foreign and not force:
        raise InputError(
            f"{out_dir}: exists and is not a gate run folder "
            "(choose an empty or new --out, or --force to write into it)"
        )


def prepare_out_dir(out_dir: Path, model_dir: Path, force: bool) -> None:
    """Create the run folder; refuse one that holds something else (unless `force`)."""
    check_out_dir(out_dir, model_dir, force)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "record.json").unlink(missing_ok=True)  # an old result is not this run's
        atomic_write_text(out_dir / MARKER, "codeeraser gate run folder\n")
    except OSError as exc:
        raise InputError(f"{out_dir}: cannot write the run folder ({exc.strerror})") from None


@dataclass(frozen=True)
class RunFolder:
    """The run folder of one run: its inputs, and whether an earlier run's stage outputs
    there are this run's to reuse."""

    path: Path
    inputs: RunInputs
    reuse: bool = False

    @classmethod
    def open(
        cls, path: Path, model_dir: Path, inputs: RunInputs, *, resume: bool, force: bool
    ) -> RunFolder:
        """Prepare the folder and record the run's inputs in it. With `resume`, an earlier
        run of the same inputs is taken up (one of other inputs is refused); otherwise, or
        when there is none, every stage output of an earlier run is removed."""
        earlier = _read_state(path / RUN_STATE) if resume else None
        if earlier is not None and earlier.inputs != inputs:
            theirs, ours = earlier.inputs.model_dump(), inputs.model_dump()
            changed = sorted(k for k in ours if theirs[k] != ours[k])
            raise InputError(
                f"{path}: cannot resume: the run there had other {', '.join(changed)}; "
                "rerun without --resume to start over"
            )
        prepare_out_dir(path, model_dir, force)
        if earlier is None:
            _remove_stage_outputs(path)
        folder = cls(path, inputs, reuse=earlier is not None)
        folder._write(earlier or RunState(inputs=inputs))
        return folder

    def reusable(self, *names: str) -> bool:
        """All these stage outputs exist and belong to this run (--resume)."""
        return self.reuse and all((self.path / name).exists() for name in names)

    def scan_counts(self) -> ScanCounts | None:
        """The counts of a finished scan stage of this run, if any."""
        state = _read_state(self.path / RUN_STATE)
        return state.stages.scan if state is not None and state.inputs == self.inputs else None

    def scan_done(self, counts: ScanCounts) -> None:
        """Remember the scan's counts, for a run that resumes this one."""
        state = _read_state(self.path / RUN_STATE) or RunState(inputs=self.inputs)
        stages = state.stages.model_copy(update={"scan": counts})
        self._write(state.model_copy(update={"stages": stages}))

    def _write(self, state: RunState) -> None:
        atomic_write_text(self.path / RUN_STATE, state.model_dump_json(indent=2) + "\n")


def _read_state(path: Path) -> RunState | None:
    """The run state in `path`; None when there is none or it is not one of this version."""
    try:
        return RunState.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def _remove_stage_outputs(folder: Path) -> None:
    for pattern in STAGE_OUTPUTS:
        for stale in folder.glob(pattern):
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink()
