"""The memory a 7B model needs for `codeeraser erase` in each scaling setting.

Parameters, gradients and AdamW states are counted from the model's shape (built on
the meta device: no memory, no download). Activations are measured: a forward pass
through one and through two decoder layers of the real width (the same code the loop
runs: `aligned_logprobs` under bf16 autocast, float32 weights), with autograd's
saved-tensor hooks adding up the bytes kept for the backward pass (each storage
counted once); the difference is one layer's activations per token, with and without
gradient checkpointing. The log-probs over the vocabulary are measured the same way,
from two vocabulary sizes. The p0 cache is 4·V bytes per cached position
(`gate.unlearn.reference`).

The model is Qwen2.5-Coder-7B's shape (the paper's 7B model): 28 layers, 3584 wide,
MLP 18944, 28 heads, 4 KV heads, vocabulary 152,064. One step unlearns k = 32 forget
windows of 512 tokens (16,384 tokens) and k retain windows of 128 tokens.

    python bench/memory_7b.py            # prints the tables; bench/results/memory_7b.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "memory_7b.json"
GB = 1e9

SHAPE: dict[str, Any] = {  # Qwen2.5-Coder-7B
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
}
K, WINDOW, RETAIN = 32, 512, 128
TOKENS = 64  # tokens of the measuring forward pass


def _config(**changes: Any) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(**{**SHAPE, **changes})


def parameters() -> int:
    import torch
    from transformers import Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(_config())
    return sum(p.numel() for p in model.parameters())


def _model(layers: int, vocab: int) -> Any:
    import torch
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(_config(num_hidden_layers=layers, vocab_size=vocab))
    return model.eval()  # type: ignore[no-untyped-call]


def saved_bytes(model: Any, tokens: int, checkpointing: bool) -> int:
    """Bytes autograd keeps for the backward pass of one forward over `tokens` tokens
    (parameters themselves not counted; their bf16 autocast copies are)."""
    import torch

    from gate.unlearn.data import RetainWindow, collate
    from gate.unlearn.engine import checkpointed_layers, enable_checkpointing
    from gate.unlearn.reference import aligned_logprobs

    if checkpointing:
        enable_checkpointing(model)
    batch = collate([RetainWindow("m", tuple(range(1, tokens + 1)))], pad_id=0)
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    layers = checkpointed_layers(model) if checkpointing else []
    for layer in layers:  # as the engine does: transformers checkpoints training layers
        layer.training = True
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):
        logprobs = aligned_logprobs(model, batch)  # (1, T-1, V)
        loss = logprobs.gather(-1, batch.input_ids[:, 1:, None]).mean()
    for layer in layers:
        layer.training = False
    del loss, logprobs
    parameter_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in seen.items() if ptr not in parameter_storages)


def _slopes(layers: int, vocab: int) -> dict[str, float]:
    """Saved bytes per token (the slope between two lengths) and at the shorter length,
    without and with checkpointing."""
    short, long = 32, 96
    model = _model(layers, vocab)
    out = {}
    for ckpt in (False, True):
        a, b = saved_bytes(model, short, ckpt), saved_bytes(model, long, ckpt)
        out[f"slope{'_ckpt' if ckpt else ''}"] = (b - a) / (long - short)
        out[f"fixed{'_ckpt' if ckpt else ''}"] = a - short * (b - a) / (long - short)
    return out


def measured() -> dict[str, float]:
    """Per token: one layer's activations (with and without checkpointing) and the
    log-prob bytes per vocabulary entry; per layer: the bytes that do not grow with
    the tokens (autocast's bf16 copies of the weights)."""
    small, large = 256, 2048
    one, two, wide = _slopes(1, small), _slopes(2, small), _slopes(1, large)
    return {
        "layer_bytes_per_token": two["slope"] - one["slope"],
        "layer_bytes_per_token_checkpointed": two["slope_ckpt"] - one["slope_ckpt"],
        "logprob_bytes_per_token_per_vocab": (wide["slope"] - one["slope"]) / (large - small),
        "layer_fixed_bytes": two["fixed"] - one["fixed"],
        "layer_fixed_bytes_checkpointed": two["fixed_ckpt"] - one["fixed_ckpt"],
        "head_fixed_bytes_per_vocab": (wide["fixed"] - one["fixed"]) / (large - small),
    }


def settings(p: int, m: dict[str, float]) -> list[dict[str, Any]]:
    """GPU memory per device, in bytes, for each setting: training state, autocast's
    bf16 weight copies, and the activations kept for the backward pass."""
    layers, vocab = int(SHAPE["num_hidden_layers"]), int(SHAPE["vocab_size"])
    step, lora = K * WINDOW, lora_parameters()
    logprobs = vocab * m["logprob_bytes_per_token_per_vocab"]

    def acts(tokens: int, ckpt: bool) -> float:
        if ckpt:  # every layer's input kept; one layer's activations live at a time
            kept = layers * m["layer_bytes_per_token_checkpointed"] + m["layer_bytes_per_token"]
        else:
            kept = layers * m["layer_bytes_per_token"]
        return tokens * (kept + logprobs)

    def copies(ckpt: bool) -> float:  # bf16 casts of the float32 weights, kept for backward
        head = vocab * m["head_fixed_bytes_per_vocab"]  # the output layer, never checkpointed
        return head + layers * m["layer_fixed_bytes_checkpointed" if ckpt else "layer_fixed_bytes"]

    full, base = 16 * p, 2 * p + 16 * lora  # fp32 weights+grads+AdamW; bf16 base + adapters
    rows = [  # name, GPUs, state, autocast copies, activations
        ("1 GPU, full", 1, full, copies(False), acts(step, False)),
        ("1 GPU, full, micro-batches of 2,048 tokens", 1, full, copies(False), acts(2048, False)),
        ("1 GPU, full, gradient checkpointing", 1, full, copies(True), acts(step, True)),
        ("1 GPU, LoRA (bf16 base), checkpointing", 1, base, 0.0, acts(step, True)),
        ("8 GPUs, DDP, full", 8, full, copies(False), acts(step // 8, False)),
        ("8 GPUs, DDP, full, checkpointing", 8, full, copies(True), acts(step // 8, True)),
        ("8 GPUs, DDP, LoRA, checkpointing", 8, base, 0.0, acts(step // 8, True)),
        ("8 GPUs, FSDP, full", 8, full / 8, 0.0, acts(step // 8, False)),
        ("8 GPUs, FSDP, full, checkpointing", 8, full / 8, 0.0, acts(step // 8, True)),
        ("2 nodes × 8 GPUs, FSDP, full", 16, full / 16, 0.0, acts(step // 16, False)),
    ]
    return [
        {"setting": n, "gpus": g, "state": st, "copies": c, "activations": a, "total": st + c + a}
        for n, g, st, c, a in rows
    ]


def lora_parameters(rank: int = 16) -> int:
    """Adapter parameters: r·(in + out) per adapted linear layer."""
    h, i, kv = int(SHAPE["hidden_size"]), int(SHAPE["intermediate_size"]), 512
    per_layer = (h + h) + (h + kv) + (h + kv) + (h + h) + 2 * (h + i) + (i + h)
    return rank * per_layer * int(SHAPE["num_hidden_layers"])


def main() -> int:
    import torch

    torch.set_num_threads(1)
    p, m = parameters(), measured()
    rows = settings(p, m)
    cached = {  # positions whose p0 log-probs the cache holds (4·V bytes each, host memory)
        "codeeraser (secret tokens, ~32 per window, and retain windows)": K * 32 + K * RETAIN,
        "cu (every token of both)": K * WINDOW + K * RETAIN,
    }
    print(f"parameters: {p:,}; LoRA r=16 adapters: {lora_parameters():,}")
    for key, value in m.items():
        print(f"{key}: {value:,.1f}")
    for name, positions in cached.items():
        print(
            f"p0 cache, full vocabulary, {name}: {positions * SHAPE['vocab_size'] * 4 / GB:.1f} GB"
        )
    print("| setting | GPUs | weights+grads+AdamW | bf16 copies | activations | per GPU | fits |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        fits = "80 GB" if r["total"] < 80 * GB else "141 GB" if r["total"] < 141 * GB else "no"
        print(
            f"| {r['setting']} | {r['gpus']} | {r['state'] / GB:.1f} | {r['copies'] / GB:.1f} | "
            f"{r['activations'] / GB:.1f} | {r['total'] / GB:.1f} | {fits} |"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    out = {"parameters": p, "measured": m, "cache_positions": cached, "rows": rows}
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
