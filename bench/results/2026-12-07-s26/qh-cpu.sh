#!/bin/bash
# issue 29: the head-mode table's 25% rows (rank 32 for K and V), on the CPU (fp32, 2 threads), with
# the original on the same 16 windows per domain as the contextual T6 row (s25's qh-cpu.sh)
cd /work/main
export OMP_NUM_THREADS=2
t0=$SECONDS
PYTHONPATH=. .venv/bin/python bench/qwen2/head_mode.py --device cpu --windows 16 --calib-tokens 32768 \
  --only "activation_svd r32" "tucker_shared r32" "tucker_shared head_rank 1 r32" \
  --json /tmp/qh26/head-mode-25-cpu.json > /tmp/qh26/qh.log 2>&1
echo "qh $((SECONDS-t0)) s" >> /tmp/qh26/times.txt
