"""Benchmark: measuring on 1 against 2 processes, and erase's peak memory with and
without LoRA.

Part 1, throughput. ``codeeraser measure`` on the demo model over N synthetic findings
(seeded 16-24 character spans of the demo corpus, up to 4 per sample at different
places, so no two share a prefix and none is deduplicated), once as one process and
once under ``accelerate launch`` with two processes (gloo on CPU), one torch thread
per process; the runs alternate, ``--repeats`` times each. Reported: the command's own
measuring time (model loaded; rank 0's, so the gather is included), the wall time with
start-up, the CPU time of all the processes, and whether the two measurement files are
byte-identical.

Part 2, memory. Two CodeEraser epochs (the unlearning loop, measuring stubbed out) in
a fresh process per variant, on the demo model (k = 32 windows of up to 128 tokens)
and on a randomly initialised GPT-2 of 58M parameters (``--layers`` 8, 768 wide, 512
positions; k = 4 forget windows of 512 tokens, one step an epoch): full training against LoRA
(r = 16 on c_attn, c_proj, c_fc), each with and without gradient checkpointing
(``--variants``; ``LoRA, p0 cached`` swaps the base-model p0 for the cache).
Reported: the process's peak resident memory before the loop (imports, model, windows)
and after it; the difference is what training adds (gradients, AdamW states,
activations, p0's cache).

    python bench/scale.py                     # both parts (~10 min on 2 busy cores)
    python bench/scale.py --part throughput --findings 1200 --repeats 2
    python bench/scale.py --part memory --layers 6 --variants full LoRA "LoRA, p0 cached"

Results: bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "scale.json"
MB = 2**20


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # one torch thread per process: two processes on two cores
        "PYTHONPATH": str(ROOT),
        "ACCELERATE_USE_CPU": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "COLUMNS": "200",
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds of all the processes it started, and its stderr."""
    started, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
    return seconds, _children_cpu() - cpu, done.stderr


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gate", *args]


def _launched(*args: str) -> list[str]:
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    fixed = ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    return [*launch, *fixed, "--dynamo_backend", "no", "-m", "gate", *args]


# --- part 1: throughput -------------------------------------------------------------


def synthetic_findings(corpus: Path, count: int, seed: int, out: Path, per_sample: int = 1) -> int:
    """`count` findings on seeded 16-24 character spans, up to `per_sample` per sample
    (at different places, so no two share a prefix and none is deduplicated), each with
    at least 200 characters of code before it; returns how many were written."""
    from audit.corpus import CorpusSpec, iter_samples
    from audit.findings import Finding, write_findings

    rng = random.Random(seed)
    findings = []
    for sample in iter_samples(CorpusSpec(corpus)):
        if len(sample.text) < 260:
            continue
        starts = set()
        for _ in range(per_sample):
            length = rng.randint(16, 24)
            start = rng.randrange(200, len(sample.text) - length)
            if start in starts:
                continue
            starts.add(start)
            findings.append(
                Finding.create(
                    sample_id=sample.id,
                    origin=sample.origin,
                    text=sample.text,
                    start=start,
                    end=start + length,
                    secret_type="Bench Span",
                    detector="bench",
                )
            )
    rng.shuffle(findings)
    write_findings(out, findings[:count])
    return min(count, len(findings))


def throughput(demo: Any, work: Path, count: int, repeats: int) -> dict[str, Any]:
    findings = work / "findings.jsonl"
    n = synthetic_findings(demo.corpus_dir, count, seed=0, out=findings, per_sample=4)
    args = ["measure", "--model", str(demo.model_dir), "--data", str(demo.corpus_dir)]
    args += ["--findings", str(findings)]
    rows: dict[str, list[tuple[float, float, float]]] = {"1 process": [], "2 processes": []}
    identical = True
    for r in range(repeats):
        for label, command in (("1 process", _cli), ("2 processes", _launched)):
            out = work / f"{label[0]}-{r}.jsonl"
            wall, cpu, stderr = _run(command(*args, "--out", str(out)))
            found = re.search(r"(\d+) findings measured in ([0-9.]+) s", stderr)
            if found is None:
                raise SystemExit(f"no summary line from {label}:\n{stderr[-2000:]}")
            rows[label].append((float(found.group(2)), wall, cpu))
            print(
                f"  {label}, run {r + 1}: {found.group(2)} s measuring, {wall:.1f} s wall, "
                f"{cpu:.1f} CPU s, load {os.getloadavg()[0]:.1f}"
            )
        identical &= (work / f"1-{r}.jsonl").read_bytes() == (work / f"2-{r}.jsonl").read_bytes()
    table: dict[str, dict[str, Any]] = {
        label: {
            "measure_s": statistics.median(m for m, _, _ in runs),
            "wall_s": statistics.median(w for _, w, _ in runs),
            "cpu_s": statistics.median(c for _, _, c in runs),
            "findings_per_s": n / statistics.median(m for m, _, _ in runs),
            "runs": runs,
        }
        for label, runs in rows.items()
    }
    one, two = table["1 process"], table["2 processes"]
    return {
        "findings": n,
        "rows": table,
        "speedup_measure": one["measure_s"] / two["measure_s"],
        "speedup_wall": one["wall_s"] / two["wall_s"],
        "identical": identical,
    }


# --- part 2: memory -----------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """A model folder, data with findings, and the unlearning settings for it."""

    name: str
    model: Path
    data: Path
    findings: Path
    retain: Path
    batch_size: int  # k
    window_tokens: int
    parameters: int


def demo_subject(demo: Any) -> Subject:
    from audit.model import load_model

    params = sum(p.numel() for p in load_model(demo.model_dir, "cpu").model.parameters())
    model, data = demo.model_dir, demo.corpus_dir
    return Subject("demo", model, data, demo.planted, data, 32, 128, params)


def big_subject(demo: Any, work: Path, layers: int) -> Subject:
    """A random GPT-2 (768 wide, `layers` deep) with the demo tokenizer, and 4 long samples
    (demo files joined to 3,000+ characters) with a finding in each: one step of k = 4
    windows of 512 tokens. The demo corpus is the retain set."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from audit.corpus import CorpusSpec, iter_samples

    data = work / "big-data"
    data.mkdir()
    texts = [s.text for s in iter_samples(CorpusSpec(demo.corpus_dir))]
    for k in range(4):
        joined, i = "", k * 8
        while len(joined) < 3000:
            joined += texts[i % len(texts)] + "\n"
            i += 1
        (data / f"long{k:02d}.py").write_text(joined)
    findings = work / "big-findings.jsonl"
    synthetic_findings(data, 4, seed=1, out=findings)
    tokenizer = AutoTokenizer.from_pretrained(str(demo.model_dir))
    torch.manual_seed(0)
    eos = int(tokenizer.eos_token_id)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=512,
        n_embd=768,
        n_layer=layers,
        n_head=12,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    model = GPT2LMHeadModel(config)
    model.save_pretrained(work / "big-model")
    tokenizer.save_pretrained(work / "big-model")
    params = sum(p.numel() for p in model.parameters())
    return Subject(
        f"{params / 1e6:.0f}M", work / "big-model", data, findings, demo.corpus_dir, 4, 512, params
    )


# Two epochs of one step each in a fresh process: the peak resident memory before
# training (imports, model, windows) and after. The first step's activations are freed
# before its gradients and AdamW states fill up; the second step runs with the AdamW
# states (and p0) alive, as every later step of a run does. The measure stand-in says
# every secret leaks after epoch 1 and is forgotten after epoch 2, so no weights are
# restored and nothing is measured: training alone is counted.
STEP = """
import json, pathlib, resource, sys, tempfile
import torch
torch.set_num_threads(1)
from audit.corpus import CorpusSpec, iter_samples, load_texts
from audit.findings import read_findings
from audit.measurements import Measurement, Thresholds
from audit.model import load_model, pad_token_id
from gate.unlearn.data import build_forget_windows, build_retain_windows
from gate.unlearn.trainer import Unlearner


from gate.unlearn.settings import UnlearnConfig
a = json.loads(sys.argv[1])
loaded = load_model(a["model"], "cpu", "float32")
tok = loaded.tokenizer
findings = read_findings(a["findings"])
texts = load_texts(CorpusSpec(pathlib.Path(a["data"])), {f.sample_id for f in findings})
windows = build_forget_windows(findings, texts, tok, a["window"])
pool = iter_samples(CorpusSpec(pathlib.Path(a["retain"])))
clean = ((s.id, s.text) for s in pool if s.id not in texts)
retain = build_retain_windows(clean, tok, 128, a["k"])
def m(fid, leak):
    v = 1.0 if leak else 0.0
    return Measurement(fid, "s", "t", v, v, v, v, leak, None, 0, 0, 20, 128, False, leak)

def epoch(model, windows, retain):
    if a["lora"]:
        from gate.unlearn.lora import add_adapters
        model = add_adapters(model, rank=16, alpha=32)
    config = UnlearnConfig(lr=1e-4, batch_size=a["k"], epochs=2, patience=0, lora=a["lora"],
                           gradient_checkpointing=a["checkpointing"],
                           reference=a.get("reference", "auto"))
    ids = {fid for w in windows for fid in w.finding_ids}
    calls = []
    def measure(ids):  # still leaking after epoch 1, forgotten after epoch 2
        calls.append(1)
        return [m(i, len(calls) == 1) for i in ids]
    with tempfile.TemporaryDirectory() as best:
        result = Unlearner(model, windows, retain, before=[m(f, True) for f in sorted(ids)],
                           measure=measure,
                           thresholds=Thresholds(0.5, 0.5, "bench"), config=config,
                           pad_id=pad_token_id(tok, model), best_dir=pathlib.Path(best)).run()
    return model, result

# Warm-up on a one-layer model of the same kind and one window: the libraries load what
# they load on first use (autograd, AdamW, checkpointing, peft) before the baseline.
from transformers import GPT2Config, GPT2LMHeadModel
eos = tok.eos_token_id
small = GPT2Config(vocab_size=len(tok), n_positions=loaded.context_length, n_embd=64,
                   n_layer=1, n_head=2, bos_token_id=eos, eos_token_id=eos)
epoch(GPT2LMHeadModel(small), windows[:1], retain[:1])
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
r0 = rss()
model, result = epoch(loaded.model, windows, retain)
r1 = rss()
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
tokens = sum(len(w.input_ids) for w in windows)
print(json.dumps({"before": r0, "after": r1, "steps": result.steps, "seconds": result.seconds,
                  "trainable": trainable, "windows": len(windows), "tokens": tokens,
                  "reference": result.reference_kind, "reference_bytes": result.reference_bytes}))
"""

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {"lora": False, "checkpointing": False},
    "full + checkpointing": {"lora": False, "checkpointing": True},
    "LoRA": {"lora": True, "checkpointing": False},
    "LoRA + checkpointing": {"lora": True, "checkpointing": True},
    "LoRA, p0 cached": {"lora": True, "checkpointing": False, "reference": "cached"},
}
VARIANTS_LARGE = ["full", "full + checkpointing", "LoRA", "LoRA + checkpointing"]


def memory(subject: Subject, variants: list[str]) -> dict[str, Any]:
    rows = {}
    for variant in variants:
        settings = {
            "model": str(subject.model),
            "data": str(subject.data),
            "findings": str(subject.findings),
            "retain": str(subject.retain),
            "window": subject.window_tokens,
            "k": subject.batch_size,
            **VARIANTS[variant],
        }
        wall, out = _run_out([sys.executable, "-c", STEP, json.dumps(settings)])
        got = json.loads(out.strip().splitlines()[-1])
        rows[variant] = {
            "before_mb": got["before"] / MB,
            "peak_mb": got["after"] / MB,
            "training_mb": (got["after"] - got["before"]) / MB,
            "trainable_parameters": got["trainable"],
            "windows": got["windows"],
            "tokens": got["tokens"],
            "step_s": got["seconds"],
            "p0": f"{got['reference']} ({got['reference_bytes'] / MB:.1f} MB)",
        }
        print(f"  {subject.name}, {variant}: +{rows[variant]['training_mb']:.0f} MB ({wall:.0f} s)")
    return {"parameters": subject.parameters, "rows": rows}


def _run_out(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    # Large blocks straight from mmap, returned when freed: otherwise glibc's heap keeps
    # freed temporaries and the peak RSS measures fragmentation (LoRA's adapter outputs
    # looked like +1 GB at 100M parameters), not the tensors a step holds.
    env = {**_env(), "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout


# --- output ---------------------------------------------------------------------------


def _print_throughput(result: dict[str, Any]) -> None:
    print(f"\nmeasure, {result['findings']} findings, demo model")
    print(
        "| processes | measuring s | findings/s | wall s (with start-up) | CPU s, all processes |"
    )
    print("|---|---:|---:|---:|---:|")
    for label, row in result["rows"].items():
        print(
            f"| {label} | {row['measure_s']:.1f} | {row['findings_per_s']:.1f} | "
            f"{row['wall_s']:.1f} | {row['cpu_s']:.1f} |"
        )
    print(
        f"speed-up 2 vs 1: measuring {result['speedup_measure']:.2f}×, wall "
        f"{result['speedup_wall']:.2f}×; measurements identical: {result['identical']}"
    )


def _print_memory(name: str, result: dict[str, Any]) -> None:
    rows = result["rows"]
    first = next(iter(rows.values()))
    print(
        f"\ntwo unlearning epochs, {name} model ({result['parameters'] / 1e6:.1f} M parameters), "
        f"{first['windows']} forget windows, {first['tokens']} tokens"
    )
    print(
        "| variant | trainable parameters | RSS before MB | peak MB | training adds MB | s | p0 |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for variant, row in rows.items():
        print(
            f"| {variant} | {row['trainable_parameters']:,} | {row['before_mb']:.0f} | "
            f"{row['peak_mb']:.0f} | {row['training_mb']:.0f} | {row['step_s']:.1f} | "
            f"{row['p0']} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "throughput", "memory"], default="all")
    parser.add_argument("--findings", type=int, default=1200, help="synthetic findings measured")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each process count")
    parser.add_argument("--layers", type=int, default=8, help="layers of the larger GPT-2")
    parser.add_argument(
        "--variants",
        nargs="*",
        choices=list(VARIANTS),
        default=VARIANTS_LARGE,
        help="memory variants of the larger GPT-2",
    )
    options = parser.parse_args()
    from gate.demo.build import build_demo

    demo = build_demo("demo")
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["load_before"] = os.getloadavg()  # the parts run now replace their results
    with tempfile.TemporaryDirectory(prefix="codeeraser-scale-") as tmp:
        work = Path(tmp)
        if options.part in ("all", "throughput"):
            results["throughput"] = throughput(demo, work, options.findings, options.repeats)
            _print_throughput(results["throughput"])
        if options.part in ("all", "memory"):
            results["memory_demo"] = memory(demo_subject(demo), ["full", "LoRA"])
            _print_memory("demo", results["memory_demo"])
            big = big_subject(demo, work, options.layers)
            results["memory_large"] = memory(big, options.variants)
            _print_memory(big.name, results["memory_large"])
    results["load_after"] = os.getloadavg()
    print(f"\nload average before {results['load_before']}, after {results['load_after']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
