"""Benchmark the measuring code against the reference implementation's algorithms.

Side by side in one process, on the same probes and the same model:

- MA: ours (one teacher-forced pass per batch) vs the reference's algorithm, one
  ``generate(max_new_tokens=1)`` call per secret position, batched across findings.
- EL_10: ours (every (finding, i) pair in left-padded batches, KV-cached decoding) vs
  uncached per-prefix greedy decoding (each decoded token re-reads the whole prompt).
- The full measure (MA, EL_3/5/10, greedy extraction, optionally the sampled attack):
  findings per second, and the FLOPs it needs against the FLOP rate the machine reaches
  on a plain matrix product.

Both sides must give the same numbers; the script says whether they do.

    python bench/measure.py                       # the demo model (built and cached)
    python bench/measure.py --model DIR --data DIR --findings F.jsonl [--data D2 --findings F2]
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from audit import metrics
from audit.corpus import CorpusSpec, load_texts
from audit.extraction import (
    MeasureConfig,
    extraction_likelihoods,
    measure_probes,
    memorization_accuracies,
)
from audit.findings import read_findings
from audit.measurements import Thresholds
from audit.model import LoadedModel, load_model
from audit.probes import Probe, build_probes


@dataclass
class Inputs:
    loaded: LoadedModel
    probes: list[Probe]
    label: str
    model_dir: Path
    pairs: list[tuple[Path, Path]]  # (data, findings file)


class FlopCounter:
    """Counts model FLOPs from each forward call's shapes (matmuls only, padding included).

    Per call with B rows, T new tokens, K attended positions and k kept logits:
    2·N·B·T for the dense weights (N = non-embedding matrix parameters), 4·L·d·B·T·K
    for attention scores and values, 2·d·V·B·k for the output projection.
    """

    def __init__(self, model: Any) -> None:
        config = model.config.get_text_config(decoder=True)
        self.layers = int(getattr(config, "num_hidden_layers", 0) or config.n_layer)
        self.width = int(getattr(config, "hidden_size", 0) or config.n_embd)
        self.vocab = int(config.vocab_size)
        skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
        self.dense = sum(
            p.numel()
            for name, p in model.named_parameters()
            if p.dim() == 2 and id(p) not in skip and "wpe" not in name
        )
        self.flops = 0.0
        self.calls = 0
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        self.flops += self.call_flops(ids, kwargs)
        self.calls += 1

    def call_flops(self, ids: torch.Tensor, kwargs: dict[str, Any]) -> float:
        """FLOPs of one forward call on `ids` (B, T) with these keyword arguments."""
        rows, new = ids.shape
        mask = kwargs.get("attention_mask")
        attended = mask.shape[1] if mask is not None else new
        kept = kwargs.get("logits_to_keep") or new
        flops = 2 * self.dense * rows * new
        flops += 4 * self.layers * self.width * rows * new * attended
        return float(flops + 2 * self.width * self.vocab * rows * kept)

    def reset(self) -> None:
        self.flops, self.calls = 0.0, 0


# --- the reference's algorithms -----------------------------------------------------


@torch.no_grad()
def reference_ma(loaded: LoadedModel, probes: Sequence[Probe]) -> list[float]:
    """One generate(max_new_tokens=1) call per secret position, all findings in a batch."""
    model, pad = loaded.model, loaded.pad_id
    hits = [0] * len(probes)
    for t in range(max(p.m for p in probes)):
        rows = [j for j, p in enumerate(probes) if p.m > t]
        prompts = [probes[j].prefix_ids + probes[j].secret_ids[:t] for j in rows]
        width = max(len(s) for s in prompts)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, seq in enumerate(prompts):
            ids[r, width - len(seq) :] = torch.tensor(seq)
            mask[r, width - len(seq) :] = 1
        out = model.generate(  # type: ignore[operator]
            input_ids=ids.to(loaded.device),
            attention_mask=mask.to(loaded.device),
            max_new_tokens=1,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=None,
        )
        for r, j in enumerate(rows):
            hits[j] += int(out[r, -1]) == probes[j].secret_ids[t]
    return [h / p.m for h, p in zip(hits, probes, strict=True)]


@torch.no_grad()
def uncached_greedy(model: Any, prompt: Sequence[int], steps: int, device: Any) -> list[int]:
    seq = list(prompt)
    for _ in range(steps):
        logits = model(input_ids=torch.tensor([seq], device=device)).logits
        seq.append(int(logits[0, -1].argmax()))
    return seq[len(prompt) :]


def reference_el(loaded: LoadedModel, probes: Sequence[Probe], n: int = 10) -> list[float]:
    """EL_n by uncached greedy decoding of every prefix + secret[:i], one at a time."""
    scores = []
    for p in probes:
        decodes = {
            i: uncached_greedy(
                loaded.model, p.prefix_ids + p.secret_ids[:i], p.m - i, loaded.device
            )
            for i in metrics.el_offsets(p.m, (n,))
        }
        scores.append(metrics.extraction_likelihood(p.secret_ids, decodes, n))
    return scores


# --- harness --------------------------------------------------------------------------


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time over `repeats` runs, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def matmul_rate(size: int = 512, repeats: int = 20) -> float:
    """FLOP/s of a plain fp32 matrix product on this machine (same threads as the run)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    seconds, _ = timed(lambda: [a @ b for _ in range(repeats)], 3)
    return 2 * size**3 * repeats / seconds


def demo_inputs(preset: str) -> tuple[Path, list[tuple[Path, Path]]]:
    from gate.demo.build import build_demo

    demo = build_demo(preset)
    return demo.model_dir, [(demo.corpus_dir, demo.planted), (demo.heldout_dir, demo.controls)]


def load_inputs(args: argparse.Namespace) -> Inputs:
    if args.model:
        model_dir = Path(args.model)
        if len(args.data) != len(args.findings):
            raise SystemExit("give one --data per --findings (the corpus each refers to)")
        pairs = [(Path(d), Path(f)) for d, f in zip(args.data, args.findings, strict=True)]
        label = str(model_dir)
    else:
        model_dir, pairs = demo_inputs(args.preset)
        label = f"demo preset {args.preset!r}"
    loaded = load_model(model_dir, device=args.device)
    probes: list[Probe] = []
    for data, findings_file in pairs:
        findings = read_findings(findings_file)
        texts = load_texts(CorpusSpec(data), {f.sample_id for f in findings})
        probes += build_probes(
            findings, texts, loaded.tokenizer, context_length=loaded.context_length
        )
    return Inputs(loaded, probes, label, model_dir, pairs)


def compare(
    name: str, ours: Callable[[], Any], ref: Callable[[], Any], counter: FlopCounter, repeats: int
) -> dict[str, Any]:
    ours()  # warm-up: the first call of a shape pays for kernel set-up
    counter.reset()
    t_ours, v_ours = timed(ours, repeats)
    f_ours = counter.flops / repeats
    counter.reset()
    t_ref, v_ref = timed(ref, 1)
    f_ref = counter.flops
    same = sum(a == b for a, b in zip(v_ours, v_ref, strict=True))
    return {
        "name": name,
        "ours": t_ours,
        "ref": t_ref,
        "speedup": t_ref / t_ours,
        "flops_ours": f_ours,
        "flops_ref": f_ref,
        "same": same,
        "n": len(v_ours),
    }


def cli_run(model_dir: Path, data: Path, findings: Path, threads: int) -> str:
    """`codeeraser measure` end to end in a fresh process: its own figure and the wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "COLUMNS": "200"}
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "gate", "measure", "--model", str(model_dir)]
        command += ["--data", str(data), "--findings", str(findings)]
        command += ["--out", str(Path(tmp) / "m.jsonl"), "--device", "cpu"]
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
    found = re.search(r"(\d+) findings measured in ([\d.]+) s \(([\d.]+) findings/s\)", done.stderr)
    figure = found.group(0) if found else "no summary line"
    return f"codeeraser measure ({findings.name}): {figure}; {wall:.1f} s end to end"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model folder (default: build the demo)")
    parser.add_argument("--data", action="append", default=[], help="data folder (repeatable)")
    parser.add_argument(
        "--findings", action="append", default=[], help="findings JSONL on the --data at its place"
    )
    parser.add_argument("--preset", default="demo", help="demo preset when --model is not given")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: quiet box)")
    parser.add_argument(
        "--el-findings",
        type=int,
        default=40,
        help="findings in the EL_10 comparison (the uncached side is slow)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of our side (median)")
    parser.add_argument("--samples", type=int, default=4, help="sampled attack in the full run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    inputs = load_inputs(args)
    loaded, probes = inputs.loaded, inputs.probes
    model, tok = loaded.model, loaded.tokenizer
    counter = FlopCounter(model)
    config = MeasureConfig()
    el_probes = probes[:: max(1, len(probes) // args.el_findings)][: args.el_findings]
    reference_ma(loaded, probes[:2])  # warm-up of the reference side
    el10 = MeasureConfig(el_ns=(10,))
    results = [
        compare(
            f"MA, {len(probes)} findings",
            lambda: memorization_accuracies(model, tok, probes, config),
            lambda: reference_ma(loaded, probes),
            counter,
            args.repeats,
        ),
        compare(
            f"EL_10, {len(el_probes)} findings",
            lambda: [e[10] for e in extraction_likelihoods(model, tok, el_probes, el10)],
            lambda: reference_el(loaded, el_probes),
            counter,
            args.repeats,
        ),
        compare(
            f"EL_10, {len(el_probes)} findings: shared cache vs a prefill per row batch",
            lambda: [e[10] for e in extraction_likelihoods(model, tok, el_probes, el10)],
            lambda: [
                e[10]
                for e in extraction_likelihoods(
                    model, tok, el_probes, replace(el10, reuse_cache=False)
                )
            ],
            counter,
            args.repeats,
        ),
    ]
    thresholds = Thresholds(0.5, 0.1, "bench")
    full = []
    for samples in sorted({0, args.samples}):
        run_config = MeasureConfig(samples=samples)
        counter.reset()
        run = functools.partial(measure_probes, model, tok, probes, thresholds, run_config)
        seconds, rows = timed(run, args.repeats)
        full.append(
            (samples, seconds, counter.flops / args.repeats, counter.calls // args.repeats, rows)
        )
    peak = matmul_rate()
    report(inputs, args, results, full, peak)
    print(cli_run(inputs.model_dir, *inputs.pairs[0], args.threads))
    ok = all(r["same"] == r["n"] for r in results)
    return 0 if ok else 1


def report(
    inputs: Inputs,
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    full: list[tuple[int, float, float, int, Any]],
    peak: float,
) -> None:
    loaded, probes = inputs.loaded, inputs.probes
    params = sum(p.numel() for p in loaded.model.parameters())
    ms = [p.m for p in probes]
    prefix = sum(len(p.prefix_ids) for p in probes) / len(probes)
    dtype = str(loaded.dtype).removeprefix("torch.")
    print(
        f"model: {inputs.label}, {params / 1e6:.2f} M parameters, context "
        f"{loaded.context_length}, {loaded.device.type} {dtype}, {args.threads} thread(s)"
    )
    print(
        f"probes: {len(probes)}, secret tokens {min(ms)}-{max(ms)} "
        f"(mean {sum(ms) / len(ms):.1f}), prefix tokens mean {prefix:.1f}"
    )
    print()
    print(
        "| comparison | ours (s) | reference (s) | speed-up | GFLOP ours "
        "| GFLOP reference | same result |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        print(
            f"| {r['name']} | {r['ours']:.3f} | {r['ref']:.3f} | {r['speedup']:.1f}x | "
            f"{r['flops_ours'] / 1e9:.2f} | {r['flops_ref'] / 1e9:.2f} | {r['same']}/{r['n']} |"
        )
    print()
    print(
        "| full measure | seconds | findings/s | forward calls | GFLOP | achieved GFLOP/s "
        "| matmul GFLOP/s | share |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for samples, seconds, flops, calls, rows in full:
        rate = flops / seconds
        print(
            f"| samples={samples} | {seconds:.3f} | {len(rows) / seconds:.1f} | {calls} | "
            f"{flops / 1e9:.2f} | {rate / 1e9:.2f} | {peak / 1e9:.1f} | {rate / peak:.1%} |"
        )
    rows = full[0][4]
    print()
    print(
        f"memorized {sum(r.memorized for r in rows)}/{len(rows)}, extracted "
        f"{sum(r.extracted_greedy for r in rows)}/{len(rows)} (thresholds MA 0.5, EL_10 0.1)"
    )


if __name__ == "__main__":
    sys.exit(main())
