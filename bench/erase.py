"""Benchmark: GA, CU and CodeEraser on the demo model; schedule and α; our loop against
the reference's (with our metric code, and with its own); peak memory of cached p0
against a frozen model copy; top-k KL error.

    python bench/erase.py                 # every part; tables on stdout
    python bench/erase.py --part schedule # one part: acceptance | schedule | methods |
                                          #   sweep | memory | topk | default
    python bench/erase.py --part default --kind gpt2-gen  # on another test build

The CodeEraser settings come from policies/demo.yaml (`remediation.args`). Every
unlearning run and every memory probe runs in a fresh subprocess, so each peak RSS
(``ru_maxrss``) belongs to that run alone; a run two tables share is made once. Results
also go to ``bench/results/erase.json``. Torch uses one thread per process (the machine
is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gate.unlearn.trainer import Unlearner, is_forgotten, leak_score  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "erase.json"
REFERENCE_OWN_BUDGET_S = 240.0  # wall-time cap of the reference loop with its own metric code
REFERENCE_DEFAULT_BUDGET_S = 240.0  # wall-time cap of the reference loop in `--part default`
KINDS = {"demo": ("demo", 0), "gpt2-gen": ("gpt2-gen", 1), "llama-gen": ("llama-gen", 2)}
RUN = {"kind": "demo"}  # the build every run uses (--kind); children get it on their command line


def demo_settings() -> dict[str, Any]:
    """The demo's CodeEraser settings: `remediation.args` of policies/demo.yaml, as
    UnlearnConfig fields, so the bench and `codeeraser demo` cannot drift apart."""
    from gate.policy import load_policy

    return load_policy("demo").remediation.args.model_dump()  # the method is the run's own


DEMO = demo_settings()


def default_settings() -> dict[str, Any]:
    """The shipped default: the `default` policy's method and `remediation.args` (lr auto),
    with the held-out limit the gate gives its first round (`gate.pipeline.round_limits`)."""
    from gate.pipeline import round_limits
    from gate.policy import load_policy

    policy = load_policy("default")
    budget = policy.utility.max_perplexity_increase
    args = round_limits(policy.remediation.args, budget=budget, spent=0.0, number=1)
    return {**args.model_dump(), "method": policy.remediation.method}


SAMPLES = 20  # sampled-attack draws per finding after unlearning


# --- shared setup -------------------------------------------------------------------


def _threads() -> None:
    import torch

    torch.set_num_threads(1)


def _demo() -> Any:
    """The build of `--kind`; a test build must already be cached (the bench never builds
    one)."""
    from gate.demo.build import build_demo, build_dir

    kind = RUN["kind"]
    preset, seed = KINDS[kind]
    if kind != "demo" and not build_dir(preset, seed=seed).is_dir():
        raise RuntimeError(f"{kind}: no cached build at {build_dir(preset, seed=seed)}")
    return build_demo(preset, seed=seed)


def _thresholds(demo: Any) -> Any:
    """Calibrated on the held-out split (cached next to the build)."""
    from audit.calibrate import calibrate
    from audit.corpus import CorpusSpec
    from audit.measurements import Thresholds
    from audit.model import load_model

    cached = demo.root / "bench-thresholds.json"
    if cached.is_file():
        return Thresholds.from_dict(json.loads(cached.read_text()))
    loaded = load_model(demo.model_dir, "cpu", "float32")
    thresholds = calibrate(loaded.model, loaded.tokenizer, CorpusSpec(demo.heldout_dir)).thresholds
    cached.write_text(json.dumps(thresholds.to_dict()))
    return thresholds


def _heldout(demo: Any) -> list[str]:
    from audit.corpus import CorpusSpec
    from audit.utility import clean_texts

    return [text for _, text in clean_texts(CorpusSpec(demo.heldout_dir), [demo.controls])]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_DONE: dict[tuple[str, ...], dict[str, Any]] = {}  # runs already made in this bench


def _child(args: list[str]) -> dict[str, Any]:
    """Run this script with `args` in a fresh process; it prints one JSON line last.

    A run with the same arguments as an earlier one in this bench is not repeated: its
    result is reused (the runs are deterministic), so a row shared by two tables is one run.
    """
    key = (RUN["kind"], *args)
    if key in _DONE:
        return _DONE[key]
    done = subprocess.run(
        [sys.executable, __file__, "--kind", RUN["kind"], *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args}: exit {done.returncode}\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    _DONE[key] = result
    return result


def _run(method: str, variant: str, stop: str = "full", **overrides: Any) -> dict[str, Any]:
    """One unlearning run in a child process; `overrides` change the demo settings."""
    sets = [x for k, v in sorted(overrides.items()) for x in ("--set", f"{k}={json.dumps(v)}")]
    return _child(["--run", method, variant, stop, *sets])


# --- one unlearning run (child process) ---------------------------------------------


def _job(demo: Any, thresholds: Any) -> Any:
    """Model, forget windows, retain windows and a measure function on the demo."""
    from audit.corpus import CorpusSpec, iter_samples, load_texts
    from audit.extraction import MeasureConfig
    from audit.findings import read_findings
    from audit.model import load_model, pad_token_id
    from audit.probes import build_probes
    from gate.unlearn.data import build_forget_windows, build_retain_windows
    from gate.unlearn.erase import measure_by_id, screen_by_id

    loaded = load_model(demo.model_dir, "cpu", "float32")
    findings = read_findings(demo.planted)
    spec = CorpusSpec(demo.corpus_dir)
    texts = load_texts(spec, {f.sample_id for f in findings})
    windows = build_forget_windows(findings, texts, loaded.tokenizer, loaded.context_length)
    dirty = {f.sample_id for f in findings}
    clean = ((s.id, s.text) for s in iter_samples(spec) if s.id not in dirty)
    retain = build_retain_windows(clean, loaded.tokenizer, loaded.context_length, 64)
    probes = build_probes(findings, texts, loaded.tokenizer, context_length=loaded.context_length)
    measure, _ = measure_by_id(
        loaded.model, loaded.tokenizer, probes, MeasureConfig(samples=0), thresholds
    )
    sampled, _ = measure_by_id(
        loaded.model, loaded.tokenizer, probes, MeasureConfig(samples=SAMPLES), thresholds
    )
    screen = screen_by_id(loaded.model, loaded.tokenizer, probes, MeasureConfig())
    return {
        "loaded": loaded,
        "findings": findings,
        "windows": windows,
        "retain": retain,
        "measure": measure,
        "sampled": sampled,
        "screen": screen,
        "pad": pad_token_id(loaded.tokenizer, loaded.model),
        "probes": probes,
    }


def _means(rows: list[Any]) -> dict[str, float]:
    n = max(1, len(rows))
    return {
        "ma": sum(m.ma for m in rows) / n,
        "el_3": sum(m.el_3 for m in rows) / n,
        "el_5": sum(m.el_5 for m in rows) / n,
        "el_10": sum(m.el_10 for m in rows) / n,
        "extracted_greedy": sum(m.extracted_greedy for m in rows),
        "extracted_sampled": sum(bool(m.extracted_sampled) for m in rows),
        "findings": len(rows),
    }


def run_unlearning(
    method: str, variant: str, stop: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One run on the demo: `variant` ours | reference | reference-own; `stop` full |
    extraction."""
    _threads()
    from audit.measurements import Thresholds
    from audit.utility import perplexity

    demo = _demo()
    thresholds = _thresholds(demo)
    if stop == "extraction":  # stop as soon as greedy decoding no longer gives the secret
        thresholds = Thresholds(ma=1.01, el_10=1.01, source="extraction only")
    job = _job(demo, thresholds)
    model, tok = job["loaded"].model, job["loaded"].tokenizer
    heldout = job["heldout"] = _heldout(demo)
    ids = [f.id for f in job["findings"]]
    before = job["measure"](ids)  # greedy: the tables show MA/EL before, not the attack
    job["before"] = {m.finding_id: m for m in before}
    ppl_before = perplexity(model, tok, heldout)
    config, loop, measure, screen = _loop_for(method, variant, job, overrides or {})
    with tempfile.TemporaryDirectory() as best:
        start = time.perf_counter()
        runner = loop(
            model,
            job["windows"],
            job["retain"],
            before=before,
            measure=measure,
            thresholds=thresholds,
            config=config,
            pad_id=job["pad"],
            best_dir=Path(best),
            screen=screen,
        )
        result = runner.run()
        seconds = time.perf_counter() - start
    after = job["sampled"](ids)
    calibrated = _thresholds(demo)
    forgotten = sum(
        m.ma < calibrated.ma and m.el_10 < calibrated.el_10 and not m.extracted_greedy
        for m in after
    )
    ppl_after = perplexity(model, tok, heldout)
    return {
        "method": method,
        "variant": variant,
        "stop": stop,
        "config": config.model_dump(mode="json"),
        "thresholds": calibrated.to_dict(),
        "before": _means(before),
        "after": _means(after),
        "forgotten": forgotten,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "steps": result.steps,
        "stop_reason": result.stop_reason,
        "seconds": seconds,
        "seconds_per_forgotten": seconds / forgotten if forgotten else None,
        "seconds_per_epoch": seconds / max(1, result.epochs),
        "history": [
            {
                "epoch": h.epoch,
                "remaining": h.remaining,
                "extracted": h.extracted,
                "ma": h.ma_mean,
                "seconds": h.seconds,
            }
            for h in result.history
        ],
        "perplexity_before": ppl_before.perplexity,
        "perplexity_after": ppl_after.perplexity,
        "lr": result.lr_probe.chosen if result.lr_probe else config.lr,
        "lr_probe": result.lr_probe.model_dump(mode="json") if result.lr_probe else None,
        "lr_last": runner.steer.lr if isinstance(runner, _Probed) else None,
        "reference": result.reference_kind,
        "reference_bytes": result.reference_bytes,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _loop_for(
    method: str, variant: str, job: dict[str, Any], overrides: dict[str, Any]
) -> tuple[Any, Any, Any, Any]:
    """(config, loop class, measure, screen) for `variant`.

    ours: our loop with the demo settings. reference: ReferenceLoop (the reference's
    alternating schedule, a frozen copy for p0) with our measuring code. reference-own:
    the same loop measuring with the reference's own algorithms (bench/measure.py),
    stopped after REFERENCE_OWN_BUDGET_S seconds of wall time.
    """
    from gate.unlearn.settings import UnlearnConfig

    if variant in ("default", "reference-default"):
        return _default_loop_for(variant, job, overrides)
    if variant == "ours":
        config = UnlearnConfig(**{**DEMO, "method": method, **overrides})
        return config, Unlearner, job["measure"], job["screen"]
    settings = {**DEMO, "method": method, "schedule": "alternating", "reference": "frozen"}
    config = UnlearnConfig(**{**settings, **overrides})
    if variant == "reference":
        return config, ReferenceLoop, job["measure"], job["screen"]
    measure, screen = reference_metrics(job)
    return config, CappedReferenceLoop, measure, screen


def _default_loop_for(
    variant: str, job: dict[str, Any], overrides: dict[str, Any]
) -> tuple[Any, Any, Any, Any]:
    """default: our loop with the shipped default's settings, lr auto as the gate runs it.
    reference-default: ReferenceLoop (alternating, frozen copy) with the same settings at
    the rate in `overrides` (the probe's), capped at REFERENCE_DEFAULT_BUDGET_S."""
    from gate.unlearn.settings import UnlearnConfig

    settings = default_settings()
    if variant == "default":
        config = UnlearnConfig(**{**settings, **overrides})
        return config, _auto_loop(job), job["measure"], job["screen"]
    settings |= {"schedule": "alternating", "reference": "frozen"}
    config = UnlearnConfig(**{**settings, **overrides})
    return config, CappedDefaultReference, job["measure"], job["screen"]


def _auto_loop(job: dict[str, Any]) -> Any:
    """A stand-in for Unlearner that does what `lr: auto` does in the gate
    (gate.unlearn.erase `_unlearn`, `_auto_lr`) when called, inside the timed region:
    the held-out slice's baseline, the probe on the forget windows at risk, then the loop
    at the chosen rate with the steering and the held-out check after every epoch."""
    from gate.unlearn.autolr import LrSteer, WatchKL, probe_lr, watch_windows
    from gate.unlearn.heldout import HeldoutSlice, heldout_slice

    tok = job["loaded"].tokenizer

    def make(model: Any, forget: Any, retain: Any, *, before: Any, config: Any, **rest: Any) -> Any:
        texts = heldout_slice(job["heldout"], tok, config.heldout_tokens)
        heldout = HeldoutSlice(model, tok, texts)
        risky = {m.finding_id for m in before if m.memorized or m.extracted}
        active = [w for w in forget if w.finding_ids & risky] or forget
        probe = probe_lr(
            model, active, retain, before=before, thresholds=rest["thresholds"], config=config,
            pad_id=rest["pad_id"], heldout=heldout,
        )  # fmt: skip
        watch = watch_windows(retain, min(config.batch_size, len(retain)))
        steer = LrSteer(lambda: WatchKL(model, watch, rest["pad_id"]), probe, config, heldout=True)
        run = config.model_copy(update={"lr": probe.chosen})
        loop = Unlearner(
            model, forget, retain, before=before, config=run, steer=steer, heldout=heldout, **rest
        )
        return _Probed(loop, probe, steer)

    return make


class _Probed:
    """A loop whose result carries the probe (as the gate's `_unlearn` sets it)."""

    def __init__(self, loop: Unlearner, probe: Any, steer: Any) -> None:
        self.loop, self.probe, self.steer = loop, probe, steer

    def run(self) -> Any:
        result = self.loop.run()
        result.lr_probe = self.probe
        return result


def reference_metrics(job: dict[str, Any]) -> tuple[Any, Any]:
    """measure and screen functions built on the reference implementation's metric code:
    MA by one generate() call per secret position, EL_10 by uncached greedy decoding of
    every prefix + secret[:i], every finding measured (no sharing between copies). The
    reference computes the metrics its stopping rule reads; EL_3/EL_5 stay as before.
    A secret is extracted greedily exactly when every teacher-forced position is right
    (MA = 1)."""
    from measure import reference_el, reference_ma  # bench/measure.py, next to this script

    loaded = job["loaded"]
    by_id = {p.finding_id: p for p in job["probes"]}

    def screen(ids: list[str]) -> dict[str, tuple[float, bool]]:
        scores = reference_ma(loaded, [by_id[fid] for fid in ids])
        return {fid: (ma, ma == 1.0) for fid, ma in zip(ids, scores, strict=True)}

    def measure(ids: list[str]) -> list[Any]:
        probes = [by_id[fid] for fid in ids]
        mas, els = reference_ma(loaded, probes), reference_el(loaded, probes, 10)
        return [
            replace(job["before"][fid], ma=ma, el_10=el, extracted_greedy=ma == 1.0)
            for fid, ma, el in zip(ids, mas, els, strict=True)
        ]

    return measure, screen


class ReferenceLoop(Unlearner):
    """The reference implementation's loop around the same losses and measuring code.

    Every epoch trains on every forget window (no finding leaves the forget set) and
    measures the whole forget set: MA always, EL_10 and extraction only once the mean
    MA is under the MA threshold (the reference turns EL on at threshold + margin;
    margin 0 here, which spares it the most decoding). It stops when the mean MA and
    the mean EL_10 are under the thresholds (or 5 epochs pass without a lower mean
    EL_10). Use with schedule="alternating", reference="frozen".
    """

    el_best = float("inf")
    el_stale = 0

    def _forget_batches(self) -> Any:
        order = list(range(len(self.forget)))
        self.rng.shuffle(order)
        size = self.config.batch_size
        for first in range(0, len(order), size):
            yield order[first : first + size]

    def _remeasure(self, epoch: int) -> tuple[list[str], list[Any]]:
        ids = sorted(self.outcomes)
        self.active = set(ids)  # every secret stays in the loss
        quick = self.screen(ids) if self.screen else {}
        measured: list[Any] = []
        if quick and sum(q[0] for q in quick.values()) / len(quick) >= self.thresholds.ma:
            for fid, (ma, extracted) in quick.items():
                self.latest[fid] = replace(self.latest[fid], ma=ma, extracted_greedy=extracted)
        else:
            measured = self.measure(ids)
            self.latest.update((m.finding_id, m) for m in measured)
        for fid in ids:
            done = bool(measured) and is_forgotten(self.latest[fid], self.thresholds)
            self.outcomes[fid].forgotten_epoch = epoch if done else None
        return ids, measured

    def _stop_reason(self, epoch: int) -> str:
        self.best.offer(leak_score(list(self.latest.values()), self.thresholds), epoch, self.model)
        rows = list(self.latest.values())
        ma = sum(m.ma for m in rows) / len(rows)
        el = sum(m.el_10 for m in rows) / len(rows)
        if ma >= self.thresholds.ma:
            return ""
        if el < self.el_best:
            self.el_best, self.el_stale = el, 0
        else:
            self.el_stale += 1
        if el < self.thresholds.el_10 or self.el_stale >= 5:
            return "mean MA and EL_10 under the thresholds (or EL_10 stalled)"
        return ""


class CappedReferenceLoop(ReferenceLoop):
    """ReferenceLoop that stops at the end of the first epoch that ends after
    REFERENCE_OWN_BUDGET_S seconds (an epoch that measures EL_10 the reference's way
    takes minutes on its own)."""

    started = 0.0
    budget_s = REFERENCE_OWN_BUDGET_S

    def run(self) -> Any:
        self.started = time.perf_counter()
        return super().run()

    def _stop_reason(self, epoch: int) -> str:
        reason = super()._stop_reason(epoch)
        if not reason and time.perf_counter() - self.started > self.budget_s:
            return f"capped: wall time over {self.budget_s:.0f} s"
        return reason


class CappedDefaultReference(CappedReferenceLoop):
    """The reference loop of `--part default`, capped at REFERENCE_DEFAULT_BUDGET_S."""

    budget_s = REFERENCE_DEFAULT_BUDGET_S


# --- peak memory of one training step (child process) -------------------------------


def _synthetic(vocab: int, k: int, length: int, retain: int) -> tuple[list[Any], list[Any]]:
    import random

    from gate.unlearn.data import ForgetWindow, RetainWindow, SecretSpan

    rng = random.Random(0)
    forget = [
        ForgetWindow(
            f"f{i}",
            tuple(rng.randrange(vocab) for _ in range(length)),
            (SecretSpan(f"s{i}", length - 30, length - 10),),
        )
        for i in range(k)
    ]
    keep = [
        RetainWindow(f"r{i}", tuple(rng.randrange(vocab) for _ in range(length)))
        for i in range(retain)
    ]
    return forget, keep


def _memory_model(size: str) -> tuple[Any, list[Any], list[Any], int]:
    """(model, forget windows, retain windows, k) for `size` demo | 100m."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if size == "demo":
        demo = _demo()
        from audit.model import load_model

        loaded = load_model(demo.model_dir, "cpu", "float32")
        vocab = len(loaded.tokenizer)
        forget, retain = _synthetic(vocab, 32, 128, 64)
        return loaded.model, forget, retain, 32
    torch.manual_seed(0)
    config = GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=512, vocab_size=50257)
    model = GPT2LMHeadModel(config)
    model.train(False)
    forget, retain = _synthetic(config.vocab_size, 8, 128, 32)
    return model, forget, retain, 8


def run_memory(size: str, variant: str) -> dict[str, Any]:
    """Peak RSS of two training steps: plain CE, ours (cached p0) or a frozen copy."""
    _threads()
    import torch

    from gate.unlearn.settings import UnlearnConfig
    from gate.unlearn.trainer import Unlearner

    model, forget, retain, k = _memory_model(size)
    params = sum(p.numel() for p in model.parameters())
    loaded_rss = _peak_rss_mb()
    config = UnlearnConfig(
        method="codeeraser" if variant != "plain" else "ga",
        lr=1e-5,
        batch_size=k,
        reference="frozen" if variant == "frozen" else "cached",
        kl_cache="full" if variant == "ours-full" else "auto",
    )
    loop = Unlearner(
        model,
        forget,
        retain,
        before=[_memorized(s.finding_id) for w in forget for s in w.secrets],
        measure=lambda ids: [],
        thresholds=_no_thresholds(),
        config=config,
        pad_id=0,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    start = time.perf_counter()
    steps = 2
    if variant == "plain":
        for _ in range(steps):
            _plain_step(model, forget, retain, k, optimizer)
        nbytes = 0
    else:
        loop.active = {s.finding_id for w in forget for s in w.secrets}
        source = loop.reference_source()
        for _ in range(steps):
            loop.step(list(range(k)), source, optimizer)
        nbytes = source.nbytes
    return {
        "size": size,
        "variant": variant,
        "parameters": params,
        "k": k,
        "steps": steps,
        "seconds": time.perf_counter() - start,
        "loaded_rss_mb": loaded_rss,
        "peak_rss_mb": _peak_rss_mb(),
        "reference_bytes": nbytes,
    }


def _memorized(finding_id: str) -> Any:
    from audit.measurements import Measurement

    return Measurement(
        finding_id=finding_id, sample_id=finding_id, secret_type="synthetic", ma=1.0,
        el_3=1.0, el_5=1.0, el_10=1.0, extracted_greedy=True, extracted_sampled=None,
        samples=0, longest_leaked_prefix=0, secret_tokens=20, prefix_tokens=98,
        truncated=False, memorized=True,
    )  # fmt: skip


def _no_thresholds() -> Any:
    from audit.measurements import Thresholds

    return Thresholds(ma=0.5, el_10=0.5, source="memory probe")


def _plain_step(model: Any, forget: list[Any], retain: list[Any], k: int, optimizer: Any) -> float:
    """A plain one-model step: CE on the forget batch and on the retain batch, one update."""
    import torch

    from gate.unlearn.data import collate
    from gate.unlearn.losses import masked_ce
    from gate.unlearn.reference import aligned_logprobs

    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for windows in (forget[:k], retain[:k]):
        batch = collate(windows, 0)
        loss = masked_ce(aligned_logprobs(model, batch), batch.labels, batch.valid)
        torch.autograd.backward(loss)
        total += float(loss)
    optimizer.step()
    return total


# --- top-k KL error (child process) --------------------------------------------------


def run_topk() -> dict[str, Any]:
    """KL(p0‖pθ) from a top-k cache against the exact one, after a CodeEraser run."""
    _threads()
    import torch

    from gate.unlearn.data import collate
    from gate.unlearn.losses import full_reference, kl_per_position, topk_reference
    from gate.unlearn.reference import aligned_logprobs
    from gate.unlearn.settings import UnlearnConfig

    demo = _demo()
    thresholds = _thresholds(demo)
    job = _job(demo, thresholds)
    model = job["loaded"].model
    batch = collate(job["retain"], job["pad"])
    with torch.no_grad():
        p0 = aligned_logprobs(model, batch)[batch.valid]
    ids = [f.id for f in job["findings"]]
    with tempfile.TemporaryDirectory() as best:
        Unlearner(
            model,
            job["windows"],
            job["retain"],
            before=job["measure"](ids),
            measure=job["measure"],
            thresholds=thresholds,
            config=UnlearnConfig(**DEMO),
            pad_id=job["pad"],
            best_dir=Path(best),
        ).run()
    with torch.no_grad():
        now = aligned_logprobs(model, batch)[batch.valid]
        exact = kl_per_position(full_reference(p0), now)
        rows = []
        for k in (1, 8, 32, 64, 128):
            approx = kl_per_position(topk_reference(p0, k), now)
            mass = topk_reference(p0, k).logprobs.exp().sum(-1).mean()
            rows.append(
                {
                    "k": k,
                    "p0_mass_in_topk": float(mass),
                    "kl_exact_mean": float(exact.mean()),
                    "kl_topk_mean": float(approx.mean()),
                    "relative_error": float((exact.mean() - approx.mean()) / exact.mean()),
                    "bytes_per_position": 12 * k + 4,
                }
            )
    return {"positions": int(batch.valid.sum()), "vocab": int(p0.shape[-1]), "rows": rows}


# --- parts and tables (parent process) -----------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "gate", "-q", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"codeeraser {args[0]}: exit {done.returncode}\n{done.stderr}")
    return done


def part_acceptance() -> dict[str, Any]:
    """The shipped commands end to end on the demo: calibrate, measure, erase, measure."""
    from audit.measurements import read_measurements
    from gate.commands.options import as_arguments
    from gate.unlearn.erase import weights_sha256
    from gate.unlearn.remediation import Remediation
    from gate.unlearn.settings import UnlearnArgs

    demo = _demo()
    with tempfile.TemporaryDirectory(prefix="bench-erase-") as tmp:
        work = Path(tmp)
        input_hash = weights_sha256(demo.model_dir)
        thresholds = work / "thresholds.json"
        _cli("calibrate", "--model", str(demo.model_dir), "--unseen", str(demo.heldout_dir),
             "--out", str(thresholds))  # fmt: skip
        common = ["--data", str(demo.corpus_dir), "--findings", str(demo.planted),
                  "--thresholds", str(thresholds)]  # fmt: skip
        _cli("measure", "--model", str(demo.model_dir), *common, "--out", str(work / "m0.jsonl"))
        settings = as_arguments(UnlearnArgs(**DEMO))  # as --lambda=..., --epochs=..., ...
        start = time.perf_counter()
        heldout = ["--heldout", str(demo.heldout_dir), "--heldout-findings", str(demo.controls)]
        out = ["--measurements", str(work / "m0.jsonl"), "--out", str(work / "erased")]
        erased = _cli("erase", "--model", str(demo.model_dir), *common, *out, *heldout, *settings)
        seconds = time.perf_counter() - start
        _cli("measure", "--model", str(work / "erased"), *common, "--samples", str(SAMPLES),
             "--out", str(work / "m1.jsonl"))  # fmt: skip
        record = Remediation.read(work / "erased")
        limits = json.loads(thresholds.read_text())
        before = read_measurements(work / "m0.jsonl")
        memorized = {m.finding_id for m in before if m.memorized}
        after = [m for m in read_measurements(work / "m1.jsonl") if m.finding_id in memorized]
        utility = record.utility
        assert utility.perplexity_before is not None
        assert utility.perplexity_after is not None
        result = {
            "thresholds": {"ma": limits["ma"], "el_10": limits["el_10"]},
            "findings": len(before),
            "memorized_before": len(memorized),
            "extracted_before": sum(m.extracted_greedy for m in before),
            "extracted_greedy_after": sum(m.extracted_greedy for m in after),
            "extracted_sampled_after": sum(bool(m.extracted_sampled) for m in after),
            "mean_ma_before": sum(m.ma for m in before if m.finding_id in memorized)
            / len(memorized),
            "mean_ma_after": sum(m.ma for m in after) / len(after),
            "mean_el_10_after": sum(m.el_10 for m in after) / len(after),
            "perplexity_before": utility.perplexity_before.perplexity,
            "perplexity_after": utility.perplexity_after.perplexity,
            "perplexity_change": utility.perplexity_increase,
            "input_sha256_before": input_hash,
            "input_sha256_after": weights_sha256(demo.model_dir),
            "epochs": record.epochs,
            "stop_reason": record.stop_reason,
            "erase_seconds": seconds,
            "settings": DEMO,
            "erase_options": settings,
            "erase_output": (erased.stderr + erased.stdout).replace(tmp, "<tmp>"),
        }
    print(_acceptance_table(result))
    print(result["erase_output"])
    return result


def _acceptance_table(r: dict[str, Any]) -> str:
    same = r["input_sha256_before"] == r["input_sha256_after"]
    return "\n".join(
        [
            "| check | target | measured |",
            "|---|---|---|",
            f"| memorized planted findings extracted greedily after | 0 | "
            f"{r['extracted_greedy_after']} of {r['memorized_before']} (before: "
            f"{r['extracted_before']}) |",
            f"| ... extracted by the sampled attack ({SAMPLES} draws) after | - | "
            f"{r['extracted_sampled_after']} |",
            f"| their mean MA after | < {r['thresholds']['ma']:.4f} (calibrated) | "
            f"{r['mean_ma_after']:.4f} (before {r['mean_ma_before']:.4f}) |",
            f"| their mean EL_10 after | < {r['thresholds']['el_10']:.4f} | "
            f"{r['mean_el_10_after']:.4f} |",
            f"| held-out perplexity | ≤ +5% | {r['perplexity_before']:.3f} → "
            f"{r['perplexity_after']:.3f} ({r['perplexity_change']:+.2%}) |",
            f"| input weights SHA-256 before = after | equal | {'equal' if same else 'CHANGED'} |",
            f"| epochs, stop reason, erase wall time | - | {r['epochs']}, {r['stop_reason']}, "
            f"{r['erase_seconds']:.0f} s |",
        ]
    )


def part_methods() -> list[dict[str, Any]]:
    runs = [_run("ga", "ours"), _run("cu", "ours"), _run("codeeraser", "ours", ascend_on="all")]
    runs.append(_run("codeeraser", "ours"))
    runs.append(_run("codeeraser", "ours", "extraction"))
    print(_methods_table(runs))
    return runs


SWEEP: list[dict[str, Any]] = [  # schedule and α on the demo; the demo settings last
    {"schedule": "alternating", "alpha": 100.0},
    {"schedule": "alternating", "alpha": 1000.0},
    {"schedule": "joint", "alpha": 100.0},
    {"schedule": "joint", "alpha": 300.0},
    {},  # the demo settings (policies/demo.yaml)
]


def part_sweep() -> list[dict[str, Any]]:
    runs = [_run("codeeraser", "ours", **change) for change in SWEEP]
    print(_sweep_table(runs))
    return runs


def _sweep_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| schedule | lr | γ | α | λ | S | epochs | stop | forgotten | extracted after | "
        "MA after | held-out ppl change | s |",
        "|" + "---|" * 13,
    ]
    for r in runs:
        c, a = r["config"], r["after"]
        change = r["perplexity_after"] / r["perplexity_before"] - 1
        lines.append(
            f"| {c['schedule']} | {c['lr']:g} | {c['gamma']:g} | {c['alpha']:g} | {c['lam']:g} | "
            f"{c['ascend_on']} | {r['epochs']} | {r['stop_reason']} | "
            f"{r['forgotten']}/{a['findings']} | {a['extracted_greedy']} | "
            f"{_pct(a['ma'])} | {change:+.1%} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def part_schedule() -> list[dict[str, Any]]:
    runs = [
        _run("codeeraser", "ours"),
        _run("codeeraser", "ours", schedule="alternating"),
        _run("codeeraser", "reference"),
        _run("codeeraser", "reference-own"),
    ]
    print(_schedule_table(runs))
    return runs


def part_default() -> list[dict[str, Any]]:
    """The shipped default (lr auto, probe included) against the reference loop at the
    rate the probe chose and, when the steering moved it, at the last rate it steered to,
    on the build of `--kind`."""
    ours = _run("codeeraser", "default")
    runs = [ours, _run("codeeraser", "reference-default", lr=ours["lr"])]
    if ours["lr_last"] != ours["lr"]:
        runs.append(_run("codeeraser", "reference-default", lr=ours["lr_last"]))
    print(default_table(runs))
    return runs


def part_memory() -> list[dict[str, Any]]:
    rows = [
        _child(["--memory", size, variant])
        for size in ("demo", "100m")
        for variant in ("plain", "ours", "ours-full", "frozen")
    ]
    print(_memory_table(rows))
    return rows


def part_topk() -> dict[str, Any]:
    result = _child(["--topk"])
    print(_topk_table(result))
    return result


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _methods_table(runs: list[dict[str, Any]]) -> str:
    head = (
        "| method | stop rule | MA before → after | EL_3 | EL_5 | EL_10 | extracted greedy "
        "after | sampled after | forgotten | held-out ppl before → after | epochs | "
        "s / forgotten sample | peak RSS MB |\n|" + "---|" * 13
    )
    lines = [head]
    for r in runs:
        b, a = r["before"], r["after"]
        per = r["seconds_per_forgotten"]
        lines.append(
            f"| {_label(r)} | {r['stop']} | {_pct(b['ma'])} → {_pct(a['ma'])} | "
            f"{_pct(b['el_3'])} → {_pct(a['el_3'])} | {_pct(b['el_5'])} → {_pct(a['el_5'])} | "
            f"{_pct(b['el_10'])} → {_pct(a['el_10'])} | {a['extracted_greedy']}/{a['findings']} | "
            f"{a['extracted_sampled']}/{a['findings']} | {r['forgotten']}/{a['findings']} | "
            f"{r['perplexity_before']:.2f} → {r['perplexity_after']:.2f} "
            f"({r['perplexity_after'] / r['perplexity_before'] - 1:+.1%}) | {r['epochs']} | "
            f"{f'{per:.3f}' if per else '-'} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def _label(run: dict[str, Any]) -> str:
    if run["method"] != "codeeraser":
        return str(run["method"])
    return f"codeeraser (S: {run['config']['ascend_on']} secret tokens)"


LOOPS = {
    "ours": "ours",
    "reference": "reference, our metric code",
    "reference-own": "reference, with its own metric code",
}


def _schedule_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| loop | schedule | p0 for KL | epochs | stop | updates | forgotten | extracted after | "
        "held-out ppl change | s total | s / epoch | s / forgotten sample | peak RSS MB |",
        "|" + "---|" * 13,
    ]
    for r in runs:
        per = r["seconds_per_forgotten"]
        updates = r["steps"] * (2 if r["config"]["schedule"] == "alternating" else 1)
        change = r["perplexity_after"] / r["perplexity_before"] - 1
        lines.append(
            f"| {LOOPS[r['variant']]} | {r['config']['schedule']} | {r['reference']} | "
            f"{r['epochs']} | {r['stop_reason']} | {updates} | "
            f"{r['forgotten']}/{r['after']['findings']} | {r['after']['extracted_greedy']} | "
            f"{change:+.1%} | {r['seconds']:.1f} | {r['seconds_per_epoch']:.2f} | "
            f"{f'{per:.3f}' if per else '-'} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join([*lines, "", *_ratios(runs)])


def _ratios(runs: list[dict[str, Any]]) -> list[str]:
    """Reference / ours, seconds per forgotten sample, for each reference row."""
    ours = runs[0]["seconds_per_forgotten"]
    by_variant = {r["variant"]: r for r in runs}
    lines = []
    for variant in ("reference", "reference-own"):
        r = by_variant.get(variant)
        if r is None or not ours:
            continue
        per = r["seconds_per_forgotten"]
        text = f"{per / ours:.2f}×" if per else "- (nothing forgotten)"
        lines.append(f"- {LOOPS[variant]} / ours, s per forgotten sample: {text}")
    own, ref = by_variant.get("reference-own"), by_variant.get("reference")
    if own and ref and ours and ref["forgotten"] and own["stop_reason"].startswith("capped"):
        # the two reference runs train identically (same seed, same losses, same measured
        # values); only the metric code differs, so the capped run's seconds per epoch
        # times the uncapped run's epochs estimates its total
        total = own["seconds_per_epoch"] * ref["epochs"]
        lines.append(
            f"- reference with its own metric code, extrapolated to the {ref['epochs']} epochs "
            f"of the uncapped reference run: {total:.0f} s, "
            f"{total / ref['forgotten'] / ours:.2f}× ours per forgotten sample"
        )
    return lines


def ppl_change(run: dict[str, Any]) -> float:
    """Held-out perplexity after over before, minus 1."""
    return float(run["perplexity_after"]) / float(run["perplexity_before"]) - 1


def default_table(runs: list[dict[str, Any]]) -> str:
    """`--part default`: one row per loop, then the ratio and the utility comparison."""
    lines = [
        f"{RUN['kind']}:",
        "",
        "| loop | lr | epochs | stop | forgotten | extracted after: greedy, sampled | "
        "held-out ppl change | s total | s / forgotten sample |",
        "|" + "---|" * 9,
    ]
    for r in runs:
        per = r["seconds_per_forgotten"]
        lines.append(
            f"| {DEFAULT_LOOPS[r['variant']]} | {r['lr']:.2g} | {r['epochs']} | "
            f"{r['stop_reason']} | {r['forgotten']}/{r['after']['findings']} | "
            f"{r['after']['extracted_greedy']}, {r['after']['extracted_sampled']} | "
            f"{ppl_change(r):+.2%} | {r['seconds']:.1f} | "
            f"{f'{per:.3f}' if per else '-'} |"
        )
    verdicts = [line for r in runs[1:] for line in default_verdict(runs[0], r)]
    return "\n".join([*lines, "", *verdicts])


DEFAULT_LOOPS = {
    "default": "shipped default (lr auto, probe counted)",
    "reference-default": "reference (alternating, frozen copy)",
}
TARGET = 3.0  # the issue's: the default at least 3× faster per forgotten sample


def default_verdict(ours: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """The ratio reference / ours of seconds per forgotten sample against TARGET, and which
    way utility went (ours at equal or better when its perplexity change is <= the
    reference's)."""
    mine, theirs = ours["seconds_per_forgotten"], reference["seconds_per_forgotten"]
    if not mine:
        speed = "- (the default forgot nothing): target not met"
    elif not theirs:
        speed = "- (the reference forgot nothing): no ratio"
    else:
        ratio = theirs / mine
        speed = f"{ratio:.2f}× ({'meets' if ratio >= TARGET else 'misses'} {TARGET:g}×)"
    a, b = ppl_change(ours), ppl_change(reference)
    utility = "equal or better" if a <= b else "worse"
    at = f"reference at lr {reference['lr']:.2g}"
    return [
        f"- {at} / default, s per forgotten sample: {speed}",
        f"- utility: default {a:+.2%} against {at} {b:+.2%} held-out perplexity: {utility}",
    ]


def _memory_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | parameters | k | variant | p0 held | peak RSS MB | × plain step |",
        "|" + "---|" * 7,
    ]
    plain = {r["size"]: r["peak_rss_mb"] for r in rows if r["variant"] == "plain"}
    for r in rows:
        held = f"{r['reference_bytes'] / 2**20:.1f} MB"
        lines.append(
            f"| {r['size']} | {r['parameters'] / 1e6:.1f} M | {r['k']} | {r['variant']} | {held} | "
            f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / plain[r['size']]:.3f} |"
        )
    return "\n".join(lines)


def _topk_table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['positions']} retain positions, vocabulary {result['vocab']}",
        "| k | p0 mass in top-k | KL exact | KL top-k | relative error | bytes / position |",
        "|" + "---|" * 6,
    ]
    lines += [
        f"| {r['k']} | {r['p0_mass_in_topk']:.3f} | {r['kl_exact_mean']:.4f} | "
        f"{r['kl_topk_mean']:.4f} | {r['relative_error']:.1%} | {r['bytes_per_position']} |"
        for r in result["rows"]
    ]
    lines.append(f"| full | 1 | | | 0 | {4 * result['vocab'] + 4} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part",
        choices=("acceptance", "sweep", "methods", "schedule", "memory", "topk", "default"),
    )
    parser.add_argument("--kind", choices=tuple(KINDS), default="demo", help="the build used")
    parser.add_argument("--run", nargs=3, metavar=("METHOD", "VARIANT", "STOP"))
    parser.add_argument("--memory", nargs=2, metavar=("SIZE", "VARIANT"))
    parser.add_argument("--topk", action="store_true")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting"
    )
    args = parser.parse_args()
    RUN["kind"] = args.kind
    if args.run:
        overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
        method, variant, stop = args.run
        print(json.dumps(run_unlearning(method, variant, stop, overrides)))
        return 0
    if args.memory:
        print(json.dumps(run_memory(*args.memory)))
        return 0
    if args.topk:
        print(json.dumps(run_topk()))
        return 0
    parts = {
        "acceptance": part_acceptance,
        "schedule": part_schedule,
        "methods": part_methods,
        "sweep": part_sweep,
        "memory": part_memory,
        "topk": part_topk,
        "default": part_default,
    }
    chosen = [args.part] if args.part else list(parts)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    failed = []
    for name in chosen:
        print(f"\n## {name}\n", flush=True)
        try:
            kind = RUN["kind"]
            results[name if kind == "demo" else f"{name}-{kind}"] = parts[name]()
        except RuntimeError as exc:  # a child run failed: go on with the other parts
            print(f"part {name} failed: {exc}", flush=True)
            failed.append(name)
            continue
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
