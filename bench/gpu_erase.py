"""GPU benchmark: CodeEraser on a randomly initialised ~1B-parameter Llama-style model.

For comparison with the paper's 46.88 s per sample (CodeEraser on a 7B model). The
model is built from a config (TinyLlama's shape: 22 layers, 2048 wide, 32 heads, 4 KV
heads, vocabulary 32,000; 1.1 B parameters), nothing is downloaded. The forget set is
synthetic: k = 32 windows of 512 random token ids, each with a secret span of
`--secret-tokens` tokens at a random position after the first 128 (the attacker's
prefix); the retain set is k windows of 128 random tokens. The unlearning loop is the
project's (`gate.unlearn.trainer.Unlearner`): the CodeEraser loss, AdamW, float32
master weights with bf16 autocast through Accelerate (`--precision mixed-bf16`, the
default) or bf16 weights throughout (`--precision bf16`), the KL reference cached
once, and after every epoch the project's re-measure (MA and greedy extraction, the
screen, on all 32 probes). The thresholds are set so that no secret ever counts as
forgotten (a random model memorizes nothing), so every epoch trains on all k windows
and `--epochs` epochs always run: the time is that of a run that has to go on.

Recorded in the JSON (``--out``): parameters, seconds per epoch (training and the
re-measure), seconds per sample (the whole loop divided by k, as the paper reports
it), peak GPU memory allocated by torch, and the settings.

    python bench/gpu_erase.py                          # needs CUDA: 1.1B, bf16, 5 epochs
    python bench/gpu_erase.py --tiny --device cpu      # a dry run of the script (seconds)

Without CUDA (and without ``--device cpu``) it refuses with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHAPES: dict[str, dict[str, Any]] = {
    "1b": {  # TinyLlama-1.1B's shape
        "vocab_size": 32000,
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "max_position_embeddings": 2048,
    },
    "tiny": {
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
    },
}
PREFIX_TOKENS = 128


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a 2-layer, 64-wide model (dry run)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--k", type=int, default=32, help="forget windows (samples)")
    parser.add_argument("--window", type=int, default=512, help="tokens per forget window")
    parser.add_argument("--secret-tokens", type=int, default=32, help="secret span length")
    parser.add_argument("--epochs", type=int, default=5, help="epochs to run")
    parser.add_argument(
        "--precision",
        choices=["mixed-bf16", "bf16", "fp32"],
        default="mixed-bf16",
        help="mixed-bf16: fp32 weights, bf16 autocast; bf16: bf16 weights; fp32: no autocast",
    )
    parser.add_argument("--lr", type=float, default=3e-6, help="AdamW learning rate (paper)")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    parser.add_argument("--lora", action="store_true", help="LoRA adapters (r 16) instead")
    parser.add_argument(
        "--train-batch-tokens", type=int, default=16384, help="padded tokens per micro-batch"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_erase.json")
    options = parser.parse_args(argv)
    if options.window < PREFIX_TOKENS + options.secret_tokens + 1:
        parser.error(f"--window must exceed {PREFIX_TOKENS} + --secret-tokens")
    return options


def device_error(device: str) -> str | None:
    """Why the run cannot start on `device` (None: it can)."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return (
            "this benchmark needs a CUDA GPU (torch.cuda.is_available() is False); "
            "for a dry run on the CPU: --tiny --device cpu"
        )
    return None


def word_tokenizer(vocab: int) -> Any:
    """A tokenizer whose token i is the word `t<i>`: decoding gives the text the
    verbatim-extraction check compares (the ids are random, not text)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab)}
    core = Tokenizer(models.WordLevel(vocab=words, unk_token="t0"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="t0", unk_token="t0")  # type: ignore[no-untyped-call]


def synthetic_set(options: argparse.Namespace, vocab: int, tokenizer: Any) -> dict[str, Any]:
    """k forget windows with one secret span each, their probes, k retain windows."""
    from audit.probes import Probe
    from gate.unlearn.data import ForgetWindow, RetainWindow, SecretSpan

    rng = random.Random(options.seed)
    windows, probes, retain = [], [], []
    for k in range(options.k):
        ids = tuple(rng.randrange(1, vocab) for _ in range(options.window))
        start = rng.randrange(PREFIX_TOKENS, options.window - options.secret_tokens)
        end = start + options.secret_tokens
        fid = f"f{k:03d}"
        windows.append(ForgetWindow(f"s{k:03d}", ids, (SecretSpan(fid, start, end),)))
        secret_ids = ids[start:end]
        probes.append(
            Probe(
                finding_id=fid,
                sample_id=f"s{k:03d}",
                secret_type="synthetic",
                prefix_ids=ids[start - PREFIX_TOKENS : start],
                secret_ids=secret_ids,
                truncated=False,
                secret=tokenizer.decode(list(secret_ids)),
            )
        )
        retain.append(RetainWindow(f"r{k:03d}", tuple(rng.randrange(1, vocab) for _ in range(128))))
    return {"windows": windows, "probes": probes, "retain": retain}


def build_model(options: argparse.Namespace) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(options.seed)
    config = LlamaConfig(bos_token_id=0, eos_token_id=0, **SHAPES["tiny" if options.tiny else "1b"])
    dtype = torch.bfloat16 if options.precision == "bf16" else torch.float32
    with torch.device(options.device):
        model: Any = LlamaForCausalLM(config)
    model.to(dtype)
    model.eval()
    return model


def _before(fid: str, sample: str, secret_tokens: int) -> Any:
    from audit.measurements import Measurement

    return Measurement(
        finding_id=fid, sample_id=sample, secret_type="synthetic", ma=1.0, el_3=1.0, el_5=1.0,
        el_10=1.0, extracted_greedy=True, extracted_sampled=None, samples=0,
        longest_leaked_prefix=secret_tokens, secret_tokens=secret_tokens,
        prefix_tokens=PREFIX_TOKENS, truncated=False, memorized=True,
    )  # fmt: skip


def run(options: argparse.Namespace) -> dict[str, Any]:
    import torch

    from audit.extraction import MeasureConfig
    from audit.measurements import Thresholds
    from gate.unlearn.erase import measure_by_id, screen_by_id
    from gate.unlearn.settings import UnlearnConfig
    from gate.unlearn.trainer import Unlearner

    shape = SHAPES["tiny" if options.tiny else "1b"]
    tokenizer = word_tokenizer(shape["vocab_size"])
    data = synthetic_set(options, shape["vocab_size"], tokenizer)
    started = time.perf_counter()
    model = build_model(options)
    if options.lora:
        from gate.unlearn.lora import add_adapters

        model = add_adapters(model, rank=16, alpha=32.0)
    built = time.perf_counter() - started
    measure_config = MeasureConfig(batch_tokens=options.train_batch_tokens, samples=0)
    measure, _ = measure_by_id(model, tokenizer, data["probes"], measure_config)
    config = UnlearnConfig(
        lr=options.lr, batch_size=options.k, epochs=options.epochs, patience=0,
        window_tokens=options.window, retain_tokens=128, retain_windows=options.k,
        train_batch_tokens=options.train_batch_tokens,
        gradient_checkpointing=options.checkpointing, lora=options.lora,
        mixed_precision="bf16" if options.precision == "mixed-bf16" else "no",
        ascend_on="all",  # the paper's S: a random model predicts no secret token greedily
    )  # fmt: skip
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    unlearner = Unlearner(
        model,
        data["windows"],
        data["retain"],
        before=[_before(p.finding_id, p.sample_id, options.secret_tokens) for p in data["probes"]],
        measure=measure,
        thresholds=Thresholds(ma=0.0, el_10=0.0, source="never forgotten: timing run"),
        config=config,
        pad_id=0,
        screen=screen_by_id(model, tokenizer, data["probes"], measure_config),
        engine=_engine(options, config),
    )
    result = unlearner.run()
    summary = _summary(options, model, result, built)
    summary["mixed_precision"] = unlearner.engine.mixed_precision
    return summary


def _engine(options: argparse.Namespace, config: Any) -> Any:
    """Accelerate's engine for bf16 autocast (on the device asked for), else plain torch."""
    from gate.unlearn.engine import Engine

    if config.mixed_precision == "no":
        return Engine(batch_tokens=config.train_batch_tokens, checkpointing=options.checkpointing)
    from gate.unlearn.accelerated import AcceleratedEngine

    return AcceleratedEngine(
        batch_tokens=config.train_batch_tokens,
        checkpointing=options.checkpointing,
        mixed_precision=config.mixed_precision,
        cpu=not options.device.startswith("cuda"),
    )


def _summary(options: argparse.Namespace, model: Any, result: Any, built: float) -> dict[str, Any]:
    import torch

    epochs = result.history
    cuda = torch.cuda.is_available() and options.device.startswith("cuda")
    return {
        "model": "tiny Llama" if options.tiny else "Llama-style, TinyLlama-1.1B shape",
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "device": torch.cuda.get_device_name() if cuda else options.device,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()},
        "build_seconds": built,
        "epochs": result.epochs,
        "steps": result.steps,
        "kl_reference": {"kind": result.reference_kind, "bytes": result.reference_bytes},
        "unlearn_seconds": result.seconds,
        "seconds_per_epoch": [e.seconds for e in epochs],
        "seconds_per_sample": result.seconds / options.k,
        "paper_seconds_per_sample_7b": 46.88,
        "peak_gpu_memory_bytes": int(torch.cuda.max_memory_allocated()) if cuda else 0,
        "losses_last_epoch": epochs[-1].loss if epochs else {},
    }


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    problem = device_error(options.device)
    if problem is not None:
        print(f"Error: {problem}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1 if options.tiny else torch.get_num_threads())
    result = run(options)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(result, indent=2) + "\n")
    gib = result["peak_gpu_memory_bytes"] / 2**30
    print(
        f"{result['parameters'] / 1e6:,.1f} M parameters, k={options.k}×{options.window} tokens, "
        f"{result['epochs']} epoch(s) in {result['unlearn_seconds']:.1f} s: "
        f"{result['seconds_per_sample']:.2f} s/sample (paper, 7B: 46.88), "
        f"peak GPU memory {gib:.1f} GiB -> {options.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
