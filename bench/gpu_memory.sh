#!/usr/bin/env bash
# GPU memory of measure and of one erase epoch at vocabularies 49,152 and 151,936
# (SmolLM2-135M's shape, random weights, bf16 on the GPU), against a plain forward pass
# and a plain fine-tune step of the same model and batch: bench/memory.py on cuda
# (torch.cuda.max_memory_allocated per case, each case in its own process).
#
#   bench/gpu_memory.sh                       # 64 findings, k 32, measure batch 16384
#   FINDINGS=8 K=4 bench/gpu_memory.sh        # a short run
#
# Env: PYTHON (python), FINDINGS (64), K (32), BATCH_TOKENS (16384).
# Results: bench/results/memory.json ("shapes-cuda") and a table on stdout.
set -euo pipefail

PYTHON=${PYTHON:-python}
FINDINGS=${FINDINGS:-64}
K=${K:-32}
BATCH_TOKENS=${BATCH_TOKENS:-16384}
cd "$(dirname "$0")/.."
PYTHONPATH=. "$PYTHON" bench/memory.py --device cuda --findings "$FINDINGS" --k "$K" \
    --batch-tokens "$BATCH_TOKENS"
