"""The gate: scan → measure → verdict → (erase → measure again → verdict) → reports.

Every stage reuses the code of its own command (`scan`, `calibrate`, `measure`,
`erase`) and keeps its output in the run folder (`gate.run_folder`: the layout, and
which outputs of an earlier run a ``--resume`` reuses; a resumed erase stage continues
from its checkpoint). The input model folder is only read. The record is written last:
a folder without record.json is an unfinished run.

Under ``accelerate launch`` every process runs the gate: the first one scans and hands
the findings to the others, the measuring is shared out (`audit.distributed`), erase
trains on every process (DDP/FSDP), and only the first process writes to the run
folder (on several machines, put it on a shared filesystem: every process loads the
remediated model from it). ``--resume`` is for single-process runs.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from audit.calibrate import calibrate
from audit.corpus import CorpusSpec, excluded, texts_for_findings, verify_findings
from audit.detectors import select_detectors
from audit.distributed import LOCAL, Shard, current, device_for
from audit.errors import CodeEraserError, ExitCode, InputError, Interrupted, PolicyError
from audit.extraction import MeasureConfig, measure_findings
from audit.findings import (
    Baseline,
    Finding,
    read_baseline,
    read_findings,
    sample_findings,
    subtract_baseline,
    write_findings,
)
from audit.hub import HubRevision
from audit.io import atomic_write_json
from audit.measurements import Measurement, Thresholds, read_measurements, write_measurements
from audit.model import LoadedModel, check_model_dir, load_model
from audit.redact import safe_text
from audit.sanity import MAX_LOSS_RATIO, checked_probe, probe_texts, sanity_probe
from audit.scan import ScanOptions, ScanSummary, scan_corpus
from gate import ui
from gate.model_card import CARD_NAME, write_model_card
from gate.never_seen import NeverSeen, compare, never_seen_rule
from gate.paths import PathOption, check_paths, data_paths, model_paths, path_option, run_lock
from gate.policy import Policy
from gate.policy_check import check_runnable
from gate.record import (
    AFTER,
    BEFORE,
    CorpusInfo,
    MeasurementSet,
    ModelRole,
    RecordBuilder,
    RunRecord,
    fingerprint_path,
)
from gate.report import write_and_publish
from gate.rounds import RoundResult, at_risk, run_rounds
from gate.run_folder import (
    REMEDIATED,
    RunFolder,
    RunInputs,
    ScanCounts,
    check_out_dir,
    make_out_dir,
)
from gate.unlearn.erase import erase_model
from gate.unlearn.remediation import RECORD_NAME, EpochLog, LrTrial, Remediation
from gate.unlearn.settings import EraseOptions, UnlearnArgs, UnlearnConfig
from gate.verdict import RuleResult, SanityInfo, UtilityFigures, Verdict, evaluate, worst_case

log = logging.getLogger(__name__)

HUMANEVAL_PROBLEMS = 164  # all of them, when the policy sets a HumanEval budget


@dataclass(frozen=True)
class GateRun:
    """One gate invocation: what to audit, under which policy, where to write."""

    model_dir: Path  # a folder or GGUF file (a Hub model: its snapshot in the Hub cache)
    data: Path  # a Hub dataset: its name, ORG/NAME/SPLIT (it is streamed)
    policy: Policy
    out_dir: Path
    model_hub: HubRevision | None = None  # the Hub model and commit model_dir is
    data_hub: HubRevision | None = None  # the Hub dataset and commit to read
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
    folder: RunFolder  # its inputs, and whether an earlier run's outputs are reused
    findings: list[Finding] = field(default_factory=list)
    measured: list[Finding] = field(default_factory=list)  # after extraction.max_findings
    thresholds: Thresholds | None = None
    before: list[Measurement] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict, repr=False)
    shard: Shard = LOCAL  # this process's place under accelerate launch
    current: list[Measurement] = field(default_factory=list)  # the latest round's, worst case
    after: tuple[list[Measurement], list[Measurement]] = field(default_factory=lambda: ([], []))
    utility_before: UtilityFigures | None = None  # of the original model (round 1)
    round: int = 0  # the round under way
    utility_spent: float | None = None  # perplexity increase after the last round
    forget_total: int = 0  # its forget set
    max_epochs: int = 0


def run_gate(run: GateRun) -> RunRecord:
    """Run the whole gate and write the record and reports; return the record.

    Everything that can be checked without work is checked first: the paths (inputs
    exist, the run folder is clear of them), the model folder, and that the policy's
    budgets can be measured. The first process holds a lock on the run folder while
    it runs, so a second run on the same folder is refused."""
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
        *model_paths("--model", run.model_dir, run.model_hub),
        *data_paths("--data", run.data, run.data_hub),
        *path_option("--findings", run.findings, "file", "findings file"),
        *(path_option("--policy", source, "file", "policy file") if source.is_file() else []),
        *path_option("scan.baseline", policy.scan.baseline, "file"),
        *path_option("thresholds.unseen (--unseen)", policy.thresholds.unseen, "data"),
        *path_option("remediation.retain", policy.remediation.retain, "data"),
        *path_option("utility.heldout (--heldout)", policy.utility.heldout, "data"),
    ]


def _locked_run(run: GateRun, shard: Shard) -> RunRecord:
    folder = _open(run, shard)
    state = _State(
        run=run,
        builder=_builder(run, folder.inputs.model),
        spec=run.policy.scan.corpus_spec(run.data, hub=run.data_hub),
        folder=folder,
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
        write_model_card(record, run.model_dir, run.out_dir)
    return record


def _open(run: GateRun, shard: Shard) -> RunFolder:
    """The first process fingerprints the inputs and prepares the run folder
    (`RunFolder.open`); the others get it from the first."""
    folder: RunFolder | None = None
    if shard.is_main:
        inputs = RunInputs.of(
            run.model_dir, run.data, run.policy, device=run.device, dtype=run.dtype,
            batch_tokens=run.batch_tokens, findings=run.findings, data_hub=run.data_hub,
        )  # fmt: skip
        folder = RunFolder.open(
            run.out_dir, run.model_dir, inputs, resume=run.resume, force=run.force
        )
    opened = shard.broadcast(folder)
    if opened is None:  # the first process always opens it
        raise RuntimeError("the run folder was not opened by the first process")
    return opened


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


def _builder(run: GateRun, model_sha256: str) -> RecordBuilder:
    return RecordBuilder(
        model_path=run.model_dir,
        corpus=CorpusInfo(path=str(run.data), format=run.policy.scan.format, hub=run.data_hub),
        policy=run.policy,
        invocation=list(run.invocation),
        model_sha256=model_sha256,
        model_hub=run.model_hub,
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
    run, policy = state.run, state.run.policy
    counts = state.folder.stages().scan
    if state.folder.reusable("findings.jsonl") and counts is not None:
        state.findings = read_findings(run.out_dir / "findings.jsonl")
        _set_scan(state, counts)
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
    corpus = state.builder.record.corpus
    counts = ScanCounts(
        samples=summary.samples,
        chars=summary.chars,
        skipped=dict(summary.skipped),
        skipped_files=list(summary.skipped_files),
        allowlisted=corpus.allowlisted,
        allowlisted_findings=corpus.allowlisted_findings,
    )
    state.folder.scan_done(counts)
    _set_scan(state, counts)
    _say(f"Scan: {len(state.findings)} secrets in {summary.samples} samples{_skipped(summary)}.")


def _use_findings(
    state: _State, path: Path, detectors: tuple[str, ...] | None, baseline: Baseline
) -> None:
    """The scan stage from a findings file (`--findings`, e.g. from a datatrove scan):
    what the policy's scan would keep of it (its detectors, excludes and baseline), each
    finding checked against the data (its sample exists, its span has its hash). The
    corpus was not read whole: its sample count is left unknown."""
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
    counts = ScanCounts(samples=None, chars=None)
    state.folder.scan_done(counts)
    _set_scan(state, counts)
    _say(f"Scan: {len(state.findings)} secrets from {safe_text(path)} (checked against the data).")


def _skipped(summary: ScanSummary) -> str:
    if not summary.skipped:
        return ""
    parts = ", ".join(f"{reason} {n}" for reason, n in sorted(summary.skipped.items()))
    return f" ({sum(summary.skipped.values())} not read: {parts}; listed in record.json)"


def _set_scan(state: _State, counts: ScanCounts) -> None:
    state.builder.set_findings(state.findings)
    state.builder.set_skipped(counts.skipped, counts.skipped_files)
    corpus = state.builder.record.corpus
    corpus.samples, corpus.bytes = counts.samples, counts.chars
    corpus.allowlisted = dict(counts.allowlisted)
    corpus.allowlisted_findings = list(counts.allowlisted_findings)
    corpus.fingerprint = state.folder.inputs.data


def _thresholds(state: _State) -> None:
    policy = state.run.policy
    calibrated = None
    if policy.thresholds.needs_calibration:
        with _stage(state.builder, "calibrate"):
            calibrated = _calibrate(state)
    state.thresholds = policy.thresholds.resolve(calibrated)
    state.builder.set_thresholds(state.thresholds)


def _calibrate(state: _State) -> Thresholds:
    run, unseen = state.run, state.run.policy.thresholds.unseen
    if unseen is None:  # the policy loader refuses this; kept for policies built in code
        raise PolicyError("thresholds: `auto` needs thresholds.unseen (or --unseen)")
    if state.folder.reusable("thresholds.json"):
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
    limit = state.run.policy.extraction.max_findings
    state.measured = sample_findings(state.findings, limit, seed=0)
    state.texts = _texts(state.spec, state.measured)


def _probe(state: _State, loaded: LoadedModel) -> None:
    """The sanity probe of the original model: refused (exit 3) when it fails."""
    probe = checked_probe(loaded, state.texts, state.measured)
    _probed(state, "original", SanityInfo.model_validate(probe.to_dict()))


def _probed(state: _State, role: ModelRole, probe: SanityInfo) -> None:
    """A model's probe figures, in the record and (for a resumed run) the run folder."""
    state.builder.set_sanity(role, probe)
    if state.shard.is_main:
        state.folder.probe_done(role, probe)


def _restore_probe(state: _State, role: ModelRole) -> None:
    """A resumed run's probe figures, from the run state."""
    probe = state.folder.stages().sanity.get(role)
    if probe is not None:
        state.builder.set_sanity(role, probe)


def _measure_before(state: _State) -> None:
    run, extraction = state.run, state.run.policy.extraction
    path = run.out_dir / "measurements.before.jsonl"
    if state.folder.reusable(path.name):
        rows = read_measurements(path)
        _restore_probe(state, "original")
        state.builder.record.finished_stages.append("measure")
    else:
        with _stage(state.builder, "measure"):
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
    """The closed loop (`gate.rounds`): erase, measure again, and go on while a blocking
    security rule fails and the utility budget holds; the last round's model is judged."""
    run, builder, remediation = state.run, state.builder, state.run.policy.remediation
    first = at_risk(state.before, verdict, remediation.target)
    _say(_target_line(remediation.target, len(first), len(verdict.offending_ids())))
    outcome = run_rounds(
        first,
        lambda number, ids: _round(state, number, ids),
        before=state.before,
        max_rounds=remediation.max_rounds,
        target=remediation.target,
    )
    out_model = run.out_dir / REMEDIATED
    builder.set_remediation(
        outcome.last.remediation,
        # the model's files, not remediation.json (whose timings differ between equal runs)
        # nor the model card (README.md: it holds this hash)
        model_sha256=fingerprint_path(out_model, exclude=(RECORD_NAME, CARD_NAME)),
    )
    builder.record.rounds = outcome.rounds
    builder.record.remediation_target = remediation.target
    _add_after_sets(state)
    after = outcome.last.verdict
    comparison = _never_seen(state, outcome.forget)
    builder.record.never_seen = comparison
    margin = remediation.verify.never_seen_margin
    if margin is not None:
        after = replace(after, results=(*after.results, never_seen_rule(comparison, margin)))
    builder.set_verdict("after", after)
    if after.passed:
        _say(f"Remediated model passes the policy: {safe_text(out_model)}")
        return builder.finish(ExitCode.PASSED, "remediated", released_model=str(out_model))
    return builder.finish(ExitCode.FAILED, "failed")


def _never_seen(state: _State, erased: list[str]) -> NeverSeen | None:
    """The erased secrets' MA against never-seen secrets' of the same types: those found
    in the held-out code, measured on the remediated model (None: no held-out code)."""
    run, policy = state.run, state.run.policy
    heldout, path = _heldout_spec(policy), run.out_dir / "heldout-findings.jsonl"
    if heldout is None or not path.is_file():
        return None
    controls = read_findings(path)
    with _stage(state.builder, "never-seen"):
        loaded = load_model(run.out_dir / REMEDIATED, _device(state), run.dtype)
        rows = _measure_controls(state, loaded, heldout, controls)
    chosen = set(erased)
    comparison = compare([m for m in state.after[0] if m.finding_id in chosen], rows)
    _say(_never_seen_line(comparison))
    return comparison


def _measure_controls(
    state: _State, loaded: LoadedModel, heldout: CorpusSpec, controls: list[Finding]
) -> list[Measurement]:
    extraction = state.run.policy.extraction
    assert state.thresholds is not None
    with ui.progress() as progress:
        return measure_findings(
            loaded,
            controls,
            texts_for_findings(heldout, controls),
            state.thresholds,
            MeasureConfig(batch_tokens=state.run.batch_tokens, samples=0),
            prefix_tokens=extraction.prefix_tokens,
            max_secret_tokens=extraction.secret_tokens,
            progress=progress,
            shard=state.shard,
        )


def _never_seen_line(comparison: NeverSeen) -> str:
    if comparison.gap is None:
        return "Never-seen comparison: no held-out secret of an erased type."
    return (
        f"Never-seen comparison: erased secrets' mean MA {comparison.erased_ma:.3f} "
        f"({comparison.erased}), never-seen secrets of the same types "
        f"{comparison.never_seen_ma:.3f} ({comparison.never_seen})."
    )


def _target_line(target: str, chosen: int, offending: int) -> str:
    if target == "offending":
        return (
            f"Forget set: the {chosen} findings that break a blocking rule "
            "(remediation.target: offending; memorized ones outside it are left)."
        )
    return (
        f"Forget set: {chosen} findings memorized or extracted ({offending} of them break a "
        "blocking rule; remediation.target: at-risk)."
    )


def _round(state: _State, number: int, ids: list[str]) -> RoundResult:
    """One round: erase `ids` from the current weights, then measure the result."""
    builder, policy = state.builder, state.run.policy
    started = time.perf_counter()
    with _stage(builder, "erase"):
        remediation = _erase(state, number, ids)
    erased = time.perf_counter()
    _say_probe(number, remediation)
    with _stage(builder, "measure after"):
        main, alt = _measure_after(state, state.run.out_dir / REMEDIATED, reuse=number == 1)
    measured = time.perf_counter()
    state.after = (main, alt)
    utility = _overall_utility(state, number, remediation)
    state.utility_spent = utility.perplexity_increase
    remediation = remediation.model_copy(update={"utility": utility})
    rows = worst_case(main, alt)
    state.current = rows
    verdict = evaluate(rows, state.measured, policy, utility)
    verdict = with_sanity(verdict, builder.record.sanity.get("remediated"))
    _say(f"Round {number}: {_verdict_words(verdict)}.")
    return RoundResult(remediation, rows, verdict, erased - started, measured - erased)


def _say_probe(number: int, remediation: Remediation) -> None:
    probe = remediation.lr_probe
    if probe is None:
        return
    heldout = probe.gauge != "retain KL"
    tried = ", ".join(_trial_text(t, heldout=heldout) for t in probe.trials)
    budget = f"{probe.kl_budget:+.2%}" if heldout else f"{probe.kl_budget}"
    _say(
        f"Round {number}: lr auto chose {probe.chosen:.1e} ({probe.gauge} after "
        f"{probe.steps} steps, budget {budget}: {tried}; {probe.seconds:.1f} s)."
    )
    for change in probe.changes:
        _say(f"Round {number}: {change}.")


def _trial_text(trial: LrTrial, *, heldout: bool) -> str:
    value = trial.heldout_change if heldout else trial.retain_kl
    if value is None:
        return f"{trial.lr:.1e}: not finite"
    return f"{trial.lr:.1e}: {value:+.2%}" if heldout else f"{trial.lr:.1e}: {value:.4f}"


def _verdict_words(verdict: Verdict) -> str:
    if verdict.passed:
        return "the policy passes"
    return "fails " + ", ".join(r.rule for r in verdict.blocking)


def _overall_utility(state: _State, number: int, remediation: Remediation) -> UtilityFigures:
    """Utility against the original model: round 1 measured it before erasing."""
    if number == 1:
        state.utility_before = remediation.utility
    first = state.utility_before or remediation.utility
    return remediation.utility.model_copy(
        update={
            "perplexity_before": first.perplexity_before,
            "humaneval_before": first.humaneval_before,
        }
    )


def _erase(state: _State, number: int, ids: list[str]) -> Remediation:
    run, policy = state.run, state.run.policy
    out_model = run.out_dir / REMEDIATED
    if number == 1 and state.folder.reusable(f"{REMEDIATED}/{RECORD_NAME}"):
        _say(f"Erase: reused {safe_text(out_model)}.")
        return Remediation.read(out_model)
    chosen = set(ids)
    rows = state.before if number == 1 else state.current
    forget = [m for m in rows if m.finding_id in chosen]
    target = out_model if number == 1 else run.out_dir / f".round-{number}"
    heldout = _heldout_spec(policy)
    if target.exists() and state.shard.is_main:  # an earlier run's model in our folder
        shutil.rmtree(target)
    state.shard.barrier()
    options = EraseOptions(
        config=UnlearnConfig.of(policy.remediation.method, _round_args(state, number)),
        device=run.device,
        prefix_tokens=policy.extraction.prefix_tokens,
        also_prefix_tokens=policy.verify_prefix_tokens,
        batch_tokens=run.batch_tokens,
        retain=CorpusSpec(Path(policy.remediation.retain)) if policy.remediation.retain else None,
        heldout=heldout,
        heldout_findings=_scan_heldout(state, heldout),
        humaneval=HUMANEVAL_PROBLEMS if policy.utility.max_humaneval_drop is not None else 0,
        resume=state.folder.reuse and number == 1,
    )
    assert state.thresholds is not None
    state.round, state.forget_total = number, len(forget)
    state.max_epochs = options.config.epochs
    record = erase_model(
        run.model_dir if number == 1 else out_model,
        state.spec,
        state.measured,
        forget,
        thresholds=state.thresholds,
        out_dir=target,
        options=options,
        report=lambda entry: _epoch_line(state, entry),
        provenance=run.model_hub,
        keep=chosen,
    )
    if number > 1 and state.shard.is_main:
        _replace_model(target, out_model)
    state.shard.barrier()
    return record


HELDOUT_AIM = 0.4  # of the perplexity budget: what the erase rounds together aim to spend
HELDOUT_FLOOR = 0.25  # of that aim: the least a later round may spend (within the budget)


def _round_args(state: _State, number: int) -> UnlearnArgs:
    """The policy's settings for this round (`round_limits`)."""
    policy = state.run.policy
    return round_limits(
        policy.remediation.args,
        budget=policy.utility.max_perplexity_increase,
        spent=state.utility_spent if number > 1 else 0.0,
        number=number,
    )


def round_limits(
    args: UnlearnArgs, *, budget: float | None, spent: float | None, number: int
) -> UnlearnArgs:
    """Under lr auto with a perplexity budget, the rounds together aim to spend
    `HELDOUT_AIM` of it, the rest being margin between the held-out slice the loop
    checks after every epoch and the full held-out set the policy judges: a round may
    raise perplexity by `auto_ppl_max` = (1 + aim) / (1 + spent) − 1 over its start, at
    least `HELDOUT_FLOOR` of the aim and never more than the budget left (unless the
    policy sets it). A later round's KL limits shrink with the share of the budget the
    earlier rounds spent (their KL terms hold the model to the previous round's
    weights, not the original's)."""
    if args.lr != "auto" or not budget or spent is None:
        return args
    spent = max(0.0, spent)
    left = (1 + budget) / (1 + spent) - 1
    aim = HELDOUT_AIM * budget
    if args.auto_ppl_max is None and left > 0:
        limit = min(left, max((1 + aim) / (1 + spent) - 1, HELDOUT_FLOOR * aim))
        args = args.model_copy(update={"auto_ppl_max": limit})
    if number == 1:
        return args
    share = max(0.1, 1 - math.log1p(spent) / math.log1p(budget))
    kl_max = args.auto_kl_max * share
    return args.model_copy(update={"auto_kl_max": kl_max, "auto_kl": min(args.auto_kl, kl_max)})


def _replace_model(new: Path, out_model: Path) -> None:
    """The round's model takes the remediated model's place (the previous one goes)."""
    old = out_model.with_name(f".{out_model.name}.previous")
    if old.exists():
        shutil.rmtree(old)
    out_model.rename(old)
    new.rename(out_model)
    shutil.rmtree(old)


def _probe_remediated(state: _State, loaded: LoadedModel) -> None:
    """The remediated model's sanity probe: recorded; a failure fails the verdict (see
    `_remediate`), since a model that lost its grip on code leaks nothing and is no use."""
    texts = probe_texts(state.texts, state.measured)
    probe = sanity_probe(
        loaded.model, loaded.tokenizer, texts, context_length=loaded.context_length
    )
    _probed(state, "remediated", SanityInfo.model_validate(probe.to_dict()))


def _measure_after(
    state: _State, out_model: Path, *, reuse: bool
) -> tuple[list[Measurement], list[Measurement]]:
    run, policy = state.run, state.run.policy
    samples = _samples(policy, after=True)
    alt_prefix = policy.verify_prefix_tokens
    paths = (
        run.out_dir / "measurements.after.jsonl",
        run.out_dir / f"measurements.after-prefix-{alt_prefix}.jsonl",
    )
    if reuse and state.folder.reusable(*(p.name for p in paths)):
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
    _say(_measured_line("Remediated model", worst_case(main, alt)))
    return main, alt


def _add_after_sets(state: _State) -> None:
    """The last round's measurements, in the record."""
    policy, builder = state.run.policy, state.builder
    main, alt = state.after
    samples = _samples(policy, after=True)
    alt_prefix = policy.verify_prefix_tokens
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
    return device_for(state.run.device, state.shard)


def _samples(policy: Policy, after: bool) -> int:
    """Sampled-attack draws: as the policy says, and always after remediation if verify says."""
    sampled = policy.extraction.sampled
    if sampled.enabled or (after and policy.remediation.verify.sampled):
        return sampled.samples
    return 0


def _texts(spec: CorpusSpec, findings: Sequence[Finding]) -> dict[str, str]:
    return texts_for_findings(spec, findings)


def _heldout_spec(policy: Policy) -> CorpusSpec | None:
    path = policy.utility.heldout or policy.thresholds.unseen
    return CorpusSpec(Path(path)) if path else None


def _scan_heldout(state: _State, heldout: CorpusSpec | None) -> tuple[Path, ...]:
    """Findings in the held-out code: their samples are left out of the perplexity, which
    should say how well the model knows code, not how badly it guesses random keys."""
    if heldout is None:
        return ()
    options = ScanOptions(detectors=select_detectors(state.run.policy.scan.detectors))
    path = state.run.out_dir / "heldout-findings.jsonl"
    if state.shard.is_main:  # the others read it once it is there
        write_findings(path, scan_corpus(heldout, options, jobs=state.run.jobs))
    state.shard.barrier()
    return (path,)


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
    write_and_publish(record, out_dir)


def _measured_line(label: str, rows: Sequence[Measurement]) -> str:
    extracted = sum(1 for m in rows if m.extracted)
    memorized = sum(1 for m in rows if m.memorized)
    return f"{label}: {extracted} of {len(rows)} secrets extracted, {memorized} memorized."


def _epoch_line(state: _State, entry: EpochLog) -> None:
    """The erase stage's line per epoch, at default verbosity (a plain line in CI logs)."""
    if ui.is_quiet():
        return
    total = state.forget_total
    kl = entry.loss.get("kl_retain")
    ui.console.print(epoch_text(state.round, entry, total, kl, state.max_epochs))


def epoch_text(
    round_: int, entry: EpochLog, total: int, kl_retain: float | None, max_epochs: int
) -> str:
    """Round, epoch, forgotten / total, mean MA (and EL_10) of what is left, the retain
    KL to the original, seconds per epoch, and the time left if every epoch is run."""
    forgotten = total - entry.remaining
    el = f", EL_10 {entry.el_10_mean:.3f}" if entry.el_10_mean is not None else ""
    kl = f", retain KL {kl_retain:.4f}" if kl_retain is not None else ""
    if entry.heldout_change is not None:
        kl += f", held-out ppl {entry.heldout_change:+.2%}"
    left = max(0, max_epochs - entry.epoch) * entry.seconds
    return (
        f"Erase round {round_} epoch {entry.epoch}: {forgotten}/{total} forgotten, "
        f"left: mean MA {entry.ma_mean:.3f}{el}{kl}, {entry.seconds:.1f} s/epoch, "
        f"at most {left:.0f} s left"
    )


@contextmanager
def _stage(builder: RecordBuilder, name: str) -> Iterator[None]:
    """A timed stage that frees what it dropped: a loaded model sits in reference cycles
    (a Transformers model is not freed when its last name goes), so without a collection
    the measure's model, the erase's model and its optimizer states stay in memory while
    the next stage loads another (the gate's peak on a 135M model grew from 5.4 to 7.5 GB
    over two rounds)."""
    with builder.stage(name):
        yield
    gc.collect()


def _say(message: str) -> None:
    if not ui.is_quiet():
        ui.console.print(message)
