#!/bin/bash
# session-21 device script: `bash bench/results/2026-12-06-s21/devrun.sh STEP...` from the
# repository root on the device tool. Weights travel as chunks in .stage/ (git-ignored), one
# per call, into /tmp/st on the warm machine; `setup` joins them, checks the sha256 recorded
# below and installs the wheels the device lacks (gguf, tensorly). Every step writes its
# results under $OUT as it goes, so a step cut by the call's limit keeps what it measured.
set -u
export PYTHONUNBUFFERED=1
G=/tmp/gemma-3-270m-q4_k_m.gguf S=/tmp/SmolLM2-135M-Instruct.Q4_1.gguf
export PYTHONPATH=$PWD:/tmp/pylib
tc() { python -c 'import sys; from tpa_compress.cli import main; sys.argv[0] = "tpa-compress"; main()' "$@"; }
for step in "$@"; do
s=$SECONDS
case "$step" in
chunk) mkdir -p /tmp/st && cp .stage/[gs]0* /tmp/st/ && ls /tmp/st ;;
setup)
  mkdir -p /tmp/st && cp .stage/[gs]0* /tmp/st/ 2>/dev/null
  python -m pip install -q --no-deps --no-index --target /tmp/pylib .stage/wh/*.whl 2>&1 | grep -v WARNING | tail -2
  cat /tmp/st/g0* > $G; cat /tmp/st/s0* > $S
  sha256sum -c - <<SUMS
a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  $G
b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $S
SUMS
  nvidia-smi --query-gpu=name --format=csv,noheader; git log --oneline -1 2>/dev/null ;;
fg)  # Gemma 3 270M: the original in every cache format, the baselines and shipped recipes
  python bench/frontier.py --model $G --name "Gemma 3 270M" --device cuda \
    --recipes bench/recipes/weight-svd.yaml,recipes/fat.yaml,recipes/balanced.yaml,recipes/balanced-refit.yaml,recipes/aggressive.yaml \
    --caches bf16,int8,fp8,int4,int4:recent=0,int4:rotate=hadamard,int4:group=128,int3,int3:recent=0,int2 \
    --recipe-caches bf16,int8,int4,int4:recent=0,int3 --out $OUT/frontier-gemma.json > $OUT/fg.log 2>&1
  tail -3 $OUT/fg.log ;;
fh)  # Gemma 3 270M healed (150 s of healing each)
  python bench/frontier.py --model $G --name "Gemma 3 270M" --device cuda --skip-original \
    --recipes bench/recipes/balanced-heal150.yaml,bench/recipes/aggressive-heal150.yaml \
    --recipe-caches bf16,int4,int4:recent=0,int3 --out $OUT/frontier-gemma-healed.json > $OUT/fh.log 2>&1
  grep -h "heal\|KL" $OUT/fh.log | tail -8 ;;
fs)  # SmolLM2-135M (every layer global): the same, one healed recipe
  python bench/frontier.py --model $S --name "SmolLM2-135M-Instruct" --device cuda \
    --recipes bench/recipes/weight-svd.yaml,recipes/fat.yaml,recipes/balanced.yaml,recipes/aggressive.yaml,bench/recipes/balanced-heal150.yaml \
    --caches bf16,int8,fp8,int4,int4:recent=0,int4:rotate=hadamard,int4:group=64,int3,int2 \
    --recipe-caches bf16,int8,int4,int4:recent=0 --out $OUT/frontier-smollm2.json > $OUT/fs.log 2>&1
  tail -3 $OUT/fs.log ;;
lc)  # long context: perplexity at 4K/8K and the passkey at 4K/16K/32K, original and balanced
  tc convert $G --recipe recipes/balanced.yaml --out /tmp/bal --device cuda > $OUT/lc-convert.txt 2>&1
  python bench/long_context.py --model $G --model /tmp/bal --cache bf16,int4 --seq-lens 4096,8192 \
    --windows 4 --contexts 4096,16384,32768 --depths 0.1,0.5,0.9 --keys 2 --out $OUT/long-context.json > $OUT/lc.log 2>&1
  tail -4 $OUT/lc.log ;;
budget)  # what a smaller cache buys at a 16 GiB KV budget, 32K context (random weights)
  python bench/bench_budget.py --model 270m --context 32768 --budget-gib 16 \
    --rows original:bf16,original:int8,converted:bf16@80,96,112/112,160,128,converted:int8@80,96,112/112,160,128 \
    --out $OUT/budget.json > $OUT/budget.log 2>&1; tail -4 $OUT/budget.log ;;
esac
echo "step $step: $((SECONDS-s)) s"
done
