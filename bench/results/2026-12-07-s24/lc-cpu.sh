#!/bin/bash
# issue 28 point 7 on the CPU: long context for fat-int3 (its own cache), then balanced-kl's passkey
cd /work/main
export OMP_NUM_THREADS=2
t0=$SECONDS
.venv/bin/python -c 'import sys; from tpa_compress.cli import main; sys.argv[0]="tpa-compress"; main()' convert gemma3-270m --recipe recipes/fat-int3.yaml --out /tmp/lc24/fat-int3 --device cpu --force > /tmp/lc24/convert.txt 2>&1
echo "convert $((SECONDS-t0)) s" >> /tmp/lc24/times.txt
PYTHONPATH=. .venv/bin/python bench/long_context.py --model /tmp/lc24/fat-int3 --cache int3 --seq-lens 4096,8192 --windows 4 \
  --contexts 4096 --depths 0.1,0.5,0.9 --keys 2 --device cpu --out /tmp/lc24/lc-fat-int3-cpu.json > /tmp/lc24/lc-fat-int3.log 2>&1
echo "lc fat-int3 $((SECONDS-t0)) s" >> /tmp/lc24/times.txt
PYTHONPATH=. .venv/bin/python bench/long_context.py --model /tmp/lckl/balanced-kl --cache bf16 --seq-lens "" --windows 4 \
  --contexts 4096,16384 --depths 0.1,0.5,0.9 --keys 2 --device cpu --out /tmp/lc24/pk-balanced-kl-cpu.json > /tmp/lc24/pk-balanced-kl.log 2>&1
echo "pk balanced-kl $((SECONDS-t0)) s" >> /tmp/lc24/times.txt
