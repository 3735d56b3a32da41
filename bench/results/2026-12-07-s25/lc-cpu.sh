#!/bin/bash
# issue 28 point 7 on the CPU: long-context perplexity (4K / 8K, the GPU rows' windows) and 4K
# passkeys for the original with an int8 cache, the 2x quantization point of the frontier
cd /work/main
export OMP_NUM_THREADS=2
mkdir -p /tmp/lc25; t0=$SECONDS
PYTHONPATH=. .venv/bin/python bench/long_context.py --model gemma3-270m --cache int8 --seq-lens 4096,8192 --windows 4 \
  --contexts 4096 --depths 0.1,0.5,0.9 --keys 2 --device cpu --out /tmp/lc25/lc-int8-cpu.json > /tmp/lc25/lc-int8.log 2>&1
echo "lc int8 $((SECONDS-t0)) s" >> /tmp/lc25/times.txt
