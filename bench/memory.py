"""Benchmark: peak memory of measure and of one erase epoch on real model shapes.

Part ``shapes`` (default). A randomly initialised Llama of SmolLM2-135M's shape (30
layers, 576 wide, 9 heads, 3 KV heads; 134.5 M parameters at vocabulary 49,152) at
vocabularies 49,152 (SmolLM2, StarCoder2) and 151,936 (Qwen2.5), float32. Synthetic
data made of token ids (memory does not depend on what the tokens say): `--findings`
secrets of 24 tokens, each in a 256-token forget window (200 tokens of code before it),
the attacker's prefix the 128 tokens before it; 2 × `--k` retain windows of 128 tokens.
Each case runs in a fresh process; after the set-up (imports, model, data) the peak
resident set size is reset (``/proc/self/clear_refs``), and the case's peak is read
afterwards (``VmHWM``); on a GPU, ``torch.cuda.max_memory_allocated`` after a reset.
Large blocks come straight from mmap (``MALLOC_MMAP_THRESHOLD_=65536``, as in
bench/scale.py), so a freed temporary is not counted as held.

- ``forward``: a plain forward pass (no gradient, the model's defaults: logits at every
  position and the KV cache) over one batch of measure's size: `--batch-tokens` tokens
  of probe rows (prefix + secret, left-padded; the probes repeated if too few);
- ``prefill``: the same pass as ``generate`` runs it (KV cache, last position's logits);
- ``measure``: ``measure_probes`` on every finding (MA, EL_3/5/10, greedy extraction);
- ``finetune``: a plain fine-tune step of the same model on the forget windows, with the
  library's own loss (``labels=``), in the micro-batches the erase engine forms, AdamW,
  twice (the second step runs with AdamW's states alive);
- ``erase``: one CodeEraser epoch of the unlearning loop on the same windows (k per
  step, alternating forget and retain updates, the p0 cache) with its re-measure.

Part ``gate``: ``codeeraser gate`` (or, with ``--command measure``, ``codeeraser
measure`` on a findings file) on a model folder (the real SmolLM2-135M with planted
secrets: bench/real_model.py) with bench/policies/real-135m.yaml, peak RSS of the whole
command (``ru_maxrss`` of that child alone, from ``os.wait4``); with ``--against DIR``
the same run with the code of another checkout (e.g. ``git worktree add /tmp/old
<commit>``) after it, and the measurement files compared byte for byte.

    python bench/memory.py                              # both vocabularies, CPU (~20 min)
    python bench/memory.py --vocab 151936 --cases measure forward prefill
    python bench/memory.py --device cuda --findings 64 --k 32      # bench/gpu_memory.sh
    python bench/memory.py --part checkpoint            # bytes one erase checkpoint writes
    python bench/memory.py --part gate --model DIR --data DIR --heldout DIR [--against OLD]
    python bench/memory.py --part gate --command measure --model DIR --data DIR \
        --findings-file findings.jsonl --against OLD

Results: bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "memory.json"
MB = 2**20
VOCABS = (49152, 151936)
CASES = ("forward", "prefill", "measure", "finetune", "erase")
SHAPE: dict[str, Any] = {  # SmolLM2-135M
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
    "rope_theta": 100000.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}
WINDOW, BEFORE, SECRET, PREFIX, RETAIN = 256, 200, 24, 128, 128


# --- one case, in its own process -----------------------------------------------------


class IdTokenizer:
    """Enough of a tokenizer for measuring synthetic ids: decoding spells the ids."""

    pad_token_id = 2
    eos_token_id = 2
    bos_token_id = 1

    def decode(self, ids: list[int], **_: Any) -> str:
        return "".join(f"<{i}>" for i in ids)


def build_model(vocab: int, device: str, *, train: bool = False) -> Any:
    """The model in measure's dtype (bf16 on a GPU), or float32 master weights to train
    (under bf16 autocast on a GPU)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model: Any = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, **SHAPE))
    dtype = torch.bfloat16 if device == "cuda" and not train else torch.float32
    return model.to(device=device, dtype=dtype).eval()


def synthetic(findings: int, k: int, vocab: int) -> dict[str, Any]:
    """Probes, forget windows and retain windows of random ids (seeded)."""
    from audit.probes import Probe
    from gate.unlearn.data import ForgetWindow, RetainWindow, SecretSpan

    rng = random.Random(0)

    def ids(n: int) -> tuple[int, ...]:
        return tuple(rng.randrange(3, vocab) for _ in range(n))

    probes, forget = [], []
    for j in range(findings):
        window = ids(WINDOW)
        secret = window[BEFORE : BEFORE + SECRET]
        fid = f"f{j:04d}"
        forget.append(ForgetWindow(f"s{j}", window, (SecretSpan(fid, BEFORE, BEFORE + SECRET),)))
        text = IdTokenizer().decode(list(secret))
        prefix = window[BEFORE - PREFIX : BEFORE]
        probes.append(Probe(fid, f"s{j}", "Bench", prefix, secret, False, text, ""))
    retain = [RetainWindow(f"r{j}", ids(RETAIN)) for j in range(2 * k)]
    return {"probes": probes, "forget": forget, "retain": retain}


def _measurement(fid: str) -> Any:
    from audit.measurements import Measurement

    return Measurement(
        fid, "s", "Bench", 1.0, 1.0, 1.0, 1.0, True, None, 0, 0, SECRET, PREFIX, False, True
    )


def run_case(case: str, options: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(options["threads"])
    from audit.extraction import MeasureConfig, measure_probes
    from audit.measurements import Thresholds

    device = options["device"]
    model = build_model(options["vocab"], device, train=case in ("finetune", "erase"))
    data = synthetic(options["findings"], options["k"], options["vocab"])
    config = MeasureConfig(batch_tokens=options["batch_tokens"])
    thresholds = Thresholds(0.5, 0.5, "bench")
    tok: Any = IdTokenizer()
    work: Callable[[], object] = {
        "forward": lambda: _forward(model, data["probes"], config, keep_last=False),
        "prefill": lambda: _forward(model, data["probes"], config, keep_last=True),
        "measure": lambda: measure_probes(model, tok, data["probes"], thresholds, config),
        "finetune": lambda: _finetune(model, data["forget"], options),
        "erase": lambda: _erase(model, data, options, config, thresholds),
    }[case]
    start = _reset_peak(device)
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    return {"start": start, "peak": _peak(device), "seconds": seconds}


def _reset_peak(device: str) -> int:
    """Reset the peak counter; the memory in use now (bytes)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return int(torch.cuda.memory_allocated())
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    return _status("VmRSS")


def _peak(device: str) -> int:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    return _status("VmHWM")


def _status(key: str) -> int:
    found = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert found is not None
    return int(found.group(1)) * 1024


def _forward(model: Any, probes: list[Any], config: Any, *, keep_last: bool) -> None:
    """One batch of measure's size (`batch_tokens` tokens of probe rows, the probes
    repeated if there are fewer), as a plain forward pass."""
    import torch

    from audit.decoding import left_pad

    width = PREFIX + SECRET
    count = max(1, config.batch_tokens // width)
    rows = [
        probes[i % len(probes)].prefix_ids + probes[i % len(probes)].secret_ids
        for i in range(count)
    ]
    ids, mask, positions = left_pad(rows, 2, next(model.parameters()).device)
    extra = {"logits_to_keep": 1} if keep_last else {}
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, **extra)
    del out


def _finetune(model: Any, windows: list[Any], options: dict[str, Any]) -> None:
    """Two plain fine-tune steps on the first k windows, in the engine's micro-batches."""
    import torch

    from gate.unlearn.data import collate

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    engine = _engine(model, options)
    batch = list(range(options["k"]))
    pieces = engine.pieces(batch, windows)
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        for piece in pieces:
            tokens = collate([windows[i] for i in piece.indices], 2).to(
                next(model.parameters()).device
            )
            labels = tokens.input_ids.masked_fill(tokens.attention_mask == 0, -100)
            with _autocast(options):
                loss = model(
                    input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, labels=labels
                ).loss
            (loss * piece.weight).backward()
        optimizer.step()


def _engine(model: Any, options: dict[str, Any]) -> Any:
    """The erase engine of these settings, sized for the model as the loop sizes it."""
    from gate.unlearn import engine as engines

    config = _config(options)
    settings = getattr(engines, "engine_settings", None)  # older checkouts: tokens only
    if settings is None:
        return engines.Engine(batch_tokens=config.train_batch_tokens)
    engine = engines.Engine(**settings(config))
    engine.size_for(model)
    return engine


def _config(options: dict[str, Any]) -> Any:
    from gate.unlearn.settings import UnlearnConfig

    return UnlearnConfig(
        lr=1e-4,
        batch_size=options["k"],
        epochs=1,
        patience=0,
        window_tokens=WINDOW,
        mixed_precision="bf16" if options["device"] == "cuda" else "no",
    )


def _autocast(options: dict[str, Any]) -> Any:
    import contextlib

    import torch

    if options["device"] == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _erase(
    model: Any, data: dict[str, Any], options: dict[str, Any], config: Any, thresholds: Any
) -> None:
    """One CodeEraser epoch with its real re-measure (MA, EL, greedy extraction)."""
    from audit.extraction import measure_probes
    from gate.unlearn.trainer import Unlearner

    probes = {p.finding_id: p for p in data["probes"]}
    tok: Any = IdTokenizer()

    def measure(ids: Any) -> Any:
        return measure_probes(model, tok, [probes[i] for i in ids], thresholds, config)

    with tempfile.TemporaryDirectory() as best:
        Unlearner(
            model,
            data["forget"],
            data["retain"],
            before=[_measurement(fid) for fid in sorted(probes)],
            measure=measure,
            thresholds=thresholds,
            config=_config(options),
            pad_id=2,
            best_dir=Path(best),
        ).run()


# --- the driver -----------------------------------------------------------------------


def _env(code: Path | None = None) -> dict[str, str]:
    path = str(code or ROOT)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "COLUMNS": "200",
    }


def shapes(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for vocab in args.vocab:
        rows: dict[str, Any] = {}
        for case in args.cases:
            options = {
                "vocab": vocab,
                "device": args.device,
                "threads": args.threads,
                "findings": args.findings,
                "k": args.k,
                "batch_tokens": args.batch_tokens,
            }
            command = [sys.executable, __file__, "--case", case, "--options", json.dumps(options)]
            done = subprocess.run(
                command, env=_env(args.code), capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise SystemExit(f"{case} failed:\n{done.stderr[-3000:]}")
            rows[case] = json.loads(done.stdout.strip().splitlines()[-1])
            got = rows[case]
            print(
                f"  vocab {vocab}, {case}: peak {got['peak'] / MB:.0f} MB "
                f"(+{(got['peak'] - got['start']) / MB:.0f}), {got['seconds']:.0f} s",
                flush=True,
            )
        out[str(vocab)] = rows
    return out


def print_shapes(result: dict[str, Any], device: str) -> None:
    unit = "GPU memory allocated" if device == "cuda" else "peak RSS"
    print(f"\n| vocabulary | case | {unit} MB | added by the case MB | s | ratio |")
    print("|---:|---|---:|---:|---:|---|")
    for vocab, rows in result.items():
        for case, got in rows.items():
            ratio = ""
            if case == "measure":
                ratio = _ratios(got, rows, ("forward", "prefill"))
            elif case == "erase":
                ratio = _ratios(got, rows, ("finetune",))
            print(
                f"| {int(vocab):,} | {case} | {got['peak'] / MB:,.0f} | "
                f"{(got['peak'] - got['start']) / MB:,.0f} | {got['seconds']:.1f} | {ratio} |"
            )


def _ratios(got: dict[str, Any], rows: dict[str, Any], against: tuple[str, ...]) -> str:
    return ", ".join(
        f"{got['peak'] / rows[name]['peak']:.2f}× {name}" for name in against if name in rows
    )


# --- part gate: the whole command on a real model ---------------------------------------


def command_line(args: argparse.Namespace, out: Path) -> list[str]:
    """`codeeraser gate` (or `measure` with --command measure) on the model folder."""
    command = [sys.executable, "-m", "gate", args.command, "--model", str(args.model)]
    command += ["--data", str(args.data), "--device", "cpu"]
    if args.command == "measure":
        return [
            *command,
            "--findings",
            str(args.findings_file),
            "--out",
            str(out / "measurements.jsonl"),
        ]
    command += ["--policy", str(args.policy), "--out", str(out), "--force"]
    return [*command, "--heldout", str(args.heldout)] if args.heldout else command


def child_peak(command: list[str], env: dict[str, str], out: Path) -> dict[str, Any]:
    """Run one command; its own peak RSS from wait4 (ru_maxrss of that child alone)."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with (out / "stdout.txt").open("w") as stdout, (out / "stderr.txt").open("w") as stderr:
        child = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr, cwd="/")
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    return {"exit": child.returncode, "peak": usage.ru_maxrss * 1024, "seconds": seconds}


def gate_run(args: argparse.Namespace, code: Path, out: Path) -> dict[str, Any]:
    env = {**_env(code), "OMP_NUM_THREADS": str(args.threads)}
    env.pop("MALLOC_MMAP_THRESHOLD_")  # what a user runs: glibc's defaults
    got = child_peak(command_line(args, out), env, out)
    lines = (out / "stderr.txt").read_text().splitlines()
    got["summary"] = [line for line in lines if "secrets" in line or "Verdict" in line][-6:]
    return got


def gate(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="codeeraser-gate-mem-"))
    runs: dict[str, Any] = {}
    sides = [("this checkout", ROOT)] + ([("against", Path(args.against))] if args.against else [])
    for label, code in sides:  # each in a fresh child, its peak from wait4
        out = work / label.replace(" ", "-")
        runs[label] = gate_run(args, code, out)
        got = runs[label]
        print(
            f"  {label}: {args.command} exit {got['exit']}, peak RSS "
            f"{got['peak'] / MB:,.0f} MB, {got['seconds']:.0f} s",
            flush=True,
        )
    if args.against:
        runs["identical"] = _identical(work / "this-checkout", work / "against")
        print(f"  measurement files identical: {runs['identical']}")
    print(f"  run folders in {work}")
    return runs


def _identical(ours: Path, theirs: Path) -> dict[str, bool]:
    """Each measurements file of one run against the other's, byte for byte."""
    names = sorted(p.relative_to(ours) for p in ours.rglob("measurements*.jsonl"))
    if not names:
        raise SystemExit(f"no measurements file in {ours}: nothing compared")
    return {str(n): (ours / n).read_bytes() == (theirs / n).read_bytes() for n in names}


# --- part checkpoint: what one erase checkpoint writes ------------------------------------


def checkpoint_sizes(args: argparse.Namespace) -> dict[str, Any]:
    """Bytes of model.pt, optimizer.pt and best.pt as the loop writes them, at SmolLM2-135M's
    shape (vocabulary 49,152), full training and LoRA (rank 16), before this change (the
    whole state_dict) and now (the trainable parameters)."""
    import torch

    from gate.unlearn.best import trainable_state
    from gate.unlearn.lora import add_adapters

    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {}
    for label in ("full", "lora"):
        model = build_model(VOCABS[0], "cpu")
        if label == "lora":
            model = add_adapters(model, rank=16, alpha=32.0)
        out[label] = _sizes(model, trainable_state)
        print(f"  {label}: {json.dumps({k: round(v / MB) for k, v in out[label].items()})} MB")
    return out


def _sizes(model: Any, trainable_state: Callable[[Any], Any]) -> dict[str, int]:
    import torch

    from gate.unlearn.optim import make_optimizer, states_dtype

    trained = [p for p in model.parameters() if p.requires_grad]
    states = states_dtype("auto", trained)  # the loop's default: bf16 moments at 135M
    optimizer = make_optimizer(trained, lr=1e-4, weight_decay=0.0, states=states)
    for p in trained:  # one step on zero gradients: AdamW's states exist, as after training
        p.grad = torch.zeros_like(p)
    optimizer.step()
    with tempfile.TemporaryDirectory() as folder:
        sizes = {
            "state_dict (before)": _saved(model.state_dict(), Path(folder)),
            "trainable (now)": _saved(trainable_state(model), Path(folder)),
            "optimizer": _saved(optimizer.state_dict(), Path(folder)),
        }
    print(f"  optimizer states: {states}")
    before = 2 * sizes["state_dict (before)"] + sizes["optimizer"]  # model.pt + best.pt
    now = 2 * sizes["trainable (now)"] + sizes["optimizer"]
    return {**sizes, "checkpoint before": before, "checkpoint now": now}


def _saved(state: Any, folder: Path) -> int:
    import torch

    path = folder / "state.pt"
    torch.save(state, path)
    return path.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["shapes", "gate", "checkpoint"], default="shapes")
    parser.add_argument("--vocab", type=int, nargs="*", default=list(VOCABS))
    parser.add_argument("--cases", nargs="*", choices=CASES, default=list(CASES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--findings", type=int, default=16, help="secrets (forget windows)")
    parser.add_argument("--k", type=int, default=8, help="windows per erase step")
    parser.add_argument("--batch-tokens", type=int, default=16384, help="measure's batch")
    parser.add_argument("--code", type=Path, default=None, help="checkout to run (default: this)")
    parser.add_argument("--model", type=Path, help="part gate: model folder")
    parser.add_argument("--data", type=Path, help="part gate: training data")
    parser.add_argument("--heldout", type=Path, help="part gate: held-out code")
    parser.add_argument("--policy", type=Path, default=ROOT / "bench/policies/real-135m.yaml")
    parser.add_argument("--against", type=Path, help="part gate: another checkout, side by side")
    parser.add_argument("--command", choices=["gate", "measure"], default="gate")
    parser.add_argument("--findings-file", type=Path, help="part gate, --command measure")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--options", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, json.loads(args.options))))
        return 0
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    key = f"{args.part}-{args.device}"
    print(f"load average before: {os.getloadavg()}", flush=True)
    if args.part == "shapes":
        results[key] = shapes(args)
        print_shapes(results[key], args.device)
    elif args.part == "checkpoint":
        results["checkpoint"] = checkpoint_sizes(args)
    else:
        key = f"{args.command}-{args.model.parent.name if args.model else 'model'}"
        results[key] = gate(args)
    print(f"load average after: {os.getloadavg()}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
