#!/bin/bash
# issue 28 point 7 on the CPU: long-context perplexity (4K / 8K, the GPU rows' windows) and 4K
# passkeys for the original with the int4:group=128 and int3 caches, two quantization-only
# points of the frontier (3.2x and 3.6x) that had no long-context rows
cd /work/main
export OMP_NUM_THREADS=2
mkdir -p /tmp/lc26; t0=$SECONDS
PYTHONPATH=. .venv/bin/python bench/long_context.py --model gemma3-270m --cache int4:group=128,int3 --seq-lens 4096,8192 \
  --windows 4 --contexts 4096 --depths 0.1,0.5,0.9 --keys 2 --device cpu --out /tmp/lc26/lc-quant-cpu.json > /tmp/lc26/lc.log 2>&1
echo "lc $((SECONDS-t0)) s" >> /tmp/lc26/times.txt
