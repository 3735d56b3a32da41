#!/bin/bash
# issue 29: the head-mode table's missing contextual T6 row, on the CPU (fp32, 2 threads), with
# the joint latent at the same bytes and the original on the same 16 windows per domain
cd /work/main
export OMP_NUM_THREADS=2
t0=$SECONDS
PYTHONPATH=. .venv/bin/python bench/qwen2/head_mode.py --device cpu --windows 16 --calib-tokens 32768 \
  --only "activation_svd r64" "contextual_t6" --json /tmp/qh25/head-mode-cpu.json > /tmp/qh25/qh.log 2>&1
echo "qh $((SECONDS-t0)) s" >> /tmp/qh25/times.txt
