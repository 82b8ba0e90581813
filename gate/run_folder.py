"""A gate run's folder: what the run writes there, and which earlier outputs it reuses.

Every stage keeps its output in the run folder, so a run can be inspected afterwards:

    OUT/findings.jsonl                  scan
    OUT/thresholds.json                 calibration (only for `auto` thresholds)
    OUT/measurements.before.jsonl       the original model
    OUT/remediated-model/               erase (with remediation.json)
    OUT/measurements.after.jsonl        the remediated model, same prompts + sampled attack
    OUT/measurements.after-prefix-N.jsonl  ... and a second prefix length
    OUT/record.json, report.html, results.sarif, summary.md
    OUT/model-card.md                   the card of a model that passed as it is (to copy)

``OUT/.codeeraser-gate`` marks the folder as a gate run folder (ours to overwrite); a
folder that holds anything else is refused unless forced, and even then when something
there has a name the run would replace. A run first removes the last run's result and
reports, so no earlier verdict is ever left beside this run's record.

Resuming (``--resume``): ``OUT/.codeeraser-run.json`` (`RunState`) holds the
fingerprints of the run's inputs (`RunInputs`: model, data, resolved policy, device,
dtype, batch size) and what the finished stages need besides their files (the scan's
counts, the sanity probes). A resumed run with the same inputs reuses every stage
output already there (each is written atomically, so one that exists is complete);
with other inputs it is refused. Without ``--resume``, the stage outputs of an earlier
run are removed first, so nothing stale is ever mistaken for this run's.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from audit.errors import InputError
from audit.hub import HubRevision
from audit.io import atomic_write_text, digest
from audit.redact import safe_text
from gate import __version__
from gate.paths import LOCK
from gate.policy import Policy
from gate.record import AllowlistedFinding, fingerprint_path
from gate.verdict import SanityInfo

MARKER = ".codeeraser-gate"  # marks a folder as a gate run folder (ours to overwrite)
RUN_STATE = ".codeeraser-run.json"  # the run's input fingerprints, for --resume
REPORTS = ("record.json", "report.html", "results.sarif", "summary.md")  # the run's result
REMEDIATED = "remediated-model"
# What a gate run writes into its folder (removed before a run that does not resume).
STAGE_OUTPUTS = (
    "findings.jsonl", "thresholds.json", "measurements.before.jsonl", "heldout-findings.jsonl",
    "measurements.after.jsonl", "measurements.after-prefix-*.jsonl", REMEDIATED,
    f".{REMEDIATED}.partial", "record.json", "report.html", "results.sarif", "summary.md",
    RUN_STATE, "model-card.md",
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
    findings: str | None = None  # ... of the --findings file the scan stage used, if any

    @classmethod
    def of(
        cls, model_dir: Path, data: Path, policy: Policy, *, device: str, dtype: str,
        batch_tokens: int, findings: Path | None = None, data_hub: HubRevision | None = None,
    ) -> RunInputs:  # fmt: skip
        return cls(
            tool=__version__,
            model=fingerprint_path(model_dir),
            data=digest(data_hub.model_dump()) if data_hub else fingerprint_path(data),
            policy=digest(policy.resolved()),
            device=device,
            dtype=dtype,
            batch_tokens=batch_tokens,
            findings=fingerprint_path(findings) if findings else None,
        )


class ScanCounts(_State):
    """What a reused scan stage gives the record besides findings.jsonl."""

    samples: int | None  # None: not counted (the findings came from a --findings file)
    chars: int | None
    skipped: dict[str, int] = {}  # samples not read, by reason
    skipped_files: list[tuple[str, str]] = []  # the first ones: (redacted) origin, reason
    allowlisted: dict[str, int] = {}  # findings allowlisted inline, by type
    allowlisted_findings: list[AllowlistedFinding] = []  # the first ones, located


class FinishedStages(_State):
    scan: ScanCounts | None = None
    sanity: dict[str, SanityInfo] = {}  # the sanity probe of each model, by role


class RunState(_State):
    """OUT/.codeeraser-run.json."""

    inputs: RunInputs
    stages: FinishedStages = FinishedStages()


# ---------------------------------------------------------------- the folder


def make_out_dir(out_dir: Path) -> None:
    """Create the run folder (and its parents) if needed."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"{safe_text(out_dir)}: cannot write the run folder ({exc.strerror})"
        ) from None


def check_out_dir(out_dir: Path, model_dir: Path, force: bool) -> None:
    """Refuse a run folder inside the model, or one that holds something else (unless
    `force`, and then only when nothing there has a name the run would replace); write
    nothing."""
    shown = safe_text(out_dir)
    out, model = out_dir.resolve(), model_dir.resolve()
    if out == model or out.is_relative_to(model) or model.is_relative_to(out):
        raise InputError(f"{shown}: the output folder must be outside the model folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{shown}: exists and is not a folder (choose another --out)")
    if not out_dir.is_dir() or (out_dir / MARKER).exists():
        return
    if all(p.name == LOCK for p in out_dir.iterdir()):  # empty, or held by this run's lock
        return
    if not force:
        raise InputError(
            f"{shown}: exists and is not a gate run folder "
            "(choose an empty or new --out, or --force to write into it)"
        )
    taken = sorted(p.name for pattern in STAGE_OUTPUTS for p in out_dir.glob(pattern))
    if taken:
        raise InputError(
            f"{shown}: --force would replace {safe_text(taken[0])} there, which this tool did "
            "not write (move it away, or choose another --out)"
        )


def prepare_out_dir(out_dir: Path, model_dir: Path, force: bool) -> None:
    """Create the run folder; refuse one that holds something else (unless `force`).
    The last run's result and reports go first: whatever happens next, no earlier
    verdict is left beside this run's record."""
    check_out_dir(out_dir, model_dir, force)
    make_out_dir(out_dir)
    try:
        for name in REPORTS:
            (out_dir / name).unlink(missing_ok=True)  # an old result is not this run's
        atomic_write_text(out_dir / MARKER, "codeeraser gate run folder\n")
    except OSError as exc:
        raise InputError(
            f"{safe_text(out_dir)}: cannot write the run folder ({exc.strerror})"
        ) from None


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
                f"{safe_text(path)}: cannot resume: the run there had other {', '.join(changed)}; "
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

    def stages(self) -> FinishedStages:
        """What the finished stages of this run (and of the run it resumes) left."""
        state = _read_state(self.path / RUN_STATE)
        if state is None or state.inputs != self.inputs:
            return FinishedStages()
        return state.stages

    def scan_done(self, counts: ScanCounts) -> None:
        """Remember the scan's counts, for a run that resumes this one."""
        self._update(scan=counts)

    def probe_done(self, role: str, probe: SanityInfo) -> None:
        """Remember a model's sanity probe, for a run that resumes this one."""
        self._update(sanity={**self.stages().sanity, role: probe})

    def _update(self, **stages: object) -> None:
        state = _read_state(self.path / RUN_STATE) or RunState(inputs=self.inputs)
        finished = state.stages.model_copy(update=stages)
        self._write(state.model_copy(update={"stages": finished}))

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
