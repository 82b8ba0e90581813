"""The gate: scan → measure → verdict → (erase → measure again → verdict) → reports.

Every stage reuses the code of its own command (`scan`, `calibrate`, `measure`,
`erase`) and keeps its output in the run folder, so a run can be inspected afterwards:

    OUT/findings.jsonl                  scan
    OUT/thresholds.json                 calibration (only for `auto` thresholds)
    OUT/measurements.before.jsonl       the original model
    OUT/remediated-model/               erase (with remediation.json)
    OUT/measurements.after.jsonl        the remediated model, same prompts + sampled attack
    OUT/measurements.after-prefix-N.jsonl  ... and a second prefix length
    OUT/record.json, report.html, results.sarif, summary.md

The input model folder is only read. The record is written last: a folder without
record.json is an unfinished run.

Resuming (``--resume``): ``OUT/.codeeraser-run.json`` holds the fingerprints of the
run's inputs (model, data, resolved policy, device, dtype, batch size) and what the
finished stages need (the scan's counts). A resumed run with the same inputs reuses
every stage output already there (each is written atomically, so one that exists is
complete) and continues the erase stage from its checkpoint; with other inputs it is
refused. Without ``--resume``, the stage outputs of an earlier run are removed first,
so nothing stale is ever mistaken for this run's.

Under ``accelerate launch`` every process runs the gate: the first one scans and hands
the findings to the others, the measuring is shared out (`audit.distributed`), erase
trains on every process (DDP/FSDP), and only the first process writes to the run
folder (on several machines, put it on a shared filesystem: every process loads the
remediated model from it). ``--resume`` is for single-process runs.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.corpus import CorpusSpec
from audit.distributed import LOCAL, Shard
from audit.errors import CodeEraserError, ExitCode, InputError, Interrupted, PolicyError
from audit.findings import (
    Baseline,
    Finding,
    read_baseline,
    read_findings,
    subtract_baseline,
    write_findings,
)
from audit.io import atomic_write_json, atomic_write_text
from audit.measurements import Measurement, Thresholds, read_measurements, write_measurements
from audit.redact import safe_text
from audit.sanity import MAX_LOSS_RATIO
from gate import __version__
from gate.paths import LOCK, PathOption, check_paths, path_option, run_lock
from gate.policy import Policy
from gate.policy_check import check_runnable
from gate.record import (
    AFTER,
    BEFORE,
    CorpusInfo,
    MeasurementSet,
    ModelRole,
    RecordBuilder,
    RemediationInfo,
    RunRecord,
    SanityInfo,
    fingerprint_path,
)
from gate.verdict import RuleResult, UtilityFigures, Verdict, evaluate, worst_case

if TYPE_CHECKING:
    from audit.model import LoadedModel
    from audit.scan import ScanSummary

log = logging.getLogger(__name__)

MARKER = ".codeeraser-gate"  # marks a folder as a gate run folder (ours to overwrite)
RUN_STATE = ".codeeraser-run.json"  # the run's input fingerprints, for --resume
HUMANEVAL_PROBLEMS = 164  # all of them, when the policy sets a HumanEval budget
REPORTS = ("record.json", "report.html", "results.sarif", "summary.md")  # the run's result
REMEDIATED = "remediated-model"
# What a gate run writes into its folder (removed before a run that does not resume).
STAGE_OUTPUTS = (
    "findings.jsonl", "thresholds.json", "measurements.before.jsonl", "heldout-findings.jsonl",
    "measurements.after.jsonl", "measurements.after-prefix-*.jsonl", REMEDIATED,
    f".{REMEDIATED}.partial", "record.json", "report.html", "results.sarif", "summary.md",
    RUN_STATE,
)  # fmt: skip


@dataclass(frozen=True)
class GateRun:
    """One gate invocation: what to audit, under which policy, where to write."""

    model_dir: Path
    data: Path
    policy: Policy
    out_dir: Path
    device: str = "auto"  # where models run (auto: cuda, mps, cpu)
    dtype: str = "auto"  # measuring dtype (auto: bf16 on GPU, fp32 on CPU)
    jobs: int = 0  # scan worker processes (0: every core)
    batch_tokens: int = 16384  # padded tokens per measuring batch
    force: bool = False  # use an out folder that exists and is not a gate run folder
    resume: bool = False  # reuse the finished stages of an interrupted run in out_dir
    invocation: Sequence[str] = ()
    findings: Path | None = None  # use this findings file (checked against the data), no scan


@dataclass
class _State:
    """What the stages hand to each other."""

    run: GateRun
    builder: RecordBuilder
    spec: CorpusSpec
    findings: list[Finding] = field(default_factory=list)
    measured: list[Finding] = field(default_factory=list)  # after extraction.max_findings
    thresholds: Thresholds | None = None
    before: list[Measurement] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict, repr=False)
    inputs: dict[str, Any] = field(default_factory=dict)  # fingerprints (RUN_STATE)
    reuse: bool = False  # stage outputs in the folder are this run's: reuse them
    shard: Shard = LOCAL  # this process's place under accelerate launch


def run_gate(run: GateRun) -> RunRecord:
    """Run the whole gate and write the record and reports; return the record.

    Everything that can be checked without work is checked first: the paths (inputs
    exist, the run folder is clear of them), the model folder, and that the policy's
    budgets can be measured. The first process holds a lock on the run folder while
    it runs, so a second run on the same folder is refused."""
    from audit.distributed import current
    from audit.model import check_model_dir

    check_runnable(run.policy)
    check_paths(gate_inputs(run), [PathOption("--out", run.out_dir, "folder")])
    check_model_dir(run.model_dir)
    check_out_dir(run.out_dir, run.model_dir, run.force)
    shard = current()
    if run.resume and shard.distributed:
        raise InputError(
            "--resume works in a single process: rerun without it under accelerate launch"
        )
    with ExitStack() as held:
        if shard.is_main:
            make_out_dir(run.out_dir)
            held.enter_context(run_lock(run.out_dir))
        record = _locked_run(run, shard)
    return record


def gate_inputs(run: GateRun) -> list[PathOption]:
    """Every input of a gate run, with the option or policy field that names it."""
    policy = run.policy
    source = Path(policy.source)
    return [
        *path_option("--model", run.model_dir, "folder", "model folder"),
        *path_option("--data", run.data, "data"),
        *path_option("--findings", run.findings, "file", "findings file"),
        *(path_option("--policy", source, "file", "policy file") if source.is_file() else []),
        *path_option("scan.baseline", policy.scan.baseline, "file"),
        *path_option("thresholds.unseen (--unseen)", policy.thresholds.unseen, "data"),
        *path_option("remediation.retain", policy.remediation.retain, "data"),
        *path_option("utility.heldout (--heldout)", policy.utility.heldout, "data"),
    ]


def _locked_run(run: GateRun, shard: Shard) -> RunRecord:
    inputs, reuse = _open(run, shard)
    state = _State(
        run=run,
        builder=_builder(run, inputs["model"]),
        spec=run.policy.scan.corpus_spec(run.data),
        inputs=inputs,
        reuse=reuse,
        shard=shard,
    )
    try:
        record = _stages(state)
    except CodeEraserError as exc:
        _write_failed_record(state, int(exc.exit_code), exc.message)
        raise
    except KeyboardInterrupt:
        message = (
            f"interrupted; the stages finished so far are kept in {safe_text(run.out_dir)}: "
            "rerun the same command with --resume to reuse them"
        )
        _write_failed_record(state, int(ExitCode.INTERNAL), message)
        raise Interrupted(message) from None
    except Exception as exc:  # a bug: the record says which stages finished, then it goes on
        _write_failed_record(
            state, int(ExitCode.INTERNAL), f"internal error ({type(exc).__name__})"
        )
        raise
    if shard.is_main:
        _publish(record, run.out_dir)
    return record


def _open(run: GateRun, shard: Shard) -> tuple[dict[str, Any], bool]:
    """The first process fingerprints the inputs and prepares the run folder (see
    `resumable`, `open_run`); the others get the fingerprints from it."""
    inputs: dict[str, Any] = {}
    reuse = False
    if shard.is_main:
        inputs = run_inputs(run)
        earlier = resumable(run, inputs)
        prepare_out_dir(run.out_dir, run.model_dir, run.force)
        reuse = open_run(run, inputs, earlier)
    inputs, reuse = shard.broadcast((inputs, reuse))
    return inputs, reuse


def _stages(state: _State) -> RunRecord:
    run, builder = state.run, state.builder
    _scan(state)
    if not state.findings:
        verdict = evaluate([], [], run.policy)
        builder.set_verdict("before", verdict)
        return _finish_before(builder, verdict, run)
    _read_texts(state)  # the sanity probe of every model loaded below reads them
    _thresholds(state)
    _measure_before(state)
    verdict = evaluate(state.before, state.measured, run.policy)
    builder.set_verdict("before", verdict)
    if verdict.passed or not run.policy.remediation.enabled:
        return _finish_before(builder, verdict, run)
    return _remediate(state, verdict)


def _finish_before(builder: RecordBuilder, verdict: Verdict, run: GateRun) -> RunRecord:
    if verdict.passed:
        return builder.finish(ExitCode.PASSED, "passed", released_model=str(run.model_dir))
    return builder.finish(ExitCode.FAILED, "failed")


# ---------------------------------------------------------------- set-up


def make_out_dir(out_dir: Path) -> None:
    """Create the run folder (and its parents) if needed."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"{safe_text(out_dir)}: cannot write the run folder ({exc.strerror})"
        ) from None


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


def run_inputs(run: GateRun) -> dict[str, Any]:
    """Fingerprints of everything the run's results depend on."""
    from gate.unlearn.checkpoint import digest

    return {
        "tool": __version__,
        "model": fingerprint_path(run.model_dir),
        "data": fingerprint_path(run.data),
        "policy": digest(run.policy.resolved()),
        "device": run.device,
        "dtype": run.dtype,
        "batch_tokens": run.batch_tokens,
        "findings": fingerprint_path(run.findings) if run.findings else None,
    }


def resumable(run: GateRun, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """With --resume, the state of the earlier run in the folder (None: nothing to
    reuse); a run of other inputs is refused. Writes nothing."""
    earlier = _read_run_state(run.out_dir / RUN_STATE) if run.resume else None
    if earlier is not None and earlier.get("inputs") != inputs:
        changed = sorted(k for k in inputs if earlier["inputs"].get(k) != inputs[k])
        raise InputError(
            f"{run.out_dir}: cannot resume: the run there had other {', '.join(changed)}; "
            "rerun without --resume to start over"
        )
    return earlier


def open_run(run: GateRun, inputs: dict[str, Any], earlier: dict[str, Any] | None) -> bool:
    """Record the run's inputs in its folder; True when the earlier run's stage outputs
    are reused (see `resumable`); otherwise they are removed."""
    path = run.out_dir / RUN_STATE
    if earlier is None:
        for pattern in STAGE_OUTPUTS:
            for stale in run.out_dir.glob(pattern):
                if stale.is_dir():
                    shutil.rmtree(stale)
                else:
                    stale.unlink()
    atomic_write_json(path, {"inputs": inputs, "stages": (earlier or {}).get("stages", {})})
    return earlier is not None


def _read_run_state(path: Path) -> dict[str, Any] | None:
    import json

    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("inputs"), dict) else None


def _stage_done(state: _State, name: str, info: dict[str, Any]) -> None:
    """Remember what a finished stage's reuse needs besides its output file."""
    path = state.run.out_dir / RUN_STATE
    saved = _read_run_state(path) or {"inputs": state.inputs, "stages": {}}
    saved["stages"][name] = info
    atomic_write_json(path, saved)


def _reusable(state: _State, *names: str) -> bool:
    """All these stage outputs exist and belong to this run (--resume)."""
    return state.reuse and all((state.run.out_dir / name).exists() for name in names)


def _builder(run: GateRun, model_sha256: str) -> RecordBuilder:
    return RecordBuilder(
        model_path=run.model_dir,
        corpus=CorpusInfo(path=str(run.data), format=run.policy.scan.format),
        policy=run.policy,
        invocation=list(run.invocation),
        model_sha256=model_sha256,
    )


# ---------------------------------------------------------------- stages


def _scan(state: _State) -> None:
    """Scan on the first process; the others get its findings and counts."""
    if state.shard.is_main:
        _scan_here(state)
    findings, corpus = state.shard.broadcast((state.findings, state.builder.record.corpus))
    if not state.shard.is_main:
        state.findings = findings
        state.builder.set_findings(findings)
        state.builder.record.corpus = corpus


def _scan_here(state: _State) -> None:
    from audit.detectors import select_detectors
    from audit.scan import ScanOptions, ScanSummary, scan_corpus
    from gate import ui

    run, policy = state.run, state.run.policy
    scanned = _read_run_state(run.out_dir / RUN_STATE) or {}
    counts = scanned.get("stages", {}).get("scan")
    if _reusable(state, "findings.jsonl") and isinstance(counts, dict):
        state.findings = read_findings(run.out_dir / "findings.jsonl")
        _set_scan(state, counts["samples"], counts["chars"])
        _restore_allowlisted(state, counts)
        state.builder.set_skipped(counts.get("skipped", {}), counts.get("skipped_files", []))
        state.builder.record.finished_stages.append("scan")  # by the run that is resumed
        _say(
            f"Scan: {len(state.findings)} secrets (reused {safe_text(run.out_dir)}/findings.jsonl)."
        )
        return
    try:
        detectors = select_detectors(policy.scan.detectors)
    except InputError as exc:
        raise PolicyError(f"{policy.source}: scan.detectors: {exc.message}") from None
    baseline = read_baseline(Path(policy.scan.baseline)) if policy.scan.baseline else Baseline()
    if run.findings is not None:
        _use_findings(state, run.findings, detectors, baseline)
        return
    summary = ScanSummary()
    with state.builder.stage("scan"), ui.progress() as bar:
        task = bar.add_task("Scanning the training data", total=None)
        found = scan_corpus(
            state.spec,
            ScanOptions(detectors=detectors),
            jobs=run.jobs,
            summary=summary,
            progress=lambda samples, _chars: bar.advance(task, samples),
        )
        state.findings = list(subtract_baseline(found, baseline))
    write_findings(run.out_dir / "findings.jsonl", state.findings)
    state.builder.set_allowlisted(summary.allowlisted, summary.allowlisted_first)
    allowlisted = state.builder.record.corpus.model_dump(
        include={"allowlisted", "allowlisted_findings"}
    )
    skipped = {"skipped": dict(summary.skipped), "skipped_files": summary.skipped_files}
    _stage_done(
        state,
        "scan",
        {"samples": summary.samples, "chars": summary.chars, **skipped, **allowlisted},
    )
    _set_scan(state, summary.samples, summary.chars)
    state.builder.set_skipped(summary.skipped, summary.skipped_files)
    _say(f"Scan: {len(state.findings)} secrets in {summary.samples} samples{_skipped(summary)}.")


def _skipped(summary: ScanSummary) -> str:
    if not summary.skipped:
        return ""
    parts = ", ".join(f"{reason} {n}" for reason, n in sorted(summary.skipped.items()))
    return f" ({sum(summary.skipped.values())} not read: {parts}; listed in record.json)"


def _restore_allowlisted(state: _State, saved: dict[str, Any]) -> None:
    """The allowlisted counts a reused scan had found (none in a run state of old)."""
    keys = ("allowlisted", "allowlisted_findings")
    restored = CorpusInfo.model_validate({"path": "", **{k: saved[k] for k in keys if k in saved}})
    corpus = state.builder.record.corpus
    corpus.allowlisted, corpus.allowlisted_findings = (
        restored.allowlisted,
        restored.allowlisted_findings,
    )


def _use_findings(
    state: _State, path: Path, detectors: tuple[str, ...] | None, baseline: Baseline
) -> None:
    """The scan stage from a findings file (`--findings`, e.g. from a datatrove scan):
    what the policy's scan would keep of it (its detectors, excludes and baseline), each
    finding checked against the data (its sample exists, its span has its hash)."""
    from audit.corpus import excluded, verify_findings

    with state.builder.stage("scan"):
        found = [
            f
            for f in read_findings(path)
            if (detectors is None or f.detector in detectors)
            and not excluded(f.origin, state.spec.excludes)
        ]
        verify_findings(state.spec, found)
        state.findings = list(subtract_baseline(found, baseline))
    write_findings(state.run.out_dir / "findings.jsonl", state.findings)
    _stage_done(state, "scan", {"samples": None, "chars": None, "findings_file": str(path)})
    _set_scan(state, None, None)
    _say(f"Scan: {len(state.findings)} secrets from {path} (checked against the data).")


def _set_scan(state: _State, samples: int | None, chars: int | None) -> None:
    state.builder.set_findings(state.findings)
    corpus = state.builder.record.corpus
    corpus.samples, corpus.bytes = samples, chars
    corpus.fingerprint = state.inputs["data"]


def _thresholds(state: _State) -> None:
    policy = state.run.policy
    calibrated = None
    if policy.thresholds.needs_calibration:
        with state.builder.stage("calibrate"):
            calibrated = _calibrate(state)
    state.thresholds = policy.thresholds.resolve(calibrated)
    state.builder.set_thresholds(state.thresholds)


def _calibrate(state: _State) -> Thresholds:
    from audit.calibrate import calibrate
    from audit.model import load_model
    from gate import ui

    run, unseen = state.run, state.run.policy.thresholds.unseen
    if unseen is None:  # the policy loader refuses this; kept for policies built in code
        raise PolicyError("thresholds: `auto` needs thresholds.unseen (or --unseen)")
    if _reusable(state, "thresholds.json"):
        import json

        saved = json.loads((run.out_dir / "thresholds.json").read_text(encoding="utf-8"))
        return Thresholds.from_dict(saved)
    loaded = load_model(run.model_dir, _device(state), run.dtype)
    _probe(state, loaded)
    with ui.progress() as progress:
        result = calibrate(
            loaded.model,
            loaded.tokenizer,
            CorpusSpec(Path(unseen)),
            progress=progress,
            shard=state.shard,
        )
    if state.shard.is_main:
        atomic_write_json(run.out_dir / "thresholds.json", result.to_dict())
    _say(
        f"Calibrated thresholds: MA {result.thresholds.ma:.3f}, EL_10 {result.thresholds.el_10:.3f}"
    )
    return result.thresholds


def _read_texts(state: _State) -> None:
    """The findings to measure, and the texts of their samples."""
    from audit.findings import sample_findings

    limit = state.run.policy.extraction.max_findings
    state.measured = sample_findings(state.findings, limit, seed=0)
    state.texts = _texts(state.spec, state.measured)


def _probe(state: _State, loaded: LoadedModel) -> None:
    """The sanity probe of the original model: refused (exit 3) when it fails."""
    from audit.sanity import checked_probe

    probe = checked_probe(loaded, state.texts, state.measured).to_dict()
    state.builder.set_sanity("original", probe)
    if state.shard.is_main:
        _stage_done(state, "sanity-original", probe)


def _restore_probe(state: _State, role: ModelRole) -> None:
    """A resumed run's probe figures, from the run state."""
    saved = (_read_run_state(state.run.out_dir / RUN_STATE) or {}).get("stages", {})
    probe = saved.get(f"sanity-{role}")
    if isinstance(probe, dict):
        state.builder.set_sanity(role, probe)


def _measure_before(state: _State) -> None:
    from audit.model import load_model

    run, extraction = state.run, state.run.policy.extraction
    path = run.out_dir / "measurements.before.jsonl"
    if _reusable(state, path.name):
        rows = read_measurements(path)
        _restore_probe(state, "original")
        state.builder.record.finished_stages.append("measure")
    else:
        with state.builder.stage("measure"):
            loaded = load_model(run.model_dir, _device(state), run.dtype)
            _probe(state, loaded)
            rows = _measure(state, loaded, extraction.prefix_tokens, _samples(run.policy, False))
        del loaded
        if state.shard.is_main:
            write_measurements(path, rows)
    state.before = rows
    info = MeasurementSet(
        name=BEFORE,
        model="original",
        prefix_tokens=extraction.prefix_tokens,
        samples=_samples(run.policy, False),
    )
    state.builder.add_measurements(info, rows)
    _say(_measured_line("Original model", rows))


def _remediate(state: _State, verdict: Verdict) -> RunRecord:
    run, builder = state.run, state.builder
    with builder.stage("erase"):
        remediation = _erase(state, verdict)
    out_model = Path(remediation["output_path"])
    builder.set_remediation(
        RemediationInfo.from_stage(remediation),
        # the model's files, not remediation.json (whose timings differ between equal runs)
        model_sha256=fingerprint_path(out_model, exclude=("remediation.json",)),
    )
    with builder.stage("measure after"):
        main, alt = _measure_after(state, out_model)
    utility = _utility(remediation)
    builder.set_utility(utility)
    after = evaluate(worst_case(main, alt), state.measured, run.policy, utility)
    after = with_sanity(after, builder.record.sanity.get("remediated"))
    builder.set_verdict("after", after)
    if after.passed:
        _say(f"Remediated model passes the policy: {safe_text(out_model)}")
        return builder.finish(ExitCode.PASSED, "remediated", released_model=str(out_model))
    return builder.finish(ExitCode.FAILED, "failed")


def _erase(state: _State, verdict: Verdict) -> dict[str, Any]:
    from gate.unlearn.erase import EraseOptions, erase_model
    from gate.unlearn.trainer import UnlearnConfig

    run, policy = state.run, state.run.policy
    offending = set(verdict.offending_ids())
    forget = [m for m in state.before if m.finding_id in offending]
    out_model = run.out_dir / REMEDIATED
    if _reusable(state, f"{REMEDIATED}/remediation.json"):
        import json

        _say(f"Erase: reused {out_model}.")
        done: dict[str, Any] = json.loads((out_model / "remediation.json").read_text())
        return done
    heldout = _heldout_spec(policy)
    if out_model.exists() and state.shard.is_main:  # an earlier run's model in our folder
        shutil.rmtree(out_model)
    state.shard.barrier()
    options = EraseOptions(
        config=UnlearnConfig.from_args(
            policy.remediation.method, policy.remediation.args.model_dump(by_alias=True)
        ),
        device=run.device,
        prefix_tokens=policy.extraction.prefix_tokens,
        batch_tokens=run.batch_tokens,
        retain=CorpusSpec(Path(policy.remediation.retain)) if policy.remediation.retain else None,
        heldout=heldout,
        heldout_findings=_scan_heldout(state, heldout),
        humaneval=HUMANEVAL_PROBLEMS if policy.utility.max_humaneval_drop is not None else 0,
        resume=state.reuse,
    )
    assert state.thresholds is not None
    result = erase_model(
        run.model_dir,
        state.spec,
        state.measured,
        forget,
        thresholds=state.thresholds,
        out_dir=out_model,
        options=options,
        report=_epoch_line,
    )
    return result.to_dict()


def _probe_remediated(state: _State, loaded: LoadedModel) -> None:
    """The remediated model's sanity probe: recorded; a failure fails the verdict (see
    `_remediate`), since a model that lost its grip on code leaks nothing and is no use."""
    from audit.sanity import probe_texts, sanity_probe

    texts = probe_texts(state.texts, state.measured)
    probe = sanity_probe(
        loaded.model, loaded.tokenizer, texts, context_length=loaded.context_length
    )
    state.builder.set_sanity("remediated", probe.to_dict())
    if state.shard.is_main:
        _stage_done(state, "sanity-remediated", probe.to_dict())


def _measure_after(state: _State, out_model: Path) -> tuple[list[Measurement], list[Measurement]]:
    from audit.model import load_model

    run, policy = state.run, state.run.policy
    samples = _samples(policy, after=True)
    alt_prefix = policy.verify_prefix_tokens
    paths = (
        run.out_dir / "measurements.after.jsonl",
        run.out_dir / f"measurements.after-prefix-{alt_prefix}.jsonl",
    )
    if _reusable(state, *(p.name for p in paths)):
        main, alt = read_measurements(paths[0]), read_measurements(paths[1])
        _restore_probe(state, "remediated")
    else:
        loaded = load_model(out_model, _device(state), run.dtype)
        _probe_remediated(state, loaded)
        main = _measure(state, loaded, policy.extraction.prefix_tokens, samples)
        alt = _measure(state, loaded, alt_prefix, 0)
        if state.shard.is_main:
            write_measurements(paths[0], main)
            write_measurements(paths[1], alt)
    builder = state.builder
    builder.add_measurements(
        MeasurementSet(
            name=AFTER,
            model="remediated",
            prefix_tokens=policy.extraction.prefix_tokens,
            samples=samples,
        ),
        main,
    )
    builder.add_measurements(
        MeasurementSet(
            name=f"after-prefix-{alt_prefix}", model="remediated", prefix_tokens=alt_prefix
        ),
        alt,
    )
    _say(_measured_line("Remediated model", worst_case(main, alt)))
    return main, alt


# ---------------------------------------------------------------- helpers


def with_sanity(verdict: Verdict, probe: SanityInfo | None) -> Verdict:
    """The remediated model's verdict with its sanity probe as one more utility rule
    (not probed: it fails too; the gate does not pass what it did not check)."""
    value = probe.ratio if probe is not None else None
    result = RuleResult(
        rule="sanity-probe",
        metric="sanity_loss_ratio",
        limit=probe.max_ratio if probe is not None else MAX_LOSS_RATIO,
        value=value,
        passed=probe is not None and probe.passed,
        severity="block",
        kind="utility",
        note=_sanity_note(probe),
    )
    return replace(verdict, results=(*verdict.results, result))


def _sanity_note(probe: SanityInfo | None) -> str:
    if probe is None:
        return "not probed"
    if probe.passed:
        return ""
    return (
        f"loss {probe.loss:.2f} on training code, not well under a uniform guess's "
        f"{probe.uniform:.2f}: the erasure damaged the model (lower lr)"
    )


def _measure(
    state: _State, loaded: LoadedModel, prefix_tokens: int, samples: int
) -> list[Measurement]:
    from audit.extraction import MeasureConfig, measure_findings
    from gate import ui

    sampled = state.run.policy.extraction.sampled
    config = MeasureConfig(
        batch_tokens=state.run.batch_tokens,
        samples=samples,
        temperature=sampled.temperature,
        top_k=sampled.top_k,
    )
    assert state.thresholds is not None
    with ui.progress() as progress:
        return measure_findings(
            loaded,
            state.measured,
            state.texts,
            state.thresholds,
            config,
            prefix_tokens=prefix_tokens,
            max_secret_tokens=state.run.policy.extraction.secret_tokens,
            progress=progress,
            shard=state.shard,
        )


def _device(state: _State) -> str:
    """The device for this process (the launcher's under accelerate launch)."""
    from audit.distributed import device_for

    return device_for(state.run.device, state.shard)


def _samples(policy: Policy, after: bool) -> int:
    """Sampled-attack draws: as the policy says, and always after remediation if verify says."""
    sampled = policy.extraction.sampled
    if sampled.enabled or (after and policy.remediation.verify.sampled):
        return sampled.samples
    return 0


def _texts(spec: CorpusSpec, findings: Sequence[Finding]) -> dict[str, str]:
    from audit.corpus import texts_for_findings

    return texts_for_findings(spec, findings)


def _heldout_spec(policy: Policy) -> CorpusSpec | None:
    path = policy.utility.heldout or policy.thresholds.unseen
    return CorpusSpec(Path(path)) if path else None


def _scan_heldout(state: _State, heldout: CorpusSpec | None) -> tuple[Path, ...]:
    """Findings in the held-out code: their samples are left out of the perplexity, which
    should say how well the model knows code, not how badly it guesses random keys."""
    from audit.detectors import select_detectors
    from audit.scan import ScanOptions, scan_corpus

    if heldout is None:
        return ()
    options = ScanOptions(detectors=select_detectors(state.run.policy.scan.detectors))
    path = state.run.out_dir / "heldout-findings.jsonl"
    if state.shard.is_main:  # the others read it once it is there
        write_findings(path, scan_corpus(heldout, options, jobs=state.run.jobs))
    state.shard.barrier()
    return (path,)


def _utility(remediation: dict[str, Any]) -> UtilityFigures:
    """The erase stage's utility figures (held-out perplexity, HumanEval) for the verdict."""
    figures = remediation.get("details", {}).get("utility", {})

    def value(key: str, field_name: str) -> float | None:
        entry = figures.get(key)
        if isinstance(entry, dict):
            entry = entry.get(field_name)
        return float(entry) if isinstance(entry, int | float) else None

    return UtilityFigures(
        perplexity_before=value("perplexity_before", "perplexity"),
        perplexity_after=value("perplexity_after", "perplexity"),
        humaneval_before=value("humaneval_before", "pass_at_1"),
        humaneval_after=value("humaneval_after", "pass_at_1"),
        extra={k: v for k, v in figures.items() if not k.startswith(("perplexity_", "humaneval_"))},
    )


def _write_failed_record(state: _State, exit_code: int, message: str) -> None:
    """record.json with the error and the stages that finished, and reports that say
    ERROR (the earlier run's were removed when this one began)."""
    if not state.shard.is_main:
        return
    record = state.builder.finish(exit_code, "error", error=message)
    try:
        _publish(record, state.run.out_dir)
    except (OSError, CodeEraserError):
        log.warning("could not write the record of the failed run to %s", state.run.out_dir)


def _publish(record: RunRecord, out_dir: Path) -> None:
    from gate.report import write_and_publish

    write_and_publish(record, out_dir)


def _measured_line(label: str, rows: Sequence[Measurement]) -> str:
    extracted = sum(1 for m in rows if m.extracted)
    memorized = sum(1 for m in rows if m.memorized)
    return f"{label}: {extracted} of {len(rows)} secrets extracted, {memorized} memorized."


def _epoch_line(entry: Any) -> None:
    log.info("erase epoch %s", getattr(entry, "epoch", "?"))


def _say(message: str) -> None:
    from gate import ui

    if not ui.is_quiet():
        ui.console.print(message)
