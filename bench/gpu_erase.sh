#!/usr/bin/env bash
# GPU time and memory of CodeEraser: a randomly initialised ~1.1B-parameter Llama-style
# model (TinyLlama shape) trained with the project's unlearning loop in bf16 (float32
# master weights, bf16 autocast) on a synthetic forget set of k = 32 windows of 512
# tokens, re-measured after every epoch. Records seconds per sample and peak GPU memory,
# for comparison with the paper's 46.88 s per sample on a 7B model (bench/gpu_erase.py).
#
#   bench/gpu_erase.sh                                # 1.1B, cuda, 5 epochs
#   EPOCHS=10 EXTRA="--checkpointing" bench/gpu_erase.sh
#   DEVICE=cpu EXTRA="--tiny --k 4 --epochs 1" bench/gpu_erase.sh   # a dry run, no GPU
#
# Env: PYTHON (python), DEVICE (cuda), EPOCHS (5), OUT (results JSON, default
#      bench/results/gpu_erase.json), EXTRA (more options for gpu_erase.py).
# Without CUDA (and DEVICE=cuda) it stops with exit code 2 and says so.
set -euo pipefail

PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-5}
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu_erase.json}

echo "== CodeEraser on a random Llama-style model ($DEVICE)"
# shellcheck disable=SC2086  # EXTRA is a list of options
PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} "$PYTHON" bench/gpu_erase.py \
  --device "$DEVICE" --epochs "$EPOCHS" --out "$OUT" ${EXTRA:-}
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
fi
