"""The full measure alone on a real model: findings/s, the FLOP rate as a share of a
plain matrix product's in the same process, and where the time goes.

Runs only `measure_probes` (MA, EL_3/5/10, greedy extraction; the sampled attack off
unless --samples), none of the reference algorithms of bench/measure.py. Every forward
call of the model is timed and sorted by kind: a pass (several new tokens per row: the
teacher-forced pass, or a prefill) or a decode step (one new token per row); the output
layer is timed on its own (the chunked head runs it outside the model's call); the rest
is the Python around the calls (cache cutting, argmax, metrics). FLOPs are counted from
each call's shapes (bench/measure.py's FlopCounter).

With --tree NAME=DIR (twice or more), the script runs itself once per tree per round in
a fresh process with PYTHONPATH=DIR (that tree's audit/), alternating trees, and prints
the runs side by side with a check that every tree gives the same measurements.

    PYTHONPATH=. python bench/measure_real.py --model M --data D --findings F --first 20
    python bench/measure_real.py --model M --data D --findings F --first 20 \\
        --tree before=/tmp/before --tree after=. --rounds 2
    PYTHONPATH=. python bench/measure_real.py --model M --sweep 1 16 64 256
    PYTHONPATH=. python bench/measure_real.py --model M --data D --findings F --variants

With --variants, one process measures alternately with each pass's greedy rows decoded
on their own (the measure before issue 14's merge) and with the rows of a group of
passes decoded together (now), against the same loaded model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import patch

import torch
from measure import FlopCounter, load_inputs, matmul_rate, timed  # bench/measure.py

import audit
from audit import extraction
from audit.extraction import MeasureConfig, measure_probes
from audit.measurements import Thresholds


@dataclass
class Kind:
    """Forward calls of one kind: how many, their time, FLOPs and rows."""

    calls: int = 0
    seconds: float = 0.0
    flops: float = 0.0
    rows: int = 0

    def add(self, seconds: float, flops: float, rows: int) -> None:
        self.calls += 1
        self.seconds += seconds
        self.flops += flops
        self.rows += rows


@dataclass
class Clock:
    """Forward calls timed by kind (pass / step) and the output layer's time."""

    kinds: dict[str, Kind] = field(default_factory=lambda: {"pass": Kind(), "step": Kind()})
    head_seconds: float = 0.0
    head_outside: float = 0.0  # head time outside the model's calls (the chunked head)
    depth: int = 0
    started: float = 0.0
    pending: tuple[str, float, int] = ("pass", 0.0, 0)
    head_started: float = 0.0

    def reset(self) -> None:
        """Forget every call so far."""
        self.kinds = {"pass": Kind(), "step": Kind()}
        self.head_seconds = self.head_outside = 0.0

    def call_start(self, kind: str, flops: float, rows: int) -> None:
        self.depth += 1
        self.pending = (kind, flops, rows)
        self.started = time.perf_counter()

    def call_end(self) -> None:
        kind, flops, rows = self.pending
        self.kinds[kind].add(time.perf_counter() - self.started, flops, rows)
        self.depth -= 1

    def head_start(self) -> None:
        self.head_started = time.perf_counter()

    def head_end(self) -> None:
        seconds = time.perf_counter() - self.head_started
        self.head_seconds += seconds
        if self.depth == 0:
            self.head_outside += seconds


def call_kind(new_tokens: int) -> str:
    """A call with one new token per row is a decode step; more is a pass."""
    return "step" if new_tokens == 1 else "pass"


def attach(model: Any, counter: FlopCounter, clock: Clock) -> None:
    """Time every forward call of the model and of its output layer."""

    def pre(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            rows, new = ids.shape
            clock.call_start(call_kind(new), counter.call_flops(ids, kwargs), rows)

    def post(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _out: Any) -> None:
        if kwargs.get("input_ids", args[0] if args else None) is not None:
            clock.call_end()

    model.register_forward_pre_hook(pre, with_kwargs=True)
    model.register_forward_hook(post, with_kwargs=True)
    head = model.get_output_embeddings()  # the chunked head calls it outside the model
    if isinstance(head, torch.nn.Module):
        head.register_forward_pre_hook(lambda *_: clock.head_start())
        head.register_forward_hook(lambda *_: clock.head_end())


def matmul_at(rows: int, inner: int, cols: int, repeats: int = 20) -> float:
    """FLOP/s of a plain (rows, inner) @ (inner, cols) product: the rate a call of that
    shape could reach at best."""
    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    a @ b
    seconds, _ = timed(lambda: [a @ b for _ in range(repeats)], 3)
    return 2 * rows * inner * cols * repeats / seconds


def tiny_call_seconds(model: Any, repeats: int = 20) -> float:
    """Median time of a forward call on one token of one row: the fixed cost per call."""
    ids = torch.ones((1, 1), dtype=torch.long)
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
        seconds, _ = timed(lambda: model(input_ids=ids, use_cache=False), repeats)
    return seconds


def breakdown(clock: Clock, total: float) -> dict[str, float]:
    """Seconds by part: passes, decode steps (model calls, head inside them included),
    the head outside the calls, and the rest (Python around the calls)."""
    passes, steps = clock.kinds["pass"].seconds, clock.kinds["step"].seconds
    rest = total - passes - steps - clock.head_outside
    return {"pass": passes, "step": steps, "head_outside": clock.head_outside, "rest": rest}


def share(flops: float, seconds: float, peak: float) -> float:
    """Achieved FLOP rate as a share of `peak` (0 when nothing ran)."""
    return flops / seconds / peak if seconds > 0 and peak > 0 else 0.0


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    """One full measure in this process, with its timing breakdown."""
    return run_variants(args, [("this", contextlib.nullcontext)])[0]


def per_pass() -> contextlib.AbstractContextManager[Any]:
    """The measure as it was before the passes' rows were decoded together: each
    teacher-forced pass's greedy rows in their own decode loop (a group per pass)."""
    return patch.object(extraction, "_pass_groups", lambda chunks, *_: ([c] for c in chunks))


VARIANTS: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]] = {
    "per-pass": per_pass,
    "merged": contextlib.nullcontext,
}


def run_variants(
    args: argparse.Namespace,
    variants: Sequence[tuple[str, Callable[[], contextlib.AbstractContextManager[Any]]]],
) -> list[dict[str, Any]]:
    """Full measures in this process, one per variant (a context the measure runs in),
    each timed on its own against a matmul timed just before it."""
    torch.set_num_threads(args.threads)
    inputs = load_inputs(args)
    probes = inputs.probes[: args.first] if args.first else inputs.probes
    model, tok = inputs.loaded.model, inputs.loaded.tokenizer
    counter, clock = FlopCounter(model), Clock()
    attach(model, counter, clock)
    config = MeasureConfig(samples=args.samples)
    thresholds = Thresholds(0.5, 0.1, "bench")
    measure_probes(model, tok, probes[:1], thresholds, config)  # warm-up: kernel set-up
    runs = []
    for name, variant in variants:
        peak = matmul_rate()
        counter.reset()
        clock.reset()
        with variant():
            start = time.perf_counter()
            rows = measure_probes(model, tok, probes, thresholds, config)
            seconds = time.perf_counter() - start
        result = timing(clock, counter, seconds, peak)  # before the probes below add calls
        result |= probes_of_machine(model, clock, counter.width, counter.vocab)
        result |= {
            "tree": name,
            "audit": str(Path(audit.__file__).resolve().parent),
            "label": inputs.label,
            "findings": len(probes),
            "secret_tokens": [p.m for p in probes],
            "measurements": [r.to_dict() for r in rows],
            "threads": args.threads,
        }
        runs.append(result)
    return runs


def timing(clock: Clock, counter: FlopCounter, seconds: float, peak: float) -> dict[str, Any]:
    """The measure's time, FLOPs and breakdown."""
    return {
        "seconds": seconds,
        "flops": counter.flops,
        "calls": counter.calls,
        "matmul": peak,
        "kinds": {name: asdict(kind) for name, kind in clock.kinds.items()},
        "head_seconds": clock.head_seconds,
        "parts": breakdown(clock, seconds),
    }


def probes_of_machine(model: Any, clock: Clock, width: int, vocab: int) -> dict[str, float]:
    """After the measure: the matmul rate again (drift under load), the output layer's
    product at a decode step's mean rows (its weights stream from memory each step), and
    a 1-token call's time."""
    step = clock.kinds["step"]
    rows = max(1, round(step.rows / step.calls)) if step.calls else 1
    return {
        "matmul_after": matmul_rate(),
        "step_matmul": matmul_at(rows, width, vocab),
        "tiny_call": tiny_call_seconds(model),
    }


def step_sweep(args: argparse.Namespace, rows_list: Sequence[int], context: int = 8) -> int:
    """Decode steps alone at several batch sizes (rows), each on a `context`-token KV
    cache: seconds per step and the FLOP share against a plain matmul."""
    torch.set_num_threads(args.threads)
    model = load_inputs(args).loaded.model
    counter = FlopCounter(model)
    peak = matmul_rate()
    print(f"plain matmul: {peak / 1e9:.1f} GFLOP/s; cache of {context} tokens per row")
    print("| rows per step | ms per step | GFLOP per step | GFLOP/s | share |")
    print("|---:|---:|---:|---:|---:|")
    for rows in rows_list:
        seconds, flops = time_steps(model, counter, rows, context)
        print(
            f"| {rows} | {seconds * 1e3:.0f} | {flops / 1e9:.2f} | {flops / seconds / 1e9:.1f} "
            f"| {share(flops, seconds, peak):.0%} |"
        )
    return 0


@torch.no_grad()
def time_steps(model: Any, counter: FlopCounter, rows: int, context: int) -> tuple[float, float]:
    """Median seconds and FLOPs of one decode step of `rows` rows after a prefill."""
    from audit.model import forward, new_cache

    ids = torch.randint(100, 1000, (rows, context))
    cache = new_cache(model)
    forward(model, ids, torch.ones_like(ids), None, cache=cache, keep=1)
    times = []
    for step in range(4):
        token = torch.randint(100, 1000, (rows, 1))
        mask = torch.ones((rows, context + step + 1), dtype=torch.long)
        counter.reset()
        start = time.perf_counter()
        forward(model, token, mask, None, cache=cache, keep=1)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), counter.flops


def run_tree(name: str, tree: Path, argv: Sequence[str], out: Path) -> dict[str, Any]:
    """This script in a fresh process on `tree`'s audit/; its summary."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve()), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--json", str(out)]
    subprocess.run(command, env=env, check=True)
    result: dict[str, Any] = json.loads(out.read_text())
    result["tree"] = name
    return result


def tree_args(argv: Sequence[str]) -> list[str]:
    """The arguments of one run: these, less --tree/--rounds and their values."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--tree", "--rounds"):
            skip = True
        elif not arg.startswith(("--tree=", "--rounds=")):
            kept.append(arg)
    return kept


def parse_trees(specs: Sequence[str]) -> list[tuple[str, Path]]:
    """NAME=DIR pairs, in order."""
    trees = []
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"Error: --tree takes NAME=DIR, got {spec!r}")
        trees.append((name, Path(folder)))
    return trees


def alternate(args: argparse.Namespace, argv: Sequence[str]) -> list[dict[str, Any]]:
    """Each tree once per round, in turn: timings under the same load, side by side."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, tree in parse_trees(args.tree):
                out = Path(tmp) / f"{name}-{round_}.json"
                runs.append(run_tree(name, tree, tree_args(argv), out))
    return runs


def differing(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Findings whose measurements differ between runs (ids only)."""
    first = runs[0]["measurements"]
    bad: set[str] = set()
    for run in runs[1:]:
        if len(run["measurements"]) != len(first):
            return ["(different numbers of findings)"]
        for a, b in zip(first, run["measurements"], strict=True):
            if a != b:
                bad.add(str(a["finding_id"]))
    return sorted(bad)


def row(run: dict[str, Any]) -> str:
    """One run as a markdown table row."""
    secs, flops, peak = run["seconds"], run["flops"], run["matmul"]
    parts, kinds = run["parts"], run["kinds"]
    step = kinds["step"]
    mean_rows = step["rows"] / step["calls"] if step["calls"] else 0.0
    return (
        f"| {run['tree']} | {secs:.1f} | {run['findings'] / secs:.3f} | {flops / 1e9:.1f} | "
        f"{flops / secs / 1e9:.2f} | {peak / 1e9:.1f} | {share(flops, secs, peak):.1%} | "
        f"{kinds['pass']['calls']} / {parts['pass']:.2f} s / "
        f"{share(kinds['pass']['flops'], parts['pass'], peak):.0%} | "
        f"{step['calls']} ({mean_rows:.0f} rows) / {parts['step']:.2f} s / "
        f"{share(step['flops'], parts['step'], peak):.0%} | "
        f"{parts['head_outside']:.1f} | {parts['rest']:.1f} |"
    )


HEADER = (
    "| tree | seconds | findings/s | GFLOP | GFLOP/s | matmul GFLOP/s | share "
    "| passes: calls / time / share | decode steps: calls (mean rows) / time / share "
    "| head outside calls, s | rest, s |\n"
    "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|"
)


def report(runs: Sequence[dict[str, Any]]) -> int:
    """The runs side by side, the ratio of each tree's median time to the first's, and
    whether every run gave the same measurements (exit 1 if not)."""
    first = runs[0]
    print(f"model: {first['label']}, {first['findings']} findings, {first['threads']} thread")
    print(f"secret tokens: {first['secret_tokens']}")
    print(HEADER)
    for run in runs:
        print(row(run))
    print_ratios(runs)
    for run in runs:
        print(
            f"{run['tree']}: audit at {run['audit']}; matmul after the measure "
            f"{run['matmul_after'] / 1e9:.1f} GFLOP/s; the output layer's product at a "
            f"decode step's rows "
            f"{run['step_matmul'] / 1e9:.1f} GFLOP/s; "
            f"a 1-token call {run['tiny_call'] * 1e3:.1f} ms"
        )
    bad = differing(runs)
    print(f"measurements identical across all runs: {'yes' if not bad else 'NO: ' + str(bad)}")
    return 0 if not bad else 1


def print_ratios(runs: Sequence[dict[str, Any]]) -> None:
    """Median seconds per tree, and each against the first tree's."""
    medians: dict[str, float] = {}
    for run in runs:
        medians.setdefault(run["tree"], 0.0)
    for name in medians:
        medians[name] = statistics.median(r["seconds"] for r in runs if r["tree"] == name)
    base = next(iter(medians.values()))
    for name, seconds in medians.items():
        print(f"{name}: median {seconds:.1f} s, {base / seconds:.2f}x the first tree's speed")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder (default: build the demo)")
    p.add_argument("--data", action="append", default=[], help="data folder (repeatable)")
    p.add_argument("--findings", action="append", default=[], help="findings JSONL per --data")
    p.add_argument("--preset", default="demo", help="demo preset when --model is not given")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--first", type=int, default=0, help="measure the first N findings (0: all)")
    p.add_argument("--samples", type=int, default=0, help="sampled attack draws (0: off)")
    p.add_argument("--json", help="write this run's summary here (one tree, no table)")
    p.add_argument("--tree", action="append", default=[], help="NAME=DIR: run on DIR's audit/")
    p.add_argument("--rounds", type=int, default=2, help="runs per tree (or variant)")
    p.add_argument(
        "--variants",
        action="store_true",
        help="in this one process, alternate the per-pass decode (before issue 14's merge) "
        "and the merged one, --rounds times each",
    )
    p.add_argument(
        "--sweep", type=int, nargs="*", help="time decode steps alone at these rows per step"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.sweep:
        return step_sweep(args, args.sweep)
    if args.tree:
        return report(alternate(args, argv))
    if args.variants:
        return report(run_variants(args, list(VARIANTS.items()) * args.rounds))
    result = run_once(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result))
        return 0
    return report([result])


if __name__ == "__main__":
    sys.exit(main())
