#!/usr/bin/env bash
# GPU throughput of `codeeraser measure`: a randomly initialised ~1.1B-parameter
# Llama-style model (TinyLlama shape) in bf16 on synthetic code with planted secrets.
# Records findings/s; the weights are random, so only speed and memory mean anything.
#
#   bench/gpu_measure.sh                    # 512 findings, 1.1B model, cuda
#   SIZE=tiny DEVICE=cpu FINDINGS=16 bench/gpu_measure.sh   # a dry run of the script
#
# Env: PYTHON (python), SIZE (1b | tiny), DEVICE (cuda), FINDINGS (512),
#      BATCH_TOKENS (65536), SAMPLES (0), OUT (folder for the results, default a temp dir).
set -euo pipefail

PYTHON=${PYTHON:-python}
SIZE=${SIZE:-1b}
DEVICE=${DEVICE:-cuda}
FINDINGS=${FINDINGS:-512}
BATCH_TOKENS=${BATCH_TOKENS:-65536}
SAMPLES=${SAMPLES:-0}
WORK=$(mktemp -d)
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT"
trap 'rm -rf "$WORK/model" "$WORK/data"' EXIT
cd "$(dirname "$0")/.."

echo "== building a random $SIZE Llama-style model and $FINDINGS synthetic findings in $WORK"
"$PYTHON" - "$WORK" "$SIZE" "$DEVICE" "$FINDINGS" <<'PY'
import random, string, sys, time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from audit.findings import Finding, write_findings

work, size, device, count = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
rng = random.Random(0)
words = ["def", "return", "self", "config", "client", "request", "import", "value", "data",
         "if", "else", "for", "in", "None", "True", "url", "path", "token", "session", "x"]

def line() -> str:
    return "    " * rng.randint(0, 2) + " ".join(rng.choice(words) for _ in range(rng.randint(3, 9)))

def key(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))

data = work / "data"
data.mkdir(parents=True)
findings, texts = [], []
for k in range((count + 1) // 2):
    secrets = [("aws_access_key_id", "AKIA" + key(16, string.ascii_uppercase + string.digits)),
               ("github_token", "ghp_" + key(36))]
    parts = ["\n".join(line() for _ in range(40))]
    for kind, value in secrets:
        parts.append(f'{kind.upper()} = "{value}"')
        parts.append("\n".join(line() for _ in range(20)))
    text = "\n".join(parts) + "\n"
    name = f"f{k:05d}.py"
    (data / name).write_text(text)
    texts.append(text)
    for kind, value in secrets:
        start = text.index(value)
        findings.append(Finding.create(sample_id=name, origin=name, text=text, start=start,
                                       end=start + len(value), secret_type=kind, detector="bench"))
write_findings(work / "findings.jsonl", findings[:count])

vocab = 32000 if size == "1b" else 512
bpe = Tokenizer(models.BPE())
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
bpe.train_from_iterator(texts, trainers.BpeTrainer(
    vocab_size=vocab, special_tokens=["</s>"], show_progress=False,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="</s>", bos_token="</s>")
shape = (dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
              num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048)
         if size == "1b" else
         dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256))
config = LlamaConfig(vocab_size=vocab, bos_token_id=0, eos_token_id=0, **shape)
started = time.perf_counter()
with torch.device(device if device != "auto" else "cpu"):
    model = LlamaForCausalLM(config).to(torch.bfloat16)
model.save_pretrained(work / "model")
tokenizer.save_pretrained(work / "model")
params = sum(p.numel() for p in model.parameters())
print(f"{params / 1e9:.2f} B parameters, built and saved in {time.perf_counter() - started:.0f} s")
PY

echo "== codeeraser measure on $DEVICE (bf16)"
COLUMNS=200 "$PYTHON" -m gate measure --model "$WORK/model" --data "$WORK/data" \
  --findings "$WORK/findings.jsonl" --out "$OUT/measurements.jsonl" \
  --device "$DEVICE" --dtype bfloat16 --batch-tokens "$BATCH_TOKENS" --samples "$SAMPLES" \
  2> "$OUT/summary.txt"
cat "$OUT/summary.txt"
grep -o "[0-9]* findings measured in [0-9.]* s ([0-9.]* findings/s)" "$OUT/summary.txt" \
  > "$OUT/findings_per_s.txt"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$OUT/findings_per_s.txt"
fi
echo "== result ($OUT/findings_per_s.txt):"
cat "$OUT/findings_per_s.txt"
