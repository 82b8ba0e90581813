"""Erase memorized secrets from a model folder and write the remediated model.

`erase_model` is what ``codeeraser erase`` and the gate pipeline call: it takes the
findings that the measurements call memorized (or extracted), builds their forget
windows and probes, a retain set of clean code, runs the unlearning loop, and writes
a complete model folder (safetensors weights, config, tokenizer files) plus
``remediation.json``.

Nothing is lost: the input folder is only read; the run works in a hidden sibling of
the output folder (`gate.unlearn.checkpoint`): it checkpoints there after every epoch,
writes the model there, and renames it into place only once it is complete. A run
that stops early leaves its latest checkpoint there (and nothing at the output path),
so that ``--resume`` continues it.

Under ``accelerate launch`` every process runs `erase_model` and trains (DDP, or FSDP
with an accelerate config); only the first process writes the working folder and the
output. Checkpoints (and ``--resume``) are for single-process runs: with several
processes a stop would have to be agreed by all of them at the same step.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers.utils import logging as hf_logging

from audit.corpus import CorpusSpec, iter_samples, load_texts
from audit.distributed import LOCAL, Shard, device_for
from audit.errors import InputError, Interrupted
from audit.extraction import MeasureConfig, measure_probes, score_probes
from audit.findings import Finding
from audit.hub import HubRevision, is_model_file, snapshot_repo_folder
from audit.io import digest, output_error
from audit.measurements import HumanEvalResult, Measurement, Perplexity, Thresholds
from audit.model import is_gguf, load_model, pad_token_id, save_gguf_tokenizer
from audit.probes import build_probes
from audit.redact import redact_path
from audit.sanity import checked_probe, probe_texts, sanity_probe
from audit.utility import clean_texts, humaneval, perplexity
from gate.unlearn.accelerated import engine_for
from gate.unlearn.autolr import LrSteer, WatchKL, probe_lr, watch_windows
from gate.unlearn.checkpoint import STOP, Checkpointer, work_dir
from gate.unlearn.data import (
    ForgetWindow,
    RetainWindow,
    build_forget_windows,
    build_retain_windows,
    clamp_tokens,
)
from gate.unlearn.engine import Engine
from gate.unlearn.heldout import HeldoutSlice, heldout_slice
from gate.unlearn.lora import add_adapters, merged
from gate.unlearn.optim import states_dtype
from gate.unlearn.remediation import (
    RECORD_NAME,
    EpochLog,
    KLReference,
    LrProbe,
    Remediation,
    SampleCounts,
)
from gate.unlearn.settings import EraseOptions, UnlearnConfig
from gate.unlearn.trainer import Measure, Screen, Unlearner, UnlearnResult
from gate.verdict import SanityInfo, UtilityFigures, worst_case

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from audit.probes import Probe

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")


def weights_sha256(folder: Path) -> str:
    """SHA-256 over a model folder's weight files (names and bytes, in name order), or
    over a GGUF file."""
    digest = hashlib.sha256()
    listed = [folder] if folder.is_file() else folder.iterdir()
    files = sorted(p for p in listed if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def select_forget_set(
    findings: Sequence[Finding],
    measurements: Sequence[Measurement],
    keep: Collection[str] = (),
) -> tuple[list[Finding], list[Measurement]]:
    """The findings whose measurement says memorized or extracted, with those measurements
    (`keep`: findings that join even when forgotten already: guarded, not trained on)."""
    by_id = {f.id: f for f in findings}
    chosen: list[tuple[Finding, Measurement]] = []
    for m in measurements:
        if not (m.memorized or m.extracted or m.finding_id in keep):
            continue
        finding = by_id.get(m.finding_id)
        if finding is None:
            raise InputError(
                f"measurement of finding {m.finding_id}: no such finding in the findings file "
                "(are the measurements from another scan?)"
            )
        chosen.append((finding, m))
    return [f for f, _ in chosen], [m for _, m in chosen]


def check_output(out_dir: Path, model_dir: Path, force: bool) -> None:
    """Refuse an output folder that is the input, inside it, or exists (without force;
    with force, one that an earlier erase did not write: --force never deletes a folder
    the tool did not create)."""
    shown = redact_path(out_dir)
    out, model = out_dir.resolve(), model_dir.resolve()
    if out == model or out.is_relative_to(model) or model.is_relative_to(out):
        raise InputError(f"{shown}: the output must be outside the input model folder")
    if out_dir.exists() and not force:
        raise InputError(
            f"{shown}: already exists (choose another --out, or --force to replace it)"
        )
    if out_dir.exists() and not (out_dir / RECORD_NAME).is_file():
        raise InputError(
            f"{shown}: exists and is not a model written by codeeraser erase (no "
            f"{RECORD_NAME}); --force only replaces one (move it away, or choose another --out)"
        )


def erase_model(
    model_dir: Path,
    data: CorpusSpec,
    findings: Sequence[Finding],
    measurements: Sequence[Measurement],
    *,
    thresholds: Thresholds,
    out_dir: Path,
    options: EraseOptions | None = None,
    report: Callable[[EpochLog], None] | None = None,
    provenance: HubRevision | None = None,
    keep: Collection[str] = (),
) -> Remediation:
    """Unlearn the memorized findings and write the remediated model to `out_dir`
    (`provenance`: the Hub commit `model_dir` is a snapshot of, for remediation.json;
    `keep`: findings in the forget set even when not memorized now, see
    `select_forget_set`).

    Under ``accelerate launch`` every process runs this; only the first writes (the
    working folder and `out_dir`), and every process returns the record.
    """

    options = options or EraseOptions()
    started = time.perf_counter()
    check_output(out_dir, model_dir, options.force)
    forget, before = select_forget_set(findings, measurements, keep)
    if not forget:
        raise InputError("nothing to erase: no measured finding is memorized or extracted")
    engine = engine_for(options.config)
    if options.resume and engine.shard.distributed:
        raise InputError(
            "--resume works in a single process: checkpoints are not taken under "
            "accelerate launch with several processes (rerun without --resume)"
        )
    input_hash = weights_sha256(model_dir) if engine.is_main else ""
    run = Checkpointer(work_dir(out_dir))
    if engine.is_main:
        run.open(_fingerprint(input_hash, before, options), resume=options.resume)
    engine.shard.barrier()
    try:
        model, record = _train(
            run, model_dir, data, forget, before, engine=engine, thresholds=thresholds,
            options=options, report=report,
        )  # fmt: skip
        full_state = engine.full_state_dict(model)  # FSDP: gathered (a collective)
        if engine.is_main:
            record.input_path, record.input_sha256 = redact_path(model_dir), input_hash
            record.input_hub = provenance
            record.wall_seconds = time.perf_counter() - started
            final = _final(model, options.config)
            _write_output(final, model_dir, run, record=record, out_dir=out_dir, state=full_state)
            run.remove()
        engine.shard.barrier()  # the others return once the folder is in place
        record = engine.shard.broadcast(record)
    except KeyboardInterrupt:
        _keep_checkpoint(run, engine)
        raise Interrupted(run.interrupted_message()) from None
    except InputError as exc:
        _keep_checkpoint(run, engine)
        if run.saved is None:
            raise
        raise InputError(
            f"{exc.message}; the checkpoint of epoch {run.epoch} is intact: fix this and "
            "rerun the same command with --resume to continue"
        ) from None
    except BaseException:
        _keep_checkpoint(run, engine)
        raise
    return record


def _keep_checkpoint(run: Checkpointer, engine: Engine) -> None:
    """After a failure: the first process (the only one writing) keeps the checkpoint."""
    if engine.is_main:
        run.keep_checkpoint_only()


def _train(
    run: Checkpointer,
    model_dir: Path,
    data: CorpusSpec,
    forget: Sequence[Finding],
    before: Sequence[Measurement],
    *,
    engine: Engine,
    thresholds: Thresholds,
    options: EraseOptions,
    report: Callable[[EpochLog], None] | None,
) -> tuple[torch.nn.Module, Remediation]:
    """Load, prepare, measure utility, unlearn (resuming `run`'s checkpoint), measure again."""
    loaded = load_model(model_dir, device_for(options.device, engine.shard), _train_dtype(options))
    texts = load_texts(data, {f.sample_id for f in forget})
    sanity = checked_probe(loaded, texts, forget)  # the input model: refused when it fails
    model, tokenizer = _adapted(loaded.model, options.config, engine), loaded.tokenizer
    context = loaded.context_length
    job = _prepare(
        model, tokenizer, context=loaded.context_length, data=data, forget=forget,
        options=options, shard=engine.measure_shard,
    )  # fmt: skip
    run.check({"data": _data_fingerprint(job)})
    heldout = _heldout_texts(options)
    if "utility_before" not in run.extra:  # of the original model: kept in the checkpoints
        before_utility = UtilityFigures(
            perplexity_before=_perplexity(model, tokenizer, heldout),
            humaneval_before=_humaneval(model, tokenizer, options.humaneval),
        )
        run.extra["utility_before"] = before_utility.model_dump(mode="json")
    utility_before = UtilityFigures.model_validate(run.extra["utility_before"])
    watch = (
        None
        if engine.shard.distributed
        else _heldout_watch(run, model, tokenizer, heldout, options.config)
    )
    result = _unlearn(
        model, job, before=before, thresholds=thresholds, config=options.config,
        checkpoints=run, report=report if engine.is_main else None, engine=engine,
        heldout=watch,
    )  # fmt: skip
    utility = _utility_after(utility_before, model, tokenizer, heldout, options.humaneval)
    record = _record(result, job, options=options, thresholds=thresholds, utility=utility)
    after = sanity_probe(model, tokenizer, probe_texts(texts, forget), context_length=context)
    record.sanity = {
        "original": SanityInfo.model_validate(sanity.to_dict()),
        "remediated": SanityInfo.model_validate(after.to_dict()),
    }
    record.processes = engine.shard.world
    record.mixed_precision = engine.mixed_precision
    trained = [p for p in model.parameters() if p.requires_grad]
    record.trainable_parameters = sum(p.numel() for p in trained)
    record.optimizer_states = states_dtype(options.config.optimizer_states, trained)
    record.gradient_checkpointing = engine.checkpoints
    return model, record


def _heldout_watch(
    run: Checkpointer,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str] | None,
    config: UnlearnConfig,
) -> HeldoutSlice | None:
    """The held-out slice checked after every epoch (`gate.unlearn.heldout`); its
    baseline on the starting weights is kept in the checkpoints. One process only: under
    DDP/FSDP the bare module's forward would bypass the wrapper (and `lr: auto`, the
    slice's user, is refused there)."""
    if not texts or config.heldout_tokens == 0:
        return None
    chosen = heldout_slice(texts, tokenizer, config.heldout_tokens)
    watch = HeldoutSlice(model, tokenizer, chosen, run.extra.get("heldout_slice_before"))
    run.extra["heldout_slice_before"] = watch.baseline
    return watch


def _train_dtype(options: EraseOptions) -> str:
    """Weights dtype for training. Full training needs float32 weights (a bf16 weight
    does not move by a 3e-6 step; mixed precision keeps float32 master weights); a
    LoRA base is frozen, so `auto` loads it as for measuring (bf16 on a GPU)."""
    if options.dtype != "auto" or options.config.lora:
        return options.dtype
    return "float32"


def _adapted(model: torch.nn.Module, config: UnlearnConfig, engine: Any) -> torch.nn.Module:
    """The model to train: with LoRA adapters when asked for."""
    if not config.lora:
        return model
    if getattr(engine, "fsdp", False):
        raise InputError(
            "--lora with FSDP is not supported: a LoRA run holds the frozen base once per "
            "process (use DDP: accelerate launch --multi_gpu)"
        )

    return add_adapters(
        model, rank=config.lora_rank, alpha=config.lora_alpha, targets=config.lora_targets
    )


def _final(model: torch.nn.Module, config: UnlearnConfig) -> torch.nn.Module:
    """The model to save: LoRA adapters merged into the base weights."""
    if not config.lora:
        return model

    return merged(model)


def _fingerprint(
    input_hash: str, before: Sequence[Measurement], options: EraseOptions
) -> dict[str, Any]:
    """What a checkpoint must share with a run that resumes it (see checkpoint.py)."""
    settings = {
        **options.config.result_settings(),
        "device": options.device,
        "dtype": options.dtype,
        "prefix_tokens": options.prefix_tokens,
        "also_prefix_tokens": options.also_prefix_tokens,
        "batch_tokens": options.batch_tokens,
        "humaneval": options.humaneval,
        "retain": redact_path(options.retain.path) if options.retain else None,
        "heldout": redact_path(options.heldout.path) if options.heldout else None,
        "heldout_findings": [redact_path(p) for p in options.heldout_findings],
    }
    return {
        "model": input_hash,
        "findings": digest([m.to_dict() for m in before]),
        # as the checkpoint's state.json holds them (tuples, e.g. lora_targets, as lists)
        "settings": json.loads(json.dumps(settings, default=str)),
    }


def _data_fingerprint(job: _Job) -> str:
    """A digest of the token ids trained and measured on (no text is kept)."""
    return digest(
        {
            "forget": [
                (w.sample_id, w.input_ids, [asdict(s) for s in w.secrets]) for w in job.windows
            ],
            "retain": [(w.sample_id, w.input_ids) for w in job.retain],
            "probes": [(p.finding_id, p.prefix_ids, p.secret_ids) for p in job.probes],
        }
    )


def _write_output(
    model: torch.nn.Module,
    model_dir: Path,
    run: Checkpointer,
    *,
    record: Remediation,
    out_dir: Path,
    state: dict[str, Any] | None = None,
) -> None:
    """Write the model (in the dtype the input was saved in; `state`: the weights
    gathered from FSDP shards) and remediation.json into the run's output folder, then
    rename it to `out_dir`."""
    tmp = run.output_dir
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        _write_model(model, model_dir, tmp, _saved_dtype(model_dir), state)
        record.output_path, record.output_sha256 = redact_path(out_dir), weights_sha256(tmp)
        record.write(tmp)
        _move_into_place(tmp, out_dir)
    except OSError as exc:
        raise output_error(Path(exc.filename) if exc.filename else tmp, exc) from None


@dataclass
class _Job:
    """What one run trains and measures on."""

    windows: list[ForgetWindow]
    retain: list[RetainWindow]
    probes: list[Probe]
    measure: Callable[[Sequence[str]], list[Measurement]]
    screen: Callable[[Sequence[str]], dict[str, tuple[float, bool]]]
    window_tokens: int
    retain_tokens: int
    distinct_probes: int
    pad_id: int


def _prepare(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    *,
    context: int,
    data: CorpusSpec,
    forget: Sequence[Finding],
    options: EraseOptions,
    shard: Shard = LOCAL,
) -> _Job:

    config = options.config
    window = clamp_tokens(config.window_tokens, context, "window tokens")
    retain_tokens = clamp_tokens(config.retain_tokens, context, "retain tokens")
    texts = load_texts(data, {f.sample_id for f in forget})
    windows = build_forget_windows(forget, texts, tokenizer, window)
    measure_config = MeasureConfig(batch_tokens=options.batch_tokens, samples=0)
    probes = build_probes(
        forget,
        texts,
        tokenizer,
        context_length=context,
        prefix_tokens=options.prefix_tokens,
        decode_margin=measure_config.decode_margin,
    )
    retain = build_retain_windows(
        _retain_texts(data, options.retain, forget),
        tokenizer,
        retain_tokens,
        config.retain_windows,
        seed=config.seed,
    )
    measure, distinct = measure_by_id(model, tokenizer, probes, measure_config, shard=shard)
    screen = screen_by_id(model, tokenizer, probes, measure_config, shard=shard)
    also = options.also_prefix_tokens
    if also and also != options.prefix_tokens:  # forgotten means forgotten from both
        more = build_probes(
            forget, texts, tokenizer, context_length=context, prefix_tokens=also,
            decode_margin=measure_config.decode_margin,
        )  # fmt: skip
        second, _ = measure_by_id(model, tokenizer, more, measure_config, shard=shard)
        measure = _worst_of(measure, second)
        screen = _worst_screen(
            screen, screen_by_id(model, tokenizer, more, measure_config, shard=shard)
        )
    pad_id = pad_token_id(tokenizer, model)
    return _Job(windows, retain, probes, measure, screen, window, retain_tokens, distinct, pad_id)


def _worst_of(first: Measure, second: Measure) -> Measure:
    """Both measures of the same findings (two prompt lengths), the worse of each: the
    loop then calls a finding forgotten only when it is forgotten from both, as the
    gate's verify step judges it; else a finding memorized from the shorter prompt
    alone would count as forgotten at once, and its round would end after one epoch."""
    return lambda ids: worst_case(first(ids), second(ids))


def _worst_screen(first: Screen, second: Screen) -> Screen:
    def screen(ids: Sequence[str]) -> dict[str, tuple[float, bool]]:
        a, b = first(ids), second(ids)
        return {fid: (max(a[fid][0], b[fid][0]), a[fid][1] or b[fid][1]) for fid in ids}

    return screen


def _retain_texts(
    data: CorpusSpec, retain: CorpusSpec | None, forget: Sequence[Finding]
) -> Iterable[tuple[str, str]]:
    if retain is not None:
        return ((s.id, s.text) for s in iter_samples(retain))
    dirty = {f.sample_id for f in forget}
    return ((s.id, s.text) for s in iter_samples(data) if s.id not in dirty)


ProbeKey = tuple[tuple[int, ...], tuple[int, ...]]
SCREEN_N = 1 << 30  # an EL n longer than any secret: one greedy decode per finding


def _distinct(probes: Sequence[Probe], ids: Sequence[str]) -> tuple[list[ProbeKey], list[Probe]]:
    """The distinct (prefix, secret) pairs among `ids`' probes, first probe of each."""
    by_id = {p.finding_id: p for p in probes}
    unique: dict[ProbeKey, Probe] = {}
    for fid in ids:
        probe = by_id[fid]
        unique.setdefault((probe.prefix_ids, probe.secret_ids), probe)
    return list(unique), list(unique.values())


def measure_by_id(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    probes: Sequence[Probe],
    config: MeasureConfig,
    thresholds: Thresholds | None = None,
    *,
    shard: Shard = LOCAL,
) -> tuple[Callable[[Sequence[str]], list[Measurement]], int]:
    """A measure function for the loop: finding ids in, Measurements out.

    Probes with the same prefix and secret tokens (copies of a file) are measured once:
    greedy decoding is deterministic, so their results are the same. The thresholds
    only set the `memorized` flag, which the loop does not read. Under a launcher,
    `shard` shares the measuring out and every process gets every measurement.
    """

    marks = thresholds or Thresholds(ma=1.0, el_10=1.0, source="unused")
    by_id = {p.finding_id: p for p in probes}

    def measure(ids: Sequence[str]) -> list[Measurement]:
        keys, unique = _distinct(probes, ids)
        found = dict(
            zip(
                keys,
                measure_probes(model, tokenizer, unique, marks, config, shard=shard),
                strict=True,
            )
        )
        out = []
        for fid in ids:
            probe = by_id[fid]
            m = found[(probe.prefix_ids, probe.secret_ids)]
            out.append(replace(m, finding_id=fid, sample_id=probe.sample_id))
        return out

    return measure, len(_distinct(probes, list(by_id))[0])


def screen_by_id(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    probes: Sequence[Probe],
    config: MeasureConfig,
    *,
    shard: Shard = LOCAL,
) -> Callable[[Sequence[str]], dict[str, tuple[float, bool]]]:
    """MA and greedy extraction only (finding id -> (MA, extracted)), for the loop's screen.

    `score_probes` with a single EL n longer than any secret decodes one row per probe
    (the whole secret from the prefix, which also serves the verbatim attack) instead of
    the m − n + 1 rows EL_10 needs; its MA is the same teacher-forced pass.
    """

    cheap = replace(config, el_ns=(SCREEN_N,), extraction=True, samples=0)
    by_id = {p.finding_id: p for p in probes}

    def screen(ids: Sequence[str]) -> dict[str, tuple[float, bool]]:
        keys, unique = _distinct(probes, ids)
        scores = dict(
            zip(keys, score_probes(model, tokenizer, unique, cheap, shard=shard), strict=True)
        )
        out = {}
        for fid in ids:
            probe = by_id[fid]
            s = scores[(probe.prefix_ids, probe.secret_ids)]
            out[fid] = (s.ma, bool(s.extracted_greedy))
        return out

    return screen


def _unlearn(
    model: torch.nn.Module,
    job: _Job,
    *,
    before: Sequence[Measurement],
    thresholds: Thresholds,
    config: UnlearnConfig,
    checkpoints: Checkpointer,
    report: Callable[[EpochLog], None] | None,
    engine: Engine,
    heldout: HeldoutSlice | None = None,
) -> UnlearnResult:
    """The loop. One process: checkpoints after every epoch, and a first Ctrl-C/SIGTERM
    stops at the next safe point. Several processes: no checkpoints (all would have to
    stop at the same step); the first process keeps the best weights on disk."""
    config = config.model_copy(
        update={"window_tokens": job.window_tokens, "retain_tokens": job.retain_tokens}
    )
    single = not engine.shard.distributed
    steer = None
    if config.lr == "auto":
        probe, steer = _auto_lr(
            model, job, before, thresholds=thresholds, config=config, engine=engine,
            heldout=heldout, spill=checkpoints.folder,
        )  # fmt: skip
        config = config.model_copy(update={"lr": probe.chosen})
    unlearner = Unlearner(
        model,
        job.windows,
        job.retain,
        before=before,
        measure=job.measure,
        thresholds=thresholds,
        config=config,
        pad_id=job.pad_id,
        best_dir=checkpoints.best_dir if engine.is_main else None,
        report=report,
        screen=job.screen,
        engine=engine,
        hooks=checkpoints if single else None,
        steer=steer,
        heldout=heldout,
    )
    if not single:
        result = unlearner.run()
    else:
        with STOP.deferring():
            result = unlearner.run()
    result.lr_probe = None if steer is None else steer.probe
    return result


def _auto_lr(
    model: torch.nn.Module,
    job: _Job,
    before: Sequence[Measurement],
    *,
    thresholds: Thresholds,
    config: UnlearnConfig,
    engine: Engine,
    heldout: HeldoutSlice | None,
    spill: Path,
) -> tuple[LrProbe, LrSteer]:
    """`lr: auto`: the probe's rate, and the steering of it during the loop."""
    if engine.shard.distributed:
        raise InputError("lr auto runs in a single process: give a number under accelerate launch")
    risky = {m.finding_id for m in before if m.memorized or m.extracted}
    active = [w for w in job.windows if w.finding_ids & risky]
    probe = probe_lr(
        model, active or job.windows, job.retain, before=before, thresholds=thresholds,
        config=config, pad_id=job.pad_id, heldout=heldout, spill=spill,
    )  # fmt: skip
    used = min(config.batch_size, len(job.retain))
    windows = watch_windows(job.retain, used)
    steer = LrSteer(
        lambda: WatchKL(model, windows, job.pad_id), probe, config, heldout=heldout is not None
    )
    return probe, steer


def _heldout_texts(options: EraseOptions) -> list[str] | None:
    if options.heldout is None:
        return None

    return [text for _, text in clean_texts(options.heldout, options.heldout_findings)]


def _perplexity(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str] | None
) -> Perplexity | None:
    if texts is None:
        return None

    return perplexity(model, tokenizer, texts)


def _humaneval(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, problems: int
) -> HumanEvalResult | None:
    if problems <= 0:
        return None

    return humaneval(model, tokenizer, limit=problems)


def _utility_after(
    before: UtilityFigures,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    heldout: list[str] | None,
    problems: int,
) -> UtilityFigures:
    """The figures before, with the remediated model's beside them."""
    ppl = _perplexity(model, tokenizer, heldout) if before.perplexity_before is not None else None
    he = _humaneval(model, tokenizer, problems) if before.humaneval_before is not None else None
    return before.model_copy(update={"perplexity_after": ppl, "humaneval_after": he})


def _saved_dtype(model_dir: Path) -> str | None:
    """The dtype the input's config declares (the output is saved in it), if any."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("dtype") or config.get("torch_dtype")
    return value if value in ("float32", "bfloat16", "float16") else None


def _write_model(
    model: torch.nn.Module,
    model_dir: Path,
    tmp: Path,
    dtype: str | None,
    state: dict[str, Any] | None = None,
) -> None:
    """Tokenizer and other non-weight files copied as they are; weights saved anew, in
    the dtype the input was saved in (`state`: the weights gathered from FSDP shards)."""

    if dtype is not None:
        if state is None:
            model.to(getattr(torch, dtype))
        else:
            state = {k: v.to(getattr(torch, dtype)) for k, v in state.items()}
    _copy_other_files(model_dir, tmp)
    for stale in tmp.glob("*.safetensors.index.json"):
        stale.unlink()

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # no shard-writing bar
    try:
        extra = {} if state is None else {"state_dict": state}
        model.save_pretrained(str(tmp), **extra)  # type: ignore[operator]
    except Exception as exc:  # safetensors reports a full disk as its own error type
        if isinstance(exc, OSError) or "os error 28" not in str(exc):
            raise
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp)) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _copy_other_files(model_dir: Path, tmp: Path) -> None:
    """The input's files but its weights (tokenizer, card, ...); of a Hub snapshot only
    those a Hub id fetches; of a GGUF file, the tokenizer it holds."""
    if is_gguf(model_dir):  # the config comes from save_pretrained
        save_gguf_tokenizer(model_dir, tmp)
        return
    hub = snapshot_repo_folder(model_dir) is not None
    for path in sorted(model_dir.iterdir()):
        other = not path.name.endswith(WEIGHT_SUFFIXES) and path.name != RECORD_NAME
        if path.is_file() and other and (not hub or is_model_file(path.name)):
            shutil.copyfile(path, tmp / path.name)


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():  # --force: the old folder goes only once the new one is complete
        trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        out_dir.rename(trash / out_dir.name)
        tmp.rename(out_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        tmp.rename(out_dir)


def peak_memory_bytes() -> int:
    """Peak resident memory of this process so far (ru_maxrss)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def peak_gpu_memory_bytes() -> int:
    """Peak GPU memory torch allocated in this process (0 without CUDA)."""

    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else 0


def _record(
    result: UnlearnResult,
    job: _Job,
    *,
    options: EraseOptions,
    thresholds: Thresholds,
    utility: UtilityFigures,
) -> Remediation:
    lr = result.lr_probe.chosen if result.lr_probe is not None else options.config.lr
    config = options.config.model_copy(
        update={"window_tokens": job.window_tokens, "retain_tokens": job.retain_tokens, "lr": lr}
    )
    return Remediation(
        config=config,
        prefix_tokens=options.prefix_tokens,
        device=options.device,
        dtype=options.dtype,
        forget_findings=[o.finding_id for o in result.outcomes],
        forget_samples=len({o.before.sample_id for o in result.outcomes}),
        epochs=result.epochs,
        best_epoch=result.best_epoch,
        steps=result.steps,
        stop_reason=result.stop_reason,
        unlearn_seconds=result.seconds,
        peak_memory_bytes=peak_memory_bytes(),
        peak_gpu_memory_bytes=peak_gpu_memory_bytes(),
        thresholds=thresholds,
        samples=SampleCounts(
            forget_findings=len(result.outcomes),
            forget_windows=len(job.windows),
            distinct_probes=job.distinct_probes,
            retain_windows=len(job.retain),
            forgotten=result.forgotten,
        ),
        kl_reference=KLReference(kind=result.reference_kind, bytes=result.reference_bytes),
        outcomes=list(result.outcomes),
        history=list(result.history),
        lr_probe=result.lr_probe,
        utility=utility,
    )
